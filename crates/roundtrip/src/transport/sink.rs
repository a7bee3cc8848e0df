//! Where a listener hands what it receives ([`ObservationSink`]), what it counts while
//! it runs ([`ListenerStats`]), and the gaps in its subscription ([`Gap`], and the
//! [`Outage`] guard that records one while a source is unreachable).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use roundtrip_core::correlate::Correlator;
use roundtrip_core::observation::{NewObservation, Observation, Payload, UnixNanos};

use super::{REDELIVERED_HEADER, Received};
use crate::clock;
use crate::store::{Store, StoreError};

/// What kind of gap a listener had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// The source could not be reached for a while (a disconnect, a failing receive).
    Outage,
    /// The client or the broker dropped messages (a full buffer, a drop counter).
    Dropped,
    /// The client reported an error about a message, which was not recorded.
    ConsumerError,
    /// An acknowledgement (an ack, an offset commit) failed: the message comes again.
    AckFailed,
    /// Anything else the listener had to give up on (a revoked partition, a failed
    /// cleanup).
    Other,
}

/// One gap in a listener's subscription: when it was, what it may have lost and why. A
/// message missing from an at-most-once listener must be covered by a gap's `count` or
/// fall in its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// What kind.
    pub kind: GapKind,
    /// When it began (wall clock).
    pub start: UnixNanos,
    /// When it ended; `None` while it goes on.
    pub end: Option<UnixNanos>,
    /// How many messages it lost, when the transport says (`Some(0)`: none, e.g. an ack
    /// that failed and will be redelivered); `None` when it cannot know.
    pub count: Option<u64>,
    /// What happened, as the report shows it.
    pub cause: String,
}

/// Counters a listener keeps while it runs.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Observations committed.
    pub recorded: AtomicU64,
    /// Messages rejected or not recorded (wrong method/path, store errors).
    pub faults: AtomicU64,
    /// Deliveries the broker marked as redeliveries.
    pub redelivered: AtomicU64,
    /// Observations that named no run, kept as evidence under the sink's own run (a
    /// listener service's sink, [`ObservationSink::attributed`]).
    pub unattributed: AtomicU64,
    /// Observations that named no run, dropped by the record policy (not stored).
    pub dropped: AtomicU64,
    /// The time from receiving to committing, summed over `recorded`, in nanoseconds.
    pub record_nanos: AtomicU64,
    gaps: Mutex<Vec<Gap>>,
}

impl ListenerStats {
    /// The gaps recorded so far.
    pub fn gaps(&self) -> Vec<Gap> {
        self.lock_gaps().clone()
    }

    /// What the gaps recorded so far were, as the report shows them.
    pub fn gap_causes(&self) -> Vec<String> {
        self.lock_gaps().iter().map(|g| g.cause.clone()).collect()
    }

    /// What the listener of `channel` recorded, as a run summary (and a service's stop)
    /// reports it.
    pub fn summary(
        &self,
        channel: &str,
        transport: &str,
        delivery: super::Delivery,
        polling: bool,
    ) -> roundtrip_core::run::ListenerSummary {
        roundtrip_core::run::ListenerSummary {
            channel: channel.to_owned(),
            transport: transport.to_owned(),
            recorded: self.recorded.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            delivery: delivery.as_str().to_owned(),
            polling,
            redelivered: self.redelivered.load(Ordering::Relaxed),
            gaps: self.gap_causes(),
        }
    }

    fn lock_gaps(&self) -> std::sync::MutexGuard<'_, Vec<Gap>> {
        self.gaps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a listener hands what it receives: correlates, truncates, timestamps, and
/// commits to the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObservationSink {
    inner: Arc<SinkInner>,
}

#[derive(Debug)]
struct SinkInner {
    store: Arc<dyn Store>,
    run_id: String,
    attribution: Option<Arc<dyn Attribution>>,
    /// Under load, where observations go instead of the store ([`ObservationSink::tapped`]).
    tap: Option<Tap>,
    channel: String,
    correlator: Arc<Correlator>,
    max_payload: usize,
    stats: Arc<ListenerStats>,
}

impl ObservationSink {
    /// A sink that records into `store` for `run_id` on `channel`.
    pub fn new(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        channel: impl Into<String>,
        correlator: Arc<Correlator>,
        max_payload: usize,
    ) -> ObservationSink {
        let inner = SinkInner {
            store,
            run_id: run_id.into(),
            channel: channel.into(),
            correlator,
            max_payload,
            stats: Arc::new(ListenerStats::default()),
            attribution: None,
            tap: None,
        };
        ObservationSink {
            inner: Arc::new(inner),
        }
    }

    /// A sink that asks `attribution` which run each message belongs to (a listener
    /// service, which knows no runs in advance); `run_id` is its own run, for what
    /// names none and for the names of resources it creates.
    pub fn attributed(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        channel: impl Into<String>,
        correlator: Arc<Correlator>,
        max_payload: usize,
        attribution: Arc<dyn Attribution>,
    ) -> ObservationSink {
        let mut sink = ObservationSink::new(store, run_id, channel, correlator, max_payload);
        if let Some(inner) = Arc::get_mut(&mut sink.inner) {
            inner.attribution = Some(attribution);
        }
        sink
    }

    /// A sink for a load run: every observation goes to `tap`, not to the store, and
    /// the listener may acknowledge it once the tap took it. Under load the run
    /// records aggregates (the accounting's intervals), not every observation, so that
    /// the recorder is never the bottleneck; the tap is bounded, so a slow accounting
    /// holds the listener back rather than losing anything.
    pub fn tapped(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        channel: impl Into<String>,
        correlator: Arc<Correlator>,
        max_payload: usize,
        tap: tokio::sync::mpsc::Sender<Arc<Observation>>,
    ) -> ObservationSink {
        let mut sink = ObservationSink::new(store, run_id, channel, correlator, max_payload);
        if let Some(inner) = Arc::get_mut(&mut sink.inner) {
            inner.tap = Some(Tap {
                to: tap,
                seq: AtomicU64::new(0),
            });
        }
        sink
    }

    /// The channel this sink records for.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The run this sink records for.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// How many bytes of a message this sink keeps (the channel's `max_payload`).
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// This sink's counters (shared with the listener summary).
    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Counts a message the listener had to reject before recording it.
    pub fn fault(&self) {
        self.inner.stats.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a gap of a moment that may have lost an unknown number of messages, e.g.
    /// `slow consumer at …: dropped messages`.
    pub fn gap(&self, kind: GapKind, cause: impl Into<String>) {
        self.point_gap(kind, cause.into(), None);
    }

    /// Records a gap of a moment that lost exactly `count` messages (a broker's drop
    /// counter), or none (`0`: an ack that failed, so the message comes again).
    pub fn gap_counted(&self, kind: GapKind, cause: impl Into<String>, count: u64) {
        self.point_gap(kind, cause.into(), Some(count));
    }

    /// Records a client-side consumer error as a gap: the message it was about (if any)
    /// was not recorded.
    pub fn consumer_error(&self, error: impl fmt::Display) {
        self.gap(
            GapKind::ConsumerError,
            format!("consumer error at {}: {error}", clock::format_wall_now()),
        );
    }

    fn point_gap(&self, kind: GapKind, cause: String, count: Option<u64>) {
        let now = clock::wall_now();
        self.push_gap(Gap {
            kind,
            start: now,
            end: Some(now),
            count,
            cause,
        });
    }

    fn push_gap(&self, gap: Gap) -> usize {
        let mut gaps = self.inner.stats.lock_gaps();
        gaps.push(gap);
        gaps.len() - 1
    }

    fn end_gap(&self, index: usize, cause: String) {
        if let Some(gap) = self.inner.stats.lock_gaps().get_mut(index) {
            gap.end = Some(clock::wall_now());
            gap.cause = cause;
        }
    }

    /// Records a received message; resolves after the store committed it, with the
    /// committed observation, or `None` when the sink's [`Attribution`] dropped it (it
    /// named no run and the policy keeps only what does): either way, the listener may
    /// acknowledge it.
    pub async fn record(&self, received: Received) -> Result<Option<Arc<Observation>>, StoreError> {
        let received_mono = clock::mono_now();
        let received_at = clock::wall_now();
        let s = &self.inner;
        let mut headers: Vec<(String, String)> = received
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if received.redelivered {
            s.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            headers.push((REDELIVERED_HEADER.to_owned(), "true".to_owned()));
        }
        let mut payload = Payload::from_bytes(received.body, s.max_payload);
        if let Some(size) = received.size
            && size > payload.size
        {
            // The listener kept only the first part.
            payload.size = size;
            payload.truncated = true;
            payload.json = None;
        }
        let correlation_id =
            s.correlator
                .extract(&headers, payload.json.as_ref(), received.key.as_deref());
        let run_id = match &s.attribution {
            None => s.run_id.clone(),
            Some(attribution) => match attribution.run_of(&headers, payload.json.as_ref()) {
                Some(run) => run,
                None if attribution.keeps_unattributed() => {
                    s.stats.unattributed.fetch_add(1, Ordering::Relaxed);
                    s.run_id.clone()
                }
                None => {
                    s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
            },
        };
        let observation = NewObservation {
            run_id,
            channel: s.channel.clone(),
            correlation_id,
            payload,
            headers,
            message_id: received.message_id,
            key: received.key,
            meta: received.meta,
            received_at,
            // A listener service records for runners in other processes, whose
            // monotonic clocks this one's means nothing to: they judge its arrivals by
            // wall clock (and their verdicts say so).
            received_mono: s.attribution.is_none().then_some(received_mono),
        };
        let result = match (&s.tap, &s.attribution) {
            (Some(tap), _) => {
                let seq = tap.seq.fetch_add(1, Ordering::Relaxed);
                let committed = Arc::new(observation.committed(seq));
                match tap.to.send(Arc::clone(&committed)).await {
                    Ok(()) => Ok(committed),
                    Err(_) => Err(StoreError::Closed),
                }
            }
            (None, None) => s.store.record(observation).await,
            (None, Some(attribution)) => attribution.record(&s.store, observation).await,
        };
        match result {
            Ok(committed) => {
                s.stats.recorded.fetch_add(1, Ordering::Relaxed);
                let took = clock::mono_now().saturating_sub(received_mono);
                s.stats.record_nanos.fetch_add(took, Ordering::Relaxed);
                Ok(Some(committed))
            }
            Err(e) => {
                s.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Where a load run's sink hands its observations, numbered in arrival order.
#[derive(Debug)]
struct Tap {
    to: tokio::sync::mpsc::Sender<Arc<Observation>>,
    seq: AtomicU64,
}

/// Puts a load run's tapped observations back in the order they arrived.
///
/// A listener records several messages at once (the NATS listener up to 512), so their
/// hand-offs to the tap may complete out of order: a hand-off that waits (the tap is
/// full, or the task's cooperative budget ran out) can be overtaken by a later one. Each
/// tapped observation carries its sink's arrival number (`seq`, taken before the
/// hand-off), so the harness can tell its own shuffling from the system's: this releases
/// each channel's observations in that order. Were a number never to come (a hand-off
/// dropped when its listener stopped), the gap is skipped once [`TapOrder::MAX_HELD`]
/// later ones wait behind it, so memory stays bounded.
#[derive(Debug, Default)]
pub(crate) struct TapOrder {
    channels: std::collections::HashMap<String, Held>,
}

#[derive(Debug, Default)]
struct Held {
    next: u64,
    waiting: std::collections::BTreeMap<u64, Arc<Observation>>,
}

impl TapOrder {
    /// The most observations held behind a missing one, per channel.
    pub(crate) const MAX_HELD: usize = 4096;

    /// Takes one tapped observation and hands `release` every observation now in order.
    pub(crate) fn push(
        &mut self,
        observation: Arc<Observation>,
        mut release: impl FnMut(Arc<Observation>),
    ) {
        let held = match self.channels.get_mut(&observation.channel) {
            Some(held) => held,
            None => self
                .channels
                .entry(observation.channel.clone())
                .or_default(),
        };
        if observation.seq < held.next {
            // Behind what was released: a number skipped as missing that came after
            // all. Nothing is waiting for it.
            release(observation);
            return;
        }
        held.waiting.insert(observation.seq, observation);
        loop {
            let over = held.waiting.len() > Self::MAX_HELD;
            let Some(entry) = held.waiting.first_entry() else {
                return;
            };
            if *entry.key() != held.next && !over {
                return;
            }
            held.next = entry.key() + 1;
            release(entry.remove());
        }
    }

    /// Hands `release` everything still held, in order: the tap closed, and what is
    /// missing will not come.
    pub(crate) fn finish(&mut self, mut release: impl FnMut(Arc<Observation>)) {
        for (_, held) in self.channels.drain() {
            for (_, observation) in held.waiting {
                release(observation);
            }
        }
    }
}

/// Which run an observation belongs to, decided per message: a listener service's
/// answer to observations from runs it was never told of.
#[async_trait::async_trait]
pub trait Attribution: Send + Sync + fmt::Debug {
    /// The run the message names (its header or payload field), if it names one.
    fn run_of(
        &self,
        headers: &[(String, String)],
        json: Option<&serde_json::Value>,
    ) -> Option<String>;
    /// Whether an observation that names no run is kept (under the sink's own run) or
    /// dropped.
    fn keeps_unattributed(&self) -> bool;
    /// Commits the observation, creating its run in the store first if need be.
    async fn record(
        &self,
        store: &Arc<dyn Store>,
        observation: NewObservation,
    ) -> Result<Arc<Observation>, StoreError>;
}

impl ObservationSink {
    /// Records a copy of an observation another process recorded (a listener service,
    /// read from its event stream): as it was received there, with its wall-clock
    /// receive time and no monotonic one, correlated by this sink's rule, and marked with
    /// the original's sequence number (`copy_of` in its metadata).
    pub async fn record_copy(&self, original: Observation) -> Result<Arc<Observation>, StoreError> {
        let s = &self.inner;
        let correlation_id = s.correlator.extract(
            &original.headers,
            original.payload.json.as_ref(),
            original.key.as_deref(),
        );
        let copy = NewObservation {
            run_id: s.run_id.clone(),
            channel: s.channel.clone(),
            correlation_id,
            payload: original.payload,
            headers: original.headers,
            message_id: original.message_id,
            key: original.key,
            meta: {
                let mut meta = original.meta;
                meta.push((crate::remote::COPY_OF.to_owned(), original.seq.to_string()));
                meta
            },
            received_at: original.received_at,
            received_mono: None,
        };
        match s.store.record(copy).await {
            Ok(committed) => {
                s.stats.recorded.fetch_add(1, Ordering::Relaxed);
                Ok(committed)
            }
            Err(e) => {
                s.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Records an outage of a listener's source as one gap: opened at the first failure
/// (so a report written while the listener is away shows it), closed with its length
/// when the source answers again. Reads `{what} at {time} ({cause}); not back yet`,
/// then `{what} at {time} for {length} ({cause}); {after}`.
#[derive(Debug, Default)]
pub struct Outage {
    open: Option<OpenOutage>,
}

#[derive(Debug)]
struct OpenOutage {
    index: usize,
    since: Instant,
    at: String,
    what: &'static str,
    cause: Option<String>,
}

impl Outage {
    /// The source failed (`cause`, if the client says why); the first failure of an
    /// outage opens its gap, the rest of it are the same outage.
    pub fn failed(&mut self, sink: &ObservationSink, what: &'static str, cause: Option<String>) {
        if self.open.is_some() {
            return;
        }
        let at = clock::format_wall_now();
        let index = sink.push_gap(Gap {
            kind: GapKind::Outage,
            start: clock::wall_now(),
            end: None,
            count: None,
            cause: format!("{what} at {at}{}; not back yet", because(cause.as_deref())),
        });
        self.open = Some(OpenOutage {
            index,
            since: Instant::now(),
            at,
            what,
            cause,
        });
    }

    /// The source answers again: the outage's gap ends now, `after` saying what became of
    /// the messages meanwhile (or empty).
    pub fn recovered(&mut self, sink: &ObservationSink, after: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        let after = if after.is_empty() {
            String::new()
        } else {
            format!("; {after}")
        };
        sink.end_gap(
            open.index,
            format!(
                "{} at {} for {}{}{after}",
                open.what,
                open.at,
                lasted(open.since.elapsed()),
                because(open.cause.as_deref())
            ),
        );
    }
}

fn because(cause: Option<&str>) -> String {
    cause.map(|c| format!(" ({c})")).unwrap_or_default()
}

/// `1.3s`, `250ms`: the length of an outage, to a tenth.
fn lasted(d: Duration) -> String {
    format!("{d:.1?}")
}

#[cfg(test)]
mod tests {
    use roundtrip_core::model::CorrelationRule;

    use super::*;

    async fn sink() -> ObservationSink {
        let store = crate::store::open("sqlite::memory:")
            .await
            .expect("a store");
        ObservationSink::new(
            store,
            "run",
            "out",
            Arc::new(Correlator::new(&CorrelationRule::default()).expect("a rule")),
            1024,
        )
    }

    #[tokio::test]
    async fn an_outage_is_one_gap_open_until_the_source_is_back() {
        let sink = sink().await;
        let mut outage = Outage::default();
        outage.failed(&sink, "connection lost", Some("reset by peer".into()));
        outage.failed(&sink, "connection lost", Some("refused".into()));
        let gaps = sink.stats().gaps();
        assert_eq!(gaps.len(), 1, "one outage, one gap: {gaps:?}");
        assert_eq!(
            (gaps[0].kind, gaps[0].end, gaps[0].count),
            (GapKind::Outage, None, None)
        );
        assert!(gaps[0].cause.starts_with("connection lost at "), "{gaps:?}");
        assert!(
            gaps[0].cause.ends_with(" (reset by peer); not back yet"),
            "{gaps:?}"
        );

        outage.recovered(&sink, "the group kept the position");
        let gaps = sink.stats().gaps();
        let end = gaps[0].end.expect("ended");
        assert!(end >= gaps[0].start);
        assert!(gaps[0].cause.contains(" for "), "{gaps:?}");
        assert!(
            gaps[0]
                .cause
                .ends_with(" (reset by peer); the group kept the position"),
            "{gaps:?}"
        );
        // Recovering again, without a failure, records nothing.
        outage.recovered(&sink, "again");
        assert_eq!(sink.stats().gaps().len(), 1);
    }

    fn tapped(channel: &str, seq: u64) -> Arc<Observation> {
        let mut o = Observation::of_payload(Payload::from_bytes(Vec::new(), 16));
        o.channel = channel.to_owned();
        o.seq = seq;
        Arc::new(o)
    }

    fn released(order: &mut TapOrder, arrivals: &[(&str, u64)]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for &(channel, seq) in arrivals {
            order.push(tapped(channel, seq), |o| {
                out.push((o.channel.clone(), o.seq))
            });
        }
        out
    }

    #[test]
    fn a_tap_order_releases_each_channel_in_arrival_order() {
        let mut order = TapOrder::default();
        let out = released(
            &mut order,
            &[
                ("a", 1),
                ("b", 0),
                ("a", 2),
                ("a", 0),
                ("b", 2),
                ("b", 1),
                ("a", 3),
            ],
        );
        let want: Vec<(String, u64)> = [
            ("b", 0),
            ("a", 0),
            ("a", 1),
            ("a", 2),
            ("b", 1),
            ("b", 2),
            ("a", 3),
        ]
        .iter()
        .map(|&(c, s)| (c.to_owned(), s))
        .collect();
        assert_eq!(out, want);
        let mut rest = Vec::new();
        order.finish(|o| rest.push(o.seq));
        assert!(rest.is_empty(), "nothing is held: {rest:?}");
    }

    #[test]
    fn a_tap_order_skips_a_number_that_never_comes_once_too_many_wait() {
        let mut order = TapOrder::default();
        // 0 never comes: 1.. wait behind it, up to the bound.
        let waiting: Vec<(&str, u64)> = (1..=TapOrder::MAX_HELD as u64).map(|s| ("a", s)).collect();
        assert!(released(&mut order, &waiting).is_empty(), "all wait for 0");
        let max = TapOrder::MAX_HELD as u64;
        let out = released(&mut order, &[("a", max + 1), ("a", max + 2)]);
        let seqs: Vec<u64> = out.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            seqs,
            (1..=max + 2).collect::<Vec<_>>(),
            "released in order past the gap"
        );
        // A late 0 (its hand-off finally done) is released at once, not held forever.
        assert_eq!(released(&mut order, &[("a", 0)]), [("a".to_owned(), 0)]);
    }

    #[test]
    fn a_finished_tap_order_releases_what_it_held_in_order() {
        let mut order = TapOrder::default();
        assert!(released(&mut order, &[("a", 3), ("a", 1)]).is_empty());
        let mut rest = Vec::new();
        order.finish(|o| rest.push(o.seq));
        assert_eq!(rest, [1, 3]);
    }

    #[tokio::test]
    async fn point_gaps_say_what_they_lost() {
        let sink = sink().await;
        sink.gap(GapKind::Dropped, "slow consumer");
        sink.gap_counted(GapKind::AckFailed, "an ack failed", 0);
        let gaps = sink.stats().gaps();
        assert_eq!(gaps[0].count, None);
        assert_eq!(gaps[1].count, Some(0));
        assert_eq!(gaps[1].start, gaps[1].end.expect("a moment"));
        assert_eq!(
            sink.stats().gap_causes(),
            ["slow consumer", "an ack failed"]
        );
    }
}
