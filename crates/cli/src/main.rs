//! The `roundtrip` command line: parse, dispatch, map the outcome to an exit code.
//!
//! Exit codes (stable, documented in the README):
//! 0 every expectation passed · 1 an expectation failed · 2 usage or suite-file error ·
//! 3 harness or infrastructure error.

use std::process::ExitCode;

use clap::Parser;

/// `eprintln!` that never panics: a closed stderr (`roundtrip … 2>&1 | head`) must not
/// turn a documented exit code into a panic (101). Shadows the standard macro in every
/// module of this crate.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics (see `eprintln!`).
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod dispatch;
mod display;
mod exit;

/// mimalloc, not the system allocator: under load the engine allocates per event on
/// every thread, and glibc's malloc held `roundtrip load` through NATS to 40,000
/// events/s where mimalloc sustains 90,000 (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // Processes the SUT leaves behind (a wrapper's children) are reparented to us and
    // swept when the run stops, instead of going to PID 1.
    roundtrip::engine::become_subreaper();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(exit::HARNESS);
        }
    };
    let code = runtime.block_on(dispatch::dispatch(cli));
    // Do not wait for stray blocking tasks (a hung SUT pipe) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}
