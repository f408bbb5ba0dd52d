//! RocksDB-backed storage for openraft: the log store, the state machine and snapshot files.

pub mod append_budget;
pub mod db;
// openraft's trait methods return its `StorageError`, which is large; the helpers follow suit.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod snapshot;
#[allow(clippy::result_large_err)]
pub mod state_machine;

pub use db::Database;
pub use log_store::LogStore;
pub use snapshot::SnapshotFiles;
pub use state_machine::StateMachine;
