//! What happens to a record that cannot be processed.

use bytes::Bytes;
use rocketmq_streams_io::OutRecord;

use crate::error::StreamsError;

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

impl DeadLetter {
    /// The message to produce to the dead-letter topic: the original body,
    /// with the error and origin as properties.
    pub fn to_out_record(&self) -> OutRecord {
        OutRecord {
            body: self.body.clone(),
            key: None,
            tags: None,
            properties: vec![
                (DLQ_ERROR_PROPERTY.to_string(), self.error.clone()),
                (DLQ_ORIGIN_PROPERTY.to_string(), self.origin.clone()),
            ],
        }
    }
}

/// What the policy decided for one failed record.
pub(crate) enum Verdict {
    /// Counted and logged; go on.
    Skipped,
    /// To be sent to the dead-letter topic; go on.
    DeadLetter(DeadLetter),
    /// Stop the job with this error.
    Fail(StreamsError),
}

impl ErrorPolicy {
    /// Applies the policy to a record (`body`, from `origin`) that failed
    /// with `error`. The one place the policy is interpreted, for the
    /// runtime and the test driver alike.
    pub(crate) fn judge(self, body: &Bytes, error: &StreamsError, origin: String) -> Verdict {
        if let StreamsError::State(_) = error {
            // The store failed, not the record: skipping would lose state.
            return Verdict::Fail(StreamsError::RecordFailed {
                origin,
                cause: error.to_string(),
            });
        }
        match self {
            ErrorPolicy::Skip => {
                tracing::warn!(%origin, %error, "record skipped");
                Verdict::Skipped
            }
            ErrorPolicy::DeadLetter => Verdict::DeadLetter(DeadLetter {
                body: body.clone(),
                error: error.to_string(),
                origin,
            }),
            ErrorPolicy::Fail => Verdict::Fail(StreamsError::RecordFailed {
                origin,
                cause: error.to_string(),
            }),
        }
    }
}
