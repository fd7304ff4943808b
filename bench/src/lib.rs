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
//!  producer ──stamp──► input topic ──► engine (or pipe-baseline) ──► output topic ──► reader (own thread)
//!  (flat out, or at      (preloaded                                                   latency = poll time
//!   a fixed rate:         for flat out)                                                 − produce stamp
//!   stamp = when due)
//! ```
//!
//! Throughput is input records per second between the first and the last
//! output the reader sees. Every measurement runs `--repeats` times (3 by
//! default) and is reported as median (min–max). Each flat-out repeat of a
//! broker scenario runs right after a flat-out repeat of `pipe-baseline` (a
//! pipelined plain-client program) on the same broker, and its ratio is to
//! that baseline. Rated runs offer a share of the median flat-out rate for
//! a stated time. CPU is read per thread (`/proc/self/task`), so the job's
//! threads are reported apart from the embedded broker's and the harness's.
//! `soak` runs the word count at a share of its flat-out rate for minutes
//! or hours with the broker in a process of its own, and samples the job's
//! memory, lag, throughput and p99 every 10 s ([`soak`]).
#![warn(missing_docs)]

pub mod baseline;
pub mod broker;
pub mod inproc;
pub mod joins;
pub mod load;
pub mod machine;
pub mod progress;
pub mod report;
pub mod soak;

/// Builds `n` record bodies of `size` bytes each, as the benches send them.
pub fn bodies(n: usize, size: usize) -> Vec<bytes::Bytes> {
    (0..n)
        .map(|i| bytes::Bytes::from(vec![(i % 251) as u8; size]))
        .collect()
}
