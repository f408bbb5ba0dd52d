//! The crate's one error type. A rejected command is not an error: it is a [`crate::Rejection`]
//! value inside the apply response. An `Error` means storage or encoding failed.

/// Failures of storage, encoding and the Raft runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stored record is empty")]
    EmptyRecord,
    #[error("stored record has format version {0}, which this build does not know")]
    UnknownFormatVersion(u8),
    #[error("stored record has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("integer {0} is outside ±2^53 and has no exact canonical JSON form")]
    UnsafeInteger(String),
    #[error("number is not finite")]
    NotFinite,
    #[cfg(feature = "storage")]
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("proof: {0}")]
    Proof(#[from] crate::domain::merkle::ProofError),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Reads are refused while a snapshot install replaces the state machine; they succeed again
    /// once it is done (a client retries).
    #[error("the node is installing a snapshot; retry in a moment")]
    InstallingSnapshot,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
