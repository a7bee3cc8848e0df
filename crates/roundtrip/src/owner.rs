//! Which process runs a run, written into its record so that `roundtrip runs` can tell
//! a run whose process died (SIGKILL, a crash, a reboot) from one that is still going.
//!
//! The owner is `host=NAME pid=N boot=ID start=T`: the host name, the process id, and,
//! on Linux, the boot id and the process's start time in clock ticks since boot, so a
//! reused pid or a reboot is not mistaken for the same process.

/// Whether a run's process is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs, on this host.
    Alive,
    /// It is gone: the run will never finish.
    Dead,
    /// It ran on another host (or its owner is not known): cannot tell from here.
    Unknown,
}

/// This process, as a run's owner.
pub fn current() -> String {
    let pid = std::process::id();
    let mut out = format!("host={} pid={pid}", hostname());
    if let (Some(boot), Some(start)) = (boot_id(), start_ticks(pid)) {
        out.push_str(&format!(" boot={boot} start={start}"));
    }
    out
}

/// Whether the process an owner string names is still running.
pub fn liveness(owner: &str) -> Liveness {
    let field = |name: &str| {
        owner
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let (Some(host), Some(pid)) = (
        field("host"),
        field("pid").and_then(|p| p.parse::<u32>().ok()),
    ) else {
        return Liveness::Unknown;
    };
    if host != hostname() {
        return Liveness::Unknown;
    }
    match (field("boot"), field("start"), boot_id()) {
        (Some(boot), Some(start), Some(now_boot)) => {
            if boot != now_boot {
                return Liveness::Dead; // rebooted since
            }
            match start_ticks(pid) {
                Some(ticks) if ticks.to_string() == start => Liveness::Alive,
                _ => Liveness::Dead,
            }
        }
        // Without /proc: the pid alone.
        _ => {
            if pid_exists(pid) {
                Liveness::Alive
            } else {
                Liveness::Dead
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
}

/// Field 22 of `/proc/PID/stat`: when the process started, in ticks since boot. A
/// zombie counts as gone.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(unix)]
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[cfg(not(unix))]
fn pid_exists(_pid: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = current();
        assert!(me.contains(&format!("pid={}", std::process::id())), "{me}");
        assert_eq!(liveness(&me), Liveness::Alive);
        let reused = me.replace(&format!("pid={}", std::process::id()), "pid=4194304");
        assert_eq!(liveness(&reused), Liveness::Dead);
        if me.contains(" start=") {
            let restarted = format!("{} start=1", me.split(" start=").next().unwrap_or_default());
            assert_eq!(liveness(&restarted), Liveness::Dead, "another start time");
        }
        assert_eq!(liveness("host=elsewhere pid=1"), Liveness::Unknown);
        assert_eq!(liveness("garbage"), Liveness::Unknown);
    }
}
