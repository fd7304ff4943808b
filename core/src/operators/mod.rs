//! The operators, one a file, each a [`Processor`](crate::processor::Processor).

pub mod filter;
pub mod flat_map;
pub mod foreach;
pub mod map;
pub mod select_timestamp;
pub mod sink;
pub mod tee;
pub mod aggregate;
pub mod key_by;
pub(crate) mod shuffle_source;
