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

/// Refuses `--json` and `--junit` naming the same file: one would silently overwrite
/// the other.
pub fn check_outputs(output: &crate::args::OutputArgs) -> Result<(), u8> {
    let (Some(json), Some(junit)) = (&output.json, &output.junit) else {
        return Ok(());
    };
    let same = json == junit
        || matches!(
            (std::fs::canonicalize(json), std::fs::canonicalize(junit)),
            (Ok(a), Ok(b)) if a == b
        );
    if same {
        eprintln!(
            "error: --json and --junit both name {}: one report would overwrite the other; \
             give each its own file",
            json.display()
        );
        return Err(crate::exit::USAGE);
    }
    Ok(())
}
