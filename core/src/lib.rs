//! RocketMQ Streams, rebuilt in Rust as a thread-per-core engine.
//!
//! An application embeds this crate: records are consumed from RocketMQ
//! topics, run through a topology of operators, and are written back to
//! RocketMQ. There is no cluster to deploy.
//!
//! ```text
//!  RocketMQ topic ──► shard (one pinned core, glommio) ──► operators ──► sink topic
//!     queue 0..n        owns a subset of the queues          map, filter,   (acked before
//!                       and their state                      key_by, count  offsets commit)
//! ```
//!
//! # What is here today
//!
//! The RocketMQ I/O layer ([`io`]: source, sink, admin, the tokio↔shard
//! bridge and the embedded broker). The `StreamBuilder` DSL, the shard
//! runtime, the keyed shuffle and state stores are built on it next; the
//! [`prelude`] will carry the DSL types as they land.
#![warn(missing_docs)]

pub use rocketmq_streams_io as io;

/// The types most programs need: `use rocketmq_streams::prelude::*`.
pub mod prelude {
    #[cfg(feature = "embedded-broker")]
    pub use rocketmq_streams_io::EmbeddedRocketMQ;
    pub use rocketmq_streams_io::{Admin, ClientConfig, IoRuntime, Offset, QueueId, Sink, Source, SourceConfig};
}
