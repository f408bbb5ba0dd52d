//! The listener in front of the HTTP router. It accepts every connection itself, peeks at the
//! first bytes, and serves connections that start with a stream request directly
//! ([`crate::streams::direct`]); all others go to the router. Peeking consumes nothing, so the
//! router sees each connection from its first byte.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::state::AppState;
use crate::streams::direct;

/// Bytes peeked to tell a stream request: enough for `GET /v1/subscribe`.
const PEEK_BYTES: usize = 24;
/// Accepted connections waiting for the router.
const HANDOVER_QUEUE: usize = 1_024;

/// Connections for the HTTP router.
pub struct RouterConnections {
    connections: mpsc::Receiver<TcpStream>,
}

impl RouterConnections {
    /// The next connection for the router.
    pub async fn next(&mut self) -> TcpStream {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The acceptor only stops with the runtime; until then, wait.
            None => std::future::pending().await,
        }
    }
}

/// Starts accepting on `listener`; returns the connections meant for the router.
pub fn split(listener: TcpListener, app: AppState) -> RouterConnections {
    let (handover, connections) = mpsc::channel(HANDOVER_QUEUE);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((connection, _)) => {
                    // Small request/response pairs (Raft RPCs above all) must not wait for Nagle.
                    if let Err(error) = connection.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
                    }
                    tokio::spawn(classify(connection, handover.clone(), app.clone()));
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

async fn classify(connection: TcpStream, handover: mpsc::Sender<TcpStream>, app: AppState) {
    let mut start = [0u8; PEEK_BYTES];
    let peeked = match tokio::time::timeout(app.client_timeout, connection.peek(&mut start)).await {
        Ok(Ok(peeked)) if peeked > 0 => peeked,
        _ => return,
    };
    if direct::is_stream_request(&start[..peeked]) {
        direct::serve(app, connection).await;
    } else {
        let _ = handover.send(connection).await;
    }
}
