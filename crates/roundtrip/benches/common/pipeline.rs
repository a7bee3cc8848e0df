//! What the benchmarks against the example pipeline share: how it is started.

/// The command that builds (release) and starts the example pipeline, then `args`.
pub fn command(args: &[&str]) -> Vec<String> {
    [
        "cargo",
        "run",
        "--release",
        "--quiet",
        "--package",
        "roundtrip-example-pipeline",
        "--bin",
        "pipeline",
        "--",
    ]
    .iter()
    .chain(args)
    .map(|s| (*s).to_owned())
    .collect()
}

/// A suite that starts the pipeline with `faults` (such as `--delay-ms 1000`) as its
/// SUT: channel `in` is its HTTP input, `out` a webhook it emits to.
pub fn suite(name: &str, faults: &[&str]) -> roundtrip::harness::HarnessBuilder {
    let mut args = vec![
        "--listen",
        "127.0.0.1:{{ port.in }}",
        "--emit",
        "{{ channel.out.url }}",
        "--dead-letter",
        "http://127.0.0.1:{{ port.nowhere }}/dead-letter",
    ];
    args.extend_from_slice(faults);
    roundtrip::harness::Harness::builder(name)
        .sut(command(&args), ready())
        .http("in", "http://127.0.0.1:{{ port.in }}/events")
        .webhook("out", "127.0.0.1:0", "/processed")
}

/// The readiness probe of the pipeline started by a suite: its one line on stdout, within
/// ten minutes (the first start builds it).
pub fn ready() -> roundtrip::core::model::ReadyProbe {
    roundtrip::core::model::ReadyProbe {
        http: None,
        tcp: None,
        log: Some("pipeline listening on".into()),
        within: roundtrip::core::model::DurationSpec(std::time::Duration::from_secs(600)),
    }
}
