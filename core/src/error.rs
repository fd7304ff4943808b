//! The one error type of the `rocketmq-streams` crate.

use std::fmt;

/// What went wrong, and whether doing it again may help.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// The topology is not valid (found by `StreamBuilder::build`). Permanent.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A record could not be deserialized or serialized. Permanent for that record.
    #[error("serde error: {0}")]
    Serde(#[from] SerdeError),
    /// A record's output (to a sink or the shuffle topic) is larger than
    /// the broker accepts. Permanent for that record (it goes through the
    /// error policy).
    #[error("an output of {bytes} bytes is over the {limit}-byte message limit")]
    OutputTooLarge {
        /// The output's size.
        bytes: usize,
        /// The limit (`rocketmq_streams_io::MAX_MESSAGE_BYTES`).
        limit: usize,
    },
    /// A record came after every window it belongs to had closed (its end
    /// plus the grace period at or below the stream time). Permanent for
    /// that record: it is counted (`late`) and goes through the error
    /// policy, skipped or dead-lettered with this reason.
    #[error(
        "late record: event time {timestamp} falls in windows closed by stream time {stream_time} \
         (the last of them closes at {closed_at}); raise the window's grace to keep such records"
    )]
    Late {
        /// The record's event time.
        timestamp: i64,
        /// Where the last of its windows closed (its end plus the grace;
        /// for a session, its end plus gap and grace).
        closed_at: i64,
        /// The queue's stream time (the largest event time it has seen,
        /// or where the wall clock moved an idle queue's).
        stream_time: i64,
    },
    /// A user's [`KeyedProcessor`](crate::KeyedProcessor) refused a record
    /// (its own reason). Permanent for that record: it goes through the
    /// error policy, its store writes and outputs undone.
    #[error("processor refused the record: {0}")]
    Processor(String),
    /// A user closure panicked on a record. Permanent for that record.
    #[error("user code panicked: {0}")]
    UserPanic(String),
    /// The error policy is `Fail` and a record failed; the job stopped.
    #[error("record {origin} failed and the error policy is Fail: {cause}")]
    RecordFailed {
        /// Where the record came from (topic, queue, offset).
        origin: String,
        /// Why it failed.
        cause: String,
    },
    /// Stopping the job did not complete cleanly (a shard did not finish
    /// in time). Offsets of its unfinished work are not committed.
    #[error("shutdown incomplete: {0}")]
    Shutdown(String),
    /// A setting is invalid (an environment variable of
    /// [`RuntimeConfig::from_env`](crate::RuntimeConfig::from_env) that does
    /// not parse, or a required one missing). Permanent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A state store failed (RocksDB) or holds a value that does not decode.
    /// Never blamed on a record: the job stops whatever the error policy.
    #[error("state store: {0}")]
    State(#[from] rocketmq_streams_state::StateError),
    /// A shuffled record is not in the shuffle wire format. Permanent for
    /// that record (it goes through the error policy).
    #[error("malformed shuffle record: {0}")]
    Shuffle(#[from] rocketmq_streams_shuffle::DecodeError),
    /// RocketMQ I/O failed; see the inner error for whether a retry helps.
    #[error(transparent)]
    Io(#[from] rocketmq_streams_io::Error),
}

impl StreamsError {
    /// Whether repeating the failed operation may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            StreamsError::Io(e) => e.is_retriable(),
            StreamsError::State(e) => e.is_retriable(),
            _ => false,
        }
    }
}

/// A value could not be turned into bytes or back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerdeError {
    format: &'static str,
    message: String,
}

impl SerdeError {
    /// An error of `format` (e.g. `"json"`) with a message.
    pub fn new(format: &'static str, message: impl Into<String>) -> Self {
        Self {
            format,
            message: message.into(),
        }
    }

    /// The format that failed.
    pub fn format(&self) -> &'static str {
        self.format
    }
}

impl fmt::Display for SerdeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.format, self.message)
    }
}

impl std::error::Error for SerdeError {}

/// The result type of this crate.
pub type Result<T, E = StreamsError> = std::result::Result<T, E>;
