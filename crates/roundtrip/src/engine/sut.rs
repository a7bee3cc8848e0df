//! The system under test as a child process: start it, probe it until ready, keep the
//! tail of its output for the report, stop it (SIGTERM, then SIGKILL after the grace),
//! and reap it.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roundtrip_core::escape;
use roundtrip_core::model::{Readiness, SutSpec};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::HarnessError;

/// How many lines of SUT output the report keeps.
const LOG_TAIL: usize = 200;
/// How many bytes of one output line are kept.
const LINE_KEPT: usize = 4096;

/// A running SUT process.
#[derive(Debug)]
pub struct SutProcess {
    child: Child,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    stop_grace: Duration,
    ready_after: Duration,
}

impl SutProcess {
    /// Spawns the SUT (`argv` already rendered) and waits for its readiness probe.
    /// Fails if the program cannot be spawned, exits before it is ready, or is not ready
    /// within the probe's deadline; the error carries the tail of its output.
    pub async fn start(
        spec: &SutSpec,
        argv: &[String],
        base_dir: &Path,
    ) -> Result<SutProcess, HarnessError> {
        let readiness = spec.ready.readiness().ok_or_else(|| HarnessError::Sut {
            message: "the readiness probe needs exactly one of `http`, `tcp` or `log`".into(),
        })?;
        let (program, args) = argv.split_first().ok_or_else(|| HarnessError::Sut {
            message: "`sut.start` is empty".into(),
        })?;
        let cwd = match &spec.cwd {
            Some(c) => base_dir.join(c),
            None => base_dir.to_path_buf(),
        };
        let program_path = resolve_program(program, base_dir);
        let mut command = Command::new(&program_path);
        command
            .args(args)
            .envs(&spec.env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut child = command.spawn().map_err(|e| HarnessError::Sut {
            message: format!(
                "could not spawn `{}` (in {}): {e}; check `sut.start` in the suite",
                program,
                cwd.display()
            ),
        })?;
        let pid = child.id().unwrap_or(0);
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let needle = match &readiness {
            Readiness::Log(text) => Some(text.clone()),
            _ => None,
        };
        let (seen_tx, seen_rx) = watch::channel(false);
        let seen_tx = Arc::new(seen_tx);
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out,
                "",
                Arc::clone(&log),
                needle.clone(),
                Arc::clone(&seen_tx),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err,
                "stderr: ",
                Arc::clone(&log),
                needle,
                seen_tx,
            )));
        }
        let mut sut = SutProcess {
            child,
            pid,
            log,
            stop_grace: spec.stop_grace.0,
            ready_after: Duration::ZERO,
        };
        let deadline = tokio::time::Instant::from_std(spawned_at + spec.ready.within.0);
        let probe = probe(readiness.clone(), seen_rx);
        tokio::select! {
            ready = probe => {
                if let Err(message) = ready {
                    let tail = sut.tail_text(20);
                    sut.stop().await;
                    return Err(HarnessError::Sut { message: format!("{message}{tail}") });
                }
            }
            status = sut.child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                // Let the output pumps drain what the process printed before exiting (they
                // end at end-of-file; bounded in case a grandchild keeps the pipe open).
                for pump in pumps {
                    let _ = tokio::time::timeout(Duration::from_secs(1), pump).await;
                }
                let tail = sut.tail_text(20);
                return Err(HarnessError::Sut {
                    message: format!("`{program}` exited ({status}) before it became ready{tail}"),
                });
            }
            () = tokio::time::sleep_until(deadline) => {
                let tail = sut.tail_text(20);
                sut.stop().await;
                return Err(HarnessError::Sut {
                    message: format!(
                        "`{program}` was not ready within {} ({}){tail}",
                        humantime::format_duration(spec.ready.within.0),
                        describe(&readiness),
                    ),
                });
            }
        }
        sut.ready_after = spawned_at.elapsed();
        Ok(sut)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Time from spawn to passing the readiness probe.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The last lines of output (stderr lines prefixed `stderr: `).
    pub fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn tail_text(&self, n: usize) -> String {
        let lines = self.log_tail();
        if lines.is_empty() {
            return "; it printed nothing".to_owned();
        }
        let start = lines.len().saturating_sub(n);
        let mut out = String::from("; its last output:");
        for line in &lines[start..] {
            out.push_str("\n    ");
            out.push_str(line);
        }
        out
    }

    /// Stops the process: SIGTERM, then SIGKILL after the grace period; reaps it and
    /// returns the tail of its output.
    pub async fn stop(&mut self) -> Vec<String> {
        if matches!(self.child.try_wait(), Ok(None)) {
            terminate(self.pid);
            let graceful = tokio::time::timeout(self.stop_grace, self.child.wait()).await;
            if graceful.is_err() {
                let _ = self.child.kill().await;
            }
        }
        let _ = self.child.wait().await;
        self.log_tail()
    }
}

fn resolve_program(program: &str, base_dir: &Path) -> std::path::PathBuf {
    // A program given with a path separator is relative to the suite file; a bare name
    // is looked up on PATH by the OS.
    // Absolute, because the child starts in `cwd`, which may differ from ours.
    if program.contains('/') && !Path::new(program).is_absolute() {
        let joined = base_dir.join(program);
        std::path::absolute(&joined).unwrap_or(joined)
    } else {
        program.into()
    }
}

#[cfg(unix)]
fn terminate(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(_pid: u32) {}

async fn pump(
    stream: impl AsyncRead + Unpin,
    prefix: &'static str,
    log: Arc<Mutex<VecDeque<String>>>,
    needle: Option<String>,
    seen: Arc<watch::Sender<bool>>,
) {
    // Bytes, not `lines()`: output that is not UTF-8 must not stop the pump (the SUT
    // would block on a full pipe). A line is kept up to LINE_KEPT bytes; the rest of a
    // longer one is read and dropped. Kept lines are escaped: they reach terminals.
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut long = false;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(chunk) => chunk,
            };
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            let room = LINE_KEPT.saturating_sub(line.len());
            long |= take > room;
            line.extend_from_slice(&chunk[..take.min(room)]);
            reader.consume(take);
            if end {
                break;
            }
        }
        if line.is_empty() && !long {
            return; // end of output
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if needle.as_deref().is_some_and(|n| text.contains(n)) {
            seen.send_replace(true);
        }
        let mut kept = format!("{prefix}{}", escape::escape(text));
        if long {
            kept.push('…');
        }
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(kept);
        }
    }
}

fn describe(r: &Readiness) -> String {
    match r {
        Readiness::Http(url) => format!("GET {url} never answered 2xx"),
        Readiness::Tcp(addr) => format!("nothing accepted connections on {addr}"),
        Readiness::Log(text) => format!("no output line contained {text:?}"),
    }
}

/// Probes until ready. Readiness probing is inherently a poll (like any container
/// health check): it retries with a short backoff until the caller's deadline.
async fn probe(readiness: Readiness, mut seen: watch::Receiver<bool>) -> Result<(), String> {
    let mut backoff = Duration::from_millis(5);
    let next = |b: Duration| (b * 2).min(Duration::from_millis(200));
    match readiness {
        Readiness::Log(_) => seen
            .wait_for(|s| *s)
            .await
            .map(|_| ())
            .map_err(|_| "the output closed before the readiness line appeared".to_owned()),
        Readiness::Tcp(addr) => loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(backoff).await;
            backoff = next(backoff);
        },
        Readiness::Http(url) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .map_err(|e| format!("could not build an HTTP client: {e}"))?;
            loop {
                if let Ok(resp) = client.get(&url).send().await
                    && resp.status().is_success()
                {
                    return Ok(());
                }
                tokio::time::sleep(backoff).await;
                backoff = next(backoff);
            }
        }
    }
}
