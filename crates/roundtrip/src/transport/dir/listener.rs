//! The `dir` listener: compares directory listings, every 2 ms while files arrive and
//! every 50 ms when idle.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use roundtrip_core::model::DirChannel;
use tokio::sync::oneshot;

use crate::transport::dir::{MAX_FILE, resolve};
use crate::transport::{
    Delivery, DriverContext, ListenError, Listener, ObservationSink, Received, RunningListener,
};

/// The polling interval while files keep arriving.
const ACTIVE_INTERVAL: Duration = Duration::from_millis(2);

/// The polling interval once the directory has been quiet for a while.
const IDLE_INTERVAL: Duration = Duration::from_millis(50);

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
            Delivery::AtLeastOnce,
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
