//! The Redis connection both `redis_stream` and `redis_pubsub` drivers share: the URL
//! with credentials and TLS, and one multiplexed connection per producer.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use roundtrip_core::model::Connection;
use tokio::sync::OnceCell;

use crate::transport::conn::{self, Credentials, TlsFiles};
use crate::transport::{DriverContext, PlanError, ProduceError};

/// How to reach one Redis server.
#[derive(Debug, Clone)]
pub(crate) struct RedisConn {
    pub(crate) channel: String,
    pub(crate) endpoint: String,
    pub(crate) client: Client,
    pub(crate) timeout: Duration,
}

impl RedisConn {
    pub(crate) fn new(
        channel: &str,
        spec: &dyn Connection,
        ctx: &DriverContext,
    ) -> Result<RedisConn, PlanError> {
        conn::ensure_crypto_provider();
        let (url, tls, auth, timeout) =
            (spec.url(), spec.tls(), spec.auth(), spec.connect_timeout());
        let invalid = |message: String| PlanError::Invalid {
            channel: channel.to_owned(),
            message,
        };
        let mut info = url.into_connection_info().map_err(|e| {
            invalid(format!(
                "`{}` is not a Redis URL ({e}); write it like `redis://127.0.0.1:6379/0`",
                conn::redact(url)
            ))
        })?;
        let credentials = Credentials::from_env(channel, auth)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &credentials.username {
            settings = settings.set_username(user);
        }
        if let Some(pass) = &credentials.password {
            settings = settings.set_password(pass);
        }
        info = info.set_redis_settings(settings);
        let client = match TlsFiles::resolve(channel, tls, ctx)? {
            None => Client::open(info),
            Some(files) => build_tls(info, &files).map_err(invalid)?,
        }
        .map_err(|e| invalid(format!("{e}")))?;
        Ok(RedisConn {
            channel: channel.to_owned(),
            endpoint: conn::redact(url),
            client,
            timeout: conn::timeout(timeout),
        })
    }

    /// A multiplexed connection; `response_timeout` bounds each command.
    pub(crate) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout));
        match tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(crate::transport::error::connect_failed(
                "Redis",
                &self.endpoint,
                e,
            )),
            Err(_) => Err(crate::transport::error::timed_out(
                "Redis at",
                &self.endpoint,
                self.timeout,
            )),
        }
    }
}

fn build_tls(
    info: redis::ConnectionInfo,
    files: &TlsFiles,
) -> Result<redis::RedisResult<Client>, String> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("read `{}`: {e}", p.display()));
    let root_cert = files.ca.as_deref().map(read).transpose()?;
    let client_tls = match &files.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        None => None,
    };
    Ok(Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    ))
}

pub(crate) async fn shared_connection<'c>(
    cell: &'c OnceCell<MultiplexedConnection>,
    conn: &RedisConn,
) -> Result<&'c MultiplexedConnection, ProduceError> {
    cell.get_or_try_init(|| conn.connect(conn.timeout))
        .await
        .map_err(|e| crate::transport::error::unreachable(&conn.channel, e))
}
