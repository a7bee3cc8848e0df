//! Command-line arguments. These types stop here: dispatch resolves them into the
//! library's own configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Test asynchronous, event-driven systems end to end: send events in, listen on the
/// outputs, and check what arrives (or must not) within its SLA.
#[derive(Debug, Parser)]
#[command(
    name = "roundtrip",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run suites and report. Exit code 0: all passed; 1: an expectation failed;
    /// 2: usage or suite-file error; 3: harness or infrastructure error.
    Run(RunArgs),
    /// Run one scenario under load: events sent on an open-loop schedule (`--rate` for
    /// `--for`, or `--stages`), every output accounted per stream (delivered, lost,
    /// duplicate, reordered, late), latency from each event's intended send time, the
    /// scenario's aggregate SLAs (`load.thresholds`) checked. Exit code 0: every SLA
    /// held; 1: one was missed (or the run was interrupted); 2: usage or suite-file
    /// error; 3: harness or infrastructure error.
    Load(LoadArgs),
    /// Validate suite files without running anything.
    Check(CheckArgs),
    /// Re-render a past run from the store alone.
    Report(ReportArgs),
    /// List recent runs in the store.
    Runs(RunsArgs),
    /// Bring the store's schema up to date, as a step of its own (before services and
    /// runners open it with `migrate=false`). Exit code 3 if the store cannot be reached.
    Migrate(MigrateArgs),
    /// Delete runs older than `--older-than`, with everything they recorded (the
    /// Postgres store; SQLite files are deleted whole, DynamoDB expires items itself).
    Gc(GcArgs),
    /// Remove AWS queues, rules and subscriptions that a killed run left behind
    /// (`roundtrip-h-…`). Listeners remove their own when a run ends, also when it fails
    /// or is interrupted; this is for a process that died. Exit code 3 if any removal
    /// failed.
    #[cfg(feature = "aws")]
    AwsCleanup(AwsCleanupArgs),
    /// (Needs the cargo feature `aws`.)
    #[cfg(not(feature = "aws"))]
    #[command(hide = true, disable_help_flag = true)]
    AwsCleanup {
        /// Whatever was given: the command is not in this build.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Run the listener service: record the config's channels continuously into the
    /// store, and serve what was recorded over HTTP (docs/deploy.md). Stops on Ctrl-C or
    /// SIGTERM after committing what it received. Exit code 2: a config error; 3: a
    /// listener, the store or the API could not start.
    Listen(ListenArgs),
    /// Serve the engine protocol (docs/protocol.md): JSON-RPC 2.0 requests on stdin, one
    /// per line, answered on stdout, for a client in another language (the Python
    /// package's pytest plugin). Ends when stdin closes, on `shutdown`, Ctrl-C or
    /// SIGTERM, after closing every open run. Exit code 0, or 2 without `--stdio`.
    Serve(ServeArgs),
    /// Print a shell completion script: `roundtrip completions bash > /etc/bash_completion.d/roundtrip`.
    Completions(CompletionsArgs),
}

/// The store when neither `--store`, ROUNDTRIP_STORE nor (for `listen`) the config
/// names one.
pub const DEFAULT_STORE: &str = ".roundtrip/store.sqlite";

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The listener config (YAML; schema/listen.schema.json).
    pub config: PathBuf,
    /// The store, overriding the config's `store` (default `.roundtrip/store.sqlite`).
    #[arg(long, env = "ROUNDTRIP_STORE")]
    pub store: Option<String>,
    /// Validate the config and exit, starting nothing.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub vars: VarsArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Speak the protocol on stdin and stdout (the only transport so far).
    #[arg(long, required = true)]
    pub stdio: bool,
    /// The store every run records into (default `.roundtrip/store.sqlite`).
    #[arg(long, env = "ROUNDTRIP_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Variables for `{{ env("NAME") }}`. Precedence, highest first: `--var`, the process
/// environment, `--env-file` (a later file overrides an earlier one).
#[derive(Debug, Args)]
pub struct VarsArgs {
    /// Set a variable for `env("NAME")`; overrides the environment. Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read `NAME=VALUE` lines for `env("NAME")` from a file; the environment overrides
    /// them. Repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
}

#[cfg(feature = "aws")]
#[derive(Debug, Args)]
pub struct AwsCleanupArgs {
    /// Only resources created longer ago than this (so that running runs keep theirs).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
    /// Only the resources of this run.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// The AWS region (default: the standard configuration, e.g. AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// The endpoint URL, for an emulator (default: the standard configuration, e.g.
    /// AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store: an SQLite file path, `sqlite:PATH`, `sqlite::memory:`, (feature
    /// `postgres`) `postgres://USER@HOST/DATABASE?schema=roundtrip`, or (feature
    /// `dynamodb`) `dynamodb://TABLE?region=…&endpoint=…&ttl=30d`.
    #[arg(
        long,
        env = "ROUNDTRIP_STORE",
        default_value = DEFAULT_STORE
    )]
    pub store: String,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write the JSON report (docs/report-format.md) here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the HTML report here: one self-contained file (charts inlined, no network
    /// request) with verdicts, evidence and timelines, and a load run's charts.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Suite files (YAML).
    #[arg(required = true, value_name = "SUITE")]
    pub suites: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArg,
    /// How many scenarios run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Run only the scenarios whose name contains TEXT, or matches it as a glob (`*`,
    /// `?`) when it has one. Repeatable: a scenario runs when any filter selects it.
    #[arg(long, value_name = "TEXT")]
    pub filter: Vec<String>,
    /// Print the scenarios that would run (after `--filter`) and exit.
    #[arg(long)]
    pub list: bool,
    /// Start no further scenario, and no further suite file, once one has failed; those
    /// not started are reported as skipped. Scenarios already running finish (with
    /// `--concurrency 1`, nothing runs after the first failure).
    #[arg(long)]
    pub fail_fast: bool,
    /// A listener service (`roundtrip listen`) that records the suite's outputs in a
    /// deployed environment, e.g. `http://listener.staging:7070`: the channels it
    /// records are not listened on here; the run waits on what it recorded. Also
    /// ROUNDTRIP_REMOTE in the environment or an `--env-file` (a profile). Its read token
    /// comes from ROUNDTRIP_REMOTE_TOKEN there too (never a flag: flags show in `ps`),
    /// and for an https:// service with a private CA, ROUNDTRIP_REMOTE_CA names its PEM.
    #[arg(long, env = "ROUNDTRIP_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    /// Print only failures, errors and the final line.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub vars: VarsArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The suite file (YAML).
    #[arg(value_name = "SUITE")]
    pub suite: PathBuf,
    /// The scenario to run under load (one send step; its `load:` block gives the
    /// streams, the in-flight cap and the aggregate SLAs).
    #[arg(long, value_name = "NAME")]
    pub scenario: String,
    /// The rate: `500/s`, `30/m`, or a ramp over the whole duration, `100/s..1000/s`.
    #[arg(
        long,
        value_name = "RATE",
        requires = "duration",
        conflicts_with = "stages"
    )]
    pub rate: Option<String>,
    /// How long to send at `--rate`, e.g. `30s`, `10m`.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, requires = "rate")]
    pub duration: Option<std::time::Duration>,
    /// Stages instead of `--rate`/`--for`: `100/s for 10s, 100/s..1000/s for 1m, 1000/s for 5m`.
    #[arg(long, value_name = "STAGES", required_unless_present = "rate")]
    pub stages: Option<String>,
    /// The length of an interval: one line of the live view, one point of the series.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// The longest to wait after the last send for what is in flight (default: the
    /// longest SLA plus grace of the scenario's expectations).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain: Option<std::time::Duration>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArg,
    /// Print no line per interval, only the final account.
    #[arg(long, short)]
    pub quiet: bool,
    /// Share the run with other workers, N in all (processes, on any machines, e.g. the
    /// pods of a Kubernetes Indexed Job): each runs the whole schedule and accounts for
    /// its own events, their schedules start together once all have joined, and the
    /// run's account (`roundtrip report`) merges theirs. Needs `--worker-index`,
    /// `--run-id` and a store every worker reaches (`postgres://…` or `dynamodb://…`).
    #[arg(
        long,
        value_name = "N",
        requires_all = ["worker_index", "run_id"],
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub workers: Option<u16>,
    /// This worker's index, 0 to N-1 (in an Indexed Job, `$JOB_COMPLETION_INDEX`).
    #[arg(long, value_name = "I", requires = "workers")]
    pub worker_index: Option<u16>,
    /// The shared run's id, the same for every worker and new for each run (e.g. the
    /// job's name).
    #[arg(long, value_name = "ID", requires = "workers")]
    pub run_id: Option<String>,
    /// The longest a worker of a shared run waits for all the others to join.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub join_timeout: std::time::Duration,
    #[command(flatten)]
    pub vars: VarsArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Suite files (YAML).
    #[arg(required = true, value_name = "SUITE")]
    pub suites: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarsArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id (see `roundtrip runs`); `latest` for the most recent run.
    pub run_id: String,
    /// Also list every observation of the event with this correlation id: what it
    /// caused, on every channel, in the store's sequence order.
    #[arg(long, value_name = "ID")]
    pub correlation: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Delete the runs that started longer ago than this, e.g. `7d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}
