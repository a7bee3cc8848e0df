//! The JSON report: the [`RunSummary`] itself, versioned by `format_version`, plus
//! latency summaries per expectation. Documented in `docs/report-format.md`.

use std::path::Path;

use roundtrip_core::latency::LatencySummary;
use roundtrip_core::run::RunSummary;
use serde_json::{Value, json};

/// The JSON report of one or more runs (one per suite file):
/// `{ "format_version", "passed", "failed", "runs": [RunSummary + latency, …] }`.
pub fn render(summaries: &[RunSummary]) -> Value {
    let runs: Vec<Value> = summaries.iter().map(render_run).collect();
    let passed: usize = summaries.iter().map(RunSummary::passed).sum();
    let failed: usize = summaries.iter().map(RunSummary::failed).sum();
    json!({
        "format_version": roundtrip_core::run::REPORT_FORMAT_VERSION,
        "passed": passed,
        "failed": failed,
        "runs": runs,
    })
}

fn render_run(summary: &RunSummary) -> Value {
    let mut value = serde_json::to_value(summary).unwrap_or(Value::Null);
    // Add latency summaries beside the raw samples, so consumers need no statistics.
    if let Some(scenarios) = value.get_mut("scenarios").and_then(Value::as_array_mut) {
        for (scenario, result) in scenarios.iter_mut().zip(&summary.scenarios) {
            let Some(exps) = scenario
                .get_mut("expectations")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for (exp, verdict) in exps.iter_mut().zip(&result.expectations) {
                if let Some(obj) = exp.as_object_mut() {
                    let latency = LatencySummary::from_ns(&verdict.latencies_ns);
                    obj.insert("latency".into(), json!(latency));
                }
            }
        }
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert("passed".into(), json!(summary.passed()));
        obj.insert("failed".into(), json!(summary.failed()));
    }
    value
}

/// Writes the JSON report to `path` (pretty-printed).
pub fn write(summaries: &[RunSummary], path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&render(summaries)).map_err(std::io::Error::other)?;
    write_atomic(path, text.as_bytes())
}

/// Writes a report to `path`. A new path or a regular file is written atomically (a
/// temporary file in the same directory, then a rename), so a reader never sees half a
/// report. Anything else is written through and never replaced: a symlink keeps
/// pointing where it pointed (its target gets the report), and a device or FIFO
/// (`/dev/stdout`, a pipe made with `mkfifo`) receives the bytes; renaming over one
/// would replace it with a regular file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(meta) if meta.file_type().is_dir() => {
            return Err(std::io::Error::other(
                "it is a directory; give a file path for the report",
            ));
        }
        Ok(_) => return write_through(path, bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes into what `path` is or points to, truncating a regular file.
fn write_through(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let target_is_file = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).truncate(target_is_file);
    // A FIFO nobody reads would block the open forever: open it without waiting, and
    // say so when there is no reader.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    }
    // A reader that is just starting gets two seconds to open its end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut file = loop {
        match options.open(path) {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::other(
                        "it is a FIFO that nobody reads; start the reader first",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    // Then write in blocking mode: a reader that is slow is waited for.
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        let _ = nix::fcntl::fcntl(
            file.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
    }
    file.write_all(bytes)?;
    file.flush()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_or_a_new_path_is_replaced_atomically() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("sub/report.json");
        write_atomic(&path, b"one").expect("a new path");
        write_atomic(&path, b"two").expect("an existing file");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        let err = write_atomic(dir.path(), b"x").expect_err("a directory");
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn a_symlink_is_written_through_and_kept() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let target = dir.path().join("target.json");
        std::fs::write(&target, b"a much longer old content").expect("write");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        write_atomic(&link, b"new").expect("through the link");
        let meta = std::fs::symlink_metadata(&link).expect("stat");
        assert!(meta.file_type().is_symlink(), "the link is still a link");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
    }

    /// A FIFO named `pipe` in `dir`.
    fn mkfifo(dir: &Path) -> std::path::PathBuf {
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        fifo
    }

    #[test]
    fn a_fifo_without_a_reader_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let fifo = mkfifo(dir.path());
        let err = write_atomic(&fifo, b"{}").expect_err("nobody reads it");
        assert!(err.to_string().contains("nobody reads"), "{err}");
    }

    #[test]
    fn a_fifo_receives_the_report_and_is_not_replaced() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let fifo = mkfifo(dir.path());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).expect("read the fifo"))
        };
        write_atomic(&fifo, b"{\"ok\":true}").expect("into the fifo");
        assert_eq!(reader.join().expect("the reader"), b"{\"ok\":true}");
        let meta = std::fs::symlink_metadata(&fifo).expect("stat");
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()),
            "still a FIFO"
        );
    }
}
