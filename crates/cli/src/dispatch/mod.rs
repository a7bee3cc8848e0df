//! One module per subcommand; each returns the process exit code.

use crate::args::{Cli, Command};

#[cfg(feature = "aws")]
mod aws_cleanup;
mod check;
mod report;
mod run;
mod runs;

/// Runs the subcommand.
pub async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Check(args) => check::check(&args),
        Command::Report(args) => report::report(args).await,
        Command::Runs(args) => runs::runs(args).await,
        #[cfg(feature = "aws")]
        Command::AwsCleanup(args) => aws_cleanup::aws_cleanup(args).await,
    }
}

/// Prints an error and its sources on stderr: `error: failed to …: cause`.
pub fn print_error(e: &dyn std::error::Error) {
    eprintln!(
        "error: {}",
        roundtrip_core::escape::escape_lines(&roundtrip_core::redact::text(
            &roundtrip::engine::error_chain(e)
        ))
    );
}
