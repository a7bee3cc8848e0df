//! Exact accounting of one stream in bounded memory: a sliding window of bits over the
//! sequence numbers not yet settled, as in IPsec's anti-replay window (RFC 4303 A.2,
//! with RFC 6479's ring, so the window slides without shifting bits).
//!
//! The window spans `[base, base + width)`. Each slot has three bits: seen (arrived at
//! least once), refused (never sent: the in-flight cap refused it) and failed (its send
//! returned an error). The caller settles sequence numbers in order
//! ([`StreamWindow::settle_below`]) once their deadline passed: a slot not seen becomes
//! lost (or, if it was refused or failed, is counted as that). An arrival above the
//! window slides it, settling what falls off the bottom as lost ("fell out of the
//! window"). A lost sequence number is kept in a capped set of ranges, so that if it does
//! arrive later it moves from lost to late-after-loss; below the set's horizon (once its
//! cap was reached) an arrival of a settled number is `Unknown`, never guessed.
//!
//! Nothing here outlives its window except those ranges: memory per stream is
//! `3 * width` bits plus at most `lost_cap` ranges.

use std::collections::BTreeMap;

/// What an arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first copy of its sequence number; `reordered` when a later one of the same
    /// stream had arrived before it.
    First {
        /// A higher sequence number of the stream arrived earlier.
        reordered: bool,
    },
    /// Its sequence number had arrived before.
    Duplicate,
    /// Its sequence number had been declared lost.
    AfterLoss,
    /// Its sequence number was settled as a failed send (the send returned an error but
    /// the message got through).
    AfterFailedSend,
    /// Settled so long ago that the set of lost numbers no longer knows whether it had
    /// arrived (a duplicate, or an arrival after its loss).
    Unknown,
    /// Its sequence number was refused by the in-flight cap and never sent.
    NotSent,
}

/// What settling sequence numbers found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Not seen by their deadline: lost.
    pub lost: u64,
    /// Of `lost`, those the window's slide settled before their deadline.
    pub lost_by_window: u64,
    /// Not seen, and their send had failed: counted as send errors, not losses.
    pub failed: u64,
    /// Not sent at all (refused).
    pub refused: u64,
    /// Seen: delivered.
    pub delivered: u64,
    /// The first lost sequence numbers, at most the `keep` the caller asked for.
    pub lost_seqs: Vec<u64>,
}

/// One stream's window.
#[derive(Debug, Clone)]
pub struct StreamWindow {
    width: u64,
    base: u64,
    seen: Vec<u64>,
    refused: Vec<u64>,
    failed: Vec<u64>,
    /// The highest sequence number seen.
    hi: Option<u64>,
    lost: RangeSet,
    failed_settled: RangeSet,
}

impl StreamWindow {
    /// A window of at least `width` sequence numbers (rounded up to a multiple of 64, at
    /// least 64) that remembers at most `lost_cap` ranges of lost numbers.
    pub fn new(width: u64, lost_cap: usize) -> StreamWindow {
        let words = width.max(64).div_ceil(64);
        let words_len = usize::try_from(words).unwrap_or(usize::MAX);
        StreamWindow {
            width: words * 64,
            base: 0,
            seen: vec![0; words_len],
            refused: vec![0; words_len],
            failed: vec![0; words_len],
            hi: None,
            lost: RangeSet::new(lost_cap),
            failed_settled: RangeSet::new(lost_cap),
        }
    }

    /// How many sequence numbers the window spans.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// The lowest sequence number not yet settled.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// How many lost sequence numbers are remembered (and could still arrive late).
    pub fn remembered_lost(&self) -> u64 {
        self.lost.count()
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let bit = seq % self.width;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn test(bits: &[u64], (word, mask): (usize, u64)) -> bool {
        bits[word] & mask != 0
    }

    /// Makes room for `seq` in the window, settling what falls off its bottom (as lost,
    /// by the window); what that settled is added to `settled`.
    fn reach(&mut self, seq: u64, settled: &mut Settled, keep: usize) {
        if seq >= self.base + self.width {
            let limit = seq + 1 - self.width;
            let before = settled.lost;
            self.settle(limit, settled, keep);
            settled.lost_by_window += settled.lost - before;
        }
    }

    /// Notes that `seq` was never sent (refused). Settles what the window must slide
    /// past, into `settled`.
    pub fn mark_refused(&mut self, seq: u64, settled: &mut Settled, keep: usize) {
        self.mark(seq, settled, keep, true);
    }

    /// Notes that sending `seq` failed. Settles what the window must slide past, into
    /// `settled`.
    pub fn mark_failed(&mut self, seq: u64, settled: &mut Settled, keep: usize) {
        self.mark(seq, settled, keep, false);
    }

    fn mark(&mut self, seq: u64, settled: &mut Settled, keep: usize, refused: bool) {
        if seq < self.base {
            return;
        }
        self.reach(seq, settled, keep);
        let (word, mask) = self.slot(seq);
        if refused {
            self.refused[word] |= mask;
        } else {
            self.failed[word] |= mask;
        }
    }

    /// Classifies an arrival of `seq`. Settles what the window must slide past, into
    /// `settled`.
    pub fn arrive(&mut self, seq: u64, settled: &mut Settled, keep: usize) -> Arrival {
        if seq < self.base {
            return if self.lost.remove(seq) {
                Arrival::AfterLoss
            } else if self.failed_settled.remove(seq) {
                Arrival::AfterFailedSend
            } else if seq < self.lost.horizon().max(self.failed_settled.horizon()) {
                Arrival::Unknown
            } else {
                Arrival::Duplicate
            };
        }
        self.reach(seq, settled, keep);
        let slot = self.slot(seq);
        if Self::test(&self.refused, slot) {
            return Arrival::NotSent;
        }
        if Self::test(&self.seen, slot) {
            return Arrival::Duplicate;
        }
        self.seen[slot.0] |= slot.1;
        let reordered = self.hi.is_some_and(|hi| seq < hi);
        if !reordered {
            self.hi = Some(seq);
        }
        Arrival::First { reordered }
    }

    /// Whether `seq`, not yet settled, has arrived.
    pub fn has_arrived(&self, seq: u64) -> bool {
        seq >= self.base && seq < self.base + self.width && Self::test(&self.seen, self.slot(seq))
    }

    /// Settles every sequence number below `limit` (their deadline passed, or the run
    /// is over), into `settled`, keeping at most `keep` lost ones' numbers there.
    pub fn settle_below(&mut self, limit: u64, settled: &mut Settled, keep: usize) {
        self.settle(limit, settled, keep);
    }

    fn settle(&mut self, limit: u64, settled: &mut Settled, keep: usize) {
        while self.base < limit {
            let seq = self.base;
            let slot = self.slot(seq);
            let (word, mask) = slot;
            // A whole word with nothing in it settles at once: a long outage costs a
            // word per 64 numbers, not a step per number.
            if seq.is_multiple_of(64)
                && seq + 64 <= limit
                && self.seen[word] == 0
                && self.refused[word] == 0
                && self.failed[word] == 0
            {
                settled.lost += 64;
                self.lost.insert_range(seq, seq + 64);
                let room = keep.saturating_sub(settled.lost_seqs.len()).min(64);
                settled.lost_seqs.extend(seq..seq + room as u64);
                self.base += 64;
                continue;
            }
            if Self::test(&self.seen, slot) {
                settled.delivered += 1;
            } else if Self::test(&self.refused, slot) {
                settled.refused += 1;
            } else if Self::test(&self.failed, slot) {
                settled.failed += 1;
                self.failed_settled.insert(seq);
            } else {
                settled.lost += 1;
                self.lost.insert(seq);
                if settled.lost_seqs.len() < keep {
                    settled.lost_seqs.push(seq);
                }
            }
            self.seen[word] &= !mask;
            self.refused[word] &= !mask;
            self.failed[word] &= !mask;
            self.base += 1;
        }
    }
}

/// A set of `u64` as disjoint ranges, at most `cap` of them: when full, the lowest range
/// is forgotten and the horizon rises past it.
#[derive(Debug, Clone)]
struct RangeSet {
    /// start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
    cap: usize,
    horizon: u64,
    count: u64,
}

impl RangeSet {
    fn new(cap: usize) -> RangeSet {
        RangeSet {
            ranges: BTreeMap::new(),
            cap: cap.max(1),
            horizon: 0,
            count: 0,
        }
    }

    /// Below this, numbers may have been forgotten.
    fn horizon(&self) -> u64 {
        self.horizon
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn insert(&mut self, n: u64) {
        self.insert_range(n, n + 1);
    }

    /// Inserts `[start, end)`, which must lie above every range already held (settling
    /// goes in order).
    fn insert_range(&mut self, start: u64, end: u64) {
        if let Some((_, last_end)) = self.ranges.iter_mut().next_back()
            && *last_end == start
        {
            *last_end = end;
        } else {
            self.ranges.insert(start, end);
        }
        self.count += end - start;
        while self.ranges.len() > self.cap {
            if let Some((s, e)) = self.ranges.pop_first() {
                self.count -= e - s;
                self.horizon = e;
            }
        }
    }

    fn remove(&mut self, n: u64) -> bool {
        let Some((&start, &end)) = self.ranges.range(..=n).next_back() else {
            return false;
        };
        if n >= end {
            return false;
        }
        self.ranges.remove(&start);
        if start < n {
            self.ranges.insert(start, n);
        }
        if n + 1 < end {
            self.ranges.insert(n + 1, end);
        }
        self.count -= 1;
        // Splitting may exceed the cap by one: forget the lowest.
        while self.ranges.len() > self.cap {
            if let Some((s, e)) = self.ranges.pop_first() {
                self.count -= e - s;
                self.horizon = e;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_arrivals_are_first_and_settle_as_delivered() {
        let mut w = StreamWindow::new(128, 16);
        let mut s = Settled::default();
        for seq in 0..100 {
            assert_eq!(
                w.arrive(seq, &mut s, 8),
                Arrival::First { reordered: false }
            );
        }
        w.settle_below(100, &mut s, 8);
        assert_eq!((s.delivered, s.lost), (100, 0));
    }

    #[test]
    fn an_overtaken_arrival_is_reordered_not_lost_and_duplicate() {
        let mut w = StreamWindow::new(64, 16);
        let mut s = Settled::default();
        assert_eq!(w.arrive(1, &mut s, 8), Arrival::First { reordered: false });
        assert_eq!(w.arrive(0, &mut s, 8), Arrival::First { reordered: true });
        assert_eq!(w.arrive(0, &mut s, 8), Arrival::Duplicate);
        w.settle_below(2, &mut s, 8);
        assert_eq!((s.delivered, s.lost), (2, 0));
        assert_eq!(w.arrive(0, &mut s, 8), Arrival::Duplicate);
    }

    #[test]
    fn a_lost_number_that_arrives_moves_to_after_loss_once() {
        let mut w = StreamWindow::new(64, 16);
        let mut s = Settled::default();
        w.arrive(0, &mut s, 8);
        w.arrive(2, &mut s, 8);
        w.settle_below(3, &mut s, 8);
        assert_eq!((s.delivered, s.lost, s.lost_seqs.clone()), (2, 1, vec![1]));
        assert_eq!(w.remembered_lost(), 1);
        assert_eq!(w.arrive(1, &mut s, 8), Arrival::AfterLoss);
        assert_eq!(w.remembered_lost(), 0);
        assert_eq!(w.arrive(1, &mut s, 8), Arrival::Duplicate);
    }

    #[test]
    fn the_window_slides_past_what_falls_off_its_bottom() {
        let mut w = StreamWindow::new(64, 16);
        let mut s = Settled::default();
        w.arrive(0, &mut s, 8);
        // 64 is one past the window: 0 settles (delivered), nothing else is below.
        w.arrive(64, &mut s, 8);
        assert_eq!((s.delivered, s.lost, w.base()), (1, 0, 1));
        // 200 pushes 1..=136 out, of which only 64 arrived.
        w.arrive(200, &mut s, 8);
        assert_eq!((s.delivered, s.lost), (2, 135));
        assert_eq!(s.lost_by_window, 135);
        assert_eq!(s.lost_seqs, (1..9).collect::<Vec<_>>());
        assert_eq!(w.arrive(5, &mut s, 8), Arrival::AfterLoss);
    }

    #[test]
    fn refused_and_failed_sends_are_not_losses() {
        let mut w = StreamWindow::new(64, 16);
        let mut s = Settled::default();
        w.mark_refused(0, &mut s, 8);
        w.mark_failed(1, &mut s, 8);
        w.mark_failed(2, &mut s, 8);
        assert_eq!(w.arrive(0, &mut s, 8), Arrival::NotSent);
        assert_eq!(w.arrive(2, &mut s, 8), Arrival::First { reordered: false });
        w.settle_below(3, &mut s, 8);
        assert_eq!((s.refused, s.failed, s.delivered, s.lost), (1, 1, 1, 0));
        assert_eq!(w.arrive(1, &mut s, 8), Arrival::AfterFailedSend);
    }

    #[test]
    fn a_full_lost_set_forgets_its_oldest_and_says_so() {
        let mut w = StreamWindow::new(64, 2);
        let mut s = Settled::default();
        for seq in [1, 3, 5] {
            w.arrive(seq, &mut s, 8);
        }
        // Lost: 0, 2, 4: three ranges, the cap keeps two.
        w.settle_below(6, &mut s, 8);
        assert_eq!(s.lost, 3);
        assert_eq!(w.arrive(0, &mut s, 8), Arrival::Unknown);
        assert_eq!(w.arrive(1, &mut s, 8), Arrival::Duplicate);
        assert_eq!(w.arrive(2, &mut s, 8), Arrival::AfterLoss);
        assert_eq!(w.arrive(3, &mut s, 8), Arrival::Duplicate);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arrive(u64),
        Settle(u64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => (0u64..300).prop_map(Op::Arrive),
                1 => (0u64..300).prop_map(Op::Settle),
            ],
            0..400,
        )
    }

    proptest! {
        /// Against a model that keeps every number it has seen: with a window wide
        /// enough never to slide on an arrival and a lost set that never fills, the
        /// window classifies every arrival exactly as the model does, and settles the
        /// same numbers as lost.
        #[test]
        fn the_window_agrees_with_an_unbounded_model(ops in ops()) {
            let mut w = StreamWindow::new(512, 1 << 20);
            let mut s = Settled::default();
            let mut seen: HashMap<u64, u32> = HashMap::new();
            let mut lost: BTreeSet<u64> = BTreeSet::new();
            let mut hi: Option<u64> = None;
            let mut base = 0u64;
            let mut model_lost = 0u64;
            for op in ops {
                match op {
                    Op::Arrive(seq) => {
                        let expected = if seq < base {
                            if lost.remove(&seq) { Arrival::AfterLoss } else { Arrival::Duplicate }
                        } else if seen.contains_key(&seq) {
                            Arrival::Duplicate
                        } else {
                            let reordered = hi.is_some_and(|h| seq < h);
                            if !reordered { hi = Some(seq); }
                            Arrival::First { reordered }
                        };
                        *seen.entry(seq).or_default() += 1;
                        prop_assert_eq!(w.arrive(seq, &mut s, 0), expected, "seq {}", seq);
                    }
                    Op::Settle(limit) => {
                        for n in base..limit {
                            if !seen.contains_key(&n) {
                                lost.insert(n);
                                model_lost += 1;
                            }
                        }
                        base = base.max(limit);
                        w.settle_below(limit, &mut s, 0);
                        prop_assert_eq!(s.lost, model_lost);
                        prop_assert_eq!(w.remembered_lost(), lost.len() as u64);
                    }
                }
            }
        }
    }
}
