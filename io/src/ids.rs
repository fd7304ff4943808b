//! Strong identifiers for the things the I/O layer moves between.

use std::fmt;
use std::sync::Arc;

use cheetah_string::CheetahString;
use rocketmq_model::common::message::message_queue::MessageQueue;

/// One RocketMQ message queue: `(topic, broker, queue id)`.
///
/// Cheap to clone (two reference-counted strings and an integer) and usable
/// as a map key; it is the unit of ownership for shards and of state.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    topic: Arc<str>,
    broker: Arc<str>,
    queue: u32,
}

impl QueueId {
    /// A queue of `topic` on `broker` with index `queue`.
    pub fn new(topic: impl Into<Arc<str>>, broker: impl Into<Arc<str>>, queue: u32) -> Self {
        Self {
            topic: topic.into(),
            broker: broker.into(),
            queue,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The broker name (not its address).
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The queue index within the topic on that broker.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub(crate) fn from_mq(mq: &MessageQueue) -> Self {
        Self::new(
            mq.topic().as_str(),
            mq.broker_name().as_str(),
            u32::try_from(mq.queue_id()).unwrap_or_default(),
        )
    }

    pub(crate) fn to_mq(&self) -> MessageQueue {
        MessageQueue::from_parts(
            CheetahString::from_string(self.topic.to_string()),
            CheetahString::from_string(self.broker.to_string()),
            // Queue ids come from the broker as non-negative i32; the cast
            // round-trips what `from_mq` produced.
            self.queue as i32,
        )
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.topic, self.broker, self.queue)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A position in a message queue: the logical offset of one message.
///
/// A *committed* offset is the offset of the next message to consume, i.e.
/// one past the last processed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Offset(pub i64);

impl Offset {
    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_id_round_trips_through_message_queue() {
        let q = QueueId::new("input", "broker-a", 7);
        let back = QueueId::from_mq(&q.to_mq());
        assert_eq!(q, back);
        assert_eq!(back.to_string(), "input@broker-a#7");
    }

    #[test]
    fn committed_offset_is_one_past_the_record() {
        assert_eq!(Offset(41).next(), Offset(42));
    }
}
