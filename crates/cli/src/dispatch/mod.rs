//! One module per subcommand; each returns the process exit code.

use crate::args::{Cli, Command};

#[cfg(feature = "aws")]
mod aws_cleanup;
mod check;
mod listen;
mod load;
mod maintain;
mod report;
mod run;
mod runs;
mod serve;

/// Runs the subcommand.
pub async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Load(args) => load::load(args).await,
        Command::Check(args) => check::check(&args),
        Command::Report(args) => report::report(args).await,
        Command::Runs(args) => runs::runs(args).await,
        Command::Migrate(args) => maintain::migrate(args).await,
        Command::Gc(args) => maintain::gc(args).await,
        #[cfg(feature = "aws")]
        Command::AwsCleanup(args) => aws_cleanup::aws_cleanup(args).await,
        #[cfg(not(feature = "aws"))]
        Command::AwsCleanup { .. } => {
            eprintln!(
                "error: `roundtrip aws-cleanup` needs the cargo feature `aws`; rebuild with \
                 `cargo build -p roundtrip-cli --features aws` (or `--features full`)"
            );
            crate::exit::USAGE
        }
        Command::Listen(args) => listen::listen(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Completions(args) => completions(&args),
    }
}

fn completions(args: &crate::args::CompletionsArgs) -> u8 {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "roundtrip", &mut out);
    crate::display::out(String::from_utf8_lossy(&out).trim_end());
    crate::exit::OK
}

/// The variables `env(…)` reads: `--var`, the environment, `--env-file`. A bad file or
/// `--var` is a usage error (printed here).
pub fn resolve_vars(args: &crate::args::VarsArgs) -> Result<roundtrip_core::vars::Vars, u8> {
    let mut vars = roundtrip_core::vars::Vars::from_process();
    for file in &args.env_files {
        if let Err(e) = vars.read_file(file) {
            eprintln!("error: {e}");
            return Err(crate::exit::USAGE);
        }
    }
    for var in &args.vars {
        if let Err(e) = vars.set_arg(var) {
            eprintln!("error: {e}");
            return Err(crate::exit::USAGE);
        }
    }
    Ok(vars)
}

/// Whether a scenario name is selected by the `--filter`s (all, when there are none):
/// a filter with `*` or `?` is a glob over the whole name, any other a substring.
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            if f.contains(['*', '?']) {
                glob(f.as_bytes(), name.as_bytes())
            } else {
                name.contains(f.as_str())
            }
        })
}

/// `*` (any run of characters) and `?` (one character), over bytes; iterative with
/// one backtrack point, so it is linear in practice and never recursive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Prints an error and its sources on stderr: `error: failed to …: cause`.
pub fn print_error(e: &dyn std::error::Error) {
    eprintln!(
        "error: {}",
        roundtrip_core::escape::escape_lines(&roundtrip_core::redact::text(
            &roundtrip::error::error_chain(e)
        ))
    );
}

/// Prints a store error and returns its exit code: 2 for a store the user named wrongly
/// (or that is not there), 3 for one that failed.
pub fn store_failed(e: &roundtrip::store::StoreError) -> u8 {
    print_error(e);
    if e.is_usage() {
        crate::exit::USAGE
    } else {
        crate::exit::HARNESS
    }
}

/// Refuses two of `--json`, `--junit` and `--html` naming the same file: one report
/// would silently overwrite the other.
pub fn check_outputs(output: &crate::args::OutputArgs) -> Result<(), u8> {
    let named: Vec<(&str, &std::path::Path)> = [
        ("--json", output.json.as_deref()),
        ("--junit", output.junit.as_deref()),
        ("--html", output.html.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path?)))
    .collect();
    for (i, (a_flag, a)) in named.iter().enumerate() {
        for (b_flag, b) in &named[i + 1..] {
            let same = a == b
                || matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(x), Ok(y)) if x == y
                );
            if same {
                eprintln!(
                    "error: {a_flag} and {b_flag} both name {}: one report would overwrite the \
                     other; give each its own file",
                    a.display()
                );
                return Err(crate::exit::USAGE);
            }
        }
    }
    Ok(())
}

/// A reporter's `write`.
type WriteReport = fn(&[roundtrip_core::run::RunSummary], &std::path::Path) -> std::io::Result<()>;

/// Writes the reports `output` asks for; a report that cannot be written is a harness
/// error (printed here).
pub fn write_reports(
    output: &crate::args::OutputArgs,
    summaries: &[roundtrip_core::run::RunSummary],
) -> Result<(), u8> {
    use roundtrip::report::{html, json, junit};
    let mut result = Ok(());
    let writes: [(&str, Option<&std::path::PathBuf>, WriteReport); 3] = [
        ("JUnit", output.junit.as_ref(), junit::write),
        ("JSON", output.json.as_ref(), json::write),
        ("HTML", output.html.as_ref(), html::write),
    ];
    for (what, path, write) in writes {
        if let Some(path) = path
            && let Err(e) = write(summaries, path)
        {
            eprintln!(
                "error: failed to write the {what} report {}: {e}",
                path.display()
            );
            result = Err(crate::exit::HARNESS);
        }
    }
    result
}

/// Waits for Ctrl-C or (on Unix) SIGTERM; `None` if signals cannot be watched.
/// Ctrl-C (or SIGTERM, as CI cancellations and `timeout` send) stops a run cleanly: its
/// work ends, the SUT and listeners stop (removing what they created), the store records
/// what ran. A second signal hurries the stop (the SUT's process group is killed at
/// once) and the run is still recorded as interrupted; only a third exits at once,
/// leaving the run unfinished in the store. Returns the cancel and hurry switches.
pub fn stop_on_signals() -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let (hurry_tx, hurry) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if let Some(signal) = interrupted().await {
            eprintln!(
                "\ninterrupted by {signal}: stopping the run (again to stop faster, a third \
                 time to exit at once)"
            );
            cancel_tx.send_replace(true);
            if interrupted().await.is_some() {
                eprintln!(
                    "stopping faster: killing the system under test; the run is still recorded"
                );
                hurry_tx.send_replace(true);
                if interrupted().await.is_some() {
                    eprintln!("exiting at once: the run stays unfinished in the store");
                    std::process::exit(130);
                }
            }
        }
    });
    (cancel, hurry)
}

pub async fn interrupted() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C");
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|()| "Ctrl-C"),
            _ = term.recv() => Some("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_substrings_or_globs() {
        let f = |fs: &[&str], name: &str| {
            selected(
                name,
                &fs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        assert!(f(&[], "anything"));
        assert!(f(&["order"], "an order is processed"));
        assert!(!f(&["Order"], "an order is processed"), "case-sensitive");
        assert!(f(&["an * is processed"], "an order is processed"));
        assert!(!f(&["an *"], "the order"));
        assert!(f(&["*dead?letter*"], "goes to the dead-letter output"));
        assert!(f(&["x", "*output"], "goes to the dead-letter output"));
        assert!(!f(&["a*b*c*d"], &"ab".repeat(1000)));
        assert!(f(&["*"], ""));
    }
}
