//! The listener in front of the HTTP router. It accepts every connection itself, peeks at the
//! first bytes, and serves connections that start with a stream request directly
//! ([`crate::streams::direct`]); all others go to the router. Peeking consumes nothing, so the
//! router sees each connection from its first byte.
//!
//! With TLS every connection is encrypted: the listener completes the handshake and hands the
//! connection to the router, which serves streams too (there is nothing to peek at before the
//! handshake, and the direct path writes to plain sockets).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::state::AppState;
use crate::streams::direct;
use crate::tls::Connection;

/// Bytes peeked to tell a stream request: enough for `GET /v1/subscribe`.
const PEEK_BYTES: usize = 24;
/// Accepted connections waiting for the router.
const HANDOVER_QUEUE: usize = 1_024;

/// Connections for the HTTP router.
pub struct RouterConnections {
    connections: mpsc::Receiver<Connection>,
}

impl RouterConnections {
    /// The next connection for the router.
    pub async fn next(&mut self) -> Connection {
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
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((connection, _)) => {
                    // Small request/response pairs (Raft RPCs above all) must not wait for Nagle.
                    if let Err(error) = connection.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
                    }
                    match &tls {
                        Some(acceptor) => {
                            tokio::spawn(handshake(connection, acceptor.clone(), handover.clone(), app.client_timeout))
                        }
                        None => tokio::spawn(classify(connection, handover.clone(), app.clone())),
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

async fn classify(connection: TcpStream, handover: mpsc::Sender<Connection>, app: AppState) {
    let mut start = [0u8; PEEK_BYTES];
    let peeked = match tokio::time::timeout(app.client_timeout, connection.peek(&mut start)).await {
        Ok(Ok(peeked)) if peeked > 0 => peeked,
        _ => return,
    };
    if direct::is_stream_request(&start[..peeked]) {
        direct::serve(app, connection).await;
    } else {
        let _ = handover.send(Connection::Plain(connection)).await;
    }
}

/// Completes a TLS handshake within the client timeout, then hands the connection to the router.
async fn handshake(
    connection: TcpStream,
    acceptor: TlsAcceptor,
    handover: mpsc::Sender<Connection>,
    timeout: Duration,
) {
    match tokio::time::timeout(timeout, acceptor.accept(connection)).await {
        Ok(Ok(encrypted)) => {
            let _ = handover.send(Connection::Tls(Box::new(encrypted))).await;
        }
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}
