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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use roundtrip_core::observation::{NewObservation, Observation, Payload, SentEvent};
use roundtrip_core::run::{RunSummary, ScenarioResult};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{RunRecord, Store, StoreError};
use crate::aws::{error_code, load_config, service_error};

/// Items expire this long after they were written, unless the URL says `ttl=…`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The name of the TTL attribute (a Number of Unix seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// The index that lists runs by start time.
pub const RUNS_INDEX: &str = "runs_by_start";

/// Payload bytes per item: DynamoDB items are at most 400 KB with their attributes.
const PART_BYTES: usize = 350 * 1024;
/// Items written per batch.
const MAX_BATCH_ITEMS: usize = 100;
/// Payload bytes written per batch.
const MAX_BATCH_BYTES: usize = 3_500_000;

/// Settings of a [`DynamoStore`], parsed from a `dynamodb://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoOptions {
    /// The table.
    pub table: String,
    /// The region (default: the standard configuration).
    pub region: Option<String>,
    /// The endpoint URL, for an emulator (default: the standard configuration).
    pub endpoint: Option<String>,
    /// How long items live before DynamoDB's TTL removes them.
    pub ttl: Duration,
    /// Create the table (on-demand billing, TTL on) when it does not exist.
    pub create: bool,
    /// How many observations a subscriber may fall behind before it lags.
    pub feed_capacity: usize,
}

impl DynamoOptions {
    /// Parses `dynamodb://TABLE?region=R&endpoint=URL&ttl=30d&create=false`.
    pub fn from_url(url: &str) -> Result<DynamoOptions, String> {
        let rest = url
            .strip_prefix("dynamodb://")
            .ok_or("a DynamoDB store URL starts with `dynamodb://`")?;
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        let table = table.trim_end_matches('/');
        if table.len() < 3
            || table.len() > 255
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "`{table}` is not a DynamoDB table name (3–255 of A–Z, a–z, 0–9, `_`, `-`, \
                 `.`); write it like `dynamodb://roundtrip-results`"
            ));
        }
        let mut options = DynamoOptions {
            table: table.to_owned(),
            region: None,
            endpoint: None,
            ttl: DEFAULT_TTL,
            create: true,
            feed_capacity: 16_384,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "region" => options.region = Some(value.to_owned()),
                "endpoint" => options.endpoint = Some(value.to_owned()),
                "ttl" => {
                    options.ttl = humantime::parse_duration(value).map_err(|e| {
                        format!("`ttl={value}` is not a duration ({e}); write e.g. `ttl=30d`")
                    })?;
                }
                "create" => {
                    options.create = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("`create={value}` must be `true` or `false`")),
                    };
                }
                _ => {
                    return Err(format!(
                        "unknown store URL parameter `{key}`; the parameters are `region`, \
                         `endpoint`, `ttl` and `create`"
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// The DynamoDB store. See the [module docs](self).
#[derive(Debug)]
pub struct DynamoStore {
    location: String,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    feed: broadcast::WeakSender<Arc<Observation>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    table: String,
    ttl: Duration,
    /// Runs known to exist (created or read here).
    runs: Mutex<HashSet<String>>,
    /// The next sent-event order number.
    order: AtomicU64,
}

#[derive(Debug)]
enum Command {
    Record {
        observation: Box<NewObservation>,
        reply: oneshot::Sender<Result<Arc<Observation>, StoreError>>,
    },
    Close(oneshot::Sender<Result<(), StoreError>>),
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn io(
    operation: &'static str,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Io {
        operation,
        source: why.into(),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn run_pk(run_id: &str) -> String {
    format!("run#{run_id}")
}

fn obs_sk(seq: u64) -> String {
    format!("obs#{seq:020}")
}

impl DynamoStore {
    /// Opens the store named by a `dynamodb://` URL.
    pub async fn open(url: &str) -> Result<DynamoStore, StoreError> {
        let open_error = |why: String| StoreError::Open {
            location: url.to_owned(),
            source: why.into(),
        };
        let options = DynamoOptions::from_url(url).map_err(open_error)?;
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

async fn ensure_table(client: &Client, table: &str, create: bool) -> Result<(), String> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(()),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") && create => {}
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            return Err(format!(
                "table `{table}` does not exist; create it (see docs/stores/dynamodb.md) or \
                 drop `create=false` from the URL"
            ));
        }
        Err(e) => return Err(format!("describe table `{table}`: {}", service_error(&e))),
    }
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| e.to_string())
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| e.to_string())
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(RUNS_INDEX)
        .key_schema(key("gpk", KeyType::Hash)?)
        .key_schema(key("gsk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gpk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gsk", ScalarAttributeType::N)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Another process created it meanwhile.
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
        Err(e) => return Err(format!("create table `{table}`: {}", service_error(&e))),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| format!("wait for table `{table}`: {e}"))?;
    let ttl = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await;
    match ttl {
        Ok(_) => Ok(()),
        // Another process enabled it meanwhile (DynamoDB refuses enabling it twice).
        Err(e) if service_error(&e).contains("already enabled") => Ok(()),
        Err(e) => Err(format!(
            "enable TTL on table `{table}`: {}",
            service_error(&e)
        )),
    }
}

impl Shared {
    fn expires_at(&self) -> AttributeValue {
        let at = SystemTime::now() + self.ttl;
        n(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Fails with `NoSuchRun` unless the run exists (remembered once seen).
    async fn require_run(&self, run_id: &str) -> Result<(), StoreError> {
        if self.lock_runs().contains(run_id) {
            return Ok(());
        }
        if self.read_run(run_id).await?.is_some() {
            self.lock_runs().insert(run_id.to_owned());
            Ok(())
        } else {
            Err(StoreError::NoSuchRun(run_id.to_owned()))
        }
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn read_run(
        &self,
        run_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(run_pk(run_id)))
            .key("sk", s("run"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| io("read a run", service_error(&e)))?;
        Ok(out.item)
    }

    /// Every item of a run whose sort key lies between `from` and `to`, in key order,
    /// strongly consistent; stops once `enough` says so. (`$` sorts right after `#`, so
    /// `scen#`…`scen$` spans every `scen#…` key.)
    async fn query(
        &self,
        run_id: &str,
        from: &str,
        to: &str,
        enough: impl FnMut(&HashMap<String, AttributeValue>) -> bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        self.query_where(run_id, from, to, None, enough).await
    }

    /// [`Shared::query`], keeping only the items of one correlation id when given.
    async fn query_where(
        &self,
        run_id: &str,
        from: &str,
        to: &str,
        correlation_id: Option<&str>,
        mut enough: impl FnMut(&HashMap<String, AttributeValue>) -> bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .consistent_read(true)
                .set_filter_expression(correlation_id.map(|_| "cid = :cid".to_owned()))
                .expression_attribute_values(":pk", s(run_pk(run_id)))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to));
            if let Some(cid) = correlation_id {
                request = request.expression_attribute_values(":cid", s(cid));
            }
            let out = request
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| io("query the store", service_error(&e)))?;
            for item in out.items.unwrap_or_default() {
                let stop = enough(&item);
                items.push(item);
                if stop {
                    return Ok(items);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

/// Reads a string attribute.
fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// Reads a number attribute.
fn get_n<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn decode<T: serde::de::DeserializeOwned>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    operation: &'static str,
) -> Result<T, StoreError> {
    let text =
        get_s(item, name).ok_or_else(|| io(operation, format!("an item has no `{name}`")))?;
    serde_json::from_str(text).map_err(|e| io(operation, e))
}

fn encode<T: serde::Serialize>(value: &T, operation: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| io(operation, e))
}

fn run_record(item: &HashMap<String, AttributeValue>) -> Result<RunRecord, StoreError> {
    decode(item, "record", "read a run")
}

/// The items of one observation: the first carries everything, later ones payload parts.
fn observation_items(
    o: &Observation,
    write_id: &str,
    expires_at: &AttributeValue,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let headers = encode(&o.headers, "encode headers")?;
    let mut parts = o.payload.bytes.chunks(PART_BYTES);
    let first = parts.next().unwrap_or_default();
    let mut item = HashMap::from([
        ("pk".to_owned(), s(run_pk(&o.run_id))),
        ("sk".to_owned(), s(obs_sk(o.seq))),
        ("seq".to_owned(), n(o.seq)),
        ("ch".to_owned(), s(&o.channel)),
        ("body".to_owned(), AttributeValue::B(Blob::new(first))),
        ("size".to_owned(), n(o.payload.size)),
        (
            "trunc".to_owned(),
            AttributeValue::Bool(o.payload.truncated),
        ),
        (
            "json".to_owned(),
            AttributeValue::Bool(o.payload.json.is_some()),
        ),
        ("hdr".to_owned(), s(headers)),
        ("at".to_owned(), n(o.received_at)),
        ("wid".to_owned(), s(write_id)),
        (TTL_ATTRIBUTE.to_owned(), expires_at.clone()),
    ]);
    let meta = (!o.meta.is_empty())
        .then(|| encode(&o.meta, "encode metadata"))
        .transpose()?;
    let optional = [
        ("cid", o.correlation_id.as_ref()),
        ("mid", o.message_id.as_ref()),
        ("key", o.key.as_ref()),
        ("meta", meta.as_ref()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.to_owned(), s(v));
        }
    }
    if let Some(mono) = o.received_mono {
        item.insert("mono".to_owned(), n(mono));
    }
    let rest: Vec<&[u8]> = parts.collect();
    item.insert("parts".to_owned(), n(rest.len()));
    let mut items = vec![item];
    for (i, part) in rest.into_iter().enumerate() {
        let mut part = HashMap::from([
            ("pk".to_owned(), s(run_pk(&o.run_id))),
            ("sk".to_owned(), s(format!("{}#{}", obs_sk(o.seq), i + 1))),
            ("body".to_owned(), AttributeValue::B(Blob::new(part))),
            ("wid".to_owned(), s(write_id)),
            (TTL_ATTRIBUTE.to_owned(), expires_at.clone()),
        ]);
        // Parts carry the correlation too, so a filtered query returns them with it.
        if let Some(cid) = &o.correlation_id {
            part.insert("cid".to_owned(), s(cid));
        }
        items.push(part);
    }
    Ok(items)
}

/// Reassembles observations from their items (in key order).
fn observations_from(
    run_id: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<Vec<Observation>, StoreError> {
    const OP: &str = "read observations";
    let mut out: Vec<Observation> = Vec::new();
    // The last observation's write id and its parts: (expected, joined).
    let mut open: Option<(String, u64, u64)> = None;
    let complete = |open: &Option<(String, u64, u64)>, o: Option<&Observation>| match (open, o) {
        (Some((_, expected, joined)), Some(o)) if expected != joined => Err(io(
            OP,
            format!(
                "observation {} has {joined} of its {expected} payload parts",
                o.seq
            ),
        )),
        _ => Ok(()),
    };
    for item in items {
        let body = item
            .get("body")
            .and_then(|b| b.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let wid = get_s(&item, "wid").unwrap_or_default().to_owned();
        let Some(seq) = get_n::<u64>(&item, "seq") else {
            // A payload part, `obs#<seq>#<n>`: it belongs to the observation before it
            // only if that one has its seq and was the same write. Parts whose
            // observation is not (yet) visible, written ahead of it or left by a write
            // that lost its key to another writer, are not part of anything.
            let part_seq = get_s(&item, "sk")
                .and_then(|sk| sk.strip_prefix("obs#"))
                .and_then(|rest| rest.split('#').next())
                .and_then(|seq| seq.parse::<u64>().ok());
            if let (Some(o), Some((owner, _, joined))) = (out.last_mut(), open.as_mut())
                && Some(o.seq) == part_seq
                && *owner == wid
            {
                o.payload.bytes.extend_from_slice(&body);
                *joined += 1;
            }
            continue;
        };
        complete(&open, out.last())?;
        open = Some((wid, get_n(&item, "parts").unwrap_or(0), 0));
        let headers: Vec<(String, String)> = decode(&item, "hdr", OP)?;
        // Items written before metadata was recorded have none.
        let meta: Vec<(String, String)> = match get_s(&item, "meta") {
            Some(_) => decode(&item, "meta", OP)?,
            None => Vec::new(),
        };
        let flag = |name: &str| item.get(name).and_then(|v| v.as_bool().ok()).copied();
        out.push(Observation {
            seq,
            run_id: run_id.to_owned(),
            channel: get_s(&item, "ch").unwrap_or_default().to_owned(),
            correlation_id: get_s(&item, "cid").map(str::to_owned),
            payload: Payload {
                bytes: body,
                size: get_n(&item, "size").unwrap_or_default(),
                truncated: flag("trunc").unwrap_or(false),
                // Set once the parts are joined, below.
                json: flag("json")
                    .unwrap_or(false)
                    .then_some(serde_json::Value::Null),
            },
            headers,
            message_id: get_s(&item, "mid").map(str::to_owned),
            key: get_s(&item, "key").map(str::to_owned),
            meta,
            received_at: get_n(&item, "at").unwrap_or_default(),
            received_mono: get_n(&item, "mono"),
        });
    }
    complete(&open, out.last())?;
    for o in &mut out {
        if o.payload.json.is_some() {
            o.payload.json = serde_json::from_slice(&o.payload.bytes).ok();
        }
    }
    Ok(out)
}

/// The observation writer: group commits, then the feed, then the waiters.
struct Writer {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    feed: broadcast::Sender<Arc<Observation>>,
    next_seq: u64,
}

type Pending = (NewObservation, Reply);

impl Writer {
    async fn run(mut self) {
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

#[async_trait]
impl Store for DynamoStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let created = shared
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
        match created {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                // The same record is this very call retried after a lost answer.
                let existing = shared.read_run(&run.run_id).await?;
                if existing.as_ref().map(run_record).transpose()?.as_ref() != Some(run) {
                    return Err(io(
                        "create a run",
                        format!("run `{}` already exists", run.run_id),
                    ));
                }
            }
            Err(e) => return Err(io("create a run", service_error(&e))),
        }
        shared.lock_runs().insert(run.run_id.clone());
        Ok(())
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
        super::follow(&self.feed)
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

    async fn finish_run(&self, summary: &RunSummary, status: &str) -> Result<(), StoreError> {
        self.check_open()?;
        let shared = &self.shared;
        let mut record = match shared.read_run(&summary.run_id).await? {
            Some(item) => run_record(&item)?,
            None => return Err(StoreError::NoSuchRun(summary.run_id.clone())),
        };
        record.finished_at = Some(summary.finished_at);
        record.status = status.to_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_table_and_options() {
        let o = DynamoOptions::from_url(
            "dynamodb://roundtrip-results?region=eu-west-1&endpoint=http://127.0.0.1:5055&ttl=7d&create=false",
        )
        .expect("parses");
        assert_eq!(o.table, "roundtrip-results");
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(o.ttl, Duration::from_secs(7 * 24 * 3600));
        assert!(!o.create);
        let plain = DynamoOptions::from_url("dynamodb://results").expect("parses");
        assert_eq!((plain.ttl, plain.create), (DEFAULT_TTL, true));
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let err = |url: &str| DynamoOptions::from_url(url).expect_err(url);
        assert!(err("dynamodb://a b").contains("not a DynamoDB table name"));
        assert!(err("dynamodb://tbl?ttl=forever").contains("write e.g. `ttl=30d`"));
        assert!(err("dynamodb://tbl?colour=red").contains("unknown store URL parameter `colour`"));
        assert!(err("dynamodb://tbl?create=yes").contains("`true` or `false`"));
    }

    #[test]
    fn large_payloads_are_split_and_joined() {
        let new = |body: Vec<u8>| NewObservation {
            run_id: "r".to_owned(),
            channel: "c".to_owned(),
            correlation_id: Some("id".to_owned()),
            payload: Payload::from_bytes(body, 2 << 20),
            headers: vec![("h".to_owned(), "v".to_owned())],
            message_id: None,
            key: Some("k".to_owned()),
            meta: Vec::new(),
            received_at: 7,
            received_mono: Some(9),
        };
        let o = new((0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect()).committed(42);
        let items = observation_items(&o, "w", &n(1)).expect("items");
        assert_eq!(items.len(), 3, "1 MiB in 350 KiB parts");
        assert_eq!(
            observations_from("r", items.clone()).expect("joined"),
            vec![o.clone()]
        );

        // Parts of a write not visible yet (its main item comes later) are nothing.
        let next = new(vec![7; PART_BYTES + 1]).committed(43);
        let mut next_items = observation_items(&next, "w2", &n(1)).expect("items");
        let mut read = items.clone();
        read.push(next_items.remove(1));
        assert_eq!(observations_from("r", read).expect("read"), vec![o.clone()]);

        // A part of another write at the same key is not joined.
        let mut foreign = items.clone();
        foreign[1].insert("wid".to_owned(), s("someone else"));
        let err = observations_from("r", foreign).expect_err("a part is missing");
        assert!(err.to_string().contains("read observations"), "{err}");
    }
}
