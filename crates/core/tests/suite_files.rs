//! Suite files end to end: good fixtures load, every bad fixture produces the diagnostics
//! in its snapshot, and the committed JSON Schema matches the model.
//!
//! Fixtures are loaded by paths relative to the crate (the test's working directory), so
//! the file names in the snapshots are stable.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use roundtrip_core::model::{ChannelSpec, Readiness};
use roundtrip_core::suite::{self, SuiteError};

const GOOD: &str = "tests/fixtures/good";
const BAD: &str = "tests/fixtures/bad";

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("fixture directory exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load_bad(name: &str) -> SuiteError {
    let path = Path::new(BAD).join(format!("{name}.yaml"));
    suite::load(&path).expect_err("a bad fixture must not load")
}

#[test]
fn good_suites_load() {
    let files = yaml_files(GOOD);
    assert!(
        files.len() >= 3,
        "expected the good fixtures, found {files:?}"
    );
    for path in files {
        if let Err(e) = suite::load(&path) {
            panic!("{} should load:\n{e}", path.display());
        }
    }
}

#[test]
fn the_every_feature_suite_is_read_faithfully() {
    let loaded = suite::load(Path::new("tests/fixtures/good/every_feature.yaml")).expect("loads");
    assert_eq!(loaded.base_dir, Path::new(GOOD));
    let s = loaded.suite;
    let sut = s.sut.as_ref().expect("has a sut");
    // `env(…)` is rendered when the suite is loaded.
    assert_eq!(
        sut.start[2],
        format!(
            "127.0.0.1:{}",
            std::env::var("PIPELINE_PORT").unwrap_or_else(|_| "7001".into())
        )
    );
    assert_eq!(
        sut.ready.readiness(),
        Some(Readiness::Http("http://127.0.0.1:7001/health".into()))
    );
    assert_eq!(s.correlate.json.as_deref(), Some("$.meta.correlationId"));
    assert_eq!(
        s.correlate.header, None,
        "an explicit rule replaces the default"
    );
    let transports: Vec<&str> = s.channels.values().map(ChannelSpec::transport).collect();
    assert_eq!(transports, ["dir", "http", "webhook"]);
    match &s.channels["orders_out"] {
        ChannelSpec::Webhook(w) => assert_eq!(w.max_payload.map(|b| b.0), Some(65_536)),
        other => panic!("orders_out should be a webhook, got {other:?}"),
    }
    let first = &s.scenarios[0];
    assert_eq!(first.send[0].repeat, 10);
    assert_eq!(first.send[0].concurrency, 4);
    assert_eq!(
        first.send[3].body, None,
        "a step without a body sends an empty one"
    );
    assert_eq!(first.expect[0].predicates.len(), 8);
    assert_eq!(first.expect[1].within.map(|d| d.0.as_secs()), Some(90));
    assert_eq!(
        s.scenarios[1].expect[0]
            .none_within
            .map(|d| d.0.as_millis()),
        Some(1000)
    );
}

/// The in-code harness serializes a `Suite` to YAML and parses it back: that must be
/// lossless and valid for every feature.
#[test]
fn suites_survive_a_yaml_round_trip() {
    for path in yaml_files(GOOD) {
        let suite = suite::load(&path).expect("loads").suite;
        let yaml = serde_saphyr::to_string(&suite).expect("serializes");
        match suite::parse("<round trip>", &yaml) {
            Ok(again) => assert_eq!(again, suite, "{}", path.display()),
            Err(e) => panic!("{} does not round-trip:\n{e}\n{yaml}", path.display()),
        }
    }
}

#[test]
fn parse_names_the_source_and_does_no_io() {
    let err = suite::parse("<in-code suite>", "name: x\nchannels: {}\nscenarios: []\n")
        .expect_err("no scenarios");
    assert_eq!(err.diagnostics.len(), 1);
    let d = &err.diagnostics[0];
    assert_eq!(
        (d.file.as_str(), d.line, d.column),
        ("<in-code suite>", 3, 1)
    );
    assert!(d.help.is_some());
}

#[test]
fn an_unreadable_file_is_a_diagnostic_too() {
    let err = suite::load(Path::new("tests/fixtures/no-such-suite.yaml")).expect_err("missing");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (0, 0));
    assert!(
        d.message.starts_with("read the suite file: "),
        "{}",
        d.message
    );
    assert!(
        err.to_string()
            .contains(" --> tests/fixtures/no-such-suite.yaml\n")
    );
}

#[test]
fn semantic_problems_are_all_reported_in_file_order() {
    let err = load_bad("expectation_rules");
    assert!(err.diagnostics.len() >= 4, "{err}");
    let positions: Vec<(u64, u64)> = err.diagnostics.iter().map(|d| (d.line, d.column)).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(positions, sorted);
}

/// One snapshot test per bad fixture; `every_bad_fixture_has_a_snapshot_test` keeps the
/// list and the directory in step.
macro_rules! bad_fixtures {
    ($($name:ident),* $(,)?) => {
        const BAD_NAMES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(stringify!($name), load_bad(stringify!($name)).to_string());
            }
        )*
    };
}

bad_fixtures!(
    bad_duration,
    several_type_errors,
    field_matchers,
    field_matchers_typo,
    plan_rules,
    bounds,
    huge_numbers,
    load_rules,
    load_limit,
    bad_schema,
    bad_templates,
    channel_addresses,
    body_conflict,
    aws_rules,
    broker_rules,
    correlate_conflict,
    correlate_json_not_plain,
    correlate_traceparent_false,
    duplicate_key,
    empty,
    expectation_rules,
    missing_key,
    missing_key_nested,
    no_scenarios,
    not_a_mapping,
    predicate_rules,
    scalar_for_list,
    scenario_names,
    sut_ready,
    sut_ready_none,
    syntax_error,
    unknown_channel,
    unknown_key,
    unknown_key_far,
    unknown_transport,
    unknown_transport_far,
    webhook_listen,
    wrong_direction,
    wrong_type,
    zero_values,
);

#[test]
fn env_is_rendered_in_channel_options_at_load() {
    let loaded = suite::load(Path::new("tests/fixtures/good/env_options.yaml")).expect("loads");
    let s = loaded.suite;
    match &s.channels["in"] {
        ChannelSpec::Http(h) => assert_eq!(h.url, "http://127.0.0.1:7001/orders/{{ run_id }}"),
        other => panic!("in should be http, got {other:?}"),
    }
    match &s.channels["out"] {
        ChannelSpec::Webhook(w) => assert_eq!(w.listen, "127.0.0.1:7002"),
        other => panic!("out should be a webhook, got {other:?}"),
    }
    assert_eq!(
        s.scenarios[0].send[0].body,
        Some(serde_json::json!({"tenant": "demo"}))
    );

    // `--var` wins over the default.
    let mut vars = roundtrip_core::vars::Vars::default();
    vars.set_arg("ROUNDTRIP_TEST_SURELY_UNSET_PORT2=47999")
        .expect("a valid --var");
    let loaded =
        suite::load_with(Path::new("tests/fixtures/good/env_options.yaml"), &vars).expect("loads");
    match &loaded.suite.channels["out"] {
        ChannelSpec::Webhook(w) => assert_eq!(w.listen, "127.0.0.1:47999"),
        other => panic!("out should be a webhook, got {other:?}"),
    }
}

#[test]
fn every_bad_fixture_has_a_snapshot_test() {
    let on_disk: BTreeSet<String> = yaml_files(BAD)
        .iter()
        .map(|p| {
            p.file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let tested: BTreeSet<String> = BAD_NAMES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(on_disk, tested);
}

fn yaml_as_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).expect("readable fixture");
    serde_saphyr::from_str(&text).expect("fixture is YAML")
}

#[test]
fn the_json_schema_accepts_the_good_suites_and_rejects_unknown_keys() {
    let validator = jsonschema::validator_for(&suite::json_schema()).expect("a valid schema");
    for path in yaml_files(GOOD) {
        let errors: Vec<String> = validator
            .iter_errors(&yaml_as_json(&path))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    for name in [
        "unknown_key",
        "unknown_transport",
        "missing_key",
        "wrong_type",
    ] {
        let doc = yaml_as_json(&Path::new(BAD).join(format!("{name}.yaml")));
        assert!(!validator.is_valid(&doc), "the schema should reject {name}");
    }
}

/// The CI drift check: the committed schemas must be what the models generate.
#[test]
fn the_committed_json_schemas_are_up_to_date() {
    for (file, schema) in [
        ("suite.schema.json", suite::json_schema()),
        ("listen.schema.json", roundtrip_core::listen::json_schema()),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schema")
            .join(file);
        let generated = serde_json::to_string_pretty(&schema).expect("serializes") + "\n";
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create schema/");
            fs::write(&path, &generated).expect("write the schema");
            continue;
        }
        let committed = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schema/{file} is out of date with its model; regenerate it with \
             `UPDATE_SCHEMA=1 cargo test -p roundtrip-core --test suite_files` and commit it"
        );
    }
}
