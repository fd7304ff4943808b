//! The DSL: each type marks a stage of the pipeline.
//!
//! [`StreamBuilder`] → [`RStream`] (map, filter, flat_map, peek, merge,
//! split → [`Split`] (branch), foreach, print, select_timestamp, key_by,
//! join, left_join, outer_join, sink) → [`JoinBuilder`]
//! (on) → [`KeyedJoin`] (within, retain, apply: back to an [`RStream`])
//! or → [`GroupedStream`] (count, sum, min,
//! max, avg, aggregate, reduce, window, map, filter, flat_map, to_rstream,
//! sink) → [`WindowStream`] (count, sum, min, max, avg, aggregate, reduce,
//! each per key and window: back to a [`GroupedStream`] of
//! [`Windowed`](crate::Windowed) keys).

mod builder;
mod grouped;
mod join;
mod rstream;
mod windowed;

pub use builder::StreamBuilder;
pub use grouped::GroupedStream;
pub use join::{JoinBuilder, KeyedJoin};
pub use rstream::{RStream, Split};
pub use windowed::{WindowSpec, WindowStream};
