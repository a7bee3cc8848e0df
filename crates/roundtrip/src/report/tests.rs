//! The reporters' output for one run with a pass, each kind of failure and an error,
//! produced by the real scenario loop (`engine::tests`), kept as snapshots beside the
//! reporters with what changes from run to run (correlation ids, times, durations)
//! redacted.

use crate::engine::tests::{Sut, expect, run, summary};
use roundtrip_core::run::RunSummary;

async fn one_of_each_outcome() -> RunSummary {
    let (results, listener) = run(&[
        (
            "passes",
            2,
            Sut::Emits(1),
            vec![expect("match: { item: widget }\nwithin: 5s")],
        ),
        (
            "loses",
            1,
            Sut::Emits(0),
            vec![expect("within: 20ms\ngrace: 0s")],
        ),
        (
            "duplicates",
            1,
            Sut::Emits(2),
            vec![expect("count: 1\nwithin: 1s\ngrace: 0s")],
        ),
        (
            "near miss",
            1,
            Sut::Emits(1),
            vec![expect("match: { item: gadget }\nwithin: 1s\ngrace: 0s")],
        ),
        (
            "refused",
            1,
            Sut::Refuses,
            vec![expect("none_within: 20ms")],
        ),
    ])
    .await;
    summary(results, listener)
}

/// What changes from run to run, redacted.
const FILTERS: &[(&str, &str)] = &[
    // Correlation ids (UUIDv7), and their trace-id form.
    (
        r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[uuid]",
    ),
    (r"\b[0-9a-f]{32}\b", "[trace-id]"),
    // Wall-clock times.
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
    // Durations and latencies: 1.2ms, 850µs, 3s …
    (r"\d+(\.\d+)?(ns|µs|us|ms|s)\b", "[duration]"),
    // The nanosecond numbers of the JSON report.
    (
        r#""(\w*_ns|\w*_at|\w*_mono|latency\w*)": \d+"#,
        r#""$1": [n]"#,
    ),
    (r#""latencies_ns": \[[^\]]*\]"#, r#""latencies_ns": [..]"#),
    (r#"(time|timestamp)="[^"]*""#, r#"$1="[t]""#),
    // Store sequence numbers: the scenarios run at once, so commits interleave.
    (r"#\d+ at \[time\]", "#[seq] at [time]"),
    (r#""seq": \d+"#, r#""seq": [seq]"#),
];

fn assert_redacted(name: &str, rendered: &str) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, with) in FILTERS {
        settings.add_filter(pattern, *with);
    }
    settings.bind(|| insta::assert_snapshot!(name, rendered));
}

#[tokio::test]
async fn the_text_report() {
    let run = one_of_each_outcome().await;
    let mut text = String::new();
    for s in &run.scenarios {
        text.push_str(&format!(
            "{:?} {}: {}\n{}\n",
            s.status,
            s.name,
            super::text::headline(s),
            super::text::scenario_details(s)
        ));
    }
    text.push_str(&super::text::totals(std::slice::from_ref(&run)));
    assert_redacted("text", &text);
}

#[tokio::test]
async fn the_junit_report() {
    let run = one_of_each_outcome().await;
    assert_redacted("junit", &super::junit::render(std::slice::from_ref(&run)));
}

#[tokio::test]
async fn the_json_report() {
    let run = one_of_each_outcome().await;
    let json = serde_json::to_string_pretty(&super::json::render(std::slice::from_ref(&run)))
        .expect("serializes");
    assert_redacted("json", &json);
}
