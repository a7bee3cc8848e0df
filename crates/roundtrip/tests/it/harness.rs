//! The library API against the real example pipeline: a suite file, and a suite built in
//! code whose failure message carries the evidence.

use std::time::Duration;

use roundtrip::harness::{Error, Event, Expect, Harness};
use roundtrip_core::model::{DurationSpec, ReadyProbe};
use serde_json::json;

/// The pipeline, on a free input port, emitting to the webhook `out` (bound to port 0).
fn pipeline_args() -> Vec<String> {
    [
        "cargo",
        "run",
        "--quiet",
        "--package",
        "roundtrip-example-pipeline",
        "--bin",
        "pipeline",
        "--",
        "--listen",
        "127.0.0.1:{{ port.in }}",
        "--emit",
        "{{ channel.out.url }}",
        "--dead-letter",
        "http://127.0.0.1:{{ port.nowhere }}/dead-letter",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ready() -> ReadyProbe {
    ReadyProbe {
        http: None,
        tcp: None,
        log: Some("pipeline listening on".into()),
        within: DurationSpec(Duration::from_secs(300)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_file_runs_from_a_test() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pipeline/suite.yaml"
    );
    let report = Harness::from_file(path)
        .expect("the example suite is valid")
        .only(["an invalid event goes to the dead-letter output and nowhere else"])
        .run()
        .await
        .expect("the run is carried out");
    report.assert_passed();
    assert_eq!(report.summary.scenarios.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_built_in_code_fails_with_evidence() {
    let harness = Harness::builder("in code")
        .sut(pipeline_args(), ready())
        .http("in", "http://127.0.0.1:{{ port.in }}/events")
        .webhook("out", "127.0.0.1:0", "/processed")
        .scenario(
            "passes",
            [Event::to("in").json(json!({ "item": "widget" }))],
            [Expect::on("out")
                .matching(json!({ "item": "WIDGET" }))
                .within(Duration::from_secs(2))],
        )
        .scenario(
            "expects the wrong thing",
            [Event::to("in").json(json!({ "item": "widget", "qty": 1 }))],
            [Expect::on("out")
                .matching(json!({ "item": "GADGET", "qty": 1 }))
                .within(Duration::from_millis(300))
                .grace(Duration::ZERO)],
        )
        .build()
        .expect("the in-code suite is valid");
    let report = harness.run().await.expect("the run is carried out");
    assert_eq!(report.failures(), vec!["expects the wrong thing"]);
    let panic = std::panic::catch_unwind(|| report.assert_passed())
        .expect_err("assert_passed panics on a failure");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("[lost]"), "{message}");
    assert!(message.contains("closest near-miss"), "{message}");
    assert!(
        message.contains("$.item: expected \"GADGET\", got \"WIDGET\""),
        "{message}"
    );
}

#[test]
fn an_invalid_in_code_suite_is_refused_with_diagnostics() {
    let err = Harness::builder("bad")
        .http("in", "http://127.0.0.1:1/events")
        .scenario(
            "sends to nowhere",
            [Event::to("nowhere")],
            [Expect::on("in")],
        )
        .build()
        .expect_err("an unknown channel is refused");
    let Error::Suite(e) = err else {
        panic!("expected a suite error, got {err}");
    };
    let text = e.to_string();
    assert!(text.contains("nowhere"), "{text}");
}
