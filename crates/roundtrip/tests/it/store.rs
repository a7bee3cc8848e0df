//! The store conformance suite, and the SQLite backend's own tests.
//!
//! Every check in [`conformance`] is an async function taking an [`Open`] factory; the
//! [`conformance_suite!`] macro turns them into one `#[tokio::test]` each for a backend.
//! A new backend adds one `conformance_suite!(name, factory)` line.

use roundtrip_core::run::RunStatus;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use roundtrip::core::observation::{NewObservation, Observation, Payload, SentEvent};
use roundtrip::core::run::{
    ListenerSummary, REPORT_FORMAT_VERSION, RunSummary, ScenarioResult, ScenarioStatus,
};
use roundtrip::store::sqlite::{SCHEMA_VERSION, SqliteOptions, SqliteStore, Synchronous};
use roundtrip::store::{RunRecord, Store, StoreError};
use tokio::sync::broadcast::error::TryRecvError;

/// A store under test, with whatever must outlive it (a temporary directory, a
/// database schema to drop).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

/// Opens a fresh, empty store whose feed buffers `feed_capacity` observations.
pub type Open = fn(feed_capacity: usize) -> Pin<Box<dyn Future<Output = TestStore> + Send>>;

/// The default feed capacity for checks that do not test lagging.
const FEED: usize = 1 << 16;

fn options(feed_capacity: usize) -> SqliteOptions {
    SqliteOptions {
        feed_capacity,
        ..SqliteOptions::default()
    }
}

fn sqlite_memory(feed_capacity: usize) -> Pin<Box<dyn Future<Output = TestStore> + Send>> {
    Box::pin(async move {
        let store = SqliteStore::open_in_memory_with(&options(feed_capacity)).expect("open");
        TestStore {
            store: Arc::new(store),
            _guard: None,
        }
    })
}

fn sqlite_file(feed_capacity: usize) -> Pin<Box<dyn Future<Output = TestStore> + Send>> {
    Box::pin(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite");
        let path = path.to_str().expect("utf-8 temp path");
        let store = SqliteStore::open_with(path, &options(feed_capacity)).expect("open");
        TestStore {
            store: Arc::new(store),
            _guard: Some(Box::new(dir)),
        }
    })
}

fn run_record(run_id: &str, started_at: i64) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        suite: "order pipeline".to_owned(),
        suite_path: "suites/orders.yaml".to_owned(),
        started_at,
        finished_at: None,
        status: RunStatus::Running,
        owner: None,
    }
}

fn observation(run_id: &str, n: u64, bytes: Vec<u8>) -> NewObservation {
    NewObservation {
        run_id: run_id.to_owned(),
        channel: "orders_out".to_owned(),
        correlation_id: Some(format!("corr-{n}")),
        payload: Payload::from_bytes(bytes, 2 << 20),
        headers: vec![("x-correlation-id".to_owned(), format!("corr-{n}"))],
        message_id: None,
        key: None,
        meta: Vec::new(),
        received_at: 1_700_000_000_000_000_000 + i64::try_from(n).expect("small n"),
        received_mono: Some(n * 1000),
    }
}

fn json_observation(run_id: &str, n: u64) -> NewObservation {
    observation(
        run_id,
        n,
        format!(r#"{{"n":{n},"item":"WIDGET"}}"#).into_bytes(),
    )
}

async fn new_run(store: &dyn Store, run_id: &str) {
    store
        .create_run(&run_record(run_id, 1))
        .await
        .expect("create run");
}

fn seqs(observations: &[Observation]) -> Vec<u64> {
    observations.iter().map(|o| o.seq).collect()
}

fn scenario(name: &str, status: ScenarioStatus, sent: u64) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        status,
        sent,
        send_errors: 0,
        error: None,
        expectations: vec![],
        duration_ns: 1_500_000,
        notes: Vec::new(),
    }
}

fn summary(run_id: &str, scenarios: Vec<ScenarioResult>) -> RunSummary {
    RunSummary {
        format_version: REPORT_FORMAT_VERSION,
        run_id: run_id.to_owned(),
        suite: "order pipeline".to_owned(),
        suite_path: "suites/orders.yaml".to_owned(),
        started_at: 1,
        finished_at: 99,
        interrupted: false,
        scenarios,
        listeners: vec![ListenerSummary {
            channel: "orders_out".to_owned(),
            transport: "webhook".to_owned(),
            recorded: 3,
            faults: 0,
            delivery: "at-least-once".to_owned(),
            polling: false,
            redelivered: 1,
            gaps: vec!["disconnected at 2026-11-26T10:00:00Z for 1.2s".to_owned()],
        }],
        sut_log: vec!["listening on 127.0.0.1:7001".to_owned()],
        sut_exited: Some("exit status: 1".to_owned()),
        harness_error: None,
        load: None,
    }
}

use roundtrip::error::error_chain;

/// The checks every store backend passes.
pub mod conformance {
    use super::*;

    /// Sequence numbers increase in commit order; reads page by `after` and `limit`.
    pub async fn record_assigns_increasing_seqs(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        let mut committed = Vec::new();
        for n in 0..10 {
            let new = json_observation("run-a", n);
            let got = t.store.record(new.clone()).await.expect("record");
            assert_eq!(*got, new.committed(got.seq));
            committed.push((*got).clone());
        }
        let s = seqs(&committed);
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "seqs not increasing: {s:?}"
        );

        let all = t.store.observations("run-a", 0, 100).await.expect("read");
        assert_eq!(all, committed);
        let page = t.store.observations("run-a", s[4], 3).await.expect("read");
        assert_eq!(seqs(&page), s[5..8]);
        let rest = t
            .store
            .observations("run-a", s[9], 100)
            .await
            .expect("read");
        assert!(rest.is_empty());
    }

    /// `observations` returns only the run asked for.
    pub async fn observations_are_per_run(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        new_run(&*t.store, "run-b").await;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for n in 0..6 {
            let run = if n % 2 == 0 { "run-a" } else { "run-b" };
            let got = t
                .store
                .record(json_observation(run, n))
                .await
                .expect("record");
            if n % 2 == 0 { &mut a } else { &mut b }.push(got.seq);
        }
        let read_a = t.store.observations("run-a", 0, 100).await.expect("read");
        let read_b = t.store.observations("run-b", 0, 100).await.expect("read");
        assert_eq!((seqs(&read_a), seqs(&read_b)), (a, b));
        assert!(read_a.iter().all(|o| o.run_id == "run-a"));
        let none = t.store.observations("run-c", 0, 100).await.expect("read");
        assert!(none.is_empty());
    }

    /// Recording for a run that was never created, or finishing one, is `NoSuchRun`.
    pub async fn unknown_runs_are_refused(open: Open) {
        let t = open(FEED).await;
        let err = t.store.record(json_observation("nope", 1)).await;
        assert!(
            matches!(err, Err(StoreError::NoSuchRun(ref r)) if r == "nope"),
            "{err:?}"
        );
        let err = t
            .store
            .finish_run(&summary("nope", vec![]), RunStatus::Passed)
            .await;
        assert!(matches!(err, Err(StoreError::NoSuchRun(_))), "{err:?}");
        let err = t
            .store
            .record_scenario("nope", &scenario("s", ScenarioStatus::Passed, 1))
            .await;
        assert!(matches!(err, Err(StoreError::NoSuchRun(_))), "{err:?}");
        // The store is still usable afterwards.
        new_run(&*t.store, "run-a").await;
        t.store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
    }

    /// The feed delivers every committed observation once, in sequence order, and has it
    /// queued by the time `record` returns.
    pub async fn feed_delivers_committed_in_seq_order(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        let mut feed = t.store.subscribe();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8u64 {
            let store = Arc::clone(&t.store);
            tasks.spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let o = store
                        .record(json_observation("run-a", task * 100 + i))
                        .await;
                    seqs.push(o.expect("record").seq);
                }
                seqs
            });
        }
        let mut recorded: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
        recorded.sort_unstable();

        let mut received = Vec::new();
        loop {
            match feed.try_recv() {
                Ok(o) => received.push(o.seq),
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("feed: {e}"),
            }
        }
        assert_eq!(received, recorded, "feed out of order or incomplete");
        let stored = t.store.observations("run-a", 0, 1000).await.expect("read");
        assert_eq!(seqs(&stored), recorded);
    }

    /// A subscriber that lags catches up from `observations` without a gap.
    pub async fn lagged_subscriber_catches_up(open: Open) {
        let t = open(8).await;
        new_run(&*t.store, "run-a").await;
        let mut feed = t.store.subscribe();
        let mut recorded = Vec::new();
        for n in 0..50 {
            let o = t
                .store
                .record(json_observation("run-a", n))
                .await
                .expect("record");
            recorded.push(o.seq);
        }

        // The documented consumer loop: on lag, read from the last seen seq.
        let (mut seen, mut last, mut lagged) = (Vec::new(), 0u64, false);
        loop {
            match feed.try_recv() {
                Ok(o) if o.seq > last => {
                    last = o.seq;
                    seen.push(o.seq);
                }
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => {
                    lagged = true;
                    let missed = t
                        .store
                        .observations("run-a", last, 4096)
                        .await
                        .expect("read");
                    for o in missed {
                        last = o.seq;
                        seen.push(o.seq);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("feed: {e}"),
            }
        }
        assert!(
            lagged,
            "the subscriber never lagged; the test proves nothing"
        );
        assert_eq!(seen, recorded);
    }

    /// Many tasks recording at once: all committed, every seq unique.
    pub async fn concurrent_records_all_commit(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..64u64 {
            let store = Arc::clone(&t.store);
            tasks.spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..40 {
                    let o = store
                        .record(json_observation("run-a", task * 1000 + i))
                        .await;
                    seqs.push(o.expect("record").seq);
                }
                seqs
            });
        }
        let recorded: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
        let unique: HashSet<u64> = recorded.iter().copied().collect();
        assert_eq!(unique.len(), 64 * 40, "duplicate sequence numbers");
        let stored = t
            .store
            .observations("run-a", 0, usize::MAX)
            .await
            .expect("read");
        assert_eq!(stored.len(), 64 * 40);
        assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(stored.iter().map(|o| o.seq).collect::<HashSet<_>>(), unique);
    }

    /// Payload bytes, sizes, flags and headers come back exactly.
    pub async fn payloads_and_headers_round_trip(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let mut truncated = observation("run-a", 3, vec![]);
        truncated.payload = Payload::from_bytes(br#"{"item":"WIDGET","qty":2}"#.to_vec(), 8);
        let mut with_everything = json_observation("run-a", 4);
        with_everything.headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-dup".to_owned(), "1".to_owned()),
            ("x-dup".to_owned(), "2 ünïcødé".to_owned()),
            ("x-empty".to_owned(), String::new()),
        ];
        with_everything.message_id = Some("msg-42".to_owned());
        with_everything.key = Some("orders/2024/42.json".to_owned());
        with_everything.meta = vec![
            ("topic".to_owned(), "orders/out".to_owned()),
            ("partition".to_owned(), "3".to_owned()),
            ("note".to_owned(), "ünïcødé".to_owned()),
        ];
        let mut bare = observation("run-a", 5, b"plain text".to_vec());
        bare.correlation_id = None;
        bare.headers = vec![];
        bare.received_mono = None;
        let cases = vec![
            observation("run-a", 0, binary),
            observation("run-a", 1, vec![]),
            observation("run-a", 2, big),
            truncated,
            with_everything,
            bare,
        ];
        for new in cases {
            let committed = t.store.record(new.clone()).await.expect("record");
            let read = t
                .store
                .observations("run-a", committed.seq - 1, 1)
                .await
                .expect("read");
            assert_eq!(read.len(), 1);
            assert_eq!(read[0], new.committed(committed.seq));
        }
        let stored = t.store.observations("run-a", 0, 100).await.expect("read");
        assert_eq!(stored[1].payload.bytes, Vec::<u8>::new());
        assert_eq!(stored[2].payload.bytes.len(), 1 << 20);
        assert_eq!(
            (stored[3].payload.size, stored[3].payload.truncated),
            (25, true)
        );
        assert_eq!(stored[4].header("x-dup"), Some("1"));
        assert_eq!(stored[4].meta("partition"), Some("3"));
        assert_eq!(stored[4].meta("key"), Some("orders/2024/42.json"));
    }

    /// `correlated` returns one event's observations, whole, in sequence order.
    pub async fn correlated_returns_one_events_observations(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        new_run(&*t.store, "run-b").await;
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let mut wanted = Vec::new();
        for (run, n, bytes) in [
            ("run-a", 1, b"first".to_vec()),
            ("run-a", 2, b"other event".to_vec()),
            ("run-b", 1, b"other run".to_vec()),
            ("run-a", 1, big),
        ] {
            let committed = t
                .store
                .record(observation(run, n, bytes))
                .await
                .expect("record");
            if run == "run-a" && n == 1 {
                wanted.push((*committed).clone());
            }
        }
        let found = t.store.correlated("run-a", "corr-1").await.expect("read");
        assert_eq!(found, wanted);
        assert_eq!(found[1].payload.bytes.len(), 1 << 20);
        assert!(
            t.store
                .correlated("run-a", "corr-9")
                .await
                .expect("read")
                .is_empty()
        );
        assert!(
            t.store
                .correlated("run-c", "corr-1")
                .await
                .expect("read")
                .is_empty()
        );
    }

    /// Sent events come back in send order, per run.
    pub async fn sent_events_round_trip(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        new_run(&*t.store, "run-b").await;
        let event = |run: &str, scenario: &str, index: u64, mono: u64| SentEvent {
            run_id: run.to_owned(),
            scenario: scenario.to_owned(),
            index,
            channel: "orders_in".to_owned(),
            correlation_id: format!("{scenario}-{index}"),
            sent_at: 1_700_000_000_000_000_000 + i64::try_from(mono).expect("small"),
            sent_mono: mono,
            size: 42 + index,
            error: None,
        };
        let mut refused = event("run-a", "bad order", 0, 20);
        refused.error = Some("connection refused".to_owned());
        let sent = vec![
            event("run-a", "good order", 0, 10),
            refused,
            event("run-a", "good order", 1, 30),
        ];
        for e in &sent {
            t.store.record_sent(e).await.expect("record sent");
        }
        t.store
            .record_sent(&event("run-b", "other", 0, 5))
            .await
            .expect("record sent");
        assert_eq!(t.store.sent_events("run-a").await.expect("read"), sent);
        assert_eq!(t.store.sent_events("run-b").await.expect("read").len(), 1);
        assert!(t.store.sent_events("run-c").await.expect("read").is_empty());
    }

    /// Scenario results (last write wins) and the run summary round-trip.
    pub async fn results_and_summary_round_trip(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        assert_eq!(t.store.run_summary("run-a").await.expect("read"), None);

        let first = scenario("an order is uppercased", ScenarioStatus::Error, 1);
        let second = scenario("a bad order is dead-lettered", ScenarioStatus::Failed, 1);
        let again = scenario("an order is uppercased", ScenarioStatus::Passed, 2);
        for s in [&first, &second, &again] {
            t.store
                .record_scenario("run-a", s)
                .await
                .expect("record scenario");
        }
        let results = t.store.scenario_results("run-a").await.expect("read");
        assert_eq!(results, vec![again.clone(), second.clone()]);

        let summary = summary("run-a", vec![again, second]);
        t.store
            .finish_run(&summary, RunStatus::Failed)
            .await
            .expect("finish");
        assert_eq!(
            t.store.run_summary("run-a").await.expect("read"),
            Some(summary)
        );
        let run = t
            .store
            .run("run-a")
            .await
            .expect("read")
            .expect("run exists");
        assert_eq!((run.finished_at, run.status.as_str()), (Some(99), "failed"));
    }

    /// `runs` lists newest first; unknown runs read as `None`.
    pub async fn runs_newest_first(open: Open) {
        let t = open(FEED).await;
        for (id, started) in [("run-1", 100), ("run-3", 300), ("run-2", 200)] {
            t.store
                .create_run(&run_record(id, started))
                .await
                .expect("create");
        }
        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(
            ids(t.store.runs(10).await.expect("runs")),
            ["run-3", "run-2", "run-1"]
        );
        assert_eq!(
            ids(t.store.runs(2).await.expect("runs")),
            ["run-3", "run-2"]
        );
        assert_eq!(
            t.store.run("run-2").await.expect("run"),
            Some(run_record("run-2", 200))
        );
        assert_eq!(t.store.run("run-9").await.expect("run"), None);
        assert_eq!(t.store.run_summary("run-9").await.expect("summary"), None);
        let dup = t.store.create_run(&run_record("run-1", 1)).await;
        assert!(matches!(dup, Err(StoreError::Io { .. })), "{dup:?}");
    }

    /// A run several workers share: the first to join creates it, the others join it;
    /// load parts round-trip, sorted by worker then kind, a part written again
    /// replaces itself, and a part of no run is refused.
    pub async fn shared_runs_and_load_parts_round_trip(open: Open) {
        use roundtrip::store::{LoadPart, LoadPartKind};
        let t = open(FEED).await;
        let first = run_record("shared", 100);
        t.store
            .join_run(&first)
            .await
            .expect("the first creates it");
        t.store
            .join_run(&run_record("shared", 200))
            .await
            .expect("the second joins it");
        assert_eq!(t.store.run("shared").await.expect("run"), Some(first));
        assert!(
            t.store
                .load_parts("shared")
                .await
                .expect("parts")
                .is_empty()
        );
        let part = |worker, kind, body: &str| LoadPart {
            worker,
            kind,
            body: body.to_owned(),
        };
        let written = [
            part(1, LoadPartKind::Finished, r#"{"w":1}"#),
            part(1, LoadPartKind::Interval(10), "10"),
            part(0, LoadPartKind::Interval(2), "2"),
            part(1, LoadPartKind::Joined, "j1"),
            part(1, LoadPartKind::Interval(9), "9"),
            part(0, LoadPartKind::Joined, "j0"),
            part(0, LoadPartKind::Interval(2), "2 again"),
            part(
                u16::MAX,
                LoadPartKind::Interval(u64::MAX),
                r#"{"s":"\u0000 \"quoted\" ünïcode"}"#,
            ),
        ];
        for p in &written {
            t.store.record_load_part("shared", p).await.expect("record");
        }
        assert_eq!(
            t.store.load_parts("shared").await.expect("parts"),
            [
                part(0, LoadPartKind::Joined, "j0"),
                part(0, LoadPartKind::Interval(2), "2 again"),
                part(1, LoadPartKind::Joined, "j1"),
                part(1, LoadPartKind::Interval(9), "9"),
                part(1, LoadPartKind::Interval(10), "10"),
                part(1, LoadPartKind::Finished, r#"{"w":1}"#),
                part(
                    u16::MAX,
                    LoadPartKind::Interval(u64::MAX),
                    r#"{"s":"\u0000 \"quoted\" ünïcode"}"#
                ),
            ]
        );
        new_run(&*t.store, "other").await;
        assert!(t.store.load_parts("other").await.expect("parts").is_empty());
        let orphan = t
            .store
            .record_load_part("no-such-run", &part(0, LoadPartKind::Joined, "x"))
            .await;
        assert!(
            matches!(orphan, Err(StoreError::NoSuchRun(_))),
            "{orphan:?}"
        );
        // Creating (not joining) a run that exists is still refused.
        let dup = t.store.create_run(&run_record("shared", 1)).await;
        assert!(matches!(dup, Err(StoreError::Io { .. })), "{dup:?}");
    }

    /// After `close`, every call is `Closed` and the feed ends.
    pub async fn close_then_calls_are_closed(open: Open) {
        let t = open(FEED).await;
        new_run(&*t.store, "run-a").await;
        let mut feed = t.store.subscribe();
        let last = t
            .store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        t.store.close().await.expect("close");
        t.store.close().await.expect("closing twice is fine");

        let closed = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Closed));
        assert!(closed(
            t.store.record(json_observation("run-a", 2)).await.map(drop)
        ));
        assert!(closed(t.store.create_run(&run_record("run-b", 2)).await));
        assert!(closed(t.store.observations("run-a", 0, 10).await.map(drop)));
        assert!(closed(t.store.runs(10).await.map(drop)));
        // Subscribers get what was committed, then the end of the feed.
        assert_eq!(feed.recv().await.expect("buffered").seq, last.seq);
        assert!(feed.recv().await.is_err());
        assert!(t.store.subscribe().recv().await.is_err());
    }
}

macro_rules! conformance_suite {
    ($name:ident, $open:expr, [$($check:ident),* $(,)?]) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::conformance::$check($open).await;
                }
            )*
        }
    };
    ($name:ident, $open:expr) => {
        conformance_suite!($name, $open, [
            record_assigns_increasing_seqs,
            observations_are_per_run,
            unknown_runs_are_refused,
            feed_delivers_committed_in_seq_order,
            lagged_subscriber_catches_up,
            concurrent_records_all_commit,
            payloads_and_headers_round_trip,
            correlated_returns_one_events_observations,
            sent_events_round_trip,
            results_and_summary_round_trip,
            runs_newest_first,
            shared_runs_and_load_parts_round_trip,
            close_then_calls_are_closed,
        ]);
    };
}

conformance_suite!(sqlite_memory, super::sqlite_memory);
conformance_suite!(sqlite_file, super::sqlite_file);
#[cfg(feature = "dynamodb")]
conformance_suite!(dynamodb, super::dynamodb_table);
#[cfg(feature = "postgres")]
conformance_suite!(postgres, super::postgres_schema);

/// The database the Postgres tests use (`ROUNDTRIP_TEST_POSTGRES`, default the local
/// server's `test` database with trust auth, as CI runs it); each test works in a schema
/// of its own, dropped at the end.
#[cfg(feature = "postgres")]
fn postgres_url(schema: &str) -> String {
    let base = std::env::var("ROUNDTRIP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// Drops its schema when the test is over (on a thread of its own: `Drop` cannot await).
#[cfg(feature = "postgres")]
struct DropSchema(String);

#[cfg(feature = "postgres")]
impl Drop for DropSchema {
    fn drop(&mut self) {
        let url = postgres_url(&self.0);
        let schema = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let options = PostgresOptions::from_url(&url).expect("a valid URL");
                if let Ok((client, connection)) = options.config.connect(options.tls.clone()).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(feature = "postgres")]
use roundtrip::store::postgres::{PostgresOptions, PostgresStore};

#[cfg(feature = "postgres")]
fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, feed_capacity: usize) -> PostgresStore {
    let options = PostgresOptions {
        feed_capacity,
        ..PostgresOptions::from_url(url).expect("a valid URL")
    };
    PostgresStore::open_with(options).await.unwrap_or_else(|e| {
        panic!(
            "open a Postgres store (is Postgres running on 127.0.0.1:5432 with a `test` \
             database, or ROUNDTRIP_TEST_POSTGRES set?): {}",
            error_chain(&e)
        )
    })
}

/// A fresh schema in the test database.
#[cfg(feature = "postgres")]
fn postgres_schema(feed_capacity: usize) -> Pin<Box<dyn Future<Output = TestStore> + Send>> {
    Box::pin(async move {
        let schema = fresh_schema("conformance");
        let store = open_postgres(&postgres_url(&schema), feed_capacity).await;
        TestStore {
            store: Arc::new(store),
            _guard: Some(Box::new(DropSchema(schema))),
        }
    })
}

/// The Postgres backend's own behaviour: several writers, reopening, schema versions.
#[cfg(feature = "postgres")]
mod postgres_backend {
    use super::*;

    async fn admin(schema: &str) -> roundtrip::store::postgres::tokio_postgres::Client {
        let options = PostgresOptions::from_url(&postgres_url(schema)).expect("a valid URL");
        let (client, connection) = options
            .config
            .connect(options.tls.clone())
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_in_several_stores_take_distinct_sequence_numbers_in_commit_order() {
        let schema = fresh_schema("writers");
        let _drop = DropSchema(schema.clone());
        let url = postgres_url(&schema);
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(open_postgres(&url, FEED).await));
        }
        new_run(&*stores[0], "run-a").await;
        let mut tasks = tokio::task::JoinSet::new();
        for (w, store) in stores.iter().enumerate() {
            for i in 0..200u64 {
                let store = Arc::clone(store);
                let n = w as u64 * 1000 + i;
                tasks.spawn(async move { store.record(json_observation("run-a", n)).await });
            }
        }
        let seqs: HashSet<u64> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("recorded").seq)
            .collect();
        assert_eq!(
            seqs.len(),
            600,
            "two writers were given one sequence number"
        );
        // Commit order is sequence order, and the numbers have no holes: a reader that
        // follows `seq > last` sees every row.
        let stored = stores[1]
            .observations("run-a", 0, usize::MAX)
            .await
            .expect("read");
        let read: Vec<u64> = stored.iter().map(|o| o.seq).collect();
        let first = *read.first().expect("rows");
        assert_eq!(read, (first..first + 600).collect::<Vec<_>>());
        assert_eq!(read.iter().copied().collect::<HashSet<_>>(), seqs);
        for store in &stores {
            store.close().await.expect("close");
        }
    }

    /// Receives from `feed` until `n` observations arrived (or a minute passed).
    async fn collect(
        feed: &mut tokio::sync::broadcast::Receiver<Arc<Observation>>,
        n: usize,
    ) -> Vec<u64> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < n {
            match tokio::time::timeout_at(deadline, feed.recv()).await {
                Ok(Ok(o)) => seen.push(o.seq),
                Ok(Err(e)) => panic!("the feed failed after {} of {n}: {e}", seen.len()),
                Err(_) => panic!("only {} of {n} observations came on the feed", seen.len()),
            }
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_store_s_feed_carries_every_writer_s_commits_in_sequence_order() {
        let schema = fresh_schema("push");
        let _drop = DropSchema(schema.clone());
        let url = postgres_url(&schema);
        let a = Arc::new(open_postgres(&url, FEED).await);
        let b = Arc::new(open_postgres(&url, FEED).await);
        // A store that only reads, and one that polls instead of listening (as behind
        // a transaction-pooling PgBouncer).
        let reader = open_postgres(&url, FEED).await;
        let poller = open_postgres(&format!("{url}&listen=false&poll=20ms"), FEED).await;
        let mut feeds = [
            a.subscribe(),
            b.subscribe(),
            reader.subscribe(),
            poller.subscribe(),
        ];
        new_run(&*a, "run-a").await;
        let mut tasks = tokio::task::JoinSet::new();
        for (w, store) in [(0u64, &a), (1, &b)] {
            for i in 0..150u64 {
                let store = Arc::clone(store);
                tasks.spawn(
                    async move { store.record(json_observation("run-a", w * 1000 + i)).await },
                );
            }
        }
        let committed: HashSet<u64> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("recorded").seq)
            .collect();
        for (i, feed) in feeds.iter_mut().enumerate() {
            let seen = collect(feed, 300).await;
            assert!(
                seen.windows(2).all(|w| w[1] == w[0] + 1),
                "feed {i} is not in sequence order without holes: {seen:?}"
            );
            assert_eq!(
                seen.iter().copied().collect::<HashSet<_>>(),
                committed,
                "feed {i}"
            );
        }
    }

    /// The writer process (`src/bin/roundtrip-pg-writer.rs`), which `cargo test` builds
    /// for this test with its features.
    fn pg_writer() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_roundtrip-pg-writer"))
    }

    /// The cursor trap: several writer processes, each holding its transactions open for
    /// random times, and a reader that follows `seq > last` while they write. Had a
    /// number been taken at insert and committed late, the reader would have passed it
    /// and never seen its row. Its set must equal the committed set, every time; so must
    /// the feed of a store in this process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_following_seq_misses_nothing_that_writer_processes_commit() {
        const WRITERS: usize = 4;
        const EACH: u64 = 150;
        let schema = fresh_schema("cursor");
        let _drop = DropSchema(schema.clone());
        let url = postgres_url(&schema);
        let store = open_postgres(&url, FEED).await;
        new_run(&store, "run-a").await;
        let mut feed = store.subscribe();
        let mut children = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let mut command = tokio::process::Command::new(pg_writer());
            command.args([&url, "run-a", &format!("w{w}"), &EACH.to_string()]);
            children.spawn(async move { command.output().await });
        }
        // Follow while they write; the tick only paces the reads.
        let mut read = HashSet::new();
        let mut last = 0;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(2));
        let mut outputs = Vec::new();
        loop {
            tokio::select! {
                done = children.join_next(), if !children.is_empty() => {
                    outputs.push(done.expect("a child").expect("joined").expect("spawned"));
                }
                _ = tick.tick() => {}
            }
            let finished = children.is_empty();
            loop {
                let page = store.observations("run-a", last, 500).await.expect("read");
                for o in &page {
                    assert!(
                        o.seq > last,
                        "rows came out of order: {} after {last}",
                        o.seq
                    );
                    last = o.seq;
                    read.insert(o.seq);
                }
                if page.len() < 500 {
                    break;
                }
            }
            if finished {
                break;
            }
        }
        let mut committed = HashSet::new();
        for out in &outputs {
            assert!(
                out.status.success(),
                "a writer failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                committed.insert(line.parse::<u64>().expect("a sequence number"));
            }
        }
        assert_eq!(committed.len(), WRITERS * EACH as usize);
        let missed: Vec<_> = committed.difference(&read).collect();
        assert!(
            missed.is_empty(),
            "the reader skipped {} rows: {missed:?}",
            missed.len()
        );
        assert_eq!(read, committed);
        let pushed: HashSet<u64> = collect(&mut feed, committed.len())
            .await
            .into_iter()
            .collect();
        assert_eq!(
            pushed, committed,
            "the feed carries every process's commits"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_deleted_by_gc_is_no_such_run_to_a_writer_that_knew_it() {
        let schema = fresh_schema("gc");
        let _drop = DropSchema(schema.clone());
        let url = postgres_url(&schema);
        let store = open_postgres(&url, FEED).await;
        new_run(&store, "old").await;
        store
            .record(json_observation("old", 1))
            .await
            .expect("record");
        let options = PostgresOptions::from_url(&url).expect("a valid URL");
        let deleted = roundtrip::store::postgres::gc(&options, std::time::Duration::ZERO)
            .await
            .expect("gc");
        assert_eq!((deleted.runs, deleted.observations), (1, 1));
        // The writer had the run cached: the write is refused for the run, not as an
        // I/O failure, and an unrelated write in the same moment is not harmed.
        new_run(&store, "new").await;
        let (gone, kept) = tokio::join!(
            store.record(json_observation("old", 2)),
            store.record(json_observation("new", 3))
        );
        assert!(matches!(gone, Err(StoreError::NoSuchRun(_))), "{gone:?}");
        kept.expect("the other run's observation commits");
        assert!(
            store
                .observations("old", 0, 10)
                .await
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn options_built_in_code_are_checked_and_keyword_schemas_work() {
        let url = postgres_url("roundtrip");
        let bad = PostgresOptions {
            schema: "x; DROP TABLE runs".to_owned(),
            ..PostgresOptions::from_url(&url).expect("a valid URL")
        };
        let err = PostgresStore::open_with(bad).await.expect_err("refused");
        assert!(
            error_chain(&err).contains("not a schema name"),
            "{}",
            error_chain(&err)
        );
        let zero = PostgresOptions {
            pool: 0,
            ..PostgresOptions::from_url(&url).expect("a valid URL")
        };
        assert!(PostgresStore::open_with(zero).await.is_err());
        // A keyword is quoted wherever it is written.
        let _drop = DropSchema("user".to_owned());
        let store = open_postgres(&postgres_url("user"), FEED).await;
        new_run(&store, "run-a").await;
        store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        store.close().await.expect("close");
    }

    /// A private Postgres server in a temporary directory, run as the `postgres` user
    /// (initdb refuses root), stopped and started at will.
    struct PrivateServer {
        dir: tempfile::TempDir,
        port: u16,
        tls: Offer,
    }

    /// What a private server offers of TLS.
    #[derive(Clone, Copy, PartialEq)]
    enum Offer {
        /// None: plain connections.
        Plain,
        /// TLS only, and every client asked for a certificate its CA signed.
        Tls,
        /// TLS no client here can complete (TLS 1.1 at most; rustls speaks 1.2 and 1.3),
        /// and plain connections.
        Unusable,
    }

    /// The test CA and certificates `scripts/services.sh start` makes once (`ca.pem`,
    /// `server.pem` for 127.0.0.1 and localhost, `client.pem`, their keys).
    fn tls_dir() -> std::path::PathBuf {
        let dir = std::env::var("ROUNDTRIP_TLS_DIR").map_or_else(
            |_| {
                std::path::Path::new(&std::env::var("HOME").expect("HOME"))
                    .join(".cache/roundtrip-tls")
            },
            std::path::PathBuf::from,
        );
        assert!(
            dir.join("ca.pem").is_file(),
            "no test CA in {}: run scripts/services.sh start, which makes it",
            dir.display()
        );
        dir
    }

    impl PrivateServer {
        fn bin(name: &str) -> std::path::PathBuf {
            let root = std::path::Path::new("/usr/lib/postgresql");
            let mut versions: Vec<_> = std::fs::read_dir(root)
                .expect("Debian's PostgreSQL in /usr/lib/postgresql")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            versions.sort();
            versions
                .pop()
                .expect("a PostgreSQL version")
                .join("bin")
                .join(name)
        }

        fn as_postgres(program: &str, args: &[&str]) {
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Self::bin(program))
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("runuser");
            assert!(status.success(), "{program} {args:?} failed");
        }

        fn new() -> PrivateServer {
            PrivateServer::create(Offer::Plain)
        }

        /// A server that takes only TLS connections from clients with a certificate its
        /// CA signed (the test CA's `server.pem`, and `clientcert=verify-ca`).
        fn with_tls() -> PrivateServer {
            PrivateServer::create(Offer::Tls)
        }

        fn create(tls: Offer) -> PrivateServer {
            let dir = tempfile::tempdir().expect("a temp dir");
            std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            let data = dir.path().join("data");
            Self::as_postgres(
                "initdb",
                &[
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-D",
                    data.to_str().expect("utf-8"),
                ],
            );
            if tls != Offer::Plain {
                let certs = tls_dir();
                for file in ["server.pem", "server.key", "ca.pem"] {
                    let to = data.join(file);
                    std::fs::copy(certs.join(file), &to).expect("copy a certificate");
                    std::fs::set_permissions(
                        &to,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                    .expect("chmod");
                }
                let hba = if tls == Offer::Tls {
                    "local all all trust\n\
                     hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n"
                } else {
                    "local all all trust\nhost all all 127.0.0.1/32 trust\n"
                };
                std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
                std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data)
                    .status()
                    .expect("chown");
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let server = PrivateServer { dir, port, tls };
            server.start();
            server
        }

        fn data(&self) -> String {
            self.dir.path().join("data").display().to_string()
        }

        fn start(&self) {
            let mut options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {}",
                self.port,
                self.dir.path().display()
            );
            if self.tls != Offer::Plain {
                options.push_str(
                    " -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key \
                     -c ssl_ca_file=ca.pem",
                );
            }
            if self.tls == Offer::Unusable {
                options.push_str(
                    " -c ssl_min_protocol_version=TLSv1 -c ssl_max_protocol_version=TLSv1.1",
                );
            }
            Self::as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    &self.data(),
                    "-o",
                    &options,
                    "-w",
                    "-l",
                    "/dev/null",
                    "start",
                ],
            );
        }

        fn stop(&self) {
            Self::as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        }

        fn url(&self) -> String {
            format!(
                "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=2&poll=50ms",
                self.port
            )
        }
    }

    impl Drop for PrivateServer {
        fn drop(&mut self) {
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Self::bin("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        }
    }

    /// The server restarted under a running store: what was acknowledged stays, what was
    /// refused while it was down was never acknowledged, and both the writer and another
    /// store's feed carry on once it is back, without reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_server_is_reconnected_to_and_nothing_acknowledged_is_lost() {
        let server = PrivateServer::new();
        let writer = open_postgres(&server.url(), FEED).await;
        let reader = open_postgres(&server.url(), FEED).await;
        let mut feed = reader.subscribe();
        new_run(&writer, "run-a").await;
        let before = writer
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        assert_eq!(collect(&mut feed, 1).await, [before.seq]);

        server.stop();
        let during = writer.record(json_observation("run-a", 2)).await;
        assert!(during.is_err(), "recorded with the server down: {during:?}");

        server.start();
        let after = writer
            .record(json_observation("run-a", 3))
            .await
            .expect("the writer reconnects");
        assert!(after.seq > before.seq);
        assert_eq!(
            collect(&mut feed, 1).await,
            [after.seq],
            "the feed carries on"
        );
        let stored = reader.observations("run-a", 0, 10).await.expect("read");
        let ids: Vec<_> = stored
            .iter()
            .filter_map(|o| o.correlation_id.clone())
            .collect();
        assert_eq!(ids, ["corr-1", "corr-3"]);
    }

    /// TLS as `sslmode` says, against a server that takes only TLS and a client
    /// certificate: verified in full the store records and its feed follows (every
    /// connection it opens is TLS, or the server would refuse it); `verify-ca` checks
    /// the chain and not the name, `verify-full` both, `require` neither; a root that
    /// did not sign the server's certificate, a missing client certificate and a plain
    /// connection are refused, each saying why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_is_negotiated_and_verified_as_sslmode_says() {
        let server = PrivateServer::with_tls();
        let certs = tls_dir();
        let file = |name: &str| certs.join(name).display().to_string();
        let client = format!(
            "sslcert={}&sslkey={}",
            file("client.pem"),
            file("client.key")
        );
        let url = |host: &str, params: &str| {
            format!(
                "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&connect_timeout=5&{params}",
                server.port
            )
        };
        let full = url(
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={}&{client}",
                file("ca.pem")
            ),
        );
        let writer = open_postgres(&full, FEED).await;
        let reader = open_postgres(&full, FEED).await;
        let mut feed = reader.subscribe();
        new_run(&writer, "run-a").await;
        let recorded = writer
            .record(json_observation("run-a", 1))
            .await
            .expect("record over TLS");
        assert_eq!(collect(&mut feed, 1).await, [recorded.seq]);
        let stored = reader.observations("run-a", 0, 10).await.expect("read");
        assert_eq!(stored.len(), 1);

        let refused = |url: String| async move {
            let err = PostgresStore::open(&url).await.expect_err(&url);
            error_chain(&err)
        };
        // A name the certificate was not issued for: verify-full refuses it, verify-ca
        // and require (no root) accept it.
        let wrong_name = |mode: &str| {
            url(
                "db.wrong.invalid",
                &format!("sslmode={mode}&sslrootcert={}&{client}", file("ca.pem")),
            )
        };
        let err = refused(wrong_name("verify-full")).await;
        assert!(err.contains("not valid for name"), "{err}");
        PostgresStore::open(&wrong_name("verify-ca"))
            .await
            .expect("verify-ca does not check the name")
            .close()
            .await
            .expect("close");
        PostgresStore::open(&url(
            "db.wrong.invalid",
            &format!("sslmode=require&{client}"),
        ))
        .await
        .expect("require checks nothing")
        .close()
        .await
        .expect("close");

        // A root that did not sign the server's certificate: refused, also by `require`,
        // which a root makes `verify-ca`.
        let other = tempfile::tempdir().expect("a temp dir");
        let other_ca = other.path().join("other-ca.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=another CA", "-keyout"])
            .arg(other.path().join("other-ca.key"))
            .arg("-out")
            .arg(&other_ca)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(made.success(), "openssl made no CA");
        for mode in ["verify-full", "require"] {
            let err = refused(url(
                "localhost",
                &format!("sslmode={mode}&sslrootcert={}&{client}", other_ca.display()),
            ))
            .await;
            assert!(err.contains("UnknownIssuer"), "{mode}: {err}");
        }
        // No client certificate, and no TLS: the server refuses both.
        let err = refused(url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", file("ca.pem")),
        ))
        .await;
        assert!(err.contains("certificate"), "{err}");
        let err = refused(url("localhost", "sslmode=disable")).await;
        assert!(err.contains("no pg_hba.conf entry"), "{err}");
        writer.close().await.expect("close");
        reader.close().await.expect("close");
    }

    /// A server that offers TLS no handshake completes: `prefer` connects without it, as
    /// libpq retries without it, and the store works; `require` refuses, saying that the
    /// handshake failed and what to check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefer_falls_back_to_plain_when_no_handshake_completes() {
        let server = PrivateServer::create(Offer::Unusable);
        let store = open_postgres(&server.url(), FEED).await;
        let mut feed = store.subscribe();
        new_run(&store, "run-a").await;
        let recorded = store
            .record(json_observation("run-a", 1))
            .await
            .expect("record without TLS");
        assert_eq!(collect(&mut feed, 1).await, [recorded.seq]);
        // A read takes a connection of the pool, made after the fallback: plain too.
        let stored = store.observations("run-a", 0, 10).await.expect("read");
        assert_eq!(seqs(&stored), [recorded.seq]);
        store.close().await.expect("close");

        let err = PostgresStore::open(&format!("{}&sslmode=require", server.url()))
            .await
            .expect_err("require needs a handshake");
        let err = error_chain(&err);
        assert!(
            err.contains("error performing TLS handshake: rustls"),
            "{err}"
        );
        assert!(
            err.contains("`sslmode=require`: check `sslrootcert`"),
            "{err}"
        );
    }

    /// The default, `prefer`, speaks TLS to a server that offers it (the machine's own,
    /// with Debian's self-signed certificate), as libpq does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefer_negotiates_tls_where_the_server_offers_it() {
        let options = PostgresOptions::from_url(&postgres_url("public")).expect("a valid URL");
        assert_eq!(
            options.tls.mode(),
            roundtrip::store::postgres::SslMode::Prefer
        );
        let (client, connection) = options
            .config
            .connect(options.tls.clone())
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        let offered: String = client
            .query_one("SHOW ssl", &[])
            .await
            .expect("SHOW ssl")
            .get(0);
        assert_eq!(
            ssl,
            offered == "on",
            "TLS in use: {ssl}, offered: {offered}"
        );
        drop(client);
        let _ = driver.await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_store_keeps_what_was_acknowledged() {
        let schema = fresh_schema("reopen");
        let _drop = DropSchema(schema.clone());
        let url = postgres_url(&schema);
        let first = open_postgres(&url, FEED).await;
        new_run(&first, "run-a").await;
        let o = first
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        drop(first);
        let second = open_postgres(&url, FEED).await;
        let stored = second.observations("run-a", 0, 10).await.expect("read");
        assert_eq!(seqs(&stored), [o.seq]);
        let next = second
            .record(json_observation("run-a", 2))
            .await
            .expect("record");
        assert!(next.seq > o.seq, "sequence numbers go on after a reopen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strings_postgres_text_cannot_hold_round_trip_exactly() {
        let schema = fresh_schema("nul");
        let _drop = DropSchema(schema.clone());
        let store = open_postgres(&postgres_url(&schema), FEED).await;
        new_run(&store, "run-a").await;
        let mut o = json_observation("run-a", 1);
        o.channel = "out\0put".to_owned();
        o.correlation_id = Some("corr\0-1".to_owned());
        o.key = Some("k\0".to_owned());
        o.message_id = Some("\0".to_owned());
        o.headers = vec![("x-a".to_owned(), "v\0w".to_owned())];
        o.meta = vec![("topic".to_owned(), "t\0".to_owned())];
        let committed = store
            .record(o.clone())
            .await
            .expect("a NUL is stored, not refused");
        let stored = store.correlated("run-a", "corr\0-1").await.expect("read");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0], *committed);
        assert_eq!(stored[0].channel, o.channel);
        assert_eq!(stored[0].headers, o.headers);
        // A run id with a NUL names no run: refused alone, the store goes on.
        let bad = store.record(json_observation("run\0a", 2)).await;
        assert!(matches!(bad, Err(StoreError::NoSuchRun(_))), "{bad:?}");
        store
            .record(json_observation("run-a", 3))
            .await
            .expect("still writing");
        // The same for the other writes; a run created twice is refused alone too.
        let event = SentEvent {
            run_id: "run-a".to_owned(),
            scenario: "s\0".to_owned(),
            index: 0,
            channel: "in\0".to_owned(),
            correlation_id: "c".to_owned(),
            sent_at: 1,
            sent_mono: 2,
            size: 3,
            error: Some("refused: \0".to_owned()),
        };
        let again = run_record("run-a", 1);
        let orphan = SentEvent {
            run_id: "run\0a".to_owned(),
            ..event.clone()
        };
        let (sent, twice, orphan) = tokio::join!(
            store.record_sent(&event),
            store.create_run(&again),
            store.record_sent(&orphan),
        );
        sent.expect("a NUL in a sent event is stored");
        assert!(twice.is_err(), "a run created twice");
        assert!(
            matches!(orphan, Err(StoreError::NoSuchRun(_))),
            "{orphan:?}"
        );
        assert_eq!(store.sent_events("run-a").await.expect("read"), [event]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn schema_versions_are_checked_and_migrated_once() {
        use roundtrip::store::postgres::SCHEMA_VERSION;
        // Several processes opening one new schema at once: one migrates, all open (and
        // none takes another's migration, committing while it looks, for a foreign
        // schema). Ten new schemas, to give that race its chances; the last one is
        // checked further.
        let mut schemas = Vec::new();
        for round in 0..10 {
            let schema = fresh_schema(&format!("migrate{round}"));
            schemas.push(DropSchema(schema.clone()));
            let url = postgres_url(&schema);
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let url = url.clone();
                opening.spawn(async move { open_postgres(&url, FEED).await });
            }
            assert_eq!(opening.join_all().await.len(), 4);
        }
        let schema = schemas.last().map(|d| d.0.clone()).expect("a schema");
        let url = postgres_url(&schema);
        let client = admin(&schema).await;
        let version: i64 = client
            .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
            .await
            .expect("the version row")
            .get(0);
        assert_eq!(version, SCHEMA_VERSION);
        // A newer schema is refused, not misread.
        client
            .execute(
                &format!("UPDATE {schema}.schema_version SET version = version + 1"),
                &[],
            )
            .await
            .expect("bump");
        let err = PostgresStore::open(&url).await.expect_err("newer schema");
        assert!(
            error_chain(&err).contains("is newer than this roundtrip supports"),
            "{}",
            error_chain(&err)
        );

        // `migrate=false` refuses a schema that is not current, and says what to run.
        let fresh = fresh_schema("unmigrated");
        let _drop_fresh = DropSchema(fresh.clone());
        let err = PostgresStore::open(&format!("{}&migrate=false", postgres_url(&fresh)))
            .await
            .expect_err("not migrated");
        assert!(
            error_chain(&err).contains("run `roundtrip migrate --store URL` first"),
            "{}",
            error_chain(&err)
        );
        let options = PostgresOptions::from_url(&postgres_url(&fresh)).expect("a valid URL");
        assert_eq!(
            roundtrip::store::postgres::migrate(&options)
                .await
                .expect("migrates"),
            0
        );
        PostgresStore::open(&format!("{}&migrate=false", postgres_url(&fresh)))
            .await
            .expect("current now");

        // A schema holding someone else's tables is left alone.
        let foreign = fresh_schema("foreign");
        let _drop_foreign = DropSchema(foreign.clone());
        let other = admin(&foreign).await;
        other
            .batch_execute(&format!(
                "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.orders (id int)"
            ))
            .await
            .expect("a foreign table");
        let err = PostgresStore::open(&postgres_url(&foreign))
            .await
            .expect_err("foreign");
        assert!(
            error_chain(&err).contains("not a roundtrip store"),
            "{}",
            error_chain(&err)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_is_a_clear_open_error_without_the_password() {
        let err = PostgresStore::open("postgres://rt:hunter2@127.0.0.1:1/test?connect_timeout=2")
            .await
            .expect_err("nothing listens on port 1");
        let shown = error_chain(&err);
        assert!(
            shown.contains("is Postgres running and reachable"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let by_url =
            roundtrip::store::open("postgres://rt:hunter2@127.0.0.1:1/test?connect_timeout=2")
                .await
                .expect_err("the same through store::open");
        assert!(!error_chain(&by_url).contains("hunter2"));
    }

    /// A server that accepts the connection, says it will speak TLS and then says
    /// nothing: the open fails once `connect_timeout` has passed (the driver's own
    /// timeout covers only the TCP connect), instead of hanging.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_stalls_in_the_handshake_is_given_up_on() {
        use std::io::{Read, Write};
        let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = stall.local_addr().expect("addr").port();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = stall.accept().expect("accept");
            let mut request = [0u8; 8];
            socket.read_exact(&mut request).expect("the SSLRequest");
            socket.write_all(b"S").expect("answer");
            // Holds the connection open, silent, until the test is done.
            let _ = done_rx.recv();
        });
        let err = PostgresStore::open(&format!(
            "postgres://postgres@127.0.0.1:{port}/test?connect_timeout=1&sslmode=require"
        ))
        .await
        .expect_err("a silent server");
        let shown = error_chain(&err);
        assert!(shown.contains("was not set up within 1s"), "{shown}");
        drop(done_tx);
        server.join().expect("the stalling server");
    }
}

/// Options for `table` on the AWS emulator (`scripts/services.sh start` runs moto on
/// 127.0.0.1:5055; `ROUNDTRIP_AWS_ENDPOINT` points elsewhere). Credentials come from
/// the standard chain: moto accepts any, e.g. `AWS_ACCESS_KEY_ID=test
/// AWS_SECRET_ACCESS_KEY=test`.
#[cfg(feature = "dynamodb")]
fn emulated_table(table: &str) -> roundtrip::store::dynamodb::DynamoOptions {
    roundtrip::store::dynamodb::DynamoOptions {
        region: Some("us-east-1".to_owned()),
        endpoint: Some(
            std::env::var("ROUNDTRIP_AWS_ENDPOINT")
                .unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned()),
        ),
        ..roundtrip::store::dynamodb::DynamoOptions::from_url(&format!("dynamodb://{table}"))
            .expect("a valid URL")
    }
}

#[cfg(feature = "dynamodb")]
async fn open_dynamo(
    options: &roundtrip::store::dynamodb::DynamoOptions,
) -> roundtrip::store::dynamodb::DynamoStore {
    roundtrip::store::dynamodb::DynamoStore::open_with(options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "open a DynamoDB table on the emulator (is moto running, and are \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set?): {}",
                error_chain(&e)
            )
        })
}

/// A fresh table on the emulator.
#[cfg(feature = "dynamodb")]
fn dynamodb_table(feed_capacity: usize) -> Pin<Box<dyn Future<Output = TestStore> + Send>> {
    Box::pin(async move {
        let table = format!("conformance-{}", uuid::Uuid::new_v4().simple());
        let options = roundtrip::store::dynamodb::DynamoOptions {
            feed_capacity,
            ..emulated_table(&table)
        };
        TestStore {
            store: Arc::new(open_dynamo(&options).await),
            _guard: None,
        }
    })
}

/// The DynamoDB backend's own behaviour: TTL, several writers on one table.
#[cfg(feature = "dynamodb")]
mod dynamodb_backend {
    use super::*;
    use aws_sdk_dynamodb::types::TimeToLiveStatus;
    use roundtrip::store::dynamodb::TTL_ATTRIBUTE;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_expires_after_the_configured_lifetime() {
        let table = format!("ttl-{}", uuid::Uuid::new_v4().simple());
        let options = roundtrip::store::dynamodb::DynamoOptions {
            ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            ..emulated_table(&table)
        };
        let store = open_dynamo(&options).await;
        new_run(&store, "run-a").await;
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        store
            .record(observation("run-a", 1, big))
            .await
            .expect("record");
        store
            .record_sent(&SentEvent {
                run_id: "run-a".to_owned(),
                scenario: "s".to_owned(),
                index: 0,
                channel: "in".to_owned(),
                correlation_id: "corr-1".to_owned(),
                sent_at: 1,
                sent_mono: 1,
                size: 1,
                error: None,
            })
            .await
            .expect("record sent");

        let config =
            roundtrip::aws::load_config(options.region.as_deref(), options.endpoint.as_deref())
                .await
                .expect("configuration");
        let client = aws_sdk_dynamodb::Client::new(&config);
        let ttl = client
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .expect("describe TTL")
            .time_to_live_description
            .expect("a TTL description");
        assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));
        assert_eq!(ttl.attribute_name.as_deref(), Some(TTL_ATTRIBUTE));

        // Every page: a scan stops at 1 MB, and the payload parts are 350 KiB each.
        let items: Vec<_> = client
            .scan()
            .table_name(&table)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("scan");
        let keys: Vec<&str> = items
            .iter()
            .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str))
            .collect();
        // The run, the sent event, the observation and its two payload parts.
        assert_eq!(items.len(), 5, "{keys:?}");
        let in_a_week = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            + 7 * 24 * 3600;
        for item in &items {
            let expires: u64 = item
                .get(TTL_ATTRIBUTE)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("an item without a numeric {TTL_ATTRIBUTE}: {keys:?}"));
            assert!(
                expires.abs_diff(in_a_week) < 120,
                "expires at {expires}, not in a week ({in_a_week})"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_recording_into_one_run_lose_nothing() {
        let table = format!("writers-{}", uuid::Uuid::new_v4().simple());
        let options = emulated_table(&table);
        let first = Arc::new(open_dynamo(&options).await);
        let second = Arc::new(open_dynamo(&options).await);
        new_run(&*first, "run-a").await;
        let mut tasks = tokio::task::JoinSet::new();
        for (w, store) in [(0u64, Arc::clone(&first)), (1, Arc::clone(&second))] {
            for i in 0..100u64 {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    store
                        .record(json_observation("run-a", w * 1000 + i))
                        .await
                        .expect("record")
                        .seq
                });
            }
        }
        let seqs: HashSet<u64> = tasks.join_all().await.into_iter().collect();
        assert_eq!(
            seqs.len(),
            200,
            "two writers were given the same sequence number"
        );
        for reader in [&first, &second] {
            let stored = reader
                .observations("run-a", 0, usize::MAX)
                .await
                .expect("read");
            let ids: HashSet<String> = stored
                .iter()
                .filter_map(|o| o.correlation_id.clone())
                .collect();
            assert_eq!((stored.len(), ids.len()), (200, 200));
            assert_eq!(stored.iter().map(|o| o.seq).collect::<HashSet<_>>(), seqs);
        }
    }
}

/// The SQLite backend's own behaviour: files, schema versions, errors.
mod sqlite {
    use super::*;

    fn path_in(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path()
            .join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_owned()
    }

    fn open_error(result: Result<SqliteStore, StoreError>) -> (String, String) {
        match result {
            Err(e @ StoreError::Open { .. }) => {
                let StoreError::Open { location, .. } = &e else {
                    unreachable!()
                };
                (location.clone(), error_chain(&e))
            }
            Err(e) => panic!("expected an open error, got {e}"),
            Ok(_) => panic!("expected an open error, the store opened"),
        }
    }

    fn io_kind(result: Result<SqliteStore, StoreError>) -> std::io::ErrorKind {
        match result {
            Err(StoreError::Open { source, .. }) => source
                .downcast_ref::<std::io::Error>()
                .expect("an OS error")
                .kind(),
            other => panic!("expected an open error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn file_store_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "nested/dirs/store.sqlite");
        let store = SqliteStore::open(&path).expect("open creates parent directories");
        new_run(&store, "run-a").await;
        let observed = store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        let sent = SentEvent {
            run_id: "run-a".to_owned(),
            scenario: "s".to_owned(),
            index: 0,
            channel: "orders_in".to_owned(),
            correlation_id: "c".to_owned(),
            sent_at: 5,
            sent_mono: 6,
            size: u64::MAX,
            error: None,
        };
        store.record_sent(&sent).await.expect("sent");
        let result = scenario("s", ScenarioStatus::Passed, 1);
        store
            .record_scenario("run-a", &result)
            .await
            .expect("scenario");
        let summary = summary("run-a", vec![result.clone()]);
        store
            .finish_run(&summary, RunStatus::Passed)
            .await
            .expect("finish");
        store.close().await.expect("close");

        let store = SqliteStore::open(&path).expect("reopen");
        let read = store.observations("run-a", 0, 10).await.expect("read");
        assert_eq!(read, vec![(*observed).clone()]);
        assert_eq!(store.sent_events("run-a").await.expect("sent"), vec![sent]);
        assert_eq!(
            store.scenario_results("run-a").await.expect("results"),
            vec![result]
        );
        assert_eq!(
            store.run_summary("run-a").await.expect("summary"),
            Some(summary)
        );
        // Sequence numbers keep increasing across opens.
        let next = store
            .record(json_observation("run-a", 2))
            .await
            .expect("record");
        assert!(next.seq > observed.seq);
    }

    #[tokio::test]
    async fn dropping_the_store_keeps_acknowledged_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "store.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        new_run(&store, "run-a").await;
        let observed = store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        drop(store);
        let store = SqliteStore::open(&path).expect("reopen");
        let read = store.observations("run-a", 0, 10).await.expect("read");
        assert_eq!(seqs(&read), [observed.seq]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn close_commits_every_acknowledged_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "store.sqlite");
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        new_run(&*store, "run-a").await;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..500 {
            let store = Arc::clone(&store);
            tasks.spawn(async move { store.record(json_observation("run-a", n)).await });
        }
        let (closed, results) = tokio::join!(store.close(), tasks.join_all());
        closed.expect("close");
        let mut acknowledged = Vec::new();
        for r in results {
            match r {
                Ok(o) => acknowledged.push(o.seq),
                Err(StoreError::Closed) => {}
                Err(e) => panic!("record: {e}"),
            }
        }
        acknowledged.sort_unstable();
        let store = SqliteStore::open(&path).expect("reopen");
        let stored = store
            .observations("run-a", 0, usize::MAX)
            .await
            .expect("read");
        // Exactly the acknowledged ones: none lost, none committed without an answer.
        assert_eq!(seqs(&stored), acknowledged);
    }

    #[test]
    fn a_newer_schema_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "store.sqlite");
        drop(SqliteStore::open(&path).expect("create"));
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump version");
        drop(conn);

        let (location, message) = open_error(SqliteStore::open(&path));
        assert_eq!(location, path);
        let expected = format!(
            "store schema version {} is newer than this roundtrip supports ({}); \
             upgrade roundtrip",
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        );
        assert!(message.ends_with(&expected), "{message}");
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "other.sqlite");
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch("CREATE TABLE accounts (id INTEGER)")
            .expect("table");
        drop(conn);
        let (_, message) = open_error(SqliteStore::open(&path));
        assert!(message.contains("not a roundtrip store"), "{message}");
    }

    #[test]
    fn a_path_under_a_file_is_an_open_error_with_the_os_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = path_in(&dir, "a-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let path = format!("{file}/store.sqlite");
        let (location, message) = open_error(SqliteStore::open(&path));
        assert_eq!(location, path);
        assert!(
            message.starts_with(&format!("open the store at {path}: ")),
            "{message}"
        );
        assert_eq!(
            io_kind(SqliteStore::open(&path)),
            std::io::ErrorKind::NotADirectory
        );
        let nested = format!("{file}/more/store.sqlite");
        assert_eq!(
            io_kind(SqliteStore::open(&nested)),
            std::io::ErrorKind::NotADirectory
        );
    }

    #[test]
    fn a_directory_is_an_open_error_with_the_os_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("utf-8").to_owned();
        assert_eq!(
            io_kind(SqliteStore::open(&path)),
            std::io::ErrorKind::IsADirectory
        );
    }

    #[tokio::test]
    async fn synchronous_normal_is_an_option() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "store.sqlite");
        let options = SqliteOptions {
            synchronous: Synchronous::Normal,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, &options).expect("open");
        new_run(&store, "run-a").await;
        let o = store
            .record(json_observation("run-a", 1))
            .await
            .expect("record");
        assert_eq!(
            seqs(&store.observations("run-a", 0, 9).await.expect("read")),
            [o.seq]
        );
    }

    #[tokio::test]
    async fn open_by_url() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "store.sqlite");
        for url in [
            format!("sqlite:{path}"),
            path.clone(),
            "sqlite::memory:".to_owned(),
        ] {
            let store = roundtrip::store::open(&url).await.expect("open");
            store
                .create_run(&run_record(&format!("run-{}", url.len()), 1))
                .await
                .expect("create");
            store.close().await.expect("close");
        }
        // A build without the backend names the feature that has it.
        #[cfg(not(feature = "postgres"))]
        {
            let err = roundtrip::store::open("postgres://rt:hunter2@db/roundtrip")
                .await
                .expect_err("no pg");
            let text = error_chain(&err);
            assert!(
                text.contains("rebuild with `--features postgres`"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[tokio::test]
    async fn reading_commands_open_only_an_existing_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_in(&dir, "typo/store.sqlite");
        let err = roundtrip::store::open_existing(&format!("sqlite:{path}"))
            .await
            .expect_err("no store there");
        assert!(
            matches!(err, roundtrip::store::StoreError::Missing { .. }),
            "{err}"
        );
        assert!(!std::path::Path::new(&path_in(&dir, "typo")).exists());
        let store = roundtrip::store::open(&path).await.expect("create");
        store.close().await.expect("close");
        let store = roundtrip::store::open_existing(&path)
            .await
            .expect("it exists now");
        store.close().await.expect("close");
    }
}
