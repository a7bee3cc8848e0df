//! A bounded HTTP/1 server loop, shared by the `webhook` listener and the listener
//! service's API: a header timeout, a cap on connections served at once, and a bounded
//! graceful shutdown (requests in flight finish, for at most a grace period).

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

/// Accepts connections until `stop` resolves, each served by hyper; `refused` is called
/// for each connection closed because `max_connections` are served already. Then lets
/// requests in flight finish, for at most `limits.grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
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
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    // Stop accepting, finish in-flight requests (bounded, in case a client never
    // finishes its request).
    drop(listener);
    let _ = tokio::time::timeout(limits.grace, graceful.shutdown()).await;
}
