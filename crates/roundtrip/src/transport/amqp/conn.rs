//! The AMQP connection: the URL with credentials from the environment, and TLS.

use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use roundtrip_core::model::AmqpChannel;

use crate::transport::conn::{self, Credentials, TlsFiles};
use crate::transport::{DriverContext, PlanError};

/// How to reach the broker. `Debug` shows the redacted endpoint, never `uri`.
#[derive(Clone)]
pub(crate) struct AmqpConn {
    pub(crate) channel: String,
    uri: String,
    pub(crate) endpoint: String,
    tls: Option<TlsFiles>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for AmqpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConn")
            .field("channel", &self.channel)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpConn {
    pub(crate) fn new(
        channel: &str,
        spec: &AmqpChannel,
        ctx: &DriverContext,
    ) -> Result<AmqpConn, PlanError> {
        conn::ensure_crypto_provider();
        let credentials = Credentials::from_env(channel, spec.auth.as_ref())?;
        let uri = with_credentials(&spec.url, &credentials).ok_or_else(|| PlanError::Invalid {
            channel: channel.to_owned(),
            message: format!(
                "`{}` is not an AMQP URL; write it like `amqp://127.0.0.1:5672/%2f`",
                conn::redact(&spec.url)
            ),
        })?;
        Ok(AmqpConn {
            channel: channel.to_owned(),
            endpoint: conn::redact(&uri),
            uri,
            tls: TlsFiles::resolve(channel, spec.tls.as_ref(), ctx)?,
            timeout: conn::timeout(spec.connect_timeout),
        })
    }

    /// Connects; `name` is the connection's name in the broker's management tools.
    pub(crate) async fn connect(&self, name: &str) -> Result<Connection, String> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connecting = async {
            match &self.tls {
                None => Connection::connect(&self.uri, properties).await,
                Some(files) => {
                    let config = tls_config(files)?;
                    let runtime = lapin::runtime::default_runtime()?;
                    Connection::connect_with_config(&self.uri, properties, config, runtime).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(crate::transport::error::connect_failed(
                "AMQP broker",
                &self.endpoint,
                e,
            )),
            Err(_) => Err(crate::transport::error::timed_out(
                "AMQP broker at",
                &self.endpoint,
                self.timeout,
            )),
        }
    }
}

fn tls_config(files: &TlsFiles) -> lapin::Result<OwnedTLSConfig> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(lapin::Error::from);
    let cert_chain = match &files.ca {
        Some(ca) => Some(String::from_utf8_lossy(&read(ca)?).into_owned()),
        None => None,
    };
    let identity = match &files.client {
        Some((cert, key)) => Some(OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The URL with the user and password from the environment, when `auth` names them.
fn with_credentials(url: &str, credentials: &Credentials) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "amqp" | "amqps") {
        return None;
    }
    let Some(user) = &credentials.username else {
        return Some(url.to_owned());
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let password = credentials.password.as_deref().unwrap_or_default();
    Some(format!("{scheme}://{}:{}@{host}", enc(user), enc(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_the_environment_replace_the_urls() {
        let c = Credentials {
            username: Some("svc user".into()),
            password: Some("p@ss/word".into()),
            token: None,
        };
        assert_eq!(
            with_credentials("amqp://guest:guest@127.0.0.1:5672/%2f", &c).as_deref(),
            Some("amqp://svc%20user:p%40ss%2Fword@127.0.0.1:5672/%2f")
        );
        assert_eq!(
            with_credentials("amqp://127.0.0.1", &Credentials::default()).as_deref(),
            Some("amqp://127.0.0.1")
        );
        assert_eq!(with_credentials("http://x", &c), None);
    }
}
