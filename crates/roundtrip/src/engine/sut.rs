//! The system under test as a child process: start it, probe it until ready, keep the
//! tail of its output for the report, stop it (SIGTERM, then SIGKILL after the grace),
//! and reap it.
//!
//! On Unix the SUT runs in a process group of its own and every signal goes to the
//! group, so a SUT started through a wrapper (`sh -c "service & wait"`) stops with it;
//! after the leader exits, members still in the group get the rest of the grace period,
//! then SIGKILL. On Linux the SUT also gets a parent-death signal (SIGKILL), so a
//! roundtrip that is itself killed does not leave it running. That signal reaches the
//! direct child only: a wrapper's own children survive a SIGKILLed roundtrip (write
//! `exec service` in wrappers). The CLI also makes itself a child subreaper
//! ([`become_subreaper`]), so members of the group that outlive their parent are
//! reparented to roundtrip and reaped here rather than left to PID 1.

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
    /// True once `stop` has reaped the leader and swept the group.
    stopped: bool,
    /// How it ended, when it exited before `stop` asked it to.
    exited_early: Option<String>,
}

impl Drop for SutProcess {
    fn drop(&mut self) {
        // A run that ends without `stop` (a panic, an aborted task) still takes the
        // whole group down, not only the leader (`kill_on_drop`).
        // Only while the leader is unreaped (tokio still has its id): until then its
        // pid, and so the group id, cannot be given to another process.
        if !self.stopped && self.child.id().is_some() {
            group::signal(self.pid, group::Sig::Kill);
        }
    }
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
        #[cfg(unix)]
        command.process_group(0);
        #[cfg(target_os = "linux")]
        group::die_with_parent(&mut command);
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
            stopped: false,
            exited_early: None,
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
                // Waiting for a log line from a program that printed nothing: most often
                // its output is buffered because it is a pipe, not a terminal.
                let hint = if matches!(readiness, Readiness::Log(_)) && sut.log_tail().is_empty() {
                    "; it printed nothing: its output may be buffered because it goes to a pipe \
                     (for Python set `PYTHONUNBUFFERED: \"1\"` in `sut.env`; otherwise flush \
                     after the line, or probe with `ready: { tcp: HOST:PORT }` instead)"
                } else {
                    ""
                };
                sut.stop().await;
                return Err(HarnessError::Sut {
                    message: format!(
                        "`{program}` was not ready within {} ({}){tail}{hint}",
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

    /// How the process ended, when it exited on its own before [`SutProcess::stop`]
    /// (known once `stop` returned).
    pub fn exited_early(&self) -> Option<&str> {
        self.exited_early.as_deref()
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

    /// Stops the process and its group: SIGTERM, then SIGKILL after the grace period;
    /// reaps it and returns the tail of its output.
    pub async fn stop(&mut self) -> Vec<String> {
        let (_, never) = watch::channel(false);
        self.stop_or_hurry(never).await
    }

    /// [`SutProcess::stop`], cut short when `hurry` turns true (a second Ctrl-C): the
    /// group gets SIGKILL at once.
    pub async fn stop_or_hurry(&mut self, mut hurry: watch::Receiver<bool>) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + self.stop_grace;
        let hurried = async move {
            if hurry.wait_for(|h| *h).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(hurried);
        let mut hurry_now = false;
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited_early = Some(status.to_string());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            group::signal(self.pid, group::Sig::Term);
            tokio::select! {
                _ = self.child.wait() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = &mut hurried => hurry_now = true,
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            group::signal(self.pid, group::Sig::Kill);
            let _ = self.child.kill().await;
        }
        let _ = self.child.wait().await;
        // Once the leader is reaped its group id may be reused by an unrelated process,
        // so the group is never signalled again. Members that outlived the leader (a
        // wrapper's children) were reparented to us when we are a subreaper: those, our
        // own children, get what is left of the grace period, then SIGKILL. A poll,
        // bounded by the grace.
        let mut termed = false;
        loop {
            group::reap(self.pid);
            let members = group::our_members(self.pid);
            if members.is_empty() {
                break;
            }
            if hurry_now || tokio::time::Instant::now() >= deadline {
                group::signal_each(&members, group::Sig::Kill);
                group::reap(self.pid);
                break;
            }
            if !termed {
                group::signal_each(&members, group::Sig::Term);
                termed = true;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                () = &mut hurried => hurry_now = true,
            }
        }
        self.stopped = true;
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

/// Makes this process a child subreaper (Linux): processes orphaned below it are
/// reparented to it instead of PID 1, so the SUT's group can be swept and reaped when
/// a run stops. For programs that own their process (the CLI); a library user's test
/// process is left alone. Returns false where it is not supported.
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_child_subreaper(true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The SUT's process group: its id is the leader's pid (`process_group(0)`).
#[cfg(unix)]
mod group {
    use nix::sys::signal::{Signal, killpg};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;

    #[derive(Debug, Clone, Copy)]
    pub(super) enum Sig {
        Term,
        Kill,
    }

    fn pgid(pid: u32) -> Option<Pid> {
        i32::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .map(Pid::from_raw)
    }

    pub(super) fn signal(pid: u32, sig: Sig) {
        let sig = match sig {
            Sig::Term => Signal::SIGTERM,
            Sig::Kill => Signal::SIGKILL,
        };
        if let Some(g) = pgid(pid) {
            let _ = killpg(g, sig);
        }
    }

    /// Our own children (reparented to us as subreaper) still in the group: their pids
    /// cannot be reused while we have not reaped them, so signalling them is safe.
    pub(super) fn our_members(pid: u32) -> Vec<i32> {
        let Some(group) = pgid(pid) else {
            return Vec::new();
        };
        let me = nix::unistd::getpid().as_raw();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                    return false;
                };
                // After the command name: state, ppid, pgrp.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.get(1).and_then(|f| f.parse::<i32>().ok()) == Some(me)
                    && fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(group.as_raw())
            })
            .collect()
    }

    pub(super) fn signal_each(pids: &[i32], sig: Sig) {
        let sig = match sig {
            Sig::Term => Signal::SIGTERM,
            Sig::Kill => Signal::SIGKILL,
        };
        for &p in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
        }
    }

    /// Reaps the group's members that are our children (reparented to us as subreaper)
    /// and have exited. Only this group's: other children are left to their owners.
    pub(super) fn reap(pid: u32) {
        let Some(g) = pgid(pid) else { return };
        let group = Pid::from_raw(-g.as_raw());
        while let Ok(status) = waitpid(group, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }

    /// Asks the kernel to SIGKILL the SUT when the thread that spawned it exits (in
    /// practice, when roundtrip dies: the runtime's worker threads live as long as it).
    #[cfg(target_os = "linux")]
    pub(super) fn die_with_parent(command: &mut tokio::process::Command) {
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec and only makes two
        // async-signal-safe system calls (prctl, getppid); it allocates nothing and
        // takes no lock.
        #[expect(
            unsafe_code,
            reason = "pre_exec is the only way to set a parent-death signal"
        )]
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died between fork and prctl: then nobody would
                // send the signal.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other(
                        "roundtrip exited while starting the SUT",
                    ));
                }
                Ok(())
            });
        }
    }
}

#[cfg(not(unix))]
mod group {
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Sig {
        Term,
        Kill,
    }
    pub(super) fn signal(_pid: u32, _sig: Sig) {}
    pub(super) fn our_members(_pid: u32) -> Vec<i32> {
        Vec::new()
    }
    pub(super) fn signal_each(_pids: &[i32], _sig: Sig) {}
    pub(super) fn reap(_pid: u32) {}
}

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
