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
    /// Validate suite files without running anything.
    Check(CheckArgs),
    /// Re-render a past run from the store alone.
    Report(ReportArgs),
    /// List recent runs in the store.
    Runs(RunsArgs),
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store: an SQLite file path, `sqlite:PATH` or `sqlite::memory:`.
    #[arg(
        long,
        env = "ROUNDTRIP_STORE",
        default_value = ".roundtrip/store.sqlite"
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
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Suite files (YAML).
    #[arg(required = true, value_name = "SUITE")]
    pub suites: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id (see `roundtrip runs`); `latest` for the most recent run.
    pub run_id: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}
