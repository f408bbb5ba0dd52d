//! The listener in front of the HTTP router. It accepts every connection itself, peeks at the
//! first bytes, and serves connections that start with a stream request directly
//! ([`crate::streams::direct`]); all others go to the router. Peeking consumes nothing, so the
//! router sees each connection from its first byte.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::state::AppState;
use crate::streams::direct;

/// Bytes peeked to tell a stream request: enough for `GET /v1/subscribe`.
const PEEK_BYTES: usize = 24;
/// A connection that sends nothing for this long is dropped before classification.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// Accepted connections waiting for the router.
const HANDOVER_QUEUE: usize = 1_024;

/// Connections for the HTTP router.
pub struct RouterConnections {
    connections: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for RouterConnections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The acceptor only stops with the runtime; until then, wait.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Starts accepting on `listener`; returns the connections meant for the router.
pub fn split(listener: TcpListener, app: AppState) -> std::io::Result<RouterConnections> {
    let local = listener.local_addr()?;
    let (handover, connections) = mpsc::channel(HANDOVER_QUEUE);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((connection, peer)) => {
                    // Small request/response pairs (Raft RPCs above all) must not wait for Nagle.
                    if let Err(error) = connection.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
                    }
                    tokio::spawn(classify(connection, peer, handover.clone(), app.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(RouterConnections { connections, local })
}

async fn classify(
    connection: TcpStream,
    peer: SocketAddr,
    handover: mpsc::Sender<(TcpStream, SocketAddr)>,
    app: AppState,
) {
    let mut start = [0u8; PEEK_BYTES];
    let peeked = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, connection.peek(&mut start)).await {
        Ok(Ok(peeked)) if peeked > 0 => peeked,
        _ => return,
    };
    if direct::is_stream_request(&start[..peeked]) {
        direct::serve(app, connection).await;
    } else {
        let _ = handover.send((connection, peer)).await;
    }
}
