//! Interactive queries: a key's current value in a running job's state
//! ([`StreamRuntime::query`](crate::StreamRuntime::query)).
//!
//! ```text
//!  query(store, key) ── key bytes (as key_by shuffles them) ──► shuffle queue = hash % queues
//!     ├─ owned here ──► its shard's inbox ──► the queue's store (cache, then RocksDB) ──► value
//!     └─ not owned ───► NotHere { queue }  (another instance of the job owns it)
//! ```
//!
//! A store is an aggregation's result made queryable by name
//! ([`GroupedStream::queryable`](crate::GroupedStream::queryable)). The
//! value read is the shard's current one: every record processed so far,
//! checkpointed or not (as Kafka Streams' interactive queries).

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use rocketmq_streams_io::QueueId;
use rocketmq_streams_state::QueueStore;

use crate::error::StreamsError;

/// Reads one aggregation's result of a key (its serialized form) from a
/// queue's store, as the aggregation's output type.
pub(crate) type StoreReader =
    Arc<dyn Fn(&mut QueueStore, &[u8]) -> Result<Option<Box<dyn Any>>, StreamsError> + Send + Sync>;

/// Reads a queryable store's value of a key and encodes it (MessagePack).
pub(crate) type EncodedReader =
    Arc<dyn Fn(&mut QueueStore, &[u8]) -> Result<Option<Bytes>, StreamsError> + Send + Sync>;

/// What a [`query`](crate::StreamRuntime::query) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer<V> {
    /// The key's current value.
    Found(V),
    /// The key has no value in the store (never seen, or its state went).
    Absent,
    /// The key's queue belongs to another instance of the job (the queue is
    /// named; RocketMQ tells a consumer only its own queues, so the owner is
    /// not: ask every instance, one answers).
    NotHere {
        /// The shuffle queue that holds the key.
        queue: QueueId,
    },
    /// The key's queue is this instance's but its state is not ready: being
    /// restored, or not started because no record of it came yet. Ask again.
    NotReady {
        /// The shuffle queue that holds the key.
        queue: QueueId,
    },
}

/// A shard's answer to a query: the encoded value, or why there is none.
pub(crate) enum ShardAnswer {
    Value(Option<Bytes>),
    NotReady,
    Failed(StreamsError),
}
