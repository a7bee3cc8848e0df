//! The open-loop schedule of a load run: stages of constant or linearly ramping rate, and
//! the intended send time of every event, decided before the run starts. A sender that
//! falls behind never moves these times: latency is measured from them.
//!
//! Event `i` is due when the number of events the rate has produced since the start
//! reaches `i`: event 0 at the start, and at a constant 500/s, event `i` at `2i` ms.
//!
//! ```
//! use std::time::Duration;
//! use roundtrip_core::load::Profile;
//!
//! let p = Profile::parse("500/s", Duration::from_secs(2)).expect("a rate");
//! assert_eq!(p.total(), 1000);
//! assert_eq!(p.intended_ns(1), 2_000_000);
//! let ramp = Profile::parse_stages("100/s..300/s for 10s, 300/s for 5s").expect("stages");
//! assert_eq!(ramp.total(), 2000 + 1500);
//! ```

use std::fmt;
use std::time::Duration;

/// The highest rate a stage may ask for (per second).
pub const MAX_RATE: f64 = 10_000_000.0;
/// The most events one run may schedule.
pub const MAX_EVENTS: u64 = 1 << 40;

/// One stage: the rate goes from `from` to `to` (events per second) over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// The rate at the stage's start.
    pub from: f64,
    /// The rate at its end (equal to `from` for a constant rate).
    pub to: f64,
    /// How long it lasts.
    pub duration: Duration,
}

impl Stage {
    fn events(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration.as_secs_f64()
    }
}

/// The whole schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    stages: Vec<Stage>,
    /// Events before each stage (a running sum of [`Stage::events`]).
    before: Vec<f64>,
    total: u64,
}

impl Profile {
    /// A profile of `stages`; refused when a rate is negative, not finite or above
    /// [`MAX_RATE`], or when it schedules no event or more than [`MAX_EVENTS`].
    pub fn new(stages: Vec<Stage>) -> Result<Profile, String> {
        if stages.is_empty() {
            return Err("a load needs at least one stage".into());
        }
        let mut before = Vec::with_capacity(stages.len());
        let mut sum = 0.0;
        for s in &stages {
            for r in [s.from, s.to] {
                if !r.is_finite() || r < 0.0 {
                    return Err(format!("the rate {r}/s is not a rate"));
                }
                if r > MAX_RATE {
                    return Err(format!(
                        "the rate {r}/s is above the most a run may ask for, {MAX_RATE}/s"
                    ));
                }
            }
            if s.duration.is_zero() {
                return Err("a stage lasts longer than 0s".into());
            }
            before.push(sum);
            sum += s.events();
        }
        let total = sum.ceil();
        if total < 1.0 {
            return Err("the load schedules no event: raise the rate or the duration".into());
        }
        if total > MAX_EVENTS as f64 {
            return Err(format!(
                "the load schedules {total} events, more than a run may ({MAX_EVENTS})"
            ));
        }
        Ok(Profile {
            stages,
            before,
            total: total as u64,
        })
    }

    /// A rate for `duration`: `500/s`, `30/m`, `2000` (per second), or a ramp
    /// `100/s..1000/s` over the whole duration.
    pub fn parse(rate: &str, duration: Duration) -> Result<Profile, String> {
        let (from, to) = parse_rate_range(rate)?;
        Profile::new(vec![Stage { from, to, duration }])
    }

    /// Stages separated by commas, each `RATE for DURATION` or `RATE..RATE for
    /// DURATION`: `100/s for 10s, 100/s..1000/s for 1m, 1000/s for 5m`.
    pub fn parse_stages(text: &str) -> Result<Profile, String> {
        let mut stages = Vec::new();
        for (i, part) in text.split(',').enumerate() {
            let part = part.trim();
            let (rate, duration) = part.split_once(" for ").ok_or_else(|| {
                format!(
                    "stage {} (`{part}`) is not `RATE for DURATION`, e.g. `500/s for 30s`",
                    i + 1
                )
            })?;
            let (from, to) =
                parse_rate_range(rate.trim()).map_err(|e| format!("stage {}: {e}", i + 1))?;
            let duration = humantime::parse_duration(duration.trim()).map_err(|e| {
                format!(
                    "stage {}: `{}` is not a duration ({e}); write it like `30s`",
                    i + 1,
                    duration.trim()
                )
            })?;
            stages.push(Stage { from, to, duration });
        }
        Profile::new(stages)
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// How many events the profile schedules.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How long the schedule lasts.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The highest rate it reaches, per second.
    pub fn max_rate(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// When event `i` is due, in nanoseconds from the start (events past the total are
    /// due at the end).
    pub fn intended_ns(&self, i: u64) -> u64 {
        let i = i as f64;
        let mut start = 0.0;
        let last = self.stages.len() - 1;
        for (n, (stage, &before)) in self.stages.iter().zip(&self.before).enumerate() {
            let secs = stage.duration.as_secs_f64();
            let k = i - before;
            if k < stage.events() || n == last {
                let t = time_into(stage, k.max(0.0)).min(secs);
                return ((start + t) * 1e9).round() as u64;
            }
            start += secs;
        }
        (start * 1e9).round() as u64
    }

    /// How many events are due at `t_ns` from the start (those whose intended time is at
    /// most `t_ns`), at most [`Profile::total`].
    pub fn due_by(&self, t_ns: u64) -> u64 {
        let t = t_ns as f64 / 1e9;
        let mut start = 0.0;
        let mut produced = 0.0;
        for stage in &self.stages {
            let secs = stage.duration.as_secs_f64();
            if t < start + secs {
                let dt = t - start;
                let slope = (stage.to - stage.from) / secs;
                produced += stage.from * dt + slope * dt * dt / 2.0;
                let due = produced.floor() as u64 + 1;
                // Rounding in `intended_ns` can put an event a nanosecond either side:
                // trust the intended times themselves at the edge.
                return self.adjust(due, t_ns);
            }
            start += secs;
            produced += stage.events();
        }
        self.total
    }

    fn adjust(&self, mut due: u64, t_ns: u64) -> u64 {
        due = due.min(self.total);
        while due > 0 && self.intended_ns(due - 1) > t_ns {
            due -= 1;
        }
        while due < self.total && self.intended_ns(due) <= t_ns {
            due += 1;
        }
        due
    }
}

/// How long into `stage` its `k`-th event is due (seconds).
fn time_into(stage: &Stage, k: f64) -> f64 {
    let secs = stage.duration.as_secs_f64();
    let slope = (stage.to - stage.from) / secs;
    if slope.abs() < 1e-12 {
        return if stage.from > 0.0 {
            k / stage.from
        } else {
            secs
        };
    }
    // from·t + slope·t²/2 = k
    let disc = stage.from * stage.from + 2.0 * slope * k;
    if disc < 0.0 {
        return secs;
    }
    (disc.sqrt() - stage.from) / slope
}

/// `500/s`, `30/m`, `2000`, or `A..B`: a rate per second, or a ramp between two.
fn parse_rate_range(text: &str) -> Result<(f64, f64), String> {
    match text.split_once("..") {
        Some((a, b)) => Ok((parse_rate(a.trim())?, parse_rate(b.trim())?)),
        None => {
            let r = parse_rate(text.trim())?;
            Ok((r, r))
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, per) = match text.split_once('/') {
        Some((n, unit)) => {
            let per = match unit.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                "h" | "hour" => 3600.0,
                other => {
                    return Err(format!(
                        "`{text}`: `/{other}` is not a unit of time; write the rate like `500/s` or `30/m`"
                    ));
                }
            };
            (n.trim(), per)
        }
        None => (text, 1.0),
    };
    let n: f64 = number.replace('_', "").parse().map_err(|_| {
        format!("`{text}` is not a rate; write it like `500/s`, `30/m` or `100/s..1000/s`")
    })?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{text}` is not a rate; it must be 0 or more"));
    }
    Ok(n / per)
}

/// `500/s for 30s`, `100/s..1000/s for 1m, 1000/s for 5m`: the profile as it can be
/// written again.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let d = humantime::format_duration(s.duration);
            if s.from == s.to {
                write!(f, "{}/s for {d}", s.from)?;
            } else {
                write!(f, "{}/s..{}/s for {d}", s.from, s.to)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_constant_rate_spaces_events_evenly() {
        let p = Profile::parse("1000/s", Duration::from_secs(1)).expect("a rate");
        assert_eq!(p.total(), 1000);
        assert_eq!(p.intended_ns(0), 0);
        assert_eq!(p.intended_ns(999), 999_000_000);
        assert_eq!(p.due_by(0), 1);
        assert_eq!(p.due_by(999_999), 1);
        assert_eq!(p.due_by(1_000_000), 2);
        assert_eq!(p.due_by(5_000_000_000), 1000);
        assert_eq!(p.to_string(), "1000/s for 1s");
    }

    #[test]
    fn rates_are_read_in_their_units_and_bad_ones_say_how_to_write_them() {
        let per_s = |t: &str| parse_rate(t).expect("a rate");
        assert_eq!(per_s("60/m"), 1.0);
        assert_eq!(per_s("7200/h"), 2.0);
        assert_eq!(per_s("2_000"), 2000.0);
        assert!(parse_rate("fast").expect_err("no").contains("`500/s`"));
        assert!(
            parse_rate("5/fortnight")
                .expect_err("no")
                .contains("not a unit of time")
        );
        assert!(parse_rate("-5/s").is_err());
        assert!(
            Profile::parse("0/s", Duration::from_secs(1))
                .expect_err("none")
                .contains("no event")
        );
        assert!(
            Profile::parse("1e9/s", Duration::from_secs(1))
                .expect_err("too fast")
                .contains("above")
        );
        assert!(
            Profile::parse_stages("500/s")
                .expect_err("no duration")
                .contains("RATE for DURATION")
        );
        assert!(
            Profile::parse_stages("500/s for ever")
                .expect_err("bad")
                .contains("stage 1")
        );
    }

    #[test]
    fn a_ramp_and_a_pause() {
        let p =
            Profile::parse_stages("0/s..200/s for 10s, 0/s for 5s, 100/s for 1s").expect("stages");
        assert_eq!(p.total(), 1000 + 100);
        // Halfway through the ramp a quarter of its events are due.
        assert_eq!(p.due_by(5_000_000_000), 251);
        // The first event after the pause is due at 15 s.
        assert_eq!(p.intended_ns(1000), 15_000_000_000);
        assert_eq!(p.max_rate(), 200.0);
        assert_eq!(p.duration(), Duration::from_secs(16));
    }

    proptest! {
        #[test]
        fn intended_times_rise_and_due_by_counts_them(
            from in 0.0f64..5000.0, to in 0.0f64..5000.0, secs in 1u64..20, flat in 1.0f64..3000.0,
        ) {
            // The flat stage schedules at least one event, so every profile is valid.
            let p = Profile::new(vec![
                Stage { from, to, duration: Duration::from_secs(secs) },
                Stage { from: flat, to: flat, duration: Duration::from_secs(1) },
            ]).expect("a profile");
            let step = (p.total() / 200).max(1);
            let mut last = 0;
            let mut i = 0;
            while i < p.total() {
                let t = p.intended_ns(i);
                prop_assert!(t >= last, "event {} at {} before {}", i, t, last);
                prop_assert!(t <= p.duration().as_nanos() as u64);
                prop_assert!(p.due_by(t) > i, "event {} due at {} but due_by says {}", i, t, p.due_by(t));
                if t > 0 {
                    prop_assert!(p.due_by(t - 1) <= i);
                }
                last = t;
                i += step;
            }
        }
    }
}
