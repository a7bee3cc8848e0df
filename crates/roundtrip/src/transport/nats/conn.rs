//! The NATS connection both `nats` and `jetstream` drivers share: options, credentials,
//! TLS, and the client's events recorded as listener gaps.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, HeaderMap};
use roundtrip_core::model::Connection;

use crate::transport::conn::{self, Credentials, TlsFiles};
use crate::transport::{DriverContext, GapKind, ObservationSink, Outage, PlanError};

/// Messages buffered per subscription unless the channel says otherwise.
pub const DEFAULT_BUFFER: usize = 1 << 20;

/// Messages recorded concurrently by one listener.
pub(crate) const IN_FLIGHT: usize = 512;

/// Connection settings shared by both NATS transports.
#[derive(Debug, Clone)]
pub(crate) struct NatsConn {
    pub(crate) channel: String,
    url: String,
    credentials: Credentials,
    tls: Option<TlsFiles>,
    pub(crate) timeout: Duration,
}

impl NatsConn {
    pub(crate) fn new(
        channel: &str,
        spec: &dyn Connection,
        ctx: &DriverContext,
    ) -> Result<NatsConn, PlanError> {
        conn::ensure_crypto_provider();
        Ok(NatsConn {
            channel: channel.to_owned(),
            url: spec.url().to_owned(),
            credentials: Credentials::from_env(channel, spec.auth())?,
            tls: TlsFiles::resolve(channel, spec.tls(), ctx)?,
            timeout: conn::timeout(spec.connect_timeout()),
        })
    }

    pub(crate) fn endpoint(&self) -> String {
        conn::redact(&self.url)
    }

    /// Connects; `events` receives the client's connection events (listeners record them
    /// as gaps). Fails when the server does not answer within the timeout.
    pub(crate) async fn connect(
        &self,
        buffer: usize,
        events: Option<ObservationSink>,
    ) -> Result<Client, String> {
        let mut options = ConnectOptions::new()
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .subscription_capacity(buffer)
            .name("roundtrip");
        let c = &self.credentials;
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            options = options.user_and_password(user.clone(), pass.clone());
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let Some((cert, key)) = &tls.client {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        if let Some(sink) = events {
            let down: Arc<std::sync::Mutex<Outage>> = Arc::default();
            options = options.event_callback(move |event| {
                let sink = sink.clone();
                let down = Arc::clone(&down);
                async move { record_event(&sink, &down, event) }
            });
        }
        let endpoint = self.endpoint();
        match tokio::time::timeout(self.timeout, options.connect(self.url.as_str())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(crate::transport::error::connect_failed(
                "NATS", &endpoint, e,
            )),
            Err(_) => Err(crate::transport::error::timed_out(
                "NATS at",
                &endpoint,
                self.timeout,
            )),
        }
    }
}

/// Turns connection events into gaps: a disconnect (with how long it lasted) and every
/// slow-consumer drop.
fn record_event(sink: &ObservationSink, down: &std::sync::Mutex<Outage>, event: Event) {
    let Ok(mut down) = down.lock() else { return };
    match event {
        Event::Disconnected => down.failed(sink, "disconnected", None),
        Event::Connected => down.recovered(
            sink,
            "messages published meanwhile were not delivered (at-most-once) or will be \
             redelivered (JetStream)",
        ),
        Event::SlowConsumer(_) => sink.gap(
            GapKind::Dropped,
            format!(
                "slow consumer at {}: the client's subscription buffer was full and dropped \
             messages; raise the channel's `buffer`",
                crate::clock::format_wall_now()
            ),
        ),
        // `Closed` is the listener's own stop (the server closing a connection shows as
        // `Disconnected`).
        _ => {}
    }
}

pub(crate) fn header_map(headers: &[(String, String)], content_type: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in conn::headers_with_content_type(headers, content_type) {
        map.insert(name.as_str(), value.as_str());
    }
    map
}

pub(crate) fn headers_of(map: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(map) = map else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in map.iter() {
        for value in values {
            out.push((name.to_string(), value.as_str().to_owned()));
        }
    }
    out
}
