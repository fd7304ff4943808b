//! The one error type of this crate.

/// A state-store failure: what failed, and whether retrying helps.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB failed (disk full, a corrupt or locked database, ...).
    /// [`is_retriable`](StateError::is_retriable) and
    /// [`is_corruption`](StateError::is_corruption) say which.
    #[error("rocksdb at {path}: {source}")]
    RocksDb {
        /// The database directory.
        path: String,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A state-topic message that is not a change this version can read.
    #[error("malformed {0}")]
    Malformed(String),
    /// Sending to or reading from the state topic failed.
    #[error("state topic {queue}: {message}")]
    Log {
        /// The state-topic queue.
        queue: String,
        /// What failed.
        message: String,
        /// Whether the same call may succeed later.
        retriable: bool,
    },
    /// The broker acknowledged a state-topic message, but the queue's
    /// readable end stayed below it for the whole wait: the broker has not
    /// yet made it readable (its consume queue trails its commit log).
    /// Restoring from the shorter queue would lose acknowledged state, so
    /// the restore stops instead. Retriable.
    #[error(
        "state topic {queue}: offset {acknowledged} was acknowledged but the queue reads only up to {visible} \
         after waiting {waited:?}; the broker is not making its messages readable (is it overloaded?)"
    )]
    NotVisible {
        /// The state-topic queue.
        queue: String,
        /// The acknowledged offset waited for.
        acknowledged: i64,
        /// The queue's readable end when the wait ended.
        visible: i64,
        /// How long the restore waited.
        waited: std::time::Duration,
    },
    /// The state-topic queue no longer holds what a restore needs: its
    /// beginning was deleted (the broker's retention) after the offset the
    /// restore must start from. Permanent.
    #[error(
        "state topic {queue}: the restore needs offset {needed}, but the queue now begins at {first} \
         (deleted by the broker's retention: raise fileReservedTime for the state topic, or restore from a \
         local state directory that is still current)"
    )]
    Truncated {
        /// The state-topic queue.
        queue: String,
        /// The first offset the restore needs.
        needed: i64,
        /// The queue's first offset.
        first: i64,
    },
    /// A state value that does not decode as its operator's type (written
    /// by another release, or before the state type changed), or a decoded
    /// value that does not encode. Permanent for that value.
    #[error("state value of key {key}: {message}")]
    Codec {
        /// The store key, debug-printed.
        key: String,
        /// What the codec said.
        message: String,
    },
    /// A newer owner claimed the queue: this owner's writes no longer count
    /// and it must drop the queue (not an error of the job).
    #[error("state topic {queue}: owner of epoch {epoch} was fenced by a newer claim at {newer}")]
    Fenced {
        /// The state-topic queue.
        queue: String,
        /// This owner's epoch.
        epoch: i64,
        /// The newer claim's epoch.
        newer: i64,
    },
}

impl StateError {
    /// Whether the same operation may succeed later: a RocksDB failure that
    /// says so (busy, timed out, try again, a lock held by a process still
    /// exiting) and a state topic not readable yet may; a corrupt database
    /// (see [`is_corruption`](Self::is_corruption)), a full disk or any
    /// other RocksDB error, a malformed message, a truncated queue and a
    /// fenced owner do not.
    pub fn is_retriable(&self) -> bool {
        match self {
            StateError::RocksDb { source, .. } => rocksdb_retriable(source),
            StateError::NotVisible { .. } => true,
            StateError::Log { retriable, .. } => *retriable,
            StateError::Malformed(_)
            | StateError::Codec { .. }
            | StateError::Truncated { .. }
            | StateError::Fenced { .. } => false,
        }
    }
}

impl StateError {
    /// Whether a local database is corrupt: its state cannot be trusted and
    /// is rebuilt from the state topic (see [`OwnedQueue::claim`](crate::OwnedQueue::claim)).
    pub fn is_corruption(&self) -> bool {
        matches!(self, StateError::RocksDb { source, .. } if source.kind() == rocksdb::ErrorKind::Corruption)
    }
}

/// Whether RocksDB's `e` may pass if the same call is made again.
fn rocksdb_retriable(e: &rocksdb::Error) -> bool {
    use rocksdb::ErrorKind;
    match e.kind() {
        ErrorKind::Busy | ErrorKind::TryAgain | ErrorKind::TimedOut | ErrorKind::Incomplete => true,
        // The lock of a database another process (or an owner of this one
        // still closing it) holds: it lets go.
        ErrorKind::IOError => e.as_ref().contains("lock"),
        _ => false,
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, StateError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28: every RocksDB error counted as retriable, so a restore
    /// retried a corrupt database forever.
    #[test]
    fn rocksdb_errors_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let db = rocksdb::DB::open_default(&path).expect("open");
        // A second open of a database this process holds: its lock.
        let locked = rocksdb::DB::open_default(&path).expect_err("locked");
        let locked = StateError::RocksDb {
            path: path.display().to_string(),
            source: locked,
        };
        assert!(locked.is_retriable() && !locked.is_corruption(), "{locked}");
        drop(db);
        std::fs::write(path.join("CURRENT"), b"garbage").expect("write");
        let corrupt = rocksdb::DB::open_default(&path).expect_err("corrupt");
        let corrupt = StateError::RocksDb {
            path: path.display().to_string(),
            source: corrupt,
        };
        assert!(corrupt.is_corruption() && !corrupt.is_retriable(), "{corrupt}");
    }
}
