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
//! - [`RunningListener::stop`] scans one last time, so every file renamed in before the
//!   stop is recorded.
//!
//! Files stay where they are, so a run records them at least once.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use roundtrip_core::model::DirChannel;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// The polling interval while files keep arriving.
const ACTIVE_INTERVAL: Duration = Duration::from_millis(2);
/// The polling interval once the directory has been quiet for a while.
const IDLE_INTERVAL: Duration = Duration::from_millis(50);
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

/// Writes each event as a file into a directory.
#[derive(Debug)]
pub struct DirProducer {
    channel: String,
    dir: PathBuf,
}

impl DirProducer {
    /// A producer for `channel`, writing into its `path` (relative to the suite file).
    pub fn new(channel: &str, spec: &DirChannel, ctx: &DriverContext) -> DirProducer {
        DirProducer {
            channel: channel.to_owned(),
            dir: resolve(&ctx.base_dir, &spec.path),
        }
    }

    fn unreachable(&self, what: &'static str, path: PathBuf, source: io::Error) -> ProduceError {
        ProduceError::Unreachable {
            channel: self.channel.clone(),
            source: Box::new(PathError { what, path, source }),
        }
    }
}

/// Why `name` cannot be a file name in the channel's directory, if it cannot.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".to_owned());
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "the file name `{name}` is not a plain name (no `/`, `\\`, `.` or `..`)"
        ));
    }
    Ok(())
}

#[async_trait]
impl Producer for DirProducer {
    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let name = message
            .key
            .unwrap_or_else(|| format!("{}.json", message.correlation_id));
        check_file_name(&name).map_err(|m| ProduceError::Rejected {
            channel: self.channel.clone(),
            message: m,
        })?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.unreachable("create the directory", self.dir.clone(), e))?;
        let target = self.dir.join(&name);
        let tmp = self
            .dir
            .join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&message.body).await?;
            file.sync_all().await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.unreachable("write", tmp, e));
        }
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.unreachable("rename a temporary file to", target, e));
        }
        Ok(Receipt {
            detail: Some(target.display().to_string()),
        })
    }
}

/// Watches a directory for new files.
#[derive(Debug)]
pub struct DirListener {
    channel: String,
    dir: PathBuf,
    suffix: Option<String>,
}

impl DirListener {
    /// A listener for `channel`, watching its `path` (relative to the suite file).
    pub fn new(channel: &str, spec: &DirChannel, ctx: &DriverContext) -> DirListener {
        DirListener {
            channel: channel.to_owned(),
            dir: resolve(&ctx.base_dir, &spec.path),
            suffix: spec.suffix.clone().filter(|s| !s.is_empty()),
        }
    }

    fn start_error(&self, message: String, source: io::Error) -> ListenError {
        ListenError::Start {
            channel: self.channel.clone(),
            message,
            source: Some(Box::new(source)),
        }
    }
}

#[async_trait]
impl Listener for DirListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            self.start_error(
                format!("cannot create the directory {}", self.dir.display()),
                e,
            )
        })?;
        // What is there now is not an observation: remember every name.
        let seen: HashSet<OsString> = list(&self.dir)
            .await
            .map_err(|e| {
                self.start_error(
                    format!("cannot read the directory {}", self.dir.display()),
                    e,
                )
            })?
            .into_iter()
            .map(|entry| entry.name)
            .collect();
        let endpoint = self.dir.display().to_string();
        let mut watcher = Watcher {
            dir: self.dir,
            suffix: self.suffix,
            seen,
            sink,
        };
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut interval = ACTIVE_INTERVAL;
            loop {
                tokio::select! {
                    // Stopped (or the handle dropped): one last look, then done.
                    _ = &mut stop_rx => {
                        watcher.scan().await;
                        return;
                    }
                    () = tokio::time::sleep(interval) => {}
                }
                interval = if watcher.scan().await > 0 {
                    ACTIVE_INTERVAL
                } else {
                    (interval * 2).min(IDLE_INTERVAL)
                };
            }
        });
        Ok(RunningListener::new(
            endpoint,
            "at-least-once",
            true,
            stop_tx,
            task,
        ))
    }
}

/// One directory entry that is (or may be) a regular file.
#[derive(Debug)]
struct Entry {
    name: OsString,
    path: PathBuf,
}

/// The directory's entries, except subdirectories.
async fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut read = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = read.next_entry().await? {
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            continue;
        }
        entries.push(Entry {
            name: entry.file_name(),
            path: entry.path(),
        });
    }
    Ok(entries)
}

#[derive(Debug)]
struct Watcher {
    dir: PathBuf,
    suffix: Option<String>,
    seen: HashSet<OsString>,
    sink: ObservationSink,
}

impl Watcher {
    fn wanted(&self, name: &str) -> bool {
        !name.starts_with('.')
            && !name.contains(".tmp")
            && self.suffix.as_deref().is_none_or(|s| name.ends_with(s))
    }

    /// Records every new file; returns how many new files it found.
    async fn scan(&mut self) -> usize {
        let Ok(entries) = list(&self.dir).await else {
            // The directory vanished or is unreadable for a moment; try again next time.
            return 0;
        };
        let mut new = Vec::new();
        for entry in entries {
            if self.seen.contains(&entry.name) {
                continue;
            }
            let name = entry.name.to_string_lossy().into_owned();
            if !self.wanted(&name) {
                // Temporary files are renamed away; dotfiles and other suffixes never
                // count. Remember them only if they are permanent names.
                if !name.contains(".tmp") {
                    self.seen.insert(entry.name);
                }
                continue;
            }
            let modified = tokio::fs::metadata(&entry.path)
                .await
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            new.push((modified, name, entry));
        }
        // In the order the files arrived, as far as the file system tells.
        new.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let found = new.len();
        for (_, name, entry) in new {
            self.seen.insert(entry.name);
            self.record(name, &entry.path).await;
        }
        found
    }

    async fn record(&self, name: String, path: &Path) {
        let body = match tokio::fs::metadata(path).await {
            Ok(meta) if meta.len() > MAX_FILE => None,
            Ok(_) => tokio::fs::read(path).await.ok(),
            Err(_) => None,
        };
        let Some(body) = body else {
            // Too large, or gone (deleted or renamed away) before it could be read.
            self.sink.fault();
            return;
        };
        let received = Received {
            body,
            headers: Vec::new(),
            message_id: None,
            meta: vec![("file_name".to_owned(), name.clone())],
            key: Some(name),
            redelivered: false,
            size: None,
        };
        // A store failure is counted by the sink; the file is not retried.
        let _ = self.sink.record(received).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_plain() {
        assert!(check_file_name("a.json").is_ok());
        assert!(check_file_name("").is_err());
        assert!(check_file_name("..").is_err());
        assert!(check_file_name("a/b.json").is_err());
    }

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
