//! The receiving side of the peer protocol: what this node answers to another node's call. The
//! HTTP layer checks the cluster secret and reads the body; everything from the decoded body to
//! the encoded answer, openraft included, happens here.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::consensus::node::{Node, WRITE_TIMEOUT};
use crate::consensus::peer::client::path;
use crate::domain::codec;

/// The single-request calls of the peer protocol, by the path they are posted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCall {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ForwardAppend,
    ReadIndex,
    Status,
}

impl PeerCall {
    pub const ALL: [PeerCall; 6] = [
        PeerCall::AppendEntries,
        PeerCall::Vote,
        PeerCall::InstallSnapshot,
        PeerCall::ForwardAppend,
        PeerCall::ReadIndex,
        PeerCall::Status,
    ];

    pub fn path(self) -> &'static str {
        match self {
            PeerCall::AppendEntries => path::APPEND_ENTRIES,
            PeerCall::Vote => path::VOTE,
            PeerCall::InstallSnapshot => path::INSTALL_SNAPSHOT,
            PeerCall::ForwardAppend => path::FORWARD_APPEND,
            PeerCall::ReadIndex => path::READ_INDEX,
            PeerCall::Status => path::STATUS,
        }
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The body is not what the call takes: the caller's fault.
    #[error("undecodable peer body: {0}")]
    Undecodable(crate::Error),
    /// The answer could not be encoded: this node's fault.
    #[error("cannot encode the answer: {0}")]
    Unencodable(crate::Error),
}

/// Answers one call: decodes `body`, acts on it, and encodes what the caller decodes.
pub async fn answer(node: &Node, call: PeerCall, body: &[u8]) -> Result<Vec<u8>, CallError> {
    fn take<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
        codec::decode(body).map_err(CallError::Undecodable)
    }
    let encoded = match call {
        PeerCall::AppendEntries => codec::encode(&node.raft().append_entries(take(body)?).await),
        PeerCall::Vote => codec::encode(&node.raft().vote(take(body)?).await),
        PeerCall::InstallSnapshot => codec::encode(&node.receive_snapshot_chunk(take(body)?).await),
        // A follower's client write, proposed here without forwarding it again.
        PeerCall::ForwardAppend => codec::encode(&node.append_here(take(body)?, WRITE_TIMEOUT).await),
        PeerCall::ReadIndex => {
            take::<()>(body)?;
            codec::encode(&node.read_index_here(WRITE_TIMEOUT).await)
        }
        PeerCall::Status => {
            take::<()>(body)?;
            codec::encode(&node.local_status())
        }
    };
    encoded.map_err(CallError::Unencodable)
}

/// Serves a leader's append stream on a connection already switched to
/// [`crate::consensus::peer::append_stream::UPGRADE_PROTOCOL`].
pub async fn serve_append_stream<Connection>(node: Node, connection: Connection)
where
    Connection: AsyncRead + AsyncWrite + Send + 'static,
{
    crate::consensus::peer::append_stream::serve(node.raft().clone(), connection).await
}
