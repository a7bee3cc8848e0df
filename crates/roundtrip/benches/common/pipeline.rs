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
