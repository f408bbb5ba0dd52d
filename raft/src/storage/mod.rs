//! Storage: RocksDB-backed log store, state machine and snapshot files for openraft, and what
//! lives beside them on a node: the apply step (shared with the simulator), the live feed of
//! applied events, the disk guard, crash points.

#[cfg(feature = "storage")]
pub mod append_budget;
pub mod apply;
pub mod crash_point;
#[cfg(feature = "storage")]
pub mod db;
pub mod disk;
pub mod feed;
pub mod host_follow;
// openraft's trait methods return its `StorageError`, which is large; the helpers follow suit.
#[cfg(feature = "storage")]
#[allow(clippy::result_large_err)]
pub mod log_store;
#[cfg(feature = "storage")]
pub mod snapshot;
#[cfg(feature = "storage")]
#[allow(clippy::result_large_err)]
pub mod state_machine;

#[cfg(feature = "storage")]
pub use db::Database;
#[cfg(feature = "storage")]
pub use log_store::LogStore;
#[cfg(feature = "storage")]
pub use snapshot::SnapshotFiles;
#[cfg(feature = "storage")]
pub use state_machine::StateMachine;
