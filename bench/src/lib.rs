//! Benchmarks of rocketmq-streams.
//!
//! - `benches/` — criterion micro-benchmarks, a file per area
//!   (`cargo bench -p rocketmq-streams-bench --bench <area>`).
//!   `bridge`: the cost of one batch hop from a glommio shard to the I/O
//!   runtime and back.
//!
//! The end-to-end harness (scenarios on a broker with latency histograms)
//! lands in this crate next; until then the `pipe` example of
//! `rocketmq-streams-io` is the end-to-end measurement.
#![warn(missing_docs)]

/// Builds `n` record bodies of `size` bytes each, as the benches send them.
pub fn bodies(n: usize, size: usize) -> Vec<bytes::Bytes> {
    (0..n)
        .map(|i| bytes::Bytes::from(vec![(i % 251) as u8; size]))
        .collect()
}
