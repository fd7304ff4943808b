//! The DSL: each type marks a stage of the pipeline.
//!
//! [`StreamBuilder`] → [`RStream`] (map, filter, flat_map, foreach, print,
//! select_timestamp, sink). Grouping (`key_by`), aggregation and windows
//! add `GroupedStream` and `WindowStream` stages after `RStream`.

mod builder;
mod rstream;

pub use builder::StreamBuilder;
pub use rstream::RStream;
