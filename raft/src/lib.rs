//! fleetlog-raft: the ledger domain, its storage and the consensus glue, one folder each.
//!
//! - [`domain`]: the pure rules and read-side queries. No I/O: it runs over any key-value reader,
//!   which is how the unit tests, the model test and the fuzz targets drive it.
//! - [`storage`]: RocksDB; the Raft log store (group commit), the state machine that applies
//!   the domain's rules, snapshot files, the live feed of applied events, the disk guard.
//! - [`consensus`]: openraft's type config, a running node (proposing, forwarding, reading), the
//!   batcher, cluster membership, and the peer protocol, client and server side.
//!
//! Dependencies point one way: consensus uses storage and domain, storage uses domain, and the
//! domain uses neither. Only this crate touches RocksDB and openraft. Without its `storage`
//! feature (on by default) it is the pure domain alone: no RocksDB, no running node; the fuzz
//! targets build it that way.

pub mod consensus;
pub mod domain;
pub mod error;
#[cfg(feature = "model")]
pub mod model;
pub mod storage;

pub use domain::rejection::{Rejection, RejectionCode, RejectionKind};
pub use error::{Error, Result};
