//! Talking to other nodes: the HTTP client every peer call goes through (Raft RPCs, forwarded
//! writes, read-index requests, status probes), where each peer is dialled, and the cluster
//! secret that authenticates the calls.
//!
//! Bodies are this crate's codec (bincode with a version byte); responses carry a `Result` so
//! a remote refusal is a value, and a transport failure is told apart from it.

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::consensus::types::NodeId;
use crate::domain::codec;

/// Header carrying the cluster secret on peer calls.
pub const SECRET_HEADER: &str = "x-fleetlog-cluster-secret";

/// Paths of the peer protocol, served on the API listener.
pub mod path {
    pub const APPEND_ENTRIES: &str = "/raft/append-entries";
    /// Upgraded to a stream of pipelined append-entries calls (see [`crate::consensus::peer::append_stream`]).
    pub const APPEND_STREAM: &str = "/raft/append-stream";
    pub const VOTE: &str = "/raft/vote";
    pub const INSTALL_SNAPSHOT: &str = "/raft/install-snapshot";
    pub const FORWARD_APPEND: &str = "/raft/forward-append";
    pub const READ_INDEX: &str = "/raft/read-index";
    pub const STATUS: &str = "/raft/status";
}

/// Why a peer call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The request never reached the peer: nothing happened there.
    #[error("node {target} at {address} is unreachable: {message}")]
    Unreachable { target: NodeId, address: String, message: String },
    /// The request may have reached the peer; what it did is unknown.
    #[error("node {target} did not answer: {message}")]
    NoAnswer { target: NodeId, message: String },
    /// The peer answered, but not with the protocol (wrong secret, another version, a proxy).
    #[error("node {target} refused the call: {message}")]
    Refused { target: NodeId, message: String },
}

/// What one node says about itself; `GET /v1/cluster` gathers these from every member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

/// The shared peer client: one keep-alive connection pool for every peer.
pub struct Peers {
    http: reqwest::Client,
    /// Overrides of where a peer is dialled (a proxy or a tunnel), by node id.
    routes: HashMap<NodeId, String>,
    secret: Option<String>,
    /// `https` when peers serve TLS.
    scheme: &'static str,
}

impl Peers {
    /// `ca_pem`: peers serve TLS with certificates this CA signed; None: plain HTTP.
    pub fn new(routes: HashMap<NodeId, String>, secret: Option<String>, ca_pem: Option<&[u8]>) -> crate::Result<Peers> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            // Below the server's idle limit (its client timeout, 30 s by default).
            .pool_idle_timeout(Duration::from_secs(20));
        if let Some(pem) = ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|error| crate::Error::Raft(format!("the peer CA is not a PEM certificate: {error}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        let http =
            builder.build().map_err(|error| crate::Error::Raft(format!("cannot build the peer client: {error}")))?;
        Ok(Peers { http, routes, secret, scheme: if ca_pem.is_some() { "https" } else { "http" } })
    }

    /// The base URL node `target` is reached at: its route override, else its member address.
    pub fn base_url(&self, target: NodeId, address: &str) -> String {
        let dialled = self.routes.get(&target).map(String::as_str).unwrap_or(address);
        format!("{}://{dialled}", self.scheme)
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// A request to a peer with the secret attached, for callers that send their own bodies.
    pub fn request(
        &self,
        method: reqwest::Method,
        target: NodeId,
        address: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{}", self.base_url(target, address), path));
        match &self.secret {
            Some(secret) => request.header(SECRET_HEADER, secret),
            None => request,
        }
    }

    /// POSTs `body` to `path` on `target` and decodes the answer, within `timeout`.
    pub async fn call<Request, Response>(
        &self,
        target: NodeId,
        address: &str,
        path: &str,
        body: &Request,
        timeout: Duration,
    ) -> Result<Response, PeerError>
    where
        Request: Serialize,
        Response: DeserializeOwned,
    {
        let refused = |message: String| PeerError::Refused { target, message };
        let bytes = codec::encode(body).map_err(|error| refused(error.to_string()))?;
        let sent = self.request(reqwest::Method::POST, target, address, path).timeout(timeout).body(bytes).send().await;
        let response = sent.map_err(|error| transport_error(target, address, &error))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| transport_error(target, address, &error))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(refused(format!("HTTP {status}: {text}")));
        }
        codec::decode(&body).map_err(|error| refused(error.to_string()))
    }
}

impl Peers {
    /// Opens a connection to `path` on `target` and switches it to `protocol`: the request carries
    /// the secret, and the peer answers 101 only once it has checked it.
    pub async fn open_stream(
        &self,
        target: NodeId,
        address: &str,
        path: &str,
        protocol: &str,
    ) -> Result<reqwest::Upgraded, PeerError> {
        let refused = |message: String| PeerError::Refused { target, message };
        let request = self
            .request(reqwest::Method::GET, target, address, path)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, protocol)
            .send();
        let response = tokio::time::timeout(STREAM_OPEN_TIMEOUT, request)
            .await
            .map_err(|_| PeerError::NoAnswer { target, message: "no answer to the stream request".into() })?
            .map_err(|error| transport_error(target, address, &error))?;
        let status = response.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let body = response.bytes().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(refused(format!("HTTP {status}: {text}")));
        }
        response.upgrade().await.map_err(|error| PeerError::NoAnswer { target, message: error_chain(&error) })
    }
}

/// How long opening a stream may take, the TLS handshake included.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(1);

fn transport_error(target: NodeId, address: &str, error: &reqwest::Error) -> PeerError {
    // Only a failed connect proves the request never left; anything later may have been acted on.
    if error.is_connect() {
        PeerError::Unreachable { target, address: address.to_string(), message: error_chain(error) }
    } else {
        PeerError::NoAnswer { target, message: error_chain(error) }
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); the chain names it.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Compares a presented secret with the configured one in time independent of where they differ.
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    use sha2::Digest;
    // Hashing first makes the comparison length-independent too.
    let configured: [u8; 32] = sha2::Sha256::digest(configured.as_bytes()).into();
    let presented: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
    constant_time_equal(&configured, &presented)
}

/// Equal in a time that does not depend on where the digests differ; the cluster secret and the
/// API's token lookup both compare through it.
pub fn constant_time_equal(left: &[u8; 32], right: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    // subtle keeps the optimiser from turning the comparison back into an early exit.
    left.ct_eq(right).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cres"));
        assert!(!secret_matches("s3cret", ""));
        assert!(!secret_matches("s3cret", "s3cret-and-more"));
    }

    #[test]
    fn routes_override_member_addresses() {
        let routes = HashMap::from([(2, "127.0.0.1:9002".to_string())]);
        let peers = Peers::new(routes, None, None).unwrap();
        assert_eq!(peers.base_url(2, "127.0.0.1:7002"), "http://127.0.0.1:9002");
        assert_eq!(peers.base_url(3, "127.0.0.1:7003"), "http://127.0.0.1:7003");
    }
}
