//! Seeded fault injection: delays, drops, duplicates, misroutes and reordering.
//!
//! Every random choice comes from generators seeded with `--seed`, owned by the processing
//! loop, so the same seed and the same input order give the same faults:
//!
//! - [`Faults::decide`] is called once per event, in arrival order, and always draws the
//!   same number of values (jitter, drop, duplicate, misroute), so one fault's
//!   probability does not shift another's sequence.
//! - [`ReorderBuffer`] has its own generator, so its shuffles depend only on the seed and
//!   the sizes of the batches it flushes.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::{SmallRng, StdRng};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// How long the reorder buffer waits for another event before flushing what it holds.
pub const REORDER_IDLE: Duration = Duration::from_millis(20);
/// The longest the reorder buffer holds an event, even while events keep arriving.
pub const REORDER_MAX_HOLD: Duration = Duration::from_millis(100);

/// Mixed into the seed of the reorder generator, so it differs from the decision one.
const REORDER_SEED_SALT: u64 = 0x5eed_f00d_dead_beef;

/// The fault settings, resolved from the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// The fixed processing delay of every event.
    pub delay: Duration,
    /// The upper bound, in milliseconds, of the extra uniform random delay.
    pub jitter_ms: u64,
    /// The probability that an event is dropped.
    pub drop_prob: f64,
    /// The probability that an event is emitted twice.
    pub dup_prob: f64,
    /// The probability that a valid event is sent to the dead-letter output.
    pub misroute_prob: f64,
    /// How many processed events the reorder buffer holds; 0 or 1 turns it off.
    pub reorder_window: usize,
    /// Exit with code 101 after this many events have been emitted.
    pub crash_after: Option<u64>,
    /// The input field whose value names an event's ordering key (a stream, a
    /// partition): reordering is counted among the events of one key.
    pub order_key: Option<String>,
}

/// What happens to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The processing delay: the fixed delay plus the jitter.
    pub delay: Duration,
    /// Drop the event silently.
    pub drop: bool,
    /// Emit the event twice.
    pub duplicate: bool,
    /// Send the event to the dead-letter output even if it is valid.
    pub misroute: bool,
}

/// The per-event fault generator.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    rng: StdRng,
}

impl Faults {
    /// A generator seeded with `config.seed`.
    pub fn new(config: FaultConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// The decision for the next event in arrival order.
    pub fn decide(&mut self) -> Decision {
        let jitter = self.rng.random_range(0..=self.config.jitter_ms);
        let drop = self.chance(self.config.drop_prob);
        let duplicate = self.chance(self.config.dup_prob);
        let misroute = self.chance(self.config.misroute_prob);
        Decision {
            delay: self.config.delay + Duration::from_millis(jitter),
            drop,
            duplicate,
            misroute,
        }
    }

    /// Draws one value and compares it with `p`: `p = 0` is never, `p = 1` always.
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }
}

/// Holds up to `window` items and releases them in a seeded shuffled order: when full, or
/// when [`ReorderBuffer::deadline`] passes, so nothing waits long.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    window: usize,
    items: Vec<T>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    rng: SmallRng,
}

impl<T> ReorderBuffer<T> {
    /// A buffer of `window` items; a window of 0 or 1 passes items straight through.
    pub fn new(window: usize, seed: u64) -> Self {
        Self {
            window,
            items: Vec::new(),
            first_at: None,
            last_at: None,
            rng: SmallRng::seed_from_u64(seed ^ REORDER_SEED_SALT),
        }
    }

    /// Adds an item at `now`; returns the items to emit now, in order (empty while the
    /// buffer is filling up).
    pub fn push(&mut self, item: T, now: Instant) -> Vec<T> {
        if self.window <= 1 {
            return vec![item];
        }
        self.items.push(item);
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        if self.items.len() >= self.window {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// When the buffered items must be flushed: [`REORDER_IDLE`] after the last push, at
    /// most [`REORDER_MAX_HOLD`] after the first. `None` when empty.
    pub fn deadline(&self) -> Option<Instant> {
        let idle = self.last_at? + REORDER_IDLE;
        let hold = self.first_at? + REORDER_MAX_HOLD;
        Some(idle.min(hold))
    }

    /// Releases every buffered item, shuffled.
    pub fn flush(&mut self) -> Vec<T> {
        let mut items = std::mem::take(&mut self.items);
        items.shuffle(&mut self.rng);
        self.first_at = None;
        self.last_at = None;
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            delay: Duration::from_millis(10),
            jitter_ms: 50,
            drop_prob: 0.3,
            dup_prob: 0.3,
            misroute_prob: 0.3,
            ..FaultConfig::default()
        }
    }

    fn decisions(config: FaultConfig, n: usize) -> Vec<Decision> {
        let mut faults = Faults::new(config);
        (0..n).map(|_| faults.decide()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_decisions() {
        assert_eq!(decisions(config(7), 200), decisions(config(7), 200));
    }

    #[test]
    fn another_seed_gives_other_decisions() {
        let drops = |seed| -> Vec<bool> {
            decisions(config(seed), 200)
                .iter()
                .map(|d| d.drop)
                .collect()
        };
        assert_ne!(drops(7), drops(8));
        assert_ne!(decisions(config(7), 200), decisions(config(8), 200));
    }

    #[test]
    fn probabilities_are_roughly_honoured() {
        let all = decisions(config(3), 2000);
        let drops = all.iter().filter(|d| d.drop).count();
        let dups = all.iter().filter(|d| d.duplicate).count();
        // 30% of 2000 = 600; the seeded sequence stays well within these bounds.
        assert!((450..750).contains(&drops), "{drops} drops");
        assert!((450..750).contains(&dups), "{dups} duplicates");
        assert!(all.iter().all(|d| {
            d.delay >= Duration::from_millis(10) && d.delay <= Duration::from_millis(60)
        }));
        assert!(all.iter().any(|d| d.delay != all[0].delay));
    }

    #[test]
    fn zero_and_one_are_never_and_always() {
        let mut never = config(1);
        never.drop_prob = 0.0;
        never.dup_prob = 1.0;
        never.misroute_prob = 0.0;
        never.jitter_ms = 0;
        for decision in decisions(never, 500) {
            assert_eq!(
                decision,
                Decision {
                    delay: Duration::from_millis(10),
                    drop: false,
                    duplicate: true,
                    misroute: false
                }
            );
        }
    }

    #[test]
    fn one_probability_does_not_shift_another_sequence() {
        let mut other = config(7);
        other.dup_prob = 0.9;
        let drops =
            |c: FaultConfig| -> Vec<bool> { decisions(c, 100).iter().map(|d| d.drop).collect() };
        assert_eq!(drops(config(7)), drops(other));
    }

    #[test]
    fn a_small_window_passes_items_through() {
        let now = Instant::now();
        for window in [0, 1] {
            let mut buffer = ReorderBuffer::new(window, 1);
            assert_eq!(buffer.push(1, now), vec![1]);
            assert_eq!(buffer.push(2, now), vec![2]);
            assert_eq!(buffer.deadline(), None);
        }
    }

    fn batches(seed: u64) -> Vec<Vec<u32>> {
        let now = Instant::now();
        let mut buffer = ReorderBuffer::new(8, seed);
        let mut out = Vec::new();
        for item in 0..40 {
            let released = buffer.push(item, now);
            if !released.is_empty() {
                out.push(released);
            }
        }
        out
    }

    #[test]
    fn a_full_buffer_releases_a_seeded_permutation() {
        let out = batches(1);
        assert_eq!(out.len(), 5);
        for (i, batch) in out.iter().enumerate() {
            let mut sorted = batch.clone();
            sorted.sort_unstable();
            let start = 8 * u32::try_from(i).expect("few batches");
            assert_eq!(sorted, (start..start + 8).collect::<Vec<_>>());
        }
        assert!(
            out.iter()
                .any(|batch| batch.windows(2).any(|w| w[0] > w[1])),
            "some batch is out of order: {out:?}"
        );
        assert_eq!(out, batches(1));
        assert_ne!(out, batches(2));
    }

    #[test]
    fn the_deadline_is_the_idle_time_after_the_last_push_capped_by_the_max_hold() {
        let start = Instant::now();
        let mut buffer = ReorderBuffer::new(100, 1);
        assert_eq!(buffer.deadline(), None);
        assert!(buffer.push(1, start).is_empty());
        assert_eq!(buffer.deadline(), Some(start + REORDER_IDLE));
        let later = start + Duration::from_millis(90);
        assert!(buffer.push(2, later).is_empty());
        assert_eq!(buffer.deadline(), Some(start + REORDER_MAX_HOLD));
        let mut flushed = buffer.flush();
        flushed.sort_unstable();
        assert_eq!(flushed, vec![1, 2]);
        assert_eq!(buffer.deadline(), None);
        assert!(buffer.flush().is_empty());
    }
}

/// What the faults did, counted as the emitter delivers, in delivery order; the pipeline
/// prints it when it stops, so a test can compare a harness's accounting with it.
///
/// An event is *reordered* when its first copy is delivered after an event of the same
/// ordering key (all events, without one) that arrived later; a *duplicate* is a copy
/// beyond the first; *dropped* events are never delivered. Only the processed output
/// counts towards reordering, as a harness watching it would see.
#[derive(Debug, Default)]
pub struct Tally {
    order_key: Option<String>,
    highest: HashMap<String, u64>,
    /// Events delivered to the processed output (first copies).
    pub processed: u64,
    /// Events delivered to the dead-letter output.
    pub dead_letters: u64,
    /// Events dropped.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Events reordered (see above).
    pub reordered: u64,
    /// Events whose delivery failed.
    pub undelivered: u64,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped by `--drop-prob`.
    Dropped,
    /// Delivered `copies` times (0: every attempt failed) to the processed output
    /// (`processed`) or the dead-letter one.
    Delivered {
        /// Copies that got through.
        copies: u32,
        /// To the processed output.
        processed: bool,
    },
}

impl Tally {
    /// A tally that counts reordering per value of the input field `order_key`.
    pub fn new(order_key: Option<String>) -> Tally {
        Tally {
            order_key,
            ..Tally::default()
        }
    }

    /// Counts the event that arrived `seq`-th, with input `body`.
    pub fn record(
        &mut self,
        seq: u64,
        body: &serde_json::Map<String, serde_json::Value>,
        fate: Fate,
    ) {
        match fate {
            Fate::Dropped => self.dropped += 1,
            Fate::Delivered { copies: 0, .. } => self.undelivered += 1,
            Fate::Delivered { copies, processed } => {
                self.duplicated += u64::from(copies - 1);
                if !processed {
                    self.dead_letters += 1;
                    return;
                }
                self.processed += 1;
                let key = match &self.order_key {
                    Some(field) => body.get(field).map(ToString::to_string).unwrap_or_default(),
                    None => String::new(),
                };
                let highest = self.highest.entry(key).or_insert(seq);
                if seq < *highest {
                    self.reordered += 1;
                } else {
                    *highest = seq;
                }
            }
        }
    }

    /// `pipeline: faults: processed N, dead letters N, dropped N, duplicated N,
    /// reordered N (by `stream`), undelivered N`.
    pub fn line(&self) -> String {
        format!(
            "pipeline: faults: processed {}, dead letters {}, dropped {}, duplicated {}, reordered {} ({}), undelivered {}",
            self.processed,
            self.dead_letters,
            self.dropped,
            self.duplicated,
            self.reordered,
            match &self.order_key {
                Some(field) => format!("by `{field}`"),
                None => "over all events".to_owned(),
            },
            self.undelivered
        )
    }
}

#[cfg(test)]
mod tally_tests {
    use serde_json::{Map, Value, json};

    use super::*;

    fn body(stream: u64) -> Map<String, Value> {
        match json!({ "stream": stream }) {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn reordering_is_counted_per_key_and_duplicates_and_drops_apart() {
        let mut t = Tally::new(Some("stream".into()));
        let delivered = |copies| Fate::Delivered {
            copies,
            processed: true,
        };
        // Key 0 arrives 0, 2, 4; key 1 arrives 1, 3. Delivered: 2, 0 (reordered), 1, 3
        // twice, 4 dropped.
        t.record(2, &body(0), delivered(1));
        t.record(0, &body(0), delivered(1));
        t.record(1, &body(1), delivered(1));
        t.record(3, &body(1), delivered(2));
        t.record(4, &body(0), Fate::Dropped);
        t.record(
            5,
            &body(1),
            Fate::Delivered {
                copies: 1,
                processed: false,
            },
        );
        t.record(6, &body(1), delivered(0));
        assert_eq!(
            (
                t.processed,
                t.reordered,
                t.duplicated,
                t.dropped,
                t.dead_letters,
                t.undelivered
            ),
            (4, 1, 1, 1, 1, 1)
        );
        assert_eq!(
            t.line(),
            "pipeline: faults: processed 4, dead letters 1, dropped 1, duplicated 1, reordered 1 (by `stream`), undelivered 1"
        );
        let mut all = Tally::new(None);
        all.record(1, &body(0), delivered(1));
        all.record(0, &body(1), delivered(1));
        assert_eq!(all.reordered, 1);
    }
}
