//! The peer protocol, both sides. Every call goes to the peer's API listener and carries the
//! cluster secret.
//!
//! - `client`: the HTTP client every call goes through, the paths, the secret.
//! - `network`: openraft's network on top of it (votes, snapshots sent in chunks).
//! - `append_stream`: replication pipelined on one upgraded connection per peer, both sides.
//! - `server`: what this node answers to another node's call.
//! - `snapshot_receiver`: snapshot chunks gathered into one file and installed.

#[cfg(feature = "storage")]
pub mod append_stream;
pub mod client;
#[cfg(feature = "storage")]
pub mod network;
#[cfg(feature = "storage")]
pub mod server;
#[cfg(feature = "storage")]
pub mod snapshot_receiver;
