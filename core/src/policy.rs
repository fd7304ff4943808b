//! What happens to a record that cannot be processed.

use bytes::Bytes;

/// The job's answer to a record that fails: it cannot be deserialized, a
/// user closure panics on it, or its result cannot be serialized.
///
/// Whatever the policy, a failed record never leaves partial output and is
/// never lost silently: it is counted, and logged, dead-lettered or reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Count it, log it with its origin, go on (the default).
    #[default]
    Skip,
    /// Send the original bytes, with the error as a property, to the job's
    /// dead-letter topic `<job_id>-dlq`, count it, go on.
    DeadLetter,
    /// Stop the job with an error naming the record.
    Fail,
}

/// The property of a dead-lettered message that holds the error text.
pub const DLQ_ERROR_PROPERTY: &str = "rmq_streams_error";
/// The property of a dead-lettered message that names its origin
/// (`topic@broker#queue:offset`).
pub const DLQ_ORIGIN_PROPERTY: &str = "rmq_streams_origin";

/// A record that failed, kept for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original message body, unchanged.
    pub body: Bytes,
    /// Why it failed.
    pub error: String,
    /// Where it came from.
    pub origin: String,
}
