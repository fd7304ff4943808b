//! State stores for rocketmq-streams.
//!
//! This crate will own the keyed state of stateful operators (count, sum,
//! min, max, avg, aggregate, windows, joins), stacked as layers over raw
//! bytes in the manner of Kafka Streams:
//!
//! ```text
//!  typed access (serde)
//!      │
//!  metered ──► cached (write-back) ──► change-logged (state topic) ──► RocksDB (one per owned queue)
//! ```
//!
//! State is organised by the source message queue it came from, so that it
//! moves with its queue on rebalance: restored from the job's state topic
//! on the new owner, dropped on the old one.
//!
//! Nothing is implemented yet; the layers land with the keyed aggregations.
#![warn(missing_docs)]
