//! The keyBy shuffle of rocketmq-streams.
//!
//! This crate will own what happens between `key_by` and the operators
//! after it: the stable partitioning of serialized keys onto the queues of
//! the job's shuffle topic, the versioned wire format of shuffled records
//! (key, value, event time, origin; decoded without copying), and the
//! lock-free `crossbeam` hand-off of records between shards before they are
//! written to RocketMQ.
//!
//! ```text
//!  shard A ──(crossbeam)──► writer shard of shuffle queue k ──► <job>-shuffle queue k ──► owning shard
//! ```
//!
//! Nothing is implemented yet; it lands with `key_by`.
#![warn(missing_docs)]
