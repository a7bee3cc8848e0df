//! The DynamoDB store (feature `dynamodb`): a shared, durable store for long-running or
//! deployed harnesses, and the seed guide's listener storage.
//!
//! Opened with `dynamodb://TABLE?region=…&endpoint=…&ttl=30d&create=true` (every query
//! parameter optional; region, endpoint and credentials otherwise come from the standard
//! AWS configuration). See `docs/stores/dynamodb.md` for the table layout.
//!
//! ## Layout (one table)
//! | item | `pk` | `sk` |
//! | --- | --- | --- |
//! | a run | `run#<id>` | `run` (also `gpk = "runs"`, `gsk = started_at` for the `runs_by_start` index) |
//! | an observation | `run#<id>` | `obs#<seq, 20 digits>` (and `obs#<seq>#<n>` for payload parts past 350 KiB) |
//! | a sent event | `run#<id>` | `sent#<order, 20 digits>` |
//! | a scenario result | `run#<id>` | `scen#<name>` |
//!
//! Every item carries `expires_at` (a Number, Unix seconds): DynamoDB's TTL deletes it
//! after the configured lifetime (default 30 days), so a shared table does not grow
//! forever.
//!
//! ## Writes
//! Observations are group-committed like SQLite's: one writer task takes whatever is
//! queued (up to 100 items or 3.5 MB) and writes the batch with concurrent `PutItem`s,
//! answering each waiter only after DynamoDB accepted its item, and announcing the
//! batch on the feed in sequence order once all of it is written. Every put is
//! conditional (`attribute_not_exists(sk) OR wid = :wid`) and carries a write id: a put
//! retried after a lost answer succeeds as the same write instead of writing twice, and
//! two processes recording into one run never overwrite each other (on a collision the
//! observation takes a fresh sequence number and is written again). A payload larger
//! than 350 KiB is split into part items written before the item that makes the
//! observation visible, so a reader never sees half of one.
//!
//! (Not `TransactWriteItems`: it costs twice the write capacity, and the emulator used in
//! tests copies every table per transaction, which made a 2,560-observation test take
//! 158 s.)
//!
//! Sequence numbers are per store instance: they start at the open time in
//! microseconds and increase by one per observation, so they are strictly increasing
//! within a store and, across processes, ordered roughly by time.
//!
//! ## The feed
//! Observations this process commits are announced on the broadcast feed, exactly as
//! SQLite does (push, no polling). Observations written by *another* process into the
//! same table are not pushed: a reader sees them with [`Store::observations`], which is a
//! strongly consistent query; DynamoDB itself has no push to offer here (Streams would
//! need a consumer per shard), so waiting on another process's writes means polling.

mod options;
mod rows;
mod schema;
mod writer;

pub use options::DynamoOptions;
pub use rows::TTL_ATTRIBUTE;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use roundtrip_core::observation::{NewObservation, Observation, SentEvent};
use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{RunSummary, ScenarioResult};
use tokio::sync::{broadcast, mpsc, oneshot};

use self::rows::{decode, encode, get_n, io, n, obs_sk, observations_from, run_pk, run_record, s};
use self::schema::{RUNS_INDEX, Shared, ensure_table};
use self::writer::{Command, Writer, now_micros};
use crate::aws::{error_code, load_config, service_error};
use crate::store::{LoadPart, RunRecord, Store, StoreError};

/// The DynamoDB store. See the [module docs](self).
#[derive(Debug)]
pub struct DynamoStore {
    location: String,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    feed: broadcast::WeakSender<Arc<Observation>>,
    closed: AtomicBool,
}

impl DynamoStore {
    /// Opens the store named by a `dynamodb://` URL.
    pub async fn open(url: &str) -> Result<DynamoStore, StoreError> {
        let options =
            DynamoOptions::from_url(url).map_err(|message| StoreError::invalid(url, message))?;
        DynamoStore::open_with(&options).await
    }

    /// Opens the store with these options; creates the table when it is missing and
    /// `create` is set.
    pub async fn open_with(options: &DynamoOptions) -> Result<DynamoStore, StoreError> {
        let location = format!("dynamodb://{}", options.table);
        let open_error = |why: String| StoreError::Open {
            location: location.clone(),
            source: why.into(),
        };
        let config = load_config(options.region.as_deref(), options.endpoint.as_deref())
            .await
            .map_err(open_error)?;
        let client = Client::new(&config);
        ensure_table(&client, &options.table, options.create)
            .await
            .map_err(|e| {
                open_error(format!(
                    "{e} (DynamoDB at {})",
                    crate::aws::describe_endpoint(&config)
                ))
            })?;
        let shared = Arc::new(Shared {
            client,
            table: options.table.clone(),
            ttl: options.ttl,
            runs: Mutex::new(HashSet::new()),
            order: AtomicU64::new(now_micros()),
        });
        let (feed, _) = broadcast::channel(options.feed_capacity.clamp(1, 1 << 24));
        let weak = feed.downgrade();
        let (commands, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            commands: receiver,
            feed,
            next_seq: now_micros(),
        };
        tokio::spawn(writer.run());
        Ok(DynamoStore {
            location,
            shared,
            commands,
            feed: weak,
            closed: AtomicBool::new(false),
        })
    }

    /// Where the store is: `dynamodb://TABLE`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

/// A load part's sort key: `load#WORKER#KIND#INDEX`, zero-padded so that they sort as
/// the parts do.
fn load_sk(part: &LoadPart) -> String {
    let kind = match part.kind {
        crate::store::LoadPartKind::Joined => 0,
        crate::store::LoadPartKind::Interval(_) => 1,
        crate::store::LoadPartKind::Finished => 2,
    };
    format!("load#{:05}#{kind}#{:020}", part.worker, part.kind.index())
}

impl DynamoStore {
    /// Puts the run's item unless it exists: whether it was put.
    async fn put_run(&self, run: &RunRecord) -> Result<bool, StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let put = shared
            .client
            .put_item()
            .table_name(&shared.table)
            .item("pk", s(run_pk(&run.run_id)))
            .item("sk", s("run"))
            .item("gpk", s("runs"))
            .item("gsk", n(run.started_at))
            .item("record", s(encode(run, "encode a run")?))
            .item(TTL_ATTRIBUTE, shared.expires_at())
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(io("create a run", service_error(&e))),
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if !self.put_run(run).await? {
            // The same record is this very call retried after a lost answer.
            let existing = self.shared.read_run(&run.run_id).await?;
            if existing.as_ref().map(run_record).transpose()?.as_ref() != Some(run) {
                return Err(io(
                    "create a run",
                    format!("run `{}` already exists", run.run_id),
                ));
            }
        }
        self.shared.lock_runs().insert(run.run_id.clone());
        Ok(())
    }

    async fn join_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        // Created, or another worker created it: this one joins.
        self.put_run(run).await?;
        self.shared.lock_runs().insert(run.run_id.clone());
        Ok(())
    }

    async fn record_load_part(&self, run_id: &str, part: &LoadPart) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared.require_run(run_id).await?;
        let shared = &self.shared;
        shared
            .client
            .put_item()
            .table_name(&shared.table)
            .item("pk", s(run_pk(run_id)))
            .item("sk", s(load_sk(part)))
            .item("worker", n(part.worker))
            .item("kind", s(part.kind.name()))
            .item("idx", n(part.kind.index()))
            .item("body", s(&part.body))
            .item(TTL_ATTRIBUTE, shared.expires_at())
            .send()
            .await
            .map_err(|e| io("record a load part", service_error(&e)))?;
        Ok(())
    }

    async fn load_parts(&self, run_id: &str) -> Result<Vec<LoadPart>, StoreError> {
        self.check_open()?;
        let items = self
            .shared
            .query(run_id, "load#", "load$", |_| false)
            .await?;
        let mut parts = items
            .iter()
            .map(|item| {
                let worker = get_n::<u16>(item, "worker");
                let index = get_n::<u64>(item, "idx");
                let kind = item.get("kind").and_then(|v| v.as_s().ok());
                let body = item.get("body").and_then(|v| v.as_s().ok());
                match (worker, index, kind, body) {
                    (Some(worker), Some(index), Some(kind), Some(body)) => Ok(LoadPart {
                        worker,
                        kind: crate::store::load_part_kind(kind, index)?,
                        body: body.clone(),
                    }),
                    _ => Err(io("read load parts", "a load part item lacks an attribute")),
                }
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        parts.sort_by_key(|p| (p.worker, p.kind));
        Ok(parts)
    }

    async fn record_sent(&self, event: &SentEvent) -> Result<(), StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let order = shared.order.fetch_add(1, Ordering::Relaxed);
        let write_id = uuid::Uuid::new_v4().to_string();
        shared
            .client
            .put_item()
            .table_name(&shared.table)
            .item("pk", s(run_pk(&event.run_id)))
            .item("sk", s(format!("sent#{order:020}")))
            .item("event", s(encode(event, "encode a sent event")?))
            .item("wid", s(&write_id))
            .item(TTL_ATTRIBUTE, shared.expires_at())
            // Idempotent like observations: a retried put is the same write.
            .condition_expression("attribute_not_exists(sk) OR wid = :wid")
            .expression_attribute_values(":wid", s(&write_id))
            .send()
            .await
            .map_err(|e| io("record a sent event", service_error(&e)))?;
        Ok(())
    }

    async fn record(&self, observation: NewObservation) -> Result<Arc<Observation>, StoreError> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Record {
                observation: Box::new(observation),
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Observation>> {
        crate::store::follow(&self.feed)
    }

    async fn observations(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Observation>, StoreError> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = obs_sk(after.saturating_add(1));
        let mut count = 0usize;
        // Stop after the `limit`-th observation's last part: one item past it tells.
        let mut items = self
            .shared
            .query(run_id, &from, "obs$", |item| {
                if item.contains_key("seq") {
                    count += 1;
                }
                count > limit
            })
            .await?;
        if count > limit {
            items.pop();
        }
        observations_from(run_id, items)
    }

    /// Filtered by DynamoDB (`cid = :cid`), so only the event's items travel.
    async fn correlated(
        &self,
        run_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<Observation>, StoreError> {
        self.check_open()?;
        let items = self
            .shared
            .query_where(run_id, "obs#", "obs$", Some(correlation_id), |_| false)
            .await?;
        observations_from(run_id, items)
    }

    async fn sent_events(&self, run_id: &str) -> Result<Vec<SentEvent>, StoreError> {
        self.check_open()?;
        let items = self
            .shared
            .query(run_id, "sent#", "sent$", |_| false)
            .await?;
        items
            .iter()
            .map(|item| decode(item, "event", "read sent events"))
            .collect()
    }

    async fn record_scenario(
        &self,
        run_id: &str,
        result: &ScenarioResult,
    ) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared.require_run(run_id).await?;
        let shared = &self.shared;
        let order = shared.order.fetch_add(1, Ordering::Relaxed);
        shared
            .client
            .update_item()
            .table_name(&shared.table)
            .key("pk", s(run_pk(run_id)))
            .key("sk", s(format!("scen#{}", result.name)))
            .update_expression(
                "SET #result = :result, #first = if_not_exists(#first, :order), #exp = :exp",
            )
            .expression_attribute_names("#result", "result")
            .expression_attribute_names("#first", "first")
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":result", s(encode(result, "encode a scenario result")?))
            .expression_attribute_values(":order", n(order))
            .expression_attribute_values(":exp", shared.expires_at())
            .send()
            .await
            .map_err(|e| io("record a scenario result", service_error(&e)))?;
        Ok(())
    }

    async fn scenario_results(&self, run_id: &str) -> Result<Vec<ScenarioResult>, StoreError> {
        self.check_open()?;
        let mut items = self
            .shared
            .query(run_id, "scen#", "scen$", |_| false)
            .await?;
        items.sort_by_key(|item| get_n::<u64>(item, "first").unwrap_or(u64::MAX));
        items
            .iter()
            .map(|item| decode(item, "result", "read scenario results"))
            .collect()
    }

    async fn finish_run(&self, summary: &RunSummary, status: RunStatus) -> Result<(), StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let mut record = match shared.read_run(&summary.run_id).await? {
            Some(item) => run_record(&item)?,
            None => return Err(StoreError::NoSuchRun(summary.run_id.clone())),
        };
        record.finished_at = Some(summary.finished_at);
        record.status = status;
        shared
            .client
            .update_item()
            .table_name(&shared.table)
            .key("pk", s(run_pk(&summary.run_id)))
            .key("sk", s("run"))
            .update_expression("SET #record = :record, #summary = :summary")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#record", "record")
            .expression_attribute_names("#summary", "summary")
            .expression_attribute_values(":record", s(encode(&record, "encode a run")?))
            .expression_attribute_values(":summary", s(encode(summary, "encode the run summary")?))
            .send()
            .await
            .map_err(|e| io("finish a run", service_error(&e)))?;
        Ok(())
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let mut runs = Vec::new();
        let mut start = None;
        while runs.len() < limit {
            let out = shared
                .client
                .query()
                .table_name(&shared.table)
                .index_name(RUNS_INDEX)
                .key_condition_expression("gpk = :runs")
                .expression_attribute_values(":runs", s("runs"))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - runs.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| io("list runs", service_error(&e)))?;
            for item in out.items() {
                runs.push(run_record(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        runs.truncate(limit);
        Ok(runs)
    }

    async fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, StoreError> {
        self.check_open()?;
        match self.shared.read_run(run_id).await? {
            Some(item) if item.contains_key("summary") => {
                decode(&item, "summary", "read a run summary").map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.check_open()?;
        self.shared
            .read_run(run_id)
            .await?
            .map(|item| run_record(&item))
            .transpose()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).is_err() {
            return Ok(());
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
