//! The command line, and its resolution into a [`Config`]: the clap types stop here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use reqwest::Url;

use crate::emit::{Output, broker};
use crate::faults::FaultConfig;
use crate::transform::TransformConfig;

/// An example asynchronous system under test for roundtrip.
///
/// `POST /events` stores each JSON object in the data directory and answers 202; a
/// separate processing loop later uppercases its string values, adds `"status":
/// "processed"` and a `processed_at` timestamp, and emits it to the output. Invalid events
/// (`"valid": false`, a negative `qty`, `"poison": true`) go to the dead-letter output with
/// an `error` field. The headers `x-correlation-id`, `x-roundtrip-run` and `traceparent`
/// are carried to HTTP outputs; directory outputs are named `<correlation id>.json`.
///
/// Once listening, the pipeline prints one line, `pipeline listening on http://<addr>`, to
/// stdout. Fault flags make it misbehave on purpose, reproducibly for a given `--seed`.
///
/// Exit codes: 0 after SIGTERM or Ctrl-C, 2 for a usage or startup error (such as the
/// port being taken), 101 for `--crash-after`, 1 for any other failure.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, max_term_width = 100)]
#[command(group(
    ArgGroup::new("output").required(true).args(["emit", "emit_dir", "emit_nats"])
))]
#[command(group(
    ArgGroup::new("dead_letters")
        .required(true)
        .args(["dead_letter", "dead_letter_dir", "dead_letter_amqp"])
))]
pub struct Cli {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7001")]
    pub listen: String,

    /// The directory of stored, not yet processed events [default: a fresh temporary
    /// directory, removed on exit]. Events left there are processed on the next start.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// POST processed events to this webhook (plain http).
    #[arg(long, value_name = "URL", value_parser = parse_http_url, help_heading = "Outputs")]
    pub emit: Option<Url>,

    /// Write processed events as files `<correlation id>.json` into this directory.
    #[arg(long, value_name = "DIR", help_heading = "Outputs")]
    pub emit_dir: Option<PathBuf>,

    /// POST invalid events to this webhook (plain http).
    #[arg(long, value_name = "URL", value_parser = parse_http_url, help_heading = "Outputs")]
    pub dead_letter: Option<Url>,

    /// Write invalid events as files `<correlation id>.json` into this directory.
    #[arg(long, value_name = "DIR", help_heading = "Outputs")]
    pub dead_letter_dir: Option<PathBuf>,

    /// Publish processed events to this NATS subject (at `--nats-url`).
    #[arg(long, value_name = "SUBJECT", help_heading = "Broker outputs")]
    pub emit_nats: Option<String>,

    /// Publish invalid events to this AMQP queue, through the default exchange with
    /// publisher confirms (at `--amqp-url`). The queue must exist.
    #[arg(long, value_name = "QUEUE", help_heading = "Broker outputs")]
    pub dead_letter_amqp: Option<String>,

    /// Also send an audit record of every event's outcome (`processed`, `dead-letter`
    /// or `dropped`) to this Kafka topic (at `--kafka-brokers`).
    #[arg(long, value_name = "TOPIC", help_heading = "Broker outputs")]
    pub audit_kafka: Option<String>,

    /// The NATS server of `--emit-nats`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222",
        help_heading = "Broker outputs"
    )]
    pub nats_url: String,

    /// The AMQP broker of `--dead-letter-amqp`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "amqp://127.0.0.1:5672/%2f",
        help_heading = "Broker outputs"
    )]
    pub amqp_url: String,

    /// The bootstrap servers of `--audit-kafka`.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        help_heading = "Broker outputs"
    )]
    pub kafka_brokers: String,

    /// Fields whose string values are never uppercased, at any depth (the top-level `id`
    /// never is).
    #[arg(
        long,
        value_name = "FIELDS",
        value_delimiter = ',',
        default_value = "id,correlationId"
    )]
    pub keep_case: Vec<String>,

    /// The seed of every fault decision: the same seed and input order give the same
    /// faults.
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Faults")]
    pub seed: u64,

    /// A fixed processing delay per event, in milliseconds (at most a day). Events wait
    /// concurrently.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = parse_millis,
          help_heading = "Faults")]
    pub delay_ms: u64,

    /// An extra random delay per event, uniform in [0, MS] milliseconds (at most a day).
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = parse_millis,
          help_heading = "Faults")]
    pub jitter_ms: u64,

    /// The probability that an event is silently dropped.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability,
          help_heading = "Faults")]
    pub drop_prob: f64,

    /// The probability that an event is emitted twice.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability,
          help_heading = "Faults")]
    pub dup_prob: f64,

    /// The probability that a valid event is sent to the dead-letter output.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability,
          help_heading = "Faults")]
    pub misroute_prob: f64,

    /// Hold up to N processed events and emit them in a shuffled order (flushed when full
    /// or after 20 ms without a new event, 100 ms at most).
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Faults")]
    pub reorder_window: usize,

    /// Exit with code 101 right after the Nth event has been emitted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Faults")]
    pub crash_after: Option<u64>,

    /// Count reordering among the events with the same value of this input field (a
    /// stream, a partition), as a system that keeps order per key is judged; without it,
    /// over all events. What the faults did is printed when the pipeline stops.
    #[arg(long, value_name = "FIELD", help_heading = "Faults")]
    pub order_key: Option<String>,
}

/// The resolved configuration of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The address to listen on.
    pub listen: String,
    /// The storage directory; `None` for a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// The processed-events output.
    pub output: Output,
    /// The dead-letter output.
    pub dead_letter: Output,
    /// Where an audit record of every outcome goes, if anywhere.
    pub audit: Option<Output>,
    /// The transform options.
    pub keep_case: Vec<String>,
    /// The fault settings.
    pub faults: FaultConfig,
}

impl Config {
    /// The transform options.
    pub fn transform(&self) -> TransformConfig {
        TransformConfig {
            keep_case: self.keep_case.clone(),
        }
    }
}

impl Cli {
    /// Resolves the command line; `None` if an output pair has neither member (clap's
    /// argument groups rule that out).
    pub fn into_config(self) -> Option<Config> {
        let output = pick(self.emit, self.emit_dir).or_else(|| {
            self.emit_nats
                .map(|subject| Output::Broker(Box::new(broker::nats(&self.nats_url, &subject))))
        })?;
        let dead_letter = pick(self.dead_letter, self.dead_letter_dir).or_else(|| {
            self.dead_letter_amqp
                .map(|queue| Output::Broker(Box::new(broker::amqp(&self.amqp_url, &queue))))
        })?;
        let audit = self
            .audit_kafka
            .map(|topic| Output::Broker(Box::new(broker::kafka(&self.kafka_brokers, &topic))));
        Some(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            output,
            dead_letter,
            audit,
            keep_case: self
                .keep_case
                .into_iter()
                .map(|field| field.trim().to_owned())
                .filter(|field| !field.is_empty())
                .collect(),
            faults: FaultConfig {
                seed: self.seed,
                delay: Duration::from_millis(self.delay_ms),
                jitter_ms: self.jitter_ms,
                drop_prob: self.drop_prob,
                dup_prob: self.dup_prob,
                misroute_prob: self.misroute_prob,
                reorder_window: self.reorder_window,
                crash_after: self.crash_after,
                order_key: self.order_key,
            },
        })
    }
}

fn pick(url: Option<Url>, dir: Option<PathBuf>) -> Option<Output> {
    url.map(Output::Http).or(dir.map(Output::Dir))
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => Err("https needs TLS, which this example is built without; use http://".into()),
        other => Err(format!("the scheme must be http, not {other}")),
    }
}

/// The longest delay or jitter, one day: far beyond any SLA, and safe to add to a clock.
const MAX_MILLIS: u64 = 24 * 60 * 60 * 1000;

fn parse_millis(s: &str) -> Result<u64, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("not a whole number of milliseconds: {s}"))?;
    if ms <= MAX_MILLIS {
        Ok(ms)
    } else {
        Err(format!("at most {MAX_MILLIS} ms (a day), got {ms}"))
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("a probability is between 0 and 1, got {p}"))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pipeline").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_outputs_resolve() {
        let cli = parse(&[
            "--emit",
            "http://127.0.0.1:9/out",
            "--dead-letter-dir",
            "dlq",
        ])
        .expect("valid");
        let config = cli.into_config().expect("outputs");
        assert_eq!(config.listen, "127.0.0.1:7001");
        assert_eq!(
            config.output,
            Output::Http(Url::parse("http://127.0.0.1:9/out").expect("url"))
        );
        assert_eq!(config.dead_letter, Output::Dir(PathBuf::from("dlq")));
        assert_eq!(config.keep_case, ["id", "correlationId"]);
        assert_eq!(config.faults.seed, 1);
        assert_eq!(config.faults.crash_after, None);
    }

    #[test]
    fn fault_flags_resolve() {
        let cli = parse(&[
            "--emit-dir=a",
            "--dead-letter-dir=b",
            "--delay-ms=600",
            "--jitter-ms=5",
            "--drop-prob=0.25",
            "--dup-prob=1",
            "--reorder-window=8",
            "--crash-after=3",
            "--seed=42",
            "--keep-case=sku, name",
        ])
        .expect("valid");
        let config = cli.into_config().expect("outputs");
        assert_eq!(config.keep_case, ["sku", "name"]);
        assert_eq!(
            config.faults,
            FaultConfig {
                seed: 42,
                delay: Duration::from_millis(600),
                jitter_ms: 5,
                drop_prob: 0.25,
                dup_prob: 1.0,
                misroute_prob: 0.0,
                reorder_window: 8,
                crash_after: Some(3),
                order_key: None,
            }
        );
    }

    #[test]
    fn each_output_pair_needs_exactly_one() {
        let missing = parse(&["--emit-dir", "a"]).expect_err("no dead-letter output");
        assert_eq!(missing.kind(), ErrorKind::MissingRequiredArgument);
        let both = parse(&[
            "--emit-dir",
            "a",
            "--emit",
            "http://x/",
            "--dead-letter-dir",
            "b",
        ])
        .expect_err("two outputs");
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            ["--drop-prob", "1.5"],
            ["--dup-prob", "-0.1"],
            ["--emit", "https://example.com/"],
            ["--emit", "not a url"],
            ["--crash-after", "0"],
            ["--delay-ms", "86400001"],
            ["--jitter-ms", "-1"],
        ] {
            let mut all = vec!["--emit-dir", "a", "--dead-letter-dir", "b"];
            if args[0] == "--emit" {
                all.drain(0..2);
            }
            all.extend(args);
            assert!(parse(&all).is_err(), "{args:?}");
        }
    }
}
