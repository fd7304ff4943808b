//! A consume → transform → produce loop on the I/O layer alone.
//!
//! [`run`] is the smallest complete at-least-once pipeline: poll a batch,
//! transform every record, send the results to the output queue that
//! corresponds to the input queue, wait for the broker's acknowledgements,
//! and only then advance (and periodically commit) the input offsets. It is
//! what the `pipe` example runs, and the yardstick the engine is compared
//! with. It runs on any executor: every client call goes through the bridge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Operation, Result};
use crate::ids::{Offset, QueueId};
use crate::sink::{OutRecord, Sink};
use crate::source::{AssignmentChange, Source};

/// Counters of a [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Records polled from the input.
    pub consumed: u64,
    /// Records acknowledged on the output.
    pub produced: u64,
    /// Polls that returned at least one record.
    pub batches: u64,
    /// Offset commits made.
    pub commits: u64,
}

/// Settings of a [`run`].
#[derive(Debug, Clone)]
pub struct PipeConfig {
    /// The output topic's queues; input queue index `i` writes to output
    /// queue `i % len`, so the order of records within a queue is kept.
    pub output_queues: Vec<QueueId>,
    /// How often offsets are committed.
    pub commit_interval: Duration,
    /// Stop after this many consumed records (`None`: never stop on a count).
    pub max_records: Option<u64>,
    /// Stop after this long, whatever was consumed.
    pub max_duration: Duration,
}

/// Runs the pipe until `max_records` records are consumed (and their outputs
/// acknowledged) or `max_duration` passes, then commits and returns.
///
/// # Errors
///
/// Returns the first send, commit or runtime error; offsets of records whose
/// outputs were not acknowledged are not committed, so a restart re-reads
/// them.
pub async fn run<F>(source: &mut Source, sink: &Sink, config: &PipeConfig, mut transform: F) -> Result<PipeStats>
where
    F: FnMut(&Bytes) -> Bytes,
{
    if config.output_queues.is_empty() {
        return Err(Error::permanent(Operation::Send, "the output topic has no queues"));
    }
    let started = Instant::now();
    let mut stats = PipeStats::default();
    let mut pending: HashMap<QueueId, Offset> = HashMap::new();
    let mut last_commit = Instant::now();
    loop {
        for change in source.assignment_changes() {
            if let AssignmentChange::Revoked(q) = change {
                pending.remove(&q);
            }
        }
        let batches = source.poll().await?;
        if !batches.is_empty() {
            stats.batches += 1;
        }
        let mut sends = Vec::with_capacity(batches.len());
        for batch in &batches {
            let target = config.output_queues[batch.queue.queue() as usize % config.output_queues.len()].clone();
            let out: Vec<OutRecord> = batch
                .records
                .iter()
                .map(|r| OutRecord::new(transform(&r.body)))
                .collect();
            stats.consumed += out.len() as u64;
            sends.push(sink.send(target, out));
        }
        for send in sends {
            let ack = send.await??;
            stats.produced += ack.count as u64;
        }
        // Every output of these batches is acknowledged: their offsets may
        // be committed.
        for batch in &batches {
            if let Some(next) = batch.next_offset() {
                pending.insert(batch.queue.clone(), next);
            }
        }
        let done = config.max_records.is_some_and(|n| stats.consumed >= n) || started.elapsed() >= config.max_duration;
        if done || last_commit.elapsed() >= config.commit_interval {
            if !pending.is_empty() || done {
                source.commit(&pending).await?;
                stats.commits += 1;
            }
            last_commit = Instant::now();
        }
        if done {
            return Ok(stats);
        }
    }
}
