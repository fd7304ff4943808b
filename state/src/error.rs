//! The one error type of this crate.

/// A state-store failure: what failed, and whether retrying helps.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB failed (disk full, a corrupt or locked database, ...).
    #[error("rocksdb at {path}: {message}")]
    RocksDb {
        /// The database directory.
        path: String,
        /// RocksDB's message.
        message: String,
    },
    /// A state-topic message that is not a change this version can read.
    #[error("malformed {0}")]
    Malformed(String),
}

impl StateError {
    /// Whether the same operation may succeed later: a RocksDB failure may
    /// be transient (I/O, a lock held by a process still exiting); a
    /// malformed message never decodes.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StateError::RocksDb { .. })
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, StateError>;
