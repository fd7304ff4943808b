//! RocketMQ Streams, rebuilt in Rust as a thread-per-core engine.
//!
//! An application embeds this crate: records are consumed from RocketMQ
//! topics, run through a topology of operators, and are written back to
//! RocketMQ. There is no cluster to deploy.
//!
//! ```text
//!  RocketMQ topic ──► shard (one pinned core, glommio) ──► operators ──► sink topic
//!     queue 0..n        owns a subset of the queues          map, filter,   (acked before
//!                       and their state                      flat_map, ...  offsets commit)
//! ```
//!
//! # Writing a job
//!
//! A [`StreamBuilder`] declares sources; each returns an [`RStream`] whose
//! operators (`map`, `filter`, `flat_map`, `select_timestamp`, `foreach`,
//! `print`, `sink`) chain into a graph; [`StreamBuilder::build`] validates
//! it into a [`Topology`] (`describe()` draws it).
//!
//! Inside, every operator is one small [`Processor`] over [`Record`]s, one
//! a file (`operators/`); a topology is instantiated as one chain of
//! processors per owned queue, and a record moves through it by direct
//! calls — no queues, locks or per-record allocations of the engine's own.
//!
//! # Keys, state, windows and joins
//!
//! `key_by` sends every record through the job's shuffle topic to the
//! shard that owns its key's queue; there a [`GroupedStream`]'s
//! aggregations keep state per key (RocksDB, changelog in a state topic,
//! exact across crashes and rebalances), and
//! [`window`](GroupedStream::window) cuts it into event-time windows
//! (tumbling, hopping, sliding, session: the [`window`] module).
//! [`RStream::join`], [`left_join`](RStream::left_join) and
//! [`outer_join`](RStream::outer_join) re-key two streams through the
//! same shuffle topic and join them in each shuffle queue, their records
//! kept in its store until their window closes (the [`join`] module):
//!
//! ```text
//!  left  ─key_by─┐                  ┌─► join (state: both sides' records, until their window closes) ─► RStream
//!                ├─► shuffle queue ─┤
//!  right ─key_by─┘                  └─► aggregate / window (state per key / key and window) ─► GroupedStream
//! ```
//!
//! A windowed job, tested on the driver:
//!
//! ```
//! use std::time::Duration;
//! use rocketmq_streams::prelude::*;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Bid { auction: u64, price: u64, time: i64 }
//!
//! let builder = StreamBuilder::new("hot-items");
//! builder
//!     .source("bids", Json::<Bid>::new())
//!     .select_timestamp(|b: &Bid| b.time)           // event time, ms
//!     .key_by(|b: &Bid| b.auction)
//!     .window(Window::tumbling(Duration::from_secs(10)).grace(Duration::from_secs(1)))
//!     .count()                                      // per auction and window, when it closes
//!     .sink("bids-per-window", Json::<(Windowed<u64>, u64)>::new());
//! let mut driver = TopologyTestDriver::new(builder.build().unwrap());
//! let bid = |time| Bid { auction: 7, price: 1, time };
//! for time in [1_000, 4_000, 9_999] {
//!     driver.pipe_value("bids", &Json::new(), &bid(time), 0).unwrap();
//! }
//! // [0 s, 10 s) closes once the stream time passes 11 s (end + grace)...
//! driver.pipe_value("bids", &Json::new(), &bid(11_000), 0).unwrap();
//! let out: Vec<(Windowed<u64>, u64)> = driver.read_values("bids-per-window", &Json::new());
//! assert_eq!((out[0].0.window.start, out[0].0.window.end, out[0].1), (0, 10_000, 3));
//! // ... and [10 s, 20 s) once the stream is quiet: the wall clock moves it on.
//! driver.advance_wall_clock(Duration::from_secs(10)).unwrap();
//! let out: Vec<(Windowed<u64>, u64)> = driver.read_values("bids-per-window", &Json::new());
//! assert_eq!((out[0].0.window.start, out[0].1), (10_000, 1));
//! ```
//!
//! # Testing a job
//!
//! [`TopologyTestDriver`] runs a topology in-process without a broker,
//! deterministically, with the per-queue task a shard runs: pipe input
//! records, move its wall clock, read sink outputs.
//!
//! # Failed records
//!
//! A record that cannot be deserialized, on which a user closure panics, or
//! whose result cannot be serialized goes through the [`ErrorPolicy`]:
//! skipped and counted, dead-lettered to `<job_id>-dlq`, or the job stops.
//! It never leaves partial output behind.
//!
//! # Running a job
//!
//! [`StreamRuntime::start`] runs a topology on RocketMQ: the consumer
//! group's rebalance assigns queues, each owned by exactly one pinned
//! glommio shard; outputs are acknowledged before offsets commit
//! (at-least-once). The [`runtime`] module draws the data path.
#![warn(missing_docs)]

mod accumulator;
mod codec;
mod driver;
mod dsl;
mod emit;
mod error;
pub mod join;
pub mod message;
pub mod operators;
mod policy;
mod processor;
#[cfg(test)]
mod props;
mod query;
pub mod runtime;
pub mod serde;
mod topology;
pub mod window;

pub use accumulator::{Accumulator, Avg, Count, Extreme, Merge, Reduce, Sum};
pub use driver::{DriverMetrics, TestMessage, TopologyTestDriver};
pub use dsl::{GroupedStream, JoinBuilder, KeyedJoin, RStream, Split, StreamBuilder, WindowSpec, WindowStream};
pub use emit::Emit;
pub use error::{Result, SerdeError, StreamsError};
pub use message::{Message, Produced, EVENT_TIME_PROPERTY};
pub use operators::process::{KeyedProcessor, ProcessorContext};
pub use policy::{DeadLetter, ErrorPolicy, DLQ_ERROR_PROPERTY, DLQ_ORIGIN_PROPERTY};
pub use processor::{BoxProcessor, Context, Keyed, Output, Processor, Record};
pub use query::QueryAnswer;
pub use rocketmq_streams_io as io;
pub use rocketmq_streams_state::{Compression, RocksDbOptions};
pub use runtime::env::{ACCESS_KEY_ENV, SECRET_KEY_ENV};
pub use runtime::{JobMetrics, RuntimeConfig, ShardId, ShardMetrics, ShuffleHandOff, StreamRuntime};
pub use topology::Topology;
pub use window::{TimeWindow, Window, WindowEmit, Windowed};

/// The types most programs need: `use rocketmq_streams::prelude::*`.
pub mod prelude {
    pub use crate::serde::{Deserializer, Json, Raw, Serializer, Utf8};
    pub use crate::{
        join::JoinWindows, Accumulator, Emit, ErrorPolicy, GroupedStream, JobMetrics, KeyedProcessor, Message,
        ProcessorContext, Produced, QueryAnswer, RStream, RuntimeConfig, ShuffleHandOff, StreamBuilder, StreamRuntime,
        StreamsError, TestMessage, TimeWindow, Topology, TopologyTestDriver, Window, WindowEmit, WindowStream,
        Windowed,
    };
    #[cfg(feature = "embedded-broker")]
    pub use rocketmq_streams_io::EmbeddedRocketMQ;
    pub use rocketmq_streams_io::{Admin, ClientConfig, IoRuntime, Offset, QueueId};
}
