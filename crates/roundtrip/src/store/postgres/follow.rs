//! The feed across processes: LISTEN/NOTIFY used only as a wake-up.
//!
//! Every writer (in any process) sends one `NOTIFY` per committed batch of observations,
//! with an empty payload. The follower of each store listens on a connection of its own
//! and, on every wake-up, on every reconnect and on a slow timer, reads what was
//! committed after the last observation it published (`seq > last`) and publishes it on
//! the store's feed, in sequence order. Sequence order is commit order (see the schema
//! module), so that read never skips a row. A notification lost while the listening
//! connection was down costs nothing: the reconnect reads again, and so does the timer.
//!
//! This process's own commits reach the follower directly from the writer, so they are
//! on the feed before their `record` resolves: published at once when they follow the
//! last published observation, after the rows of other processes committed in between
//! otherwise.
//!
//! Where LISTEN cannot work (a transaction-pooling PgBouncer accepts it and then
//! delivers nothing), `listen=false` in the store's URL turns it off, and the timer
//! (`poll=`) is then the only way other processes' observations arrive.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use roundtrip_core::observation::Observation;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use super::PostgresOptions;
use super::rows::{OBSERVATION_COLUMNS, observation_row, to_sql};

/// Observations read per query while catching up.
const PAGE: i64 = 4096;

/// How long a gap before this process's own batch is read again (with a backoff) before
/// the batch is published anyway: the database was just written to, so a read failing
/// for this long means it is gone for longer than any run waits.
const GAP_PATIENCE: Duration = Duration::from_secs(30);

/// The notification channel of a store's schema (at most 63 bytes, Postgres' limit).
pub(super) fn channel(schema: &str) -> String {
    let mut name = format!("rt_{schema}");
    name.truncate(63);
    name
}

/// A batch this process committed, in sequence order, and who waits for it to be on the
/// feed.
#[derive(Debug)]
pub(super) struct Committed {
    pub(super) observations: Vec<Arc<Observation>>,
    pub(super) published: oneshot::Sender<()>,
}

pub(super) struct Follower {
    pub(super) options: PostgresOptions,
    pub(super) pool: Pool,
    pub(super) feed: broadcast::Sender<Arc<Observation>>,
    pub(super) committed: mpsc::UnboundedReceiver<Committed>,
    /// The last sequence number published.
    pub(super) last: u64,
}

/// What woke the follower.
enum Wake {
    Committed(Committed),
    /// A notification, a (re)connected listener, or the timer.
    Read,
    /// The store is closing.
    Closed,
}

impl Follower {
    pub(super) async fn run(mut self) {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
        let listener = self
            .options
            .listen
            .then(|| tokio::spawn(listen(self.options.clone(), wake_tx)));
        let mut timer = tokio::time::interval(self.options.poll);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                biased;
                c = self.committed.recv() => c.map_or(Wake::Closed, Wake::Committed),
                Some(()) = wake_rx.recv() => Wake::Read,
                _ = timer.tick() => Wake::Read,
            };
            match wake {
                Wake::Committed(batch) => self.publish_own(batch).await,
                Wake::Read => {
                    while wake_rx.try_recv().is_ok() {}
                    let _ = self.catch_up(None).await;
                }
                Wake::Closed => break,
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        // The feed ends with the follower.
    }

    /// Publishes this process's batch: after whatever other processes committed before
    /// it (read from the table), skipping what a read already published.
    async fn publish_own(&mut self, batch: Committed) {
        let Some(first) = batch.observations.first().map(|o| o.seq) else {
            let _ = batch.published.send(());
            return;
        };
        if first > self.last + 1 {
            let give_up = tokio::time::Instant::now() + GAP_PATIENCE;
            let mut delay = Duration::from_millis(20);
            while self.catch_up(Some(first)).await.is_err() && tokio::time::Instant::now() < give_up
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
        for o in batch.observations {
            if o.seq > self.last {
                self.last = o.seq;
                let _ = self.feed.send(o);
            }
        }
        let _ = batch.published.send(());
    }

    /// Reads and publishes what was committed after `last` (and before `before`).
    async fn catch_up(&mut self, before: Option<u64>) -> Result<(), ()> {
        let client = self.pool.get().await.map_err(drop)?;
        let before = before.map_or(i64::MAX, to_sql);
        loop {
            let rows = client
                .query(
                    &format!(
                        "SELECT {OBSERVATION_COLUMNS} FROM observations
                         WHERE seq > $1 AND seq < $2 ORDER BY seq LIMIT $3"
                    ),
                    &[&to_sql(self.last), &before, &PAGE],
                )
                .await
                .map_err(drop)?;
            let full = rows.len() as i64 == PAGE;
            for row in &rows {
                // A row that cannot be decoded is skipped on the feed (it stays readable
                // with `observations`, which reports the error).
                let Ok(o) = observation_row(row) else {
                    continue;
                };
                self.last = self.last.max(o.seq);
                let _ = self.feed.send(Arc::new(o));
            }
            if let Some(row) = rows.last() {
                let seq: i64 = row.try_get(0).map_err(drop)?;
                self.last = self.last.max(seq as u64);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Keeps a connection that LISTENs on the store's channel, reconnecting with a backoff;
/// sends a wake-up on every notification and after every (re)connect.
async fn listen(options: PostgresOptions, wake: mpsc::UnboundedSender<()>) {
    let channel = channel(&options.schema);
    let mut delay = Duration::from_millis(100);
    loop {
        if let Ok((client, mut connection)) = super::connect_once(&options).await {
            let driver = tokio::spawn({
                let wake = wake.clone();
                async move {
                    while let Some(Ok(message)) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        if matches!(message, AsyncMessage::Notification(_))
                            && wake.send(()).is_err()
                        {
                            return;
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .is_ok()
            {
                delay = Duration::from_millis(100);
                // Subscribed: read what may have been missed while not.
                if wake.send(()).is_err() {
                    return;
                }
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        if wake.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
