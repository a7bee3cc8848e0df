//! The processing loop: a separate task that turns stored events into outputs.
//!
//! The ingest endpoint hands every stored event to the loop over a channel, which wakes
//! it at once (there is no polling interval). The loop:
//!
//! 1. draws the event's [`Decision`] (in arrival order, so faults are reproducible) and
//!    schedules it for its due time: accepted + delay + jitter. Events wait concurrently,
//!    so a delay shifts every event by the same amount rather than serializing the queue;
//! 2. at the due time (earliest first, arrival order among equals) validates and transforms
//!    the event, or routes it to the dead-letter output, or drops it;
//! 3. passes the result through the [`ReorderBuffer`] (a pass-through unless
//!    `--reorder-window` is above 1) to the emitter, which delivers it and then deletes it
//!    from storage.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::emit::{Delivery, Job, Target, file_stem};
use crate::faults::{Decision, FaultConfig, Faults, ReorderBuffer};
use crate::propagate::fresh_span_id;
use crate::storage::StoredEvent;
use crate::transform::{TransformConfig, dead_letter, invalid_reason, transform};

/// The error recorded on a valid event that fault injection sent to the dead letters.
pub const MISROUTE_ERROR: &str = "misrouted by fault injection (--misroute-prob)";

/// A stored event on its way to the processing loop.
#[derive(Debug)]
pub struct Queued {
    /// The event.
    pub event: StoredEvent,
    /// When it was accepted, on the runtime's monotonic clock.
    pub accepted: Instant,
}

impl Queued {
    /// A freshly stored event, accepted now.
    pub fn fresh(event: StoredEvent) -> Self {
        Self {
            event,
            accepted: Instant::now(),
        }
    }

    /// An event left in storage by an earlier run: its acceptance time is recovered from
    /// the wall clock, so its delay is not applied a second time.
    pub fn recovered(event: StoredEvent) -> Self {
        let accepted_at = UNIX_EPOCH + Duration::from_millis(event.accepted_unix_ms);
        let age = SystemTime::now()
            .duration_since(accepted_at)
            .unwrap_or_default();
        let now = Instant::now();
        Self {
            event,
            accepted: now.checked_sub(age).unwrap_or(now),
        }
    }
}

/// An event waiting for its due time.
#[derive(Debug)]
struct Scheduled {
    due: Instant,
    decision: Decision,
    event: StoredEvent,
}

impl Scheduled {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.event.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The processing loop's state.
#[derive(Debug)]
pub struct Processor {
    faults: Faults,
    reorder: ReorderBuffer<Job>,
    transform: TransformConfig,
    pending: BinaryHeap<Reverse<Scheduled>>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Processor {
    /// A processor that sends its jobs to the emitter over `jobs`.
    pub fn new(
        faults: FaultConfig,
        transform: TransformConfig,
        jobs: mpsc::UnboundedSender<Job>,
    ) -> Self {
        Self {
            reorder: ReorderBuffer::new(faults.reorder_window, faults.seed),
            faults: Faults::new(faults),
            transform,
            pending: BinaryHeap::new(),
            jobs,
        }
    }

    /// Runs until `incoming` closes and every scheduled event has been handed on.
    pub async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Queued>) {
        let mut open = true;
        loop {
            let now = Instant::now();
            self.release_due(now);
            if self.reorder.deadline().is_some_and(|at| at <= now) {
                let batch = self.reorder.flush();
                self.send(batch);
            }
            let wake = match (self.pending.peek(), self.reorder.deadline()) {
                (Some(Reverse(next)), Some(flush)) => Some(next.due.min(flush)),
                (Some(Reverse(next)), None) => Some(next.due),
                (None, flush) => flush,
            };
            if !open && wake.is_none() {
                return;
            }
            tokio::select! {
                received = incoming.recv(), if open => match received {
                    Some(queued) => {
                        self.schedule(queued);
                        // Take everything already waiting before looking at the clock again.
                        while let Ok(queued) = incoming.try_recv() {
                            self.schedule(queued);
                        }
                    }
                    None => open = false,
                },
                () = sleep_until_or_forever(wake) => {}
            }
        }
    }

    /// Draws the event's decision and schedules it for its due time.
    fn schedule(&mut self, queued: Queued) {
        let decision = self.faults.decide();
        self.pending.push(Reverse(Scheduled {
            due: queued.accepted + decision.delay,
            decision,
            event: queued.event,
        }));
    }

    /// Processes every event due at `now`, earliest first.
    fn release_due(&mut self, now: Instant) {
        while self
            .pending
            .peek()
            .is_some_and(|Reverse(next)| next.due <= now)
        {
            let Some(Reverse(scheduled)) = self.pending.pop() else {
                break;
            };
            let job = process(scheduled.event, scheduled.decision, &self.transform);
            if job.delivery.is_none() {
                // A dropped event is only deleted; it does not take part in reordering.
                self.send(vec![job]);
            } else {
                let ready = self.reorder.push(job, now);
                self.send(ready);
            }
        }
    }

    fn send(&self, jobs: Vec<Job>) {
        for job in jobs {
            // The emitter only stops when the process is exiting; the event stays stored.
            let _ = self.jobs.send(job);
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What becomes of one event under its decision: a processed output, a dead letter, or
/// nothing (dropped).
pub fn process(event: StoredEvent, decision: Decision, config: &TransformConfig) -> Job {
    if decision.drop {
        return Job {
            event,
            delivery: None,
        };
    }
    let body = event.body.clone();
    let (target, output) = match invalid_reason(&body) {
        Some(reason) => (Target::DeadLetter, dead_letter(body, &reason)),
        None if decision.misroute => (Target::DeadLetter, dead_letter(body, MISROUTE_ERROR)),
        None => (
            Target::Processed,
            transform(body, config, SystemTime::now()),
        ),
    };
    let delivery = Delivery {
        target,
        body: serde_json::Value::Object(output).to_string().into_bytes(),
        headers: event.headers.outgoing(fresh_span_id()),
        file_stem: file_stem(event.headers.correlation_id.as_deref()),
        copies: if decision.duplicate { 2 } else { 1 },
    };
    Job {
        event,
        delivery: Some(delivery),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::propagate::{CORRELATION_HEADER, Propagated, TRACEPARENT_HEADER};

    fn event(seq: u64, body: Value) -> StoredEvent {
        let Value::Object(body) = body else {
            panic!("not an object")
        };
        StoredEvent {
            id: format!("id-{seq}"),
            seq,
            accepted_unix_ms: 0,
            headers: Propagated {
                correlation_id: Some(format!("c-{seq}")),
                run: None,
                traceparent: Some(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
                ),
            },
            body,
        }
    }

    fn config() -> TransformConfig {
        TransformConfig {
            keep_case: vec!["id".to_owned()],
        }
    }

    const PLAIN: Decision = Decision {
        delay: Duration::ZERO,
        drop: false,
        duplicate: false,
        misroute: false,
    };

    fn body(job: &Job) -> Value {
        let delivery = job.delivery.as_ref().expect("delivered");
        serde_json::from_slice(&delivery.body).expect("json")
    }

    #[test]
    fn a_valid_event_is_transformed_for_the_processed_output() {
        let job = process(event(1, json!({"item": "widget"})), PLAIN, &config());
        let delivery = job.delivery.as_ref().expect("delivered");
        assert_eq!(delivery.target, Target::Processed);
        assert_eq!(delivery.copies, 1);
        assert_eq!(delivery.file_stem, "c-1");
        assert_eq!(body(&job)["item"], "WIDGET");
        assert_eq!(body(&job)["status"], "processed");
        assert_eq!(delivery.headers[0], (CORRELATION_HEADER, "c-1".to_owned()));
        let (name, traceparent) = &delivery.headers[1];
        assert_eq!(*name, TRACEPARENT_HEADER);
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!traceparent.contains("00f067aa0ba902b7"), "a fresh span id");
    }

    #[test]
    fn an_invalid_event_goes_to_the_dead_letters_untransformed() {
        let job = process(
            event(2, json!({"item": "bomb", "poison": true})),
            PLAIN,
            &config(),
        );
        let delivery = job.delivery.as_ref().expect("delivered");
        assert_eq!(delivery.target, Target::DeadLetter);
        assert_eq!(
            body(&job),
            json!({"item": "bomb", "poison": true, "error": "poison event"})
        );
    }

    #[test]
    fn decisions_drop_duplicate_and_misroute() {
        let dropped = process(
            event(3, json!({})),
            Decision {
                drop: true,
                ..PLAIN
            },
            &config(),
        );
        assert!(dropped.delivery.is_none());
        assert_eq!(dropped.event.id, "id-3");

        let twice = process(
            event(4, json!({})),
            Decision {
                duplicate: true,
                ..PLAIN
            },
            &config(),
        );
        assert_eq!(twice.delivery.as_ref().map(|d| d.copies), Some(2));

        let misrouted = process(
            event(5, json!({"item": "widget"})),
            Decision {
                misroute: true,
                ..PLAIN
            },
            &config(),
        );
        let delivery = misrouted.delivery.as_ref().expect("delivered");
        assert_eq!(delivery.target, Target::DeadLetter);
        assert_eq!(
            body(&misrouted),
            json!({"item": "widget", "error": MISROUTE_ERROR})
        );
    }

    fn processor(faults: FaultConfig) -> (Processor, mpsc::UnboundedReceiver<Job>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Processor::new(faults, config(), tx), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_events_wait_concurrently_and_leave_in_due_order() {
        let (processor, mut jobs) = processor(FaultConfig {
            delay: Duration::from_millis(500),
            ..FaultConfig::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        for seq in 0..50 {
            tx.send(Queued {
                event: event(seq, json!({ "n": seq })),
                accepted: start,
            })
            .expect("send");
        }
        drop(tx);
        processor.run(rx).await;
        let elapsed = start.elapsed();
        // Fifty events of 500 ms each, all done after one delay, not fifty.
        assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
        let mut seqs = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            seqs.push(job.event.seq);
        }
        assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_due_time_overtakes_an_earlier_arrival() {
        let (processor, mut jobs) = processor(FaultConfig {
            delay: Duration::from_millis(100),
            ..FaultConfig::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        tx.send(Queued {
            event: event(0, json!({})),
            accepted: start + Duration::from_millis(50),
        })
        .expect("send");
        tx.send(Queued {
            event: event(1, json!({})),
            accepted: start,
        })
        .expect("send");
        drop(tx);
        processor.run(rx).await;
        let first = jobs.try_recv().expect("a job");
        let second = jobs.try_recv().expect("a job");
        assert_eq!((first.event.seq, second.event.seq), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reorder_window_shuffles_and_flushes_a_partial_batch() {
        let run = || async {
            let (processor, mut jobs) = processor(FaultConfig {
                reorder_window: 4,
                seed: 9,
                ..FaultConfig::default()
            });
            let (tx, rx) = mpsc::unbounded_channel();
            for seq in 0..10 {
                tx.send(Queued::fresh(event(seq, json!({})))).expect("send");
            }
            drop(tx);
            processor.run(rx).await;
            let mut seqs = Vec::new();
            while let Ok(job) = jobs.try_recv() {
                seqs.push(job.event.seq);
            }
            seqs
        };
        let seqs = run().await;
        // Two full batches of four, then the last two after the idle time.
        assert_eq!(seqs.len(), 10);
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let mut batches: Vec<Vec<u64>> = seqs.chunks(4).map(<[u64]>::to_vec).collect();
        for batch in &mut batches {
            batch.sort_unstable();
        }
        assert_eq!(
            batches,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert_ne!(seqs, sorted, "the seed shuffles something");
        assert_eq!(seqs, run().await, "the same seed, the same order");
    }

    #[test]
    fn a_recovered_event_keeps_its_age() {
        let mut stored = event(0, json!({}));
        stored.accepted_unix_ms = u64::try_from(
            (SystemTime::now() - Duration::from_secs(3))
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("fits");
        let queued = Queued::recovered(stored);
        let age = queued.accepted.elapsed();
        assert!(age >= Duration::from_secs(2), "{age:?}");
        assert!(age < Duration::from_secs(60), "{age:?}");
    }
}
