//! The operators, one a file, each a [`Processor`](crate::processor::Processor).

pub mod aggregate;
pub mod branch;
pub mod filter;
pub mod flat_map;
pub mod foreach;
pub(crate) mod join;
pub mod key_by;
pub mod map;
pub mod peek;
pub mod process;
pub mod select_timestamp;
pub(crate) mod shuffle_source;
pub mod sink;
pub(crate) mod stream_time;
pub mod tee;
pub mod window;
