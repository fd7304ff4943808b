//! Benchmarks of rocketmq-streams: criterion micro-benchmarks and the
//! end-to-end harness.
//!
//! - `benches/` — criterion micro-benchmarks, a file per area
//!   (`cargo bench -p rocketmq-streams-bench --bench <area>`).
//! - `src/main.rs` — the harness: `cargo run -p rocketmq-streams-bench
//!   --release -- <scenario> [options]` runs a scenario and prints a report
//!   (table, JSON, latency plot).
//!
//! ```text
//!  producer ──stamp──► input topic ──► engine (or pipe-baseline) ──► output topic ──► output consumer
//!  (flat out, or at      (preloaded                                                    latency = poll time
//!   a fixed rate)         for flat out)                                                  − produce stamp
//! ```
//!
//! Throughput is records out per second between the first and the last
//! record the output consumer sees; every broker scenario runs the
//! `pipe-baseline` loop flat out on the same broker first and reports the
//! engine's throughput as a ratio to it.
#![warn(missing_docs)]

pub mod baseline;
pub mod broker;
pub mod inproc;
pub mod load;
pub mod machine;
pub mod progress;
pub mod report;

/// Builds `n` record bodies of `size` bytes each, as the benches send them.
pub fn bodies(n: usize, size: usize) -> Vec<bytes::Bytes> {
    (0..n)
        .map(|i| bytes::Bytes::from(vec![(i % 251) as u8; size]))
        .collect()
}
