//! The listener in front of the HTTP router. It accepts every connection itself, peeks at the
//! first bytes, and serves connections that start with a stream request directly
//! ([`crate::streams::direct`]); all others go to the router. Peeking consumes nothing, so the
//! router sees each connection from its first byte.
//!
//! With TLS every connection is encrypted: the listener completes the handshake and hands the
//! connection to the router, which serves streams too (there is nothing to peek at before the
//! handshake, and the direct path writes to plain sockets).
//!
//! Every connection takes one of the node's connection slots ([`ConnectionSlot`]) from accept to
//! close. Over the cap a plain connection is answered 503 `too_many_connections` and closed; a
//! TLS one is closed (an answer would need a handshake first).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::error::ApiError;
use crate::limits::{REFUSALS_IN_FLIGHT_MAX, REFUSAL_LINGER_SECONDS};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::streams::direct;
use crate::tls::Connection;

/// Bytes peeked to tell a stream request: enough for `GET /v1/subscribe`.
const PEEK_BYTES: usize = 24;
/// Accepted connections waiting for the router.
const HANDOVER_QUEUE: usize = 1_024;

/// One of the node's connection slots, held for the life of a connection.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnectionSlot {
    /// A slot, or None when the node serves its maximum number of connections.
    fn take(app: &AppState) -> Option<ConnectionSlot> {
        let permit = app.connections.clone().try_acquire_owned().ok()?;
        app.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot { _permit: permit, metrics: app.metrics.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection the router is to serve, with its slot.
pub struct Admitted {
    pub connection: Connection,
    pub slot: ConnectionSlot,
}

/// Connections for the HTTP router.
pub struct RouterConnections {
    connections: mpsc::Receiver<Admitted>,
}

impl RouterConnections {
    /// The next connection for the router.
    pub async fn next(&mut self) -> Admitted {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The acceptor only stops with the runtime; until then, wait.
            None => std::future::pending().await,
        }
    }
}

/// Starts accepting on `listener`; returns the connections meant for the router.
pub fn split(listener: TcpListener, app: AppState, tls: Option<TlsAcceptor>) -> RouterConnections {
    let (handover, connections) = mpsc::channel(HANDOVER_QUEUE);
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((connection, _)) => {
                    let Some(slot) = ConnectionSlot::take(&app) else {
                        app.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                        // Answered when it can be (plain HTTP, few refusals under way); else closed.
                        if tls.is_none() {
                            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                                tokio::spawn(refuse(connection, permit));
                            }
                        }
                        continue;
                    };
                    // Small request/response pairs (Raft RPCs above all) must not wait for Nagle.
                    if let Err(error) = connection.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
                    }
                    match &tls {
                        Some(acceptor) => tokio::spawn(handshake(
                            connection,
                            slot,
                            acceptor.clone(),
                            handover.clone(),
                            app.client_timeout,
                        )),
                        None => tokio::spawn(classify(connection, slot, handover.clone(), app.clone())),
                    };
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    RouterConnections { connections }
}

async fn classify(connection: TcpStream, slot: ConnectionSlot, handover: mpsc::Sender<Admitted>, app: AppState) {
    let mut start = [0u8; PEEK_BYTES];
    let peeked = match tokio::time::timeout(app.client_timeout, connection.peek(&mut start)).await {
        Ok(Ok(peeked)) if peeked > 0 => peeked,
        _ => return,
    };
    if direct::is_stream_request(&start[..peeked]) {
        direct::serve(app, connection).await;
        drop(slot);
    } else {
        let _ = handover.send(Admitted { connection: Connection::Plain(connection), slot }).await;
    }
}

/// Completes a TLS handshake within the client timeout, then hands the connection to the router.
async fn handshake(
    connection: TcpStream,
    slot: ConnectionSlot,
    acceptor: TlsAcceptor,
    handover: mpsc::Sender<Admitted>,
    timeout: Duration,
) {
    match tokio::time::timeout(timeout, acceptor.accept(connection)).await {
        Ok(Ok(encrypted)) => {
            let _ = handover.send(Admitted { connection: Connection::Tls(Box::new(encrypted)), slot }).await;
        }
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// Answers a connection over the cap with 503 `too_many_connections`, within
/// [`REFUSAL_LINGER_SECONDS`] twice over: it waits for the request to start (a client that has
/// not sent its request yet would not take an answer as one), answers, then reads and drops what
/// the client still sends until it closes, so the close does not reset the answer away.
async fn refuse(mut connection: TcpStream, _permit: OwnedSemaphorePermit) {
    let linger = Duration::from_secs(REFUSAL_LINGER_SECONDS);
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(linger, connection.read(&mut scratch)).await;
    let refusal = ApiError::unavailable(
        "too_many_connections",
        "this node serves its maximum number of connections; try again shortly or another node",
    );
    let _ = tokio::time::timeout(linger, async {
        connection.write_all(direct::error_response(&refusal).as_bytes()).await?;
        connection.shutdown().await?;
        while connection.read(&mut scratch).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
