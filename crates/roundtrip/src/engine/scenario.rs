//! One scenario: send its events, feed its expectation machines with the observations
//! routed to it and with the clock, and collect the verdicts.
//!
//! Sends run in their own task so that evaluation never waits on a slow transport.
//! Decisions never depend on when this loop happens to run: machines judge arrivals by
//! the listener's receive timestamp, and deadlines are processed only after
//! [`COMMIT_SLACK`], so an observation received just before a deadline has been
//! committed and routed before the deadline is judged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use roundtrip_core::expect::{ExpectationMachine, SentRef};
use roundtrip_core::observation::{Observation, SentEvent};
use roundtrip_core::run::{ScenarioResult, ScenarioStatus};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::plan::PlannedScenario;
use super::produce;
use super::session::{Sent, Session};
use crate::clock;

/// How long after a deadline the engine waits before judging it, so that observations
/// received before the deadline are committed and routed first. Commits take well under
/// a millisecond (see BENCHMARKS.md); this is a tolerance for a loaded machine, not a
/// synchronisation sleep.
pub const COMMIT_SLACK: Duration = Duration::from_millis(25);

enum SendNote {
    /// Accepted, after this many ns.
    Sent(SentEvent, u64),
    Failed(SentEvent),
    /// Sending stopped early: this many events were never attempted.
    Abandoned {
        not_attempted: u64,
    },
    Done,
}

/// After this many connection failures in a row, a scenario stops sending: the input
/// is down, and another billion attempts would only fill the store with errors.
pub const MAX_CONSECUTIVE_UNREACHABLE: u32 = 10;

/// A send that takes this long to be accepted is noted in the scenario's result: the SLA
/// clock starts when a send begins, so a slow input spends it.
pub const SLOW_SEND: Duration = Duration::from_millis(500);

/// Runs one scenario to its verdict (or until `cancel` turns true).
pub(crate) async fn run(
    session: Arc<Session>,
    scenario: &PlannedScenario,
    mut cancel: watch::Receiver<bool>,
) -> ScenarioResult {
    let started = clock::mono_now();
    let mut machines = Vec::with_capacity(scenario.expect.len());
    for (i, e) in scenario.expect.iter().enumerate() {
        match ExpectationMachine::new(i, e) {
            Ok(m) => machines.push(m),
            Err(err) => {
                return error_result(scenario, format!("expectation {}: {err}", i + 1), started);
            }
        }
    }

    // Correlated observations (routed by the correlation ids this scenario registers)
    // and evidence (uncorrelated observations on the channels it watches) arrive apart.
    let (obs_tx, mut obs_rx) = mpsc::unbounded_channel::<Arc<Observation>>();
    let (evidence_tx, mut evidence_rx) = mpsc::unbounded_channel::<Arc<Observation>>();
    let watched: HashSet<String> = scenario.expect.iter().map(|e| e.on.clone()).collect();
    session.router.watch(watched, &evidence_tx);
    drop(evidence_tx);

    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<SendNote>();
    let sender = tokio::spawn(send_all(
        Arc::clone(&session),
        scenario.clone(),
        obs_tx.clone(),
        note_tx,
    ));
    drop(obs_tx);

    let mut early: HashMap<String, Vec<Arc<Observation>>> = HashMap::new();
    let mut tally = SendTally::default();
    let mut sends_done = false;
    let mut interrupted = false;
    let mut correlation_ids: Vec<String> = Vec::new();

    let feed = |machines: &mut Vec<ExpectationMachine>, obs: &Observation| {
        feed_machines(machines, scenario, obs);
    };
    let accept = |machines: &mut Vec<ExpectationMachine>,
                  early: &mut HashMap<String, Vec<Arc<Observation>>>,
                  obs: Arc<Observation>| {
        match &obs.correlation_id {
            // Routed to us before its send was confirmed: hold it until then.
            Some(id) if !machines.iter().any(|m| m.knows_sent(id)) => {
                early.entry(id.clone()).or_default().push(obs);
            }
            _ => feed_machines(machines, scenario, &obs),
        }
    };

    loop {
        if sends_done && machines.iter().all(|m| m.verdict().is_some()) {
            break;
        }
        let deadline = machines.iter().filter_map(|m| m.next_deadline()).min();
        let wake = deadline.map(|d| clock::instant_of(d) + COMMIT_SLACK);
        tokio::select! {
            biased;
            () = super::cancelled(&mut cancel) => {
                interrupted = true;
                break;
            }
            note = note_rx.recv(), if !sends_done => match note {
                Some(SendNote::Sent(ev, took)) => {
                    tally.sent(took);
                    for m in &mut machines {
                        m.on_sent(SentRef {
                            correlation_id: &ev.correlation_id,
                            index: ev.index,
                            sent_mono: ev.sent_mono,
                            sent_at: ev.sent_at,
                        });
                    }
                    if let Some(buffered) = early.remove(&ev.correlation_id) {
                        for obs in buffered {
                            feed(&mut machines, &obs);
                        }
                    }
                    correlation_ids.push(ev.correlation_id);
                }
                Some(SendNote::Failed(ev)) => {
                    tally.failed(ev.error.as_deref());
                    for m in &mut machines {
                        m.on_not_sent(&ev.correlation_id, ev.index);
                    }
                    early.remove(&ev.correlation_id);
                    correlation_ids.push(ev.correlation_id);
                }
                Some(SendNote::Abandoned { not_attempted: n }) => tally.not_attempted = n,
                Some(SendNote::Done) | None => {
                    sends_done = true;
                    for m in &mut machines {
                        m.sends_complete();
                    }
                }
            },
            Some(obs) = obs_rx.recv() => {
                accept(&mut machines, &mut early, obs);
            }
            Some(obs) = evidence_rx.recv() => feed(&mut machines, &obs),
            () = sleep_until_opt(wake) => {
                // Take in everything that is already here before judging the deadline.
                while let Ok(obs) = obs_rx.try_recv() {
                    accept(&mut machines, &mut early, obs);
                }
                while let Ok(obs) = evidence_rx.try_recv() {
                    feed(&mut machines, &obs);
                }
                let judge_at = clock::mono_now().saturating_sub(nanos(COMMIT_SLACK));
                for m in &mut machines {
                    m.on_tick(judge_at);
                }
            }
        }
    }
    sender.abort();
    session
        .router
        .unroute(correlation_ids.iter().map(String::as_str));

    let expectations: Vec<_> = machines
        .iter()
        .filter_map(|m| m.verdict().cloned())
        .collect();
    let failed = expectations.iter().any(|v| !v.passed());
    let (status, error) = tally.outcome(interrupted, failed);
    ScenarioResult {
        name: scenario.name.clone(),
        status,
        sent: tally.sent,
        send_errors: tally.errors,
        error,
        expectations,
        duration_ns: clock::mono_now().saturating_sub(started),
        notes: tally.notes(),
    }
}

/// What a scenario's sends came to.
#[derive(Debug, Default)]
pub(super) struct SendTally {
    /// Attempted, accepted or not.
    sent: u64,
    /// Not accepted.
    errors: u64,
    first_error: Option<String>,
    /// Never attempted, after too many connection failures in a row.
    not_attempted: u64,
    /// Accepted only after [`SLOW_SEND`] or more, and the slowest of those (ns).
    slow: u64,
    slowest: u64,
}

impl SendTally {
    pub(super) fn sent(&mut self, took: u64) {
        self.sent += 1;
        if took >= nanos(SLOW_SEND) {
            self.slow += 1;
            self.slowest = self.slowest.max(took);
        }
    }

    pub(super) fn failed(&mut self, error: Option<&str>) {
        self.sent += 1;
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = error.map(str::to_owned);
        }
    }

    /// The scenario's status and error: an interruption or a failed send is an error
    /// (its verdicts are not the system's), then a failed expectation fails it.
    pub(super) fn outcome(
        &self,
        interrupted: bool,
        failed: bool,
    ) -> (ScenarioStatus, Option<String>) {
        if interrupted {
            (
                ScenarioStatus::Error,
                Some("interrupted before every expectation had a verdict".to_owned()),
            )
        } else if self.errors > 0 {
            let mut error = self.first_error.clone().unwrap_or_default();
            if self.not_attempted > 0 {
                error.push_str(&format!(
                    "; sending stopped after {MAX_CONSECUTIVE_UNREACHABLE} connection failures \
                     in a row: {} more event(s) were not attempted",
                    self.not_attempted
                ));
            }
            (ScenarioStatus::Error, Some(error))
        } else if failed {
            (ScenarioStatus::Failed, None)
        } else {
            (ScenarioStatus::Passed, None)
        }
    }

    pub(super) fn notes(&self) -> Vec<String> {
        if self.slow == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} of {} send(s) took {} or more to be accepted (the slowest {}): the SLA clock \
             starts when a send begins, so an input that is slow to accept (a small listen \
             backlog, a cold start, a busy broker) spends the SLA before the system has the \
             event",
            self.slow,
            self.sent,
            roundtrip_core::latency::format_ns(nanos(SLOW_SEND)),
            roundtrip_core::latency::format_ns(self.slowest)
        )]
    }
}

fn feed_machines(
    machines: &mut [ExpectationMachine],
    scenario: &PlannedScenario,
    obs: &Observation,
) {
    for (m, e) in machines.iter_mut().zip(&scenario.expect) {
        if e.on == obs.channel && m.verdict().is_none() {
            m.on_observation(obs);
        }
    }
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn error_result(scenario: &PlannedScenario, error: String, started: u64) -> ScenarioResult {
    ScenarioResult {
        name: scenario.name.clone(),
        status: ScenarioStatus::Error,
        sent: 0,
        send_errors: 0,
        error: Some(error),
        expectations: Vec::new(),
        duration_ns: clock::mono_now().saturating_sub(started),
        notes: Vec::new(),
    }
}

/// Sends every event of the scenario: steps in order, each step's repeats with up to
/// `concurrency` in flight. Each event's route is registered before it is produced.
async fn send_all(
    session: Arc<Session>,
    scenario: PlannedScenario,
    inbox: mpsc::UnboundedSender<Arc<Observation>>,
    notes: mpsc::UnboundedSender<SendNote>,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let total: u64 = scenario.sends.iter().map(|s| u64::from(s.repeat)).sum();
    let failing = Arc::new(AtomicU32::new(0));
    let mut index = 0u64;
    for step in &scenario.sends {
        let permits = Arc::new(Semaphore::new(step.concurrency.max(1) as usize));
        let mut in_flight = JoinSet::new();
        for _ in 0..step.repeat {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            if failing.load(Ordering::Relaxed) >= MAX_CONSECUTIVE_UNREACHABLE {
                while in_flight.join_next().await.is_some() {}
                let _ = notes.send(SendNote::Abandoned {
                    not_attempted: total.saturating_sub(index),
                });
                let _ = notes.send(SendNote::Done);
                return;
            }
            let correlation_id = produce::new_correlation_id();
            session.router.route(&correlation_id, &inbox);
            let (session, step, notes, name, failing) = (
                Arc::clone(&session),
                step.clone(),
                notes.clone(),
                scenario.name.clone(),
                Arc::clone(&failing),
            );
            let this = index;
            index += 1;
            in_flight.spawn(async move {
                let Sent {
                    event: ev,
                    unreachable,
                    took,
                } = session.send_one(&name, &step, this, correlation_id).await;
                if unreachable {
                    failing.fetch_add(1, Ordering::Relaxed);
                } else {
                    failing.store(0, Ordering::Relaxed);
                }
                let note = if ev.error.is_some() {
                    SendNote::Failed(ev)
                } else {
                    SendNote::Sent(ev, took)
                };
                let _ = notes.send(note);
                drop(permit);
            });
        }
        while in_flight.join_next().await.is_some() {}
    }
    let _ = notes.send(SendNote::Done);
}
