//! The writer task: group-committed, conditional puts with write ids, announced on the
//! feed in sequence order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use roundtrip_core::observation::{NewObservation, Observation};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::rows::{PART_BYTES, io, observation_items, s};
use super::schema::Shared;
use crate::aws::{error_code, service_error};
use crate::store::StoreError;

/// Items written per batch.
const MAX_BATCH_ITEMS: usize = 100;

/// Payload bytes written per batch.
const MAX_BATCH_BYTES: usize = 3_500_000;

/// The observation writer: group commits, then the feed, then the waiters.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) feed: broadcast::Sender<Arc<Observation>>,
    pub(crate) next_seq: u64,
}

type Pending = (NewObservation, Reply);

impl Writer {
    pub(crate) async fn run(mut self) {
        let mut close = None;
        let mut batch: Vec<Pending> = Vec::new();
        let (mut items, mut bytes) = (0usize, 0usize);
        loop {
            // Wait when nothing is pending; otherwise take what is queued, and commit
            // once the queue is empty.
            let command = if batch.is_empty() {
                match self.commands.recv().await {
                    Some(command) => command,
                    None => break,
                }
            } else {
                match self.commands.try_recv() {
                    Ok(command) => command,
                    Err(_) => {
                        self.commit(std::mem::take(&mut batch)).await;
                        (items, bytes) = (0, 0);
                        continue;
                    }
                }
            };
            match command {
                Command::Close(reply) => {
                    close = Some(reply);
                    break;
                }
                Command::Record { observation, reply } => {
                    let size = observation.payload.bytes.len() + 1024;
                    let parts = observation.payload.bytes.len() / PART_BYTES + 1;
                    if !batch.is_empty()
                        && (items + parts > MAX_BATCH_ITEMS || bytes + size > MAX_BATCH_BYTES)
                    {
                        // It does not fit: it starts the next batch.
                        self.commit(std::mem::take(&mut batch)).await;
                        (items, bytes) = (0, 0);
                    }
                    items += parts;
                    bytes += size;
                    batch.push((*observation, reply));
                }
            }
        }
        self.commit(batch).await;
        // The feed ends with the writer.
        drop(self.feed);
        if let Some(reply) = close {
            let _ = reply.send(Ok(()));
        }
    }

    async fn commit(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        // Unknown runs are refused one by one; the rest is written together.
        let mut waiting: Vec<(Observation, String, Reply)> = Vec::with_capacity(batch.len());
        for (observation, reply) in batch {
            match self.shared.require_run(&observation.run_id).await {
                Ok(()) => {
                    let seq = self.take_seq();
                    let write_id = uuid::Uuid::new_v4().to_string();
                    waiting.push((observation.committed(seq), write_id, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        let mut committed: Vec<(Arc<Observation>, Reply)> = Vec::with_capacity(waiting.len());
        for attempt in 1..=5 {
            let shared = &self.shared;
            let outcomes = futures_util::future::join_all(
                waiting
                    .iter()
                    .map(|(o, write_id, _)| shared.put_observation(o, write_id)),
            )
            .await;
            let mut collided = Vec::new();
            for ((o, write_id, reply), outcome) in waiting.drain(..).zip(outcomes) {
                match outcome {
                    Ok(()) => committed.push((Arc::new(o), reply)),
                    Err(WriteError::Collision) if attempt < 5 => {
                        collided.push((o, write_id, reply));
                    }
                    Err(WriteError::Collision) => {
                        let _ = reply.send(Err(io(
                            "commit an observation",
                            "its sequence numbers kept colliding with another writer's",
                        )));
                    }
                    Err(WriteError::Failed(why)) => {
                        let _ = reply.send(Err(io("commit an observation", why)));
                    }
                }
            }
            if collided.is_empty() {
                break;
            }
            // Another process holds those sequence numbers: take later ones.
            self.next_seq += 1_000;
            for (o, _, reply) in collided {
                let seq = self.take_seq();
                let new = NewObservation {
                    run_id: o.run_id,
                    channel: o.channel,
                    correlation_id: o.correlation_id,
                    payload: o.payload,
                    headers: o.headers,
                    message_id: o.message_id,
                    key: o.key,
                    meta: o.meta,
                    received_at: o.received_at,
                    received_mono: o.received_mono,
                };
                waiting.push((new.committed(seq), uuid::Uuid::new_v4().to_string(), reply));
            }
        }
        // The feed announces in sequence order, everything of the batch committed.
        committed.sort_by_key(|(o, _)| o.seq);
        for (o, reply) in committed {
            let _ = self.feed.send(Arc::clone(&o));
            let _ = reply.send(Ok(o));
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq.max(now_micros());
        self.next_seq = seq + 1;
        seq
    }
}

type Reply = oneshot::Sender<Result<Arc<Observation>, StoreError>>;

impl Shared {
    /// Writes one observation: its payload parts first, then the item that makes it
    /// visible. Each put is conditional on the key being free or already holding this
    /// very write (a retry after a lost answer), so it is idempotent and never
    /// overwrites another writer's observation.
    async fn put_observation(&self, o: &Observation, write_id: &str) -> Result<(), WriteError> {
        let expires_at = self.expires_at();
        let mut items = observation_items(o, write_id, &expires_at)
            .map_err(|e| WriteError::Failed(e.to_string()))?;
        let main = items.remove(0);
        let parts = futures_util::future::try_join_all(
            items
                .into_iter()
                .map(|part| self.put_conditional(part, write_id)),
        );
        parts.await?;
        self.put_conditional(main, write_id).await
    }

    async fn put_conditional(
        &self,
        item: HashMap<String, AttributeValue>,
        write_id: &str,
    ) -> Result<(), WriteError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk) OR wid = :wid")
            .expression_attribute_values(":wid", s(write_id))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                Err(WriteError::Collision)
            }
            Err(e) => Err(WriteError::Failed(service_error(&e))),
        }
    }
}

#[derive(Debug)]
enum WriteError {
    Collision,
    Failed(String),
}

#[derive(Debug)]
pub(crate) enum Command {
    Record {
        observation: Box<NewObservation>,
        reply: oneshot::Sender<Result<Arc<Observation>, StoreError>>,
    },
    Close(oneshot::Sender<Result<(), StoreError>>),
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
