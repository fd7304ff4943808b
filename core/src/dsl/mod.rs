//! The DSL: each type marks a stage of the pipeline.
//!
//! [`StreamBuilder`] → [`RStream`] (map, filter, flat_map, foreach, print,
//! select_timestamp, key_by, sink) → [`GroupedStream`] (count, sum, min,
//! max, avg, aggregate, map, filter, flat_map, to_rstream, sink). Windows
//! will add a `WindowStream` stage after `GroupedStream`.

mod builder;
mod grouped;
mod rstream;

pub use builder::StreamBuilder;
pub use grouped::GroupedStream;
pub use rstream::RStream;
