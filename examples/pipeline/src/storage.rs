//! The pipeline's initial storage: a directory with one JSON file per accepted event.
//!
//! An event is stored as `<seq>-<id>.json`, where `seq` is a zero-padded arrival counter
//! (so names sort in arrival order) and `id` the event's uuid. The file holds the event
//! body, the propagated request headers and the time it was accepted ([`StoredEvent`]).
//!
//! Writes are atomic and durable: the bytes go to a hidden temporary file in the same
//! directory (`.<name>.tmp-<uuid>`), which is flushed to disk and then renamed into place;
//! on Unix the directory is flushed too. A reader never sees half a file, and an event
//! acknowledged with `202` survives a crash. The processing loop deletes an event once it
//! is emitted (or dropped); whatever is left when the pipeline stops is picked up by
//! [`Storage::open`] on the next start.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::propagate::Propagated;

/// One accepted event, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event id answered to the producer (a uuid).
    pub id: String,
    /// The arrival counter.
    pub seq: u64,
    /// When the event was accepted, in milliseconds since the Unix epoch.
    pub accepted_unix_ms: u64,
    /// The propagated request headers.
    #[serde(default)]
    pub headers: Propagated,
    /// The event body.
    pub body: Map<String, Value>,
}

impl StoredEvent {
    /// The event's file name in the storage directory.
    pub fn file_name(&self) -> String {
        format!("{:020}-{}.json", self.seq, self.id)
    }
}

/// A storage operation that failed on a path.
#[derive(Debug)]
pub struct StorageError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl StorageError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.path.display())
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The event directory.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    next_seq: AtomicU64,
}

impl Storage {
    /// Opens (creating it if needed) the storage directory and returns it with the events
    /// left from an earlier run, in arrival order. Leftover temporary files (writes that
    /// were never acknowledged) are removed; unreadable event files are reported on stderr
    /// and left in place.
    pub fn open(dir: &Path) -> Result<(Self, Vec<StoredEvent>), StorageError> {
        fs::create_dir_all(dir)
            .map_err(|e| StorageError::new("create the storage directory", dir, e))?;
        let entries = fs::read_dir(dir)
            .map_err(|e| StorageError::new("list the storage directory", dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| StorageError::new("list the storage directory", dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') && name.contains(".tmp-") {
                // An interrupted write: never acknowledged, so never an event.
                let _ = fs::remove_file(entry.path());
            } else if !name.starts_with('.') && name.ends_with(".json") {
                names.push(name);
            }
        }
        names.sort_unstable();

        let mut events = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<StoredEvent>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(event) => events.push(event),
                Err(e) => eprintln!(
                    "pipeline: skipping unreadable stored event {}: {e}",
                    path.display()
                ),
            }
        }
        let next_seq = events.iter().map(|e| e.seq + 1).max().unwrap_or(0);
        let storage = Self {
            dir: dir.to_owned(),
            next_seq: AtomicU64::new(next_seq),
        };
        Ok((storage, events))
    }

    /// Stores a new event durably and returns it. Blocking: call from a blocking thread.
    pub fn store(
        &self,
        body: Map<String, Value>,
        headers: Propagated,
    ) -> Result<StoredEvent, StorageError> {
        let accepted_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let event = StoredEvent {
            id: Uuid::now_v7().to_string(),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            accepted_unix_ms,
            headers,
            body,
        };
        let bytes = serde_json::to_vec(&event).map_err(|e| {
            StorageError::new("encode event", &self.dir.join(event.file_name()), e.into())
        })?;
        let name = event.file_name();
        write_atomically(&self.dir, &name, &bytes, Durability::Durable)
            .map_err(|e| StorageError::new("write event file", &self.dir.join(&name), e))?;
        Ok(event)
    }

    /// Deletes a processed event; an event already gone is fine. Blocking.
    pub fn delete(&self, event: &StoredEvent) -> Result<(), StorageError> {
        let path = self.dir.join(event.file_name());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::new("delete event file", &path, e)),
        }
    }
}

/// Whether [`write_atomically`] flushes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush the file and (on Unix) the directory: the write survives a power loss.
    Durable,
    /// Only rename into place: readers never see half a file, but the OS may lose it.
    Atomic,
}

/// Writes `bytes` to `dir/name` atomically: a hidden temporary file in `dir`, renamed into
/// place (replacing any file of that name). [`Durability::Durable`] flushes the file
/// before the rename and, on Unix, the directory after it. Blocking.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp-{}", Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        fs::rename(&temp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    if durability == Durability::Durable {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_stored_event_reads_back_after_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (storage, leftover) = Storage::open(dir.path()).expect("open");
        assert!(leftover.is_empty());
        let headers = Propagated {
            correlation_id: Some("c-1".to_owned()),
            run: Some("run-9".to_owned()),
            traceparent: None,
        };
        let first = storage
            .store(body(json!({"item": "widget", "qty": 2})), headers)
            .expect("store");
        let second = storage
            .store(body(json!({"item": "gadget"})), Propagated::default())
            .expect("store");
        assert_eq!((first.seq, second.seq), (0, 1));
        assert_ne!(first.id, second.id);
        assert_eq!(
            listing(dir.path()),
            vec![first.file_name(), second.file_name()]
        );

        drop(storage);
        let (storage, leftover) = Storage::open(dir.path()).expect("reopen");
        assert_eq!(leftover, vec![first.clone(), second.clone()]);
        let third = storage
            .store(body(json!({})), Propagated::default())
            .expect("store");
        assert_eq!(third.seq, 2, "the counter continues after a restart");
    }

    #[test]
    fn file_names_sort_in_arrival_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (storage, _) = Storage::open(dir.path()).expect("open");
        // Push the counter past a power of ten, where unpadded names would mis-sort.
        storage.next_seq.store(9, Ordering::Relaxed);
        let nine = storage.store(body(json!({"n": 9})), Propagated::default());
        let ten = storage.store(body(json!({"n": 10})), Propagated::default());
        let (nine, ten) = (nine.expect("store"), ten.expect("store"));
        assert!(nine.file_name() < ten.file_name());
        assert!(nine.file_name().ends_with(&format!("-{}.json", nine.id)));
        let (_, leftover) = Storage::open(dir.path()).expect("reopen");
        assert_eq!(leftover, vec![nine, ten]);
    }

    #[test]
    fn deleting_removes_the_file_and_tolerates_a_missing_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (storage, _) = Storage::open(dir.path()).expect("open");
        let event = storage
            .store(body(json!({"a": 1})), Propagated::default())
            .expect("store");
        storage.delete(&event).expect("delete");
        assert!(listing(dir.path()).is_empty());
        storage.delete(&event).expect("deleting twice is fine");
    }

    #[test]
    fn leftover_temp_files_are_removed_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(
            dir.path().join(".00000000000000000003-x.json.tmp-abc"),
            b"{",
        )
        .expect("write");
        fs::write(
            dir.path().join("00000000000000000004-bad.json"),
            b"not json",
        )
        .expect("write");
        fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
        let (storage, leftover) = Storage::open(dir.path()).expect("open");
        assert!(leftover.is_empty());
        assert_eq!(
            listing(dir.path()),
            vec!["00000000000000000004-bad.json", "notes.txt"]
        );
        let event = storage
            .store(body(json!({})), Propagated::default())
            .expect("store");
        assert_eq!(event.seq, 0);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file_and_replace_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_atomically(dir.path(), "a.json", b"one", Durability::Durable).expect("write");
        write_atomically(dir.path(), "a.json", b"two", Durability::Atomic).expect("write");
        assert_eq!(listing(dir.path()), vec!["a.json"]);
        assert_eq!(fs::read(dir.path().join("a.json")).expect("read"), b"two");
    }

    #[test]
    fn a_failed_atomic_write_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        assert!(write_atomically(&missing, "a.json", b"x", Durability::Durable).is_err());
    }
}
