//! fleetlog-raft: the ledger domain, its storage and the consensus glue.
//!
//! - `ledger`: the pure rules. `ledger::apply_command` turns a command into events and view
//!   changes over a key-value [`kv::Overlay`]; `ledger::validate` holds the static checks.
//! - `event`, `rejection`: the event envelope, commands, outcomes and stable rejection codes.
//! - `canonical`, `codec`: RFC 8785 JSON for hashes; bincode with a version byte for storage.
//! - `kv`, `keys`, `records`: the key-value interface, key layout and the view records.
//! - `merkle`, `checkpoint`: the RFC 9162 tree over the events, its proofs, signed checkpoints.
//! - `views`: read-side queries (log reads, fleet, hosts, deployments, releases, as-of reads).
//! - `storage`: RocksDB; the Raft log store (group commit), the state machine, snapshots.
//! - `node`: the openraft type config and a running node: proposing, reading, the live feed.
//!
//! Only this crate touches RocksDB and openraft. Without its `storage` feature (on by default) it
//! is the pure domain alone: no RocksDB, no running node; the fuzz targets build it that way.

#[cfg(feature = "storage")]
pub mod append_stream;
#[cfg(feature = "storage")]
pub mod batcher;
pub mod canonical;
pub mod checkpoint;
#[cfg(feature = "storage")]
pub mod cluster;
pub mod codec;
pub mod crash_point;
pub mod desired;
pub mod disk;
pub mod error;
pub mod event;
pub mod feed;
pub mod invariant;
pub mod keys;
pub mod kv;
pub mod ledger;
pub mod limits;
pub mod merkle;
#[cfg(feature = "storage")]
pub mod network;
#[cfg(feature = "storage")]
pub mod node;
#[cfg(feature = "storage")]
pub mod peer_server;
pub mod peers;
pub mod records;
pub mod rejection;
pub mod resume;
#[cfg(feature = "storage")]
pub mod snapshot_receiver;
#[cfg(feature = "storage")]
pub mod storage;
pub mod types;
pub mod views;

pub use error::{Error, Result};
pub use rejection::{Rejection, RejectionCode, RejectionKind};
