//! The outputs: a webhook (HTTP POST of the JSON body) or a directory of JSON files, one
//! for processed events and one for dead letters.
//!
//! One emitter task takes the processing loop's [`Job`]s in order and handles them one at
//! a time, so outputs leave in the order the loop released them. After a job is delivered
//! (or given up on, or dropped) its event is deleted from storage; a crash in between
//! means the event is emitted again after a restart (at-least-once delivery).
//!
//! - **HTTP**: `POST <url>` with `content-type: application/json` and the propagated
//!   headers (see [`crate::propagate`]), plus `x-pipeline-emitted-at` (Unix ns). Connection errors, timeouts and `5xx` answers are
//!   retried with exponential backoff, [`RETRY_TRIES`] tries in all; other answers
//!   (`4xx`) are not retried. A give-up is logged on stderr.
//! - **Directory**: the body is written atomically (temporary file, then rename; not
//!   flushed to disk, as the outputs are for a test harness to read) as `<correlation
//!   id>.json` (a generated uuid when the request had no `x-correlation-id`); headers are
//!   not written. If the name
//!   is taken (a duplicate, or another event with the same correlation id), the next free
//!   of `<id>.2.json`, `<id>.3.json`, … is used, so no output hides another.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The header carrying the wall-clock time (Unix ns) at which an HTTP output was sent.
pub const EMITTED_AT_HEADER: &str = "x-pipeline-emitted-at";

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use roundtrip::core::model::ChannelSpec;
use roundtrip::transport::{DriverContext, Outgoing, ProduceError, Producer, registry};
use tokio::sync::mpsc;

use crate::chain::error_chain;
use crate::storage::{Durability, Storage, StoredEvent, write_atomically};

/// How many times an HTTP emit is tried before giving up.
pub const RETRY_TRIES: u32 = 5;
/// The wait before the first retry; it doubles with every further retry.
pub const RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The timeout of one HTTP emit attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a file stem taken from a correlation id may be.
const MAX_STEM: usize = 200;

/// Where one kind of output goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// POST each output to this URL.
    Http(Url),
    /// Write each output as a file into this directory.
    Dir(PathBuf),
    /// Send each output through one of roundtrip's broker producers (NATS, AMQP, Kafka).
    Broker(Box<ChannelSpec>),
}

/// Broker outputs, as roundtrip channel specs: the pipeline uses roundtrip's own
/// producers, so it needs no broker clients of its own. They need the pipeline's
/// `brokers` feature; without it, starting with a broker output fails naming it.
pub mod broker {
    use roundtrip::core::model::{AmqpChannel, ChannelSpec, KafkaChannel, NatsChannel};

    /// Publish to a NATS subject.
    pub fn nats(url: &str, subject: &str) -> ChannelSpec {
        ChannelSpec::Nats(NatsChannel::new(url, subject))
    }

    /// Publish to a queue through the default exchange.
    pub fn amqp(url: &str, queue: &str) -> ChannelSpec {
        ChannelSpec::Amqp(AmqpChannel {
            routing_key: Some(queue.to_owned()),
            ..AmqpChannel::new(url)
        })
    }

    /// Produce to a Kafka topic (created if missing).
    pub fn kafka(brokers: &str, topic: &str) -> ChannelSpec {
        ChannelSpec::Kafka(KafkaChannel {
            create: true,
            ..KafkaChannel::new(brokers, topic)
        })
    }
}

impl Output {
    /// Gets the output ready: creates the directory of a directory output.
    pub fn prepare(&self) -> io::Result<()> {
        match self {
            Self::Http(_) | Self::Broker(_) => Ok(()),
            Self::Dir(dir) => std::fs::create_dir_all(dir),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(url) => write!(f, "{url}"),
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::Broker(spec) => match spec.as_ref() {
                ChannelSpec::Nats(n) => write!(f, "NATS subject {} at {}", n.subject, n.url),
                ChannelSpec::Amqp(a) => write!(
                    f,
                    "AMQP queue {} at {}",
                    a.routing_key.as_deref().unwrap_or_default(),
                    a.url
                ),
                ChannelSpec::Kafka(k) => write!(f, "Kafka topic {} at {}", k.topic, k.brokers),
                other => write!(f, "a {} channel", other.transport()),
            },
        }
    }
}

/// Which output a delivery goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The processed-events output.
    Processed,
    /// The dead-letter output.
    DeadLetter,
}

/// One output to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The output it goes to.
    pub target: Target,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The propagated headers (HTTP outputs only).
    pub headers: Vec<(&'static str, String)>,
    /// The file name without `.json` (directory outputs only); the correlation id of
    /// broker outputs.
    pub file_stem: String,
    /// How many times to deliver it (2 for an injected duplicate).
    pub copies: u32,
}

/// What the emitter does with one event: deliver it (unless it was dropped), then delete
/// it from storage.
#[derive(Debug)]
pub struct Job {
    /// The stored event.
    pub event: StoredEvent,
    /// The output, or `None` for a dropped event.
    pub delivery: Option<Delivery>,
}

/// An output that could not be delivered.
#[derive(Debug)]
pub enum EmitError {
    /// The request could not be sent (after retries).
    Send {
        /// The webhook.
        url: Url,
        /// How many times it was tried.
        tries: u32,
        /// The last error.
        source: reqwest::Error,
    },
    /// The webhook answered with an error status (after retries for `5xx`).
    Status {
        /// The webhook.
        url: Url,
        /// How many times it was tried.
        tries: u32,
        /// The last answer.
        status: StatusCode,
    },
    /// A broker did not take the output.
    Broker {
        /// The output.
        output: String,
        /// Why.
        source: ProduceError,
    },
    /// The output file could not be written.
    Write {
        /// The output directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send { url, tries, .. } => write!(f, "post to {url} ({tries} tries)"),
            Self::Status { url, tries, status } => {
                write!(f, "post to {url}: it answered {status} ({tries} tries)")
            }
            Self::Write { dir, .. } => write!(f, "write an output file into {}", dir.display()),
            Self::Broker { output, .. } => write!(f, "send to {output}"),
        }
    }
}

impl std::error::Error for EmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Send { source, .. } => Some(source),
            Self::Status { .. } => None,
            Self::Write { source, .. } => Some(source),
            Self::Broker { source, .. } => Some(source),
        }
    }
}

/// Delivers outputs.
#[derive(Debug)]
pub struct Emitter {
    client: reqwest::Client,
    processed: Output,
    dead_letter: Output,
    audit: Option<Output>,
    /// Connected producers of broker outputs, by target (see [`Emitter::connect`]).
    brokers: Vec<(BrokerTarget, Arc<dyn Producer>)>,
}

/// Which output a broker producer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerTarget {
    Processed,
    DeadLetter,
    Audit,
}

impl Emitter {
    /// An emitter for the two outputs. Proxies from the environment are ignored: the
    /// outputs are plain-HTTP test endpoints.
    pub fn new(processed: Output, dead_letter: Output) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            processed,
            dead_letter,
            audit: None,
            brokers: Vec::new(),
        })
    }

    /// Adds an audit output: a record of every event's outcome.
    pub fn with_audit(mut self, audit: Option<Output>) -> Self {
        self.audit = audit;
        self
    }

    /// Connects the broker outputs; an unreachable broker or a compiled-out transport is
    /// an error here, before the pipeline says it is ready.
    pub async fn connect(mut self) -> Result<Self, EmitError> {
        let outputs = [
            (BrokerTarget::Processed, Some(&self.processed)),
            (BrokerTarget::DeadLetter, Some(&self.dead_letter)),
            (BrokerTarget::Audit, self.audit.as_ref()),
        ];
        let ctx = DriverContext {
            base_dir: PathBuf::from("."),
        };
        let mut brokers = Vec::new();
        for (target, output) in outputs {
            let Some(Output::Broker(spec)) = output else {
                continue;
            };
            let label = output.map(ToString::to_string).unwrap_or_default();
            let producer: Arc<dyn Producer> = registry::producer("output", spec, &ctx)
                .map_err(|e| EmitError::Broker {
                    output: label.clone(),
                    source: ProduceError::Rejected {
                        channel: "output".to_owned(),
                        message: e.to_string(),
                    },
                })?
                .into();
            producer
                .connect()
                .await
                .map_err(|source| EmitError::Broker {
                    output: label.clone(),
                    source,
                })?;
            brokers.push((target, producer));
        }
        self.brokers = brokers;
        Ok(self)
    }

    fn broker(&self, target: BrokerTarget) -> Option<&Arc<dyn Producer>> {
        self.brokers
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, p)| p)
    }

    /// Sends one audit record of `event`'s outcome, if there is an audit output.
    async fn audit(&self, id: &str, delivery: Option<&Delivery>, delivered: bool) {
        let Some(producer) = self.broker(BrokerTarget::Audit) else {
            return;
        };
        let outcome = match delivery {
            None => "dropped",
            Some(d) if !delivered => {
                if d.target == Target::Processed {
                    "processed-undelivered"
                } else {
                    "dead-letter-undelivered"
                }
            }
            Some(d) if d.target == Target::Processed => "processed",
            Some(_) => "dead-letter",
        };
        let correlation_id = delivery.map(|d| d.file_stem.clone()).unwrap_or_default();
        let body = serde_json::json!({
            "event": id,
            "correlationId": correlation_id,
            "outcome": outcome,
        });
        let message = Outgoing {
            body: serde_json::to_vec(&body).unwrap_or_default().into(),
            content_type: "application/json",
            headers: delivery.map(|d| owned(&d.headers)).unwrap_or_default(),
            correlation_id: correlation_id.clone(),
            key: Some(correlation_id),
            fifo: None,
        };
        if let Err(e) = producer.send(message).await {
            eprintln!("pipeline: failed to audit event {id}: {}", error_chain(&e));
        }
    }

    /// Takes jobs in order until the channel closes, or until `crash_after` events have
    /// been delivered, in which case it returns that count. Counts what became of each
    /// event in `tally`.
    pub async fn run(
        self,
        storage: Arc<Storage>,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        crash_after: Option<u64>,
        tally: Arc<std::sync::Mutex<crate::faults::Tally>>,
    ) -> Option<u64> {
        let mut delivered: u64 = 0;
        while let Some(job) = jobs.recv().await {
            let mut ok = false;
            let mut copies = 0;
            if let Some(delivery) = &job.delivery {
                for _ in 0..delivery.copies {
                    match self.deliver(delivery).await {
                        Ok(()) => {
                            ok = true;
                            copies += 1;
                        }
                        Err(e) => eprintln!(
                            "pipeline: gave up on event {}: failed to {}",
                            job.event.id,
                            error_chain(&e)
                        ),
                    }
                }
            }
            let fate = match &job.delivery {
                None => crate::faults::Fate::Dropped,
                Some(d) => crate::faults::Fate::Delivered {
                    copies,
                    processed: d.target == Target::Processed,
                },
            };
            if let Ok(mut tally) = tally.lock() {
                tally.record(job.event.seq, &job.event.body, fate);
            }
            self.audit(&job.event.id, job.delivery.as_ref(), ok).await;
            let storage = Arc::clone(&storage);
            let deleted = tokio::task::spawn_blocking(move || storage.delete(&job.event)).await;
            match deleted {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("pipeline: failed to {}", error_chain(&e)),
                Err(e) => eprintln!("pipeline: failed to delete a processed event: {e}"),
            }
            if ok {
                delivered += 1;
                if crash_after == Some(delivered) {
                    return Some(delivered);
                }
            }
        }
        None
    }

    /// Delivers one copy of an output.
    pub async fn deliver(&self, delivery: &Delivery) -> Result<(), EmitError> {
        let output = match delivery.target {
            Target::Processed => &self.processed,
            Target::DeadLetter => &self.dead_letter,
        };
        match output {
            Output::Broker(_) => {
                let target = match delivery.target {
                    Target::Processed => BrokerTarget::Processed,
                    Target::DeadLetter => BrokerTarget::DeadLetter,
                };
                let label = output.to_string();
                let Some(producer) = self.broker(target) else {
                    return Err(EmitError::Broker {
                        output: label,
                        source: ProduceError::Rejected {
                            channel: "output".to_owned(),
                            message: "not connected (Emitter::connect was not called)".into(),
                        },
                    });
                };
                let mut headers = owned(&delivery.headers);
                headers.push((EMITTED_AT_HEADER.to_owned(), unix_nanos().to_string()));
                let message = Outgoing {
                    body: delivery.body.clone().into(),
                    content_type: "application/json",
                    headers,
                    correlation_id: delivery.file_stem.clone(),
                    key: Some(delivery.file_stem.clone()),
                    fifo: None,
                };
                producer
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|source| EmitError::Broker {
                        output: label,
                        source,
                    })
            }
            Output::Http(url) => self.post(url, delivery).await,
            Output::Dir(dir) => {
                let job = (
                    dir.clone(),
                    delivery.file_stem.clone(),
                    delivery.body.clone(),
                );
                let written = tokio::task::spawn_blocking(move || {
                    let (dir, stem, body) = job;
                    write_unique(&dir, &stem, &body)
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                written.map(|_name| ()).map_err(|source| EmitError::Write {
                    dir: dir.clone(),
                    source,
                })
            }
        }
    }

    async fn post(&self, url: &Url, delivery: &Delivery) -> Result<(), EmitError> {
        let mut backoff = RETRY_FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .client
                .post(url.clone())
                .header("content-type", "application/json")
                .body(delivery.body.clone());
            for (name, value) in &delivery.headers {
                request = request.header(*name, value.as_str());
            }
            // When this try left the pipeline (Unix ns): lets a harness measure the time
            // from emit to its verdict (roundtrip's `detect` benchmark does).
            request = request.header(EMITTED_AT_HEADER, unix_nanos().to_string());
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let error = EmitError::Status {
                        url: url.clone(),
                        tries,
                        status,
                    };
                    if !status.is_server_error() {
                        return Err(error);
                    }
                    error
                }
                Err(source) => EmitError::Send {
                    url: url.clone(),
                    tries,
                    source,
                },
            };
            if tries >= RETRY_TRIES {
                return Err(failure);
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

fn owned(headers: &[(&'static str, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A file stem for an output: the correlation id with every character other than ASCII
/// letters, digits, `-`, `_` and `.` (and a leading `.`) replaced by `_`, so it is a
/// plain, visible file name; a fresh uuid if there is no correlation id.
pub fn file_stem(correlation_id: Option<&str>) -> String {
    let stem: String = correlation_id
        .unwrap_or_default()
        .chars()
        .take(MAX_STEM)
        .enumerate()
        .map(|(i, c)| match c {
            // No hidden files: readers skip those.
            '.' if i == 0 => '_',
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    if stem.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        stem
    }
}

/// Writes `bytes` atomically as `<stem>.json` in `dir`, or as the first free of
/// `<stem>.2.json`, `<stem>.3.json`, …; returns the name used. Blocking. The emitter is
/// the only writer, so checking for a free name first does not race with itself.
pub fn write_unique(dir: &Path, stem: &str, bytes: &[u8]) -> io::Result<String> {
    for n in 1..=10_000u32 {
        let name = if n == 1 {
            format!("{stem}.json")
        } else {
            format!("{stem}.{n}.json")
        };
        if !dir.join(&name).try_exists()? {
            write_atomically(dir, &name, bytes, Durability::Atomic)?;
            return Ok(name);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("10000 files named {stem}.*.json already exist"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_come_from_the_correlation_id_made_safe() {
        assert_eq!(file_stem(Some("order-17_a.b")), "order-17_a.b");
        assert_eq!(file_stem(Some("../etc/passwd")), "_._etc_passwd");
        assert_eq!(file_stem(Some(".hidden")), "_hidden");
        assert_eq!(file_stem(Some("a b/c")), "a_b_c");
        let long = "x".repeat(500);
        assert_eq!(file_stem(Some(&long)).len(), MAX_STEM);
    }

    #[test]
    fn without_a_correlation_id_the_stem_is_a_fresh_uuid() {
        for id in [None, Some("")] {
            let stem = file_stem(id);
            assert!(uuid::Uuid::parse_str(&stem).is_ok(), "{id:?} gave {stem}");
        }
        assert_ne!(file_stem(None), file_stem(None));
    }

    #[test]
    fn taken_names_get_a_counter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names: Vec<String> = (0..3)
            .map(|i| write_unique(dir.path(), "c-1", format!("{i}").as_bytes()).expect("write"))
            .collect();
        assert_eq!(names, ["c-1.json", "c-1.2.json", "c-1.3.json"]);
        assert_eq!(
            std::fs::read(dir.path().join("c-1.2.json")).expect("read"),
            b"1"
        );
    }

    #[tokio::test]
    async fn a_directory_delivery_writes_the_body_and_copies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Output::Dir(dir.path().join("out"));
        out.prepare().expect("prepare");
        let emitter = Emitter::new(out, Output::Dir(dir.path().join("dlq"))).expect("emitter");
        let delivery = Delivery {
            target: Target::Processed,
            body: br#"{"a":1}"#.to_vec(),
            headers: Vec::new(),
            file_stem: "c-9".to_owned(),
            copies: 1,
        };
        emitter.deliver(&delivery).await.expect("deliver");
        assert_eq!(
            std::fs::read(dir.path().join("out/c-9.json")).expect("read"),
            br#"{"a":1}"#
        );
        let dead = Delivery {
            target: Target::DeadLetter,
            ..delivery
        };
        let error = emitter
            .deliver(&dead)
            .await
            .expect_err("dlq dir was not created");
        assert!(matches!(error, EmitError::Write { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_webhook_is_given_up_after_the_retries() {
        // A port that was free a moment ago: connections are refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).expect("url");
        let emitter =
            Emitter::new(Output::Http(url), Output::Dir(PathBuf::from("unused"))).expect("emitter");
        let delivery = Delivery {
            target: Target::Processed,
            body: b"{}".to_vec(),
            headers: Vec::new(),
            file_stem: "s".to_owned(),
            copies: 1,
        };
        let error = emitter.deliver(&delivery).await.expect_err("refused");
        assert!(
            matches!(
                error,
                EmitError::Send {
                    tries: RETRY_TRIES,
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
