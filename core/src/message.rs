//! Records as RocketMQ messages: what a source sees of the message a
//! record came in ([`Message`]), and what a sink sets on the message it
//! writes ([`Produced`]).
//!
//! ```text
//!  RocketMQ message ──► source_messages ──► Message<T> { value, key, tags, properties, times, queue, offset }
//!  value ──► sink_with(topic, ser, Produced { key, tags, properties }) ──► RocketMQ message
//!            (a key picks the queue by its hash; every message carries EVENT_TIME_PROPERTY)
//! ```

use std::sync::Arc;

use rocketmq_streams_io::{Offset, QueueId};

/// The user property every message a sink writes carries: the record's
/// event time, in ms since the epoch, as decimal text.
pub const EVENT_TIME_PROPERTY: &str = "rmq_streams_event_time";

/// A decoded value with the RocketMQ message it came in (from
/// [`StreamBuilder::source_messages`](crate::StreamBuilder::source_messages)).
#[derive(Debug, Clone, PartialEq)]
pub struct Message<T> {
    /// The decoded body.
    pub value: T,
    /// The message's keys (RocketMQ's `KEYS`, space-separated), if any.
    pub keys: Option<String>,
    /// The message's tag, if any.
    pub tags: Option<String>,
    /// The user properties (RocketMQ's own left out), sorted by name.
    pub properties: Vec<(String, String)>,
    /// When the producer made the message (ms since the epoch).
    pub born_timestamp: i64,
    /// When the broker stored it (ms since the epoch).
    pub store_timestamp: i64,
    /// The queue it was read from.
    pub queue: QueueId,
    /// Its offset in that queue.
    pub offset: Offset,
}

impl<T> Message<T> {
    /// The value of the user property `name`, if the message has it.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

type Field<T> = Arc<dyn Fn(&T) -> Option<String> + Send + Sync>;

/// What a sink sets on each message it writes, from the record's value
/// (RocketMQ Streams' keyed sink, Kafka Streams' `Produced`):
///
/// - a **key** becomes the message key, and picks the queue: the key's
///   hash (Java's `String.hashCode`, as RocketMQ's `SelectMessageQueueByHash`)
///   modulo the topic's queues, so every message of a key goes to one
///   queue, in order. Without a key, a record goes to the queue of the
///   same index as its input queue.
/// - **tags** and **properties** are set as given (a property may not be
///   one of RocketMQ's own names).
///
/// ```
/// use rocketmq_streams::prelude::*;
///
/// let builder = StreamBuilder::new("orders-out");
/// builder.source("orders", Json::<(String, u64)>::new()).sink_with(
///     "orders-by-customer",
///     Json::new(),
///     Produced::new()
///         .key(|o: &(String, u64)| o.0.clone())
///         .tags(|o: &(String, u64)| if o.1 > 100 { "big".into() } else { "small".into() })
///         .property("source", |_| "web".into()),
/// );
/// builder.build().unwrap();
/// ```
pub struct Produced<T> {
    pub(crate) key: Option<Field<T>>,
    pub(crate) tags: Option<Field<T>>,
    pub(crate) properties: Vec<(String, Field<T>)>,
}

impl<T> Clone for Produced<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            tags: self.tags.clone(),
            properties: self.properties.clone(),
        }
    }
}

impl<T> Default for Produced<T> {
    fn default() -> Self {
        Self {
            key: None,
            tags: None,
            properties: Vec::new(),
        }
    }
}

impl<T> Produced<T> {
    /// Nothing set: messages with a body and the event-time property.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each message's key (and so its queue) is `f(&value)`.
    #[must_use]
    pub fn key(mut self, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(move |v| Some(f(v))));
        self
    }

    /// Each message's tag is `f(&value)`.
    #[must_use]
    pub fn tags(mut self, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.tags = Some(Arc::new(move |v| Some(f(v))));
        self
    }

    /// Each message carries the user property `name` = `f(&value)`.
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.properties.push((name.into(), Arc::new(move |v| Some(f(v)))));
        self
    }
}

/// Java's `String.hashCode` of `s` (UTF-16 code units), as RocketMQ's
/// producers hash a key to a queue.
pub(crate) fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The queue (of `queues`) a message with `key` goes to: RocketMQ's
/// `SelectMessageQueueByHash` (`|hash % n|`).
pub(crate) fn queue_of_key(key: &str, queues: usize) -> usize {
    let n = i32::try_from(queues.max(1)).unwrap_or(i32::MAX);
    (java_string_hash(key) % n).unsigned_abs() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_java_strings_do() {
        // Values of Java's "...".hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("héllo"), 103_094_734);
        assert_eq!(queue_of_key("polygenelubricants", 8), 0);
        assert_eq!(queue_of_key("hello", 8), 99_162_322 % 8);
        // A negative hash: |h % n|, as Math.abs(h % n).
        let h = java_string_hash("zzzzzzzzzz");
        assert!(h < 0);
        assert_eq!(queue_of_key("zzzzzzzzzz", 7), (h % 7).unsigned_abs() as usize);
    }
}
