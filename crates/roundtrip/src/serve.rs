//! A bounded HTTP/1 server loop, shared by the `webhook` listener and the listener
//! service's API: a header timeout, a cap on connections served at once, and a bounded
//! graceful shutdown (requests in flight finish, for at most a grace period). With the
//! `tls` feature it can serve HTTPS ([`ServerTls`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How one server may be used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Time to send a request's headers, and the longest idle time between requests.
    pub header_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// How long the shutdown waits for requests in flight.
    pub grace: Duration,
}

/// HTTPS for a server: its certificate and key, loaded. Without the `tls` feature there
/// is none to be had, and a server is plain HTTP.
#[derive(Clone)]
pub(crate) struct ServerTls {
    #[cfg(feature = "tls")]
    acceptor: tokio_rustls::TlsAcceptor,
    #[cfg(not(feature = "tls"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain and its private key; the error names the file and
    /// what is wrong with it.
    #[cfg(feature = "tls")]
    pub(crate) fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<ServerTls, String> {
        let chain =
            crate::pem::certificates(cert).map_err(|why| format!("`{}` {why}", cert.display()))?;
        let private =
            crate::pem::private_key(key).map_err(|why| format!("`{}` {why}", key.display()))?;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                format!(
                    "`{}` and `{}` are not a certificate and its key: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        })
    }

    /// Without the `tls` feature: an error that says how to get it.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn load(
        _cert: &std::path::Path,
        _key: &std::path::Path,
    ) -> Result<ServerTls, String> {
        Err(
            "this roundtrip was built without TLS; build it with the `tls` feature (or \
             `full`), or serve plain HTTP behind a TLS-terminating proxy"
                .to_owned(),
        )
    }
}

/// Accepts connections until `stop` resolves, each served by hyper; `refused` is called
/// for each connection closed because `max_connections` are served already. Then lets
/// requests in flight finish, for at most `limits.grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<ServerTls>,
    refused: impl Fn() + Send,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before it was accepted:
            // not fatal; back off a little so a full table does not spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let connection =
                    graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
            #[cfg(not(feature = "tls"))]
            Some(tls) => match tls.never {},
            #[cfg(feature = "tls")]
            Some(tls) => {
                // The handshake in the connection's own task, bounded like the headers
                // that follow it, so a slow client holds up no other.
                let (acceptor, builder) = (tls.acceptor.clone(), builder.clone());
                let watcher = graceful.watcher();
                let timeout = limits.header_timeout;
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    // Stop accepting, finish in-flight requests (bounded, in case a client never
    // finishes its request).
    drop(listener);
    let _ = tokio::time::timeout(limits.grace, graceful.shutdown()).await;
}
