//! The `dir` transport: a directory as a channel, the local stand-in for an object store.
//!
//! ## Producer
//! Each event becomes one file, `<path>/<key>`, where the key is the channel's rendered
//! `file_name` (by default `<correlation id>.json`). The file is written atomically: the
//! body goes to a hidden temporary file in the same directory (`.<name>.tmp-<uuid>`),
//! is flushed to disk, then renamed into place, so a reader never sees half a file.
//! The directory is created if missing.
//!
//! ## Listener
//! Watches the directory (created if missing) for new files, without a platform file
//! watcher: it compares directory listings, every 2 ms while files keep arriving, backing
//! off to every 50 ms when idle. The run's report says the listener polls.
//!
//! - Files present when the listener starts are not observations.
//! - Dotfiles and names containing `.tmp` are ignored (temporary files of writers that
//!   rename into place), and so are names without the channel's `suffix`, if it has one.
//! - Each new file is read once, in full, and recorded with its name as the key; it is
//!   never recorded again during the run, even if it is rewritten.
//! - Writers must create files atomically (write elsewhere, then rename into the
//!   directory), as the producer does: a file written in place may be read before it is
//!   complete.
//! - [`RunningListener::stop`](super::RunningListener::stop) scans one last time, so every file renamed in before the
//!   stop is recorded.
//!
//! Files stay where they are, so a run records them at least once.

mod listener;
mod producer;

pub use listener::DirListener;
pub use producer::DirProducer;

use std::io;
use std::path::{Path, PathBuf};

use roundtrip_core::model::DirChannel;

use crate::transport::{DriverContext, Listener, PlanError, Producer};

/// The producer for a `dir` channel.
pub fn producer(
    channel: &str,
    spec: &DirChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(DirProducer::new(channel, spec, ctx)))
}

/// The listener for a `dir` channel.
pub fn listener(
    channel: &str,
    spec: &DirChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(DirListener::new(channel, spec, ctx)))
}

/// The largest file the listener reads; larger files are counted as faults.
pub const MAX_FILE: u64 = 64 << 20;

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base_dir.join(path)
    }
}

/// An IO failure on a path; the message names the path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
struct PathError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_suite_directory() {
        assert_eq!(
            resolve(Path::new("/suites"), "out"),
            PathBuf::from("/suites/out")
        );
        assert_eq!(
            resolve(Path::new("/suites"), "/tmp/x"),
            PathBuf::from("/tmp/x")
        );
    }
}
