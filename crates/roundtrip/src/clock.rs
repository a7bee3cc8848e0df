//! The harness's clocks: one monotonic anchor per process, and wall-clock time.
//!
//! Latency inside one run is measured on the monotonic clock (`received_mono -
//! sent_mono`), which never jumps; wall-clock times are recorded beside them for reports
//! and for comparisons across processes.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use roundtrip_core::observation::{MonoNanos, UnixNanos};

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// Nanoseconds since this process's monotonic anchor.
pub fn mono_now() -> MonoNanos {
    u64::try_from(anchor().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`Instant`] that a monotonic reading corresponds to (for timers).
pub fn instant_of(mono: MonoNanos) -> Instant {
    anchor() + std::time::Duration::from_nanos(mono)
}

/// Nanoseconds since the Unix epoch.
pub fn wall_now() -> UnixNanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 rendering of a wall-clock time, with millisecond precision.
pub fn format_wall(t: UnixNanos) -> String {
    let d = std::time::Duration::from_nanos(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + d).to_string()
}

/// The current wall-clock time, rendered as [`format_wall`] does (for gap messages).
pub fn format_wall_now() -> String {
    format_wall(wall_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_readings_never_go_back() {
        let a = mono_now();
        let b = mono_now();
        assert!(b >= a);
        assert!(instant_of(b) >= instant_of(a));
    }

    #[test]
    fn wall_times_render_as_rfc3339() {
        assert_eq!(
            format_wall(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
