//! Serves the connections the listener hands to the router, with hyper directly rather than
//! `axum::serve`: axum gives hyper no timer, and without one hyper waits forever for a request
//! head, so a client sending a byte now and then (slow-loris) holds a connection indefinitely.
//!
//! Two more deadlines bound what a client can hold: every write must make progress within the
//! send timeout ([`SendDeadline`]; a client that stops reading an answer or a stream loses its
//! connection), and shutdown waits for open connections only for a grace period.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::listener::RouterConnections;
use crate::metrics::Metrics;
use crate::tls::Connection;

/// The deadlines the server holds its connections to.
pub struct Deadlines {
    /// A request head must be complete within it.
    pub header: Duration,
    /// A write must make progress within it.
    pub send: Duration,
    /// Shutdown waits this long for open connections, then drops them.
    pub shutdown_grace: Duration,
}

/// Serves until `shutdown` resolves, then stops accepting, asks every connection to finish its
/// request in flight, waits for them up to the shutdown grace, and drops those still open.
pub async fn serve(
    mut connections: RouterConnections,
    app: Router,
    deadlines: Deadlines,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(deadlines.header);
    let (closing, closed) = watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let admitted = tokio::select! {
            admitted = connections.next() => admitted,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut closed = closed.clone();
        let io = SendDeadline::new(admitted.connection, deadlines.send, metrics.clone());
        let slot = admitted.slot;
        open.spawn(async move {
            // The connection's slot is given back when this task ends, however it ends.
            let _slot = slot;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
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
    let drained =
        tokio::time::timeout(deadlines.shutdown_grace, async { while open.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = open.len(),
            grace = ?deadlines.shutdown_grace,
            "connections still open after the shutdown grace period; dropping them"
        );
        open.shutdown().await;
    }
}

/// A connection whose writes fail once one has made no progress for `timeout` (the client's
/// socket buffer stayed full: it stopped reading). hyper then ends the connection, and a stream
/// served on it ends too; closing resets the connection, so nothing stays queued for the client.
struct SendDeadline {
    inner: Connection,
    timeout: Duration,
    /// Running while a write is waiting for room in the socket buffer.
    stalled: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl SendDeadline {
    fn new(inner: Connection, timeout: Duration, metrics: Arc<Metrics>) -> SendDeadline {
        SendDeadline { inner, timeout, stalled: None, metrics }
    }

    /// Passes on a write's progress; a write that waits starts (or goes on with) the deadline.
    fn watch<T>(&mut self, context: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(context).is_pending() {
            return Poll::Pending;
        }
        self.stalled = None;
        self.metrics.send_timeouts.fetch_add(1, Ordering::Relaxed);
        self.inner.reset_on_close();
        tracing::debug!(?timeout, "closing a connection whose client stopped reading");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {timeout:?} (send timeout)"),
        )))
    }
}

impl AsyncRead for SendDeadline {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for SendDeadline {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(context, bytes);
        this.watch(context, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(context, buffers);
        this.watch(context, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(context);
        this.watch(context, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(context);
        this.watch(context, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_client_does_not_read_fails_after_the_send_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let timeout = Duration::from_millis(300);
        let mut connection = SendDeadline::new(Connection::Plain(server), timeout, metrics.clone());
        let began = std::time::Instant::now();
        let chunk = vec![b'x'; 64 * 1024];
        // The client never reads: the buffers fill, then a write waits for ever but for the deadline.
        let failed = loop {
            if let Err(error) = connection.write_all(&chunk).await {
                break error;
            }
            assert!(began.elapsed() < Duration::from_secs(20), "writes kept succeeding");
        };
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        assert_eq!(metrics.send_timeouts.load(Ordering::Relaxed), 1);
        drop(client);
    }
}
