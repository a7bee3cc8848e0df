//! The listener service (`roundtrip listen CONFIG`): the configured listeners, run
//! continuously next to a deployed system, recording into a store, with an HTTP API
//! (`service/api.rs`) that says whether it is ready, what it recorded and, as server-sent events,
//! what it records.
//!
//! A deployed listener knows no runs. Every observation is tied to the run whose id it
//! carries (the `x-roundtrip-run` header roundtrip stamps on every event, or a payload
//! field: `service/attribution.rs`); one that carries none is evidence, kept under the
//! service's own run, or counted and dropped (`record: correlated_only`).
//!
//! The order of a start: the service's own run, then every listener (each subscribed
//! before the next starts), then the API. The order of a stop ([`RunningService::stop`]):
//! the listeners stop consuming and commit what they accepted (and acknowledge it), the
//! event streams end, the API finishes its requests (bounded), the service's run is
//! finished with what each listener recorded, and the store is closed.

mod api;
mod attribution;
pub mod auth;
mod openapi;
mod retention;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use roundtrip_core::correlate::Correlator;
use roundtrip_core::listen::LoadedListenConfig;
use roundtrip_core::model::listen::{DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETENTION};
use roundtrip_core::run::{ListenerSummary, REPORT_FORMAT_VERSION, RunSummary};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::Tokens;

use crate::clock;
use crate::engine::render_channel_for_service;
use crate::error::HarnessError;
use crate::store::{RunRecord, RunStatus, Store, StoreError};
use crate::transport::{
    DriverContext, GapKind, ListenerStats, ObservationSink, RunningListener, registry,
};

/// How long a stop waits for the listeners to commit what they accepted.
const LISTENER_STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a stop waits for API requests in flight.
const API_STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A listener could not be planned or started, or the store refused the service's
    /// run.
    #[error(transparent)]
    Start(#[from] HarnessError),
    /// The API's address could not be bound.
    #[error("listen for the API on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config's tokens could not be read, or an open API was asked to listen
    /// beyond loopback.
    #[error("{0}")]
    Config(String),
}

impl ServiceError {
    /// Whether the user has to fix the config or the command line (exit code 2), rather
    /// than something failing (exit code 3).
    pub fn is_usage(&self) -> bool {
        match self {
            ServiceError::Config(_) => true,
            ServiceError::Start(e) => {
                matches!(e, HarnessError::Plan(_) | HarnessError::Template { .. })
            }
            ServiceError::Bind { .. } => false,
        }
    }
}

/// What the service needs besides its config.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The store URL, for retention (a Postgres store is trimmed by the service).
    pub store_url: String,
    /// The API's tokens ([`Tokens::from_sources`]).
    pub tokens: Tokens,
}

/// A channel the service listens on, as the API reports it.
#[derive(Debug)]
pub(crate) struct Channel {
    pub name: String,
    pub transport: &'static str,
    /// Where the SUT delivers to, for a listener that binds an address (a webhook).
    pub url: Option<String>,
    pub stats: Arc<ListenerStats>,
    /// Set when the service stops.
    stopped: AtomicBool,
}

/// Where a channel's listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelState {
    /// Subscribed and receiving.
    Listening,
    /// Its source is unreachable (an outage is open): it is reconnecting.
    Reconnecting,
    /// Stopped (the service is stopping).
    Stopped,
}

impl ChannelState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChannelState::Listening => "listening",
            ChannelState::Reconnecting => "reconnecting",
            ChannelState::Stopped => "stopped",
        }
    }
}

impl Channel {
    pub(crate) fn state(&self) -> ChannelState {
        if self.stopped.load(Ordering::Relaxed) {
            return ChannelState::Stopped;
        }
        let outage = self
            .stats
            .gaps()
            .iter()
            .any(|g| g.kind == GapKind::Outage && g.end.is_none());
        if outage {
            ChannelState::Reconnecting
        } else {
            ChannelState::Listening
        }
    }
}

/// What the API serves from.
#[derive(Debug)]
pub(crate) struct Shared {
    pub name: String,
    pub home_run: String,
    /// The service's own run as first recorded, to record it again when retention
    /// deleted it (a service older than its retention).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub home_record: RunRecord,
    pub store: Arc<dyn Store>,
    pub channels: Vec<Arc<Channel>>,
    pub tokens: Tokens,
    pub request_timeout: Duration,
    pub retention: Duration,
    pub store_url: String,
    pub shutdown: watch::Receiver<bool>,
    /// Event streams open now.
    pub streams: AtomicU64,
    /// What retention deleted, and how often it failed.
    pub retention_runs: AtomicU64,
    pub retention_observations: AtomicU64,
    pub retention_failures: AtomicU64,
}

/// Checks what [`RunningService::start`] checks before it touches anything (the API's
/// address and tokens, its TLS files, the correlation rule): what `roundtrip listen
/// --check` runs.
pub fn check(loaded: &LoadedListenConfig, tokens: &Tokens) -> Result<(), ServiceError> {
    Prepared::new(loaded, tokens).map(drop)
}

/// What a start needs from the config, checked.
struct Prepared {
    api_addr: SocketAddr,
    tls: Option<crate::serve::ServerTls>,
    correlator: Correlator,
}

impl Prepared {
    fn new(loaded: &LoadedListenConfig, tokens: &Tokens) -> Result<Prepared, ServiceError> {
        let config = &loaded.config;
        let api_addr: SocketAddr = config.api.listen.trim().parse().map_err(|_| {
            ServiceError::Config(format!(
                "`api.listen` must be an IP address and port, not `{}`",
                config.api.listen
            ))
        })?;
        if !api_addr.ip().is_loopback() && !tokens.any() {
            return Err(ServiceError::Config(format!(
                "the API would listen on {api_addr}, beyond this host, with no token; name \
                 token variables under `api.tokens`"
            )));
        }
        let tls = match &config.api.tls {
            None => None,
            Some(tls) => Some(
                crate::serve::ServerTls::load(
                    &loaded.base_dir.join(&tls.cert),
                    &loaded.base_dir.join(&tls.key),
                )
                .map_err(|why| ServiceError::Config(format!("`api.tls`: {why}")))?,
            ),
        };
        let correlator = Correlator::new(&config.correlate)
            .map_err(|e| ServiceError::Config(format!("the correlation rule: {e}")))?;
        Ok(Prepared {
            api_addr,
            tls,
            correlator,
        })
    }
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    api: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    listeners: Vec<RunningListener>,
    started_at: i64,
    suite_path: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    retention: Option<JoinHandle<()>>,
}

impl RunningService {
    /// Starts the service of `loaded`, recording into `store`: its run, its listeners
    /// (each subscribed before it returns), then its API.
    pub async fn start(
        loaded: &LoadedListenConfig,
        store: Arc<dyn Store>,
        options: ServiceOptions,
    ) -> Result<RunningService, ServiceError> {
        let config = &loaded.config;
        let Prepared {
            api_addr,
            tls,
            correlator,
        } = Prepared::new(loaded, &options.tokens)?;
        let correlator = Arc::new(correlator);

        let home_run = uuid::Uuid::now_v7().to_string();
        let suite_path = loaded.path.display().to_string();
        let started_at = clock::wall_now();
        let home_record = RunRecord {
            run_id: home_run.clone(),
            suite: format!("roundtrip listen: {}", config.name),
            suite_path: suite_path.clone(),
            started_at,
            finished_at: None,
            status: RunStatus::Running,
            owner: Some(crate::owner::current()),
        };
        store
            .create_run(&home_record)
            .await
            .map_err(HarnessError::from)?;
        let runs = Arc::new(
            attribution::Runs::new(&config.run, config.record, &home_run, suite_path.clone())
                .map_err(ServiceError::Config)?,
        );

        let ctx = DriverContext {
            base_dir: loaded.base_dir.clone(),
        };
        let mut channels = Vec::new();
        let mut listeners: Vec<RunningListener> = Vec::new();
        for (name, spec) in &config.channels {
            let started = async {
                let spec = render_channel_for_service(name, spec, &home_run)?;
                let driver = registry::listener(name, &spec, &ctx)?;
                let sink = ObservationSink::attributed(
                    Arc::clone(&store),
                    home_run.clone(),
                    name.clone(),
                    Arc::clone(&correlator),
                    registry::max_payload(&spec),
                    Arc::clone(&runs) as Arc<dyn crate::transport::Attribution>,
                );
                let stats = sink.stats();
                let running = driver.start(sink).await?;
                Ok::<_, HarnessError>((spec.transport(), stats, running))
            };
            match started.await {
                Ok((transport, stats, running)) => {
                    channels.push(Arc::new(Channel {
                        name: name.clone(),
                        transport,
                        url: running.bound.as_ref().map(|b| b.url.clone()),
                        stats,
                        stopped: AtomicBool::new(false),
                    }));
                    listeners.push(running);
                }
                Err(e) => {
                    stop_all(listeners).await;
                    let _ = store.close().await;
                    return Err(e.into());
                }
            }
        }

        let socket = match TcpListener::bind(api_addr).await {
            Ok(socket) => socket,
            Err(source) => {
                stop_all(listeners).await;
                let _ = store.close().await;
                return Err(ServiceError::Bind {
                    addr: api_addr.to_string(),
                    source,
                });
            }
        };
        let api = socket.local_addr().map_err(|source| ServiceError::Bind {
            addr: api_addr.to_string(),
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let retention = config.retention.map_or(DEFAULT_RETENTION, |d| d.0);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            home_run,
            home_record,
            store,
            channels,
            tokens: options.tokens,
            request_timeout: config
                .api
                .request_timeout
                .map_or(DEFAULT_REQUEST_TIMEOUT, |d| d.0),
            retention,
            store_url: options.store_url,
            shutdown: shutdown_rx.clone(),
            streams: AtomicU64::new(0),
            retention_runs: AtomicU64::new(0),
            retention_observations: AtomicU64::new(0),
            retention_failures: AtomicU64::new(0),
        });
        let https = tls.is_some();
        let server = tokio::spawn(api::serve(socket, Arc::clone(&shared), tls, API_STOP_GRACE));
        let retention = retention::retention_task(Arc::clone(&shared));
        Ok(RunningService {
            api,
            https,
            shared,
            listeners,
            started_at,
            suite_path,
            shutdown,
            server,
            retention,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The API's base URL: `https://ADDR` with `api.tls`, `http://ADDR` without.
    pub fn api_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// The service's own run, which holds the observations that name no run.
    pub fn home_run(&self) -> &str {
        &self.shared.home_run
    }

    /// Where each listener listens (an address, a subject), in channel order.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.shared
            .channels
            .iter()
            .zip(&self.listeners)
            .map(|(c, l)| (c.name.clone(), l.endpoint.clone()))
            .collect()
    }

    /// Stops the service: the listeners commit (and acknowledge) what they accepted, the
    /// event streams end, the API finishes its requests, the service's run is finished
    /// with what was recorded, and the store is closed. Bounded.
    pub async fn stop(self) -> Result<Vec<ListenerSummary>, StoreError> {
        let RunningService {
            shared,
            listeners,
            started_at,
            suite_path,
            shutdown,
            server,
            retention,
            ..
        } = self;
        if let Some(task) = retention {
            task.abort();
        }
        let delivery: Vec<_> = listeners.iter().map(|l| (l.delivery, l.polling)).collect();
        stop_all(listeners).await;
        for channel in &shared.channels {
            channel.stopped.store(true, Ordering::Relaxed);
        }
        let _ = shutdown.send(true);
        let _ = tokio::time::timeout(API_STOP_GRACE * 2, server).await;
        let summaries: Vec<ListenerSummary> = shared
            .channels
            .iter()
            .zip(delivery)
            .map(|(c, (delivery, polling))| {
                c.stats.summary(&c.name, c.transport, delivery, polling)
            })
            .collect();
        let summary = RunSummary {
            format_version: REPORT_FORMAT_VERSION,
            run_id: shared.home_run.clone(),
            suite: format!("roundtrip listen: {}", shared.name),
            suite_path,
            started_at,
            finished_at: clock::wall_now(),
            interrupted: true,
            scenarios: Vec::new(),
            listeners: summaries.clone(),
            sut_log: Vec::new(),
            sut_exited: None,
            harness_error: None,
            load: None,
        };
        let finished = match shared
            .store
            .finish_run(&summary, RunStatus::Interrupted)
            .await
        {
            // Deleted by retention since its last observation: nothing to finish.
            Err(StoreError::NoSuchRun(_)) => Ok(()),
            other => other,
        };
        let closed = shared.store.close().await;
        finished.and(closed).map(|()| summaries)
    }
}

/// Stops listeners together, each given [`LISTENER_STOP_GRACE`] to commit.
async fn stop_all(listeners: Vec<RunningListener>) {
    let stops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(tokio::time::timeout(LISTENER_STOP_GRACE, l.stop())))
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
}
