//! Every metric of the runtime, declared in one place.
//!
//! Per-shard counters are atomics written only by their shard (relaxed
//! stores, no contention) and read by `StreamRuntime::metrics`; the one
//! exception, `records_in_flight`, is written only by the coordinator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use rocketmq_streams_io::{Offset, QueueId};

/// Identifies a shard: one pinned thread running one glommio executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// The last offset this instance's sends were given in each queue of the
/// shuffle topic (lock-free: one `fetch_max` per acknowledged send).
///
/// The lag metric takes the end of a shuffle queue as the larger of the
/// broker's consume-queue end and this: a frame the broker acknowledged is
/// in its commit log but may not be indexed into the consume queue yet, and
/// a lag of 0 must not be read while frames this job wrote are unprocessed.
#[derive(Debug)]
pub(crate) struct ShuffleWritten {
    /// The shuffle topic's queues, sorted.
    route: Arc<Vec<QueueId>>,
    /// The last offset written per queue of `route`; -1 before any.
    last: Vec<AtomicI64>,
}

impl ShuffleWritten {
    pub(crate) fn new(route: Arc<Vec<QueueId>>) -> Self {
        let last = route.iter().map(|_| AtomicI64::new(-1)).collect();
        Self { route, last }
    }

    /// Notes that a send to `queue` was stored up to `last` (inclusive).
    pub(crate) fn record(&self, queue: &QueueId, last: Offset) {
        if let Ok(i) = self.route.binary_search(queue) {
            self.last[i].fetch_max(last.0, Ordering::Relaxed);
        }
    }

    /// The offset after the last one this instance wrote to `queue`, if it
    /// wrote any.
    pub(crate) fn end(&self, queue: &QueueId) -> Option<Offset> {
        let i = self.route.binary_search(queue).ok()?;
        let last = self.last[i].load(Ordering::Relaxed);
        (last >= 0).then(|| Offset(last + 1))
    }
}

/// The highest latency the histograms tell apart: one hour, in µs (higher
/// values are recorded as this).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Latency distributions of one shard, in microseconds, cumulative since
/// the shard started (`hdrhistogram`, 2 significant digits). The shard
/// records into its own copy (no lock per batch) and publishes it every
/// commit interval and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Latencies {
    /// Processing one batch: from the shard taking it to every output of
    /// it acknowledged by the broker (one value a batch).
    pub processing: Histogram<u64>,
    /// End to end, one value a message consumed: from its born timestamp
    /// (when its producer made it) to the acknowledgement of its batch's
    /// outputs. For a keyed job's second stage the message is a shuffle
    /// frame, made by the first stage: each stage measures its own part.
    pub end_to_end: Histogram<u64>,
    /// Checkpoints of the shard's keyed queues (changelog, marker, RocksDB).
    pub checkpoint: Histogram<u64>,
}

// Histograms of counts compare as an equivalence: exact equality.
impl Eq for Latencies {}

impl Default for Latencies {
    fn default() -> Self {
        // Constant, valid bounds: this cannot fail.
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds");
        Self {
            processing: histogram(),
            end_to_end: histogram(),
            checkpoint: histogram(),
        }
    }
}

impl Latencies {
    /// Records `micros` into `histogram`, capped at one hour.
    pub(crate) fn record(histogram: &mut Histogram<u64>, micros: u64) {
        histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    /// Adds `other`'s values into these and empties `other`.
    pub(crate) fn drain_into(&mut self, other: &mut Latencies) {
        for (mine, theirs) in [
            (&mut self.processing, &mut other.processing),
            (&mut self.end_to_end, &mut other.end_to_end),
            (&mut self.checkpoint, &mut other.checkpoint),
        ] {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(&*theirs);
            theirs.reset();
        }
    }
}

/// A count that rises and falls, shared by the operators of one shard
/// (relaxed atomics: written by that shard's thread, read by `metrics`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub(crate) fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// The live counters of one shard.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub(crate) records_in: AtomicU64,
    pub(crate) records_out: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) shuffled: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) restored: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) join_records: Gauge,
    /// Records given to the shard and not yet done with (processed, or
    /// held out of flight while their queue restores); written by the
    /// coordinator alone, the one thread that counts them.
    pub(crate) records_in_flight: AtomicU64,
    /// Queues this shard built a pipeline for, each once however often its
    /// pipeline was built again (a revoke and a new assignment, a fenced
    /// queue restored again), and the OS thread it ran on. Written when a
    /// pipeline is built, not per record.
    queues: Mutex<Vec<QueueId>>,
    pub(crate) thread: Mutex<Option<String>>,
    /// The latencies the shard published last (locked once a commit
    /// interval by the shard, and by readers of the metrics).
    pub(crate) latencies: Mutex<Latencies>,
}

impl ShardCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes that the shard built a pipeline for `queue` (see
    /// [`ShardMetrics::queues`]).
    pub(crate) fn owned(&self, queue: &QueueId) {
        if let Ok(mut queues) = self.queues.lock() {
            if let Err(at) = queues.binary_search(queue) {
                queues.insert(at, queue.clone());
            }
        }
    }

    pub(crate) fn snapshot(&self, id: ShardId) -> ShardMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShardMetrics {
            shard: id,
            thread: self.thread.lock().map(|t| t.clone()).unwrap_or_default(),
            records_in: get(&self.records_in),
            records_out: get(&self.records_out),
            skipped: get(&self.skipped),
            dead_lettered: get(&self.dead_lettered),
            batches: get(&self.batches),
            shuffled: get(&self.shuffled),
            duplicates: get(&self.duplicates),
            late: get(&self.late),
            restored: get(&self.restored),
            checkpoints: get(&self.checkpoints),
            fenced: get(&self.fenced),
            join_records: self.join_records.get(),
            records_in_flight: get(&self.records_in_flight),
            queues: self.queues.lock().map(|q| q.clone()).unwrap_or_default(),
            latencies: self.latencies.lock().map(|l| l.clone()).unwrap_or_default(),
        }
    }

    /// Publishes what the shard recorded since it last did.
    pub(crate) fn publish(&self, recorded: &mut Latencies) {
        if let Ok(mut published) = self.latencies.lock() {
            published.drain_into(recorded);
        }
    }
}

/// A snapshot of one shard's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMetrics {
    /// The shard.
    pub shard: ShardId,
    /// The name of the OS thread that ran it (`rmq-shard-<n>`).
    pub thread: Option<String>,
    /// Records consumed.
    pub records_in: u64,
    /// Records produced to sink topics (acknowledged by the broker).
    pub records_out: u64,
    /// Failed records skipped (policy `Skip`).
    pub skipped: u64,
    /// Failed records sent to the dead-letter topic (policy `DeadLetter`).
    pub dead_lettered: u64,
    /// Batches processed.
    pub batches: u64,
    /// Records written to the shuffle topic (acknowledged).
    pub shuffled: u64,
    /// Shuffled records dropped as replays already in the state.
    pub duplicates: u64,
    /// Records late for every window they belong to (also counted as
    /// skipped or dead-lettered, by the error policy).
    pub late: u64,
    /// State changes applied while restoring from the state topic.
    pub restored: u64,
    /// State checkpoints (changelog + marker + RocksDB) completed.
    pub checkpoints: u64,
    /// Times an owner of this shard found its queue claimed by a newer
    /// owner (a rebalance that gave the queue to two instances for a
    /// while, an owner that was paused or cut off): its late writes did
    /// not count, its unsent outputs were dropped, and it restored the
    /// queue again or let it go.
    pub fenced: u64,
    /// Records kept in join state by this shard's queues now (a gauge: it
    /// rises as records arrive and falls as their windows close or their
    /// queue leaves the shard).
    pub join_records: u64,
    /// Records given to this shard and not yet done with, now (a gauge):
    /// never above `max_batches_in_flight × poll_batch` (see
    /// [`RuntimeConfig::max_batches_in_flight`](super::RuntimeConfig::max_batches_in_flight)).
    pub records_in_flight: u64,
    /// Queues this shard has owned (built a pipeline for), each once, sorted.
    pub queues: Vec<QueueId>,
    /// Latency distributions (see [`Latencies`]).
    pub latencies: Latencies,
}

/// A snapshot of the job's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMetrics {
    /// One entry per shard.
    pub shards: Vec<ShardMetrics>,
    /// Offset commits made.
    pub commits: u64,
    /// The last committed offset per queue.
    pub committed: BTreeMap<QueueId, Offset>,
    /// Messages not yet committed per queue this instance owns: the
    /// broker's end offset minus the committed offset, refreshed at most
    /// once a second at commit time. A message of the shuffle topic is a
    /// frame of many records.
    ///
    /// The end offset is what the broker's consume queue holds, and a
    /// broker indexes stored messages into its consume queues
    /// asynchronously: while [`JobMetrics::dispatch_behind`] is above zero,
    /// messages already stored (shuffle frames this job wrote among them)
    /// may be missing from it, and a lag of 0 does not mean caught up. Use
    /// [`JobMetrics::caught_up`] for that.
    pub lag: BTreeMap<QueueId, u64>,
    /// Bytes the brokers had stored but not yet indexed into their consume
    /// queues, read just before the end offsets of [`JobMetrics::lag`]
    /// (summed over the master brokers; see `Admin::dispatch_behind`).
    pub dispatch_behind: u64,
}

impl JobMetrics {
    /// The lag summed over the queues this instance owns.
    pub fn total_lag(&self) -> u64 {
        self.lag.values().sum()
    }

    /// Whether, at the last lag refresh, this instance had committed every
    /// message of the queues it owns: no lag on any of them, and nothing
    /// stored on the brokers left to index (so the end offsets were
    /// complete, up to the moment they were read). Messages written after
    /// that refresh, by this job or another producer, are not covered, and
    /// an instance that owns no queue is trivially caught up (check
    /// `lag.len()` for the queues expected).
    pub fn caught_up(&self) -> bool {
        self.total_lag() == 0 && self.dispatch_behind == 0
    }

    /// Sum of a counter over the shards.
    pub fn total(&self, counter: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(counter).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28: every pipeline built (a queue fenced and restored again,
    /// revoked and assigned back) added the queue once more, and every
    /// metrics snapshot cloned the growing list.
    #[test]
    fn a_queue_whose_pipeline_is_built_again_is_listed_once() {
        let counters = ShardCounters::default();
        let (a, b) = (QueueId::new("t", "broker-a", 1), QueueId::new("t", "broker-a", 0));
        for _ in 0..100 {
            counters.owned(&a);
        }
        counters.owned(&b);
        counters.owned(&a);
        assert_eq!(counters.snapshot(ShardId(0)).queues, vec![b, a]);
    }
}
