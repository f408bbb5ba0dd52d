//! RocksDB-backed storage for openraft: the log store, the state machine and snapshot files.

pub mod db;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;

pub use db::Database;
pub use log_store::LogStore;
pub use snapshot::SnapshotFiles;
pub use state_machine::StateMachine;
