//! Serves the connections the listener hands to the router, with hyper directly rather than
//! `axum::serve`: axum gives hyper no timer, and without one hyper waits forever for a request
//! head, so a client sending a byte now and then (slow-loris) holds a connection indefinitely.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listener::RouterConnections;

/// Serves until `shutdown` resolves, then stops accepting, asks every connection to finish its
/// request in flight, and waits for them.
pub async fn serve(
    mut connections: RouterConnections,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let (closing, closed) = watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = connections.next() => stream,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut closed = closed.clone();
        open.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // The borrow wait_for returns must not live across an await.
                _ = async { drop(closed.wait_for(|closing| *closing).await) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections as we go, so the set holds only open ones.
        while open.try_join_next().is_some() {}
    }
    closing.send_replace(true);
    while open.join_next().await.is_some() {}
}
