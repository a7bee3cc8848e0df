//! Routes committed observations from the store's feed to the scenarios waiting for them.
//!
//! A scenario registers each correlation id *before* it produces the event, so every
//! observation carrying that id reaches it. Observations without a known correlation id
//! go, as evidence for near-miss reports only, to every scenario that watches their
//! channel. The feed is push: the dispatcher wakes on each commit, and a lagging
//! dispatcher catches up from the store by sequence number, so nothing is missed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use roundtrip_core::observation::Observation;
use tokio::sync::{broadcast, mpsc};

use crate::store::Store;

/// What a scenario receives.
pub(crate) type Inbox = mpsc::UnboundedSender<Arc<Observation>>;

/// Where evidence (uncorrelated observations) goes: a scenario drains its queue all the
/// time; a client's test only when it asks, so its queue is bounded and what does not
/// fit is dropped (it is evidence, not a verdict's input).
#[derive(Debug)]
pub(crate) enum Evidence {
    Unbounded(Inbox),
    Bounded(mpsc::Sender<Arc<Observation>>),
}

impl Evidence {
    /// Hands `obs` over; `false` once the receiver is gone.
    fn offer(&self, obs: &Arc<Observation>) -> bool {
        match self {
            Evidence::Unbounded(tx) => tx.send(Arc::clone(obs)).is_ok(),
            Evidence::Bounded(tx) => !matches!(
                tx.try_send(Arc::clone(obs)),
                Err(mpsc::error::TrySendError::Closed(_))
            ),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Evidence::Unbounded(tx) => tx.is_closed(),
            Evidence::Bounded(tx) => tx.is_closed(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Mutex<HashMap<String, Inbox>>,
    watchers: Mutex<Vec<(HashSet<String>, Evidence)>>,
}

impl Router {
    /// Routes observations correlated with `correlation_id` to `inbox`.
    pub fn route(&self, correlation_id: &str, inbox: &Inbox) {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(correlation_id.to_owned(), inbox.clone());
    }

    /// Forgets the routes of finished scenarios.
    pub fn unroute<'a>(&self, correlation_ids: impl IntoIterator<Item = &'a str>) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        for id in correlation_ids {
            routes.remove(id);
        }
    }

    /// Sends uncorrelated observations on `channels` to `inbox` (evidence only).
    pub fn watch(&self, channels: HashSet<String>, inbox: &Inbox) {
        self.watch_into(channels, Evidence::Unbounded(inbox.clone()));
    }

    /// Sends uncorrelated observations on `channels` to `to` (evidence only).
    pub fn watch_into(&self, channels: HashSet<String>, to: Evidence) {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((channels, to));
    }

    fn dispatch(&self, obs: &Arc<Observation>) {
        if let Some(id) = &obs.correlation_id {
            let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(inbox) = routes.get(id) {
                let _ = inbox.send(Arc::clone(obs));
                return;
            }
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.retain(|(channels, to)| {
            if channels.contains(&obs.channel) {
                to.offer(obs)
            } else {
                !to.is_closed()
            }
        });
    }
}

/// Forwards this run's committed observations to the router until the feed closes.
pub(crate) async fn dispatch(
    mut feed: broadcast::Receiver<Arc<Observation>>,
    store: Arc<dyn Store>,
    run_id: String,
    router: Arc<Router>,
) {
    let mut last_seq = 0u64;
    loop {
        match feed.recv().await {
            Ok(obs) => {
                if obs.run_id == run_id && obs.seq > last_seq {
                    last_seq = obs.seq;
                    router.dispatch(&obs);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Catch up from the store: everything after the last routed sequence.
                loop {
                    let Ok(batch) = store.observations(&run_id, last_seq, 4096).await else {
                        break;
                    };
                    let Some(last) = batch.last() else { break };
                    last_seq = last.seq;
                    for obs in batch {
                        router.dispatch(&Arc::new(obs));
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
