//! Every metric of the runtime, declared in one place.
//!
//! Per-shard counters are atomics written only by their shard (relaxed
//! stores, no contention) and read by `StreamRuntime::metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocketmq_streams_io::{Offset, QueueId};

/// Identifies a shard: one pinned thread running one glommio executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
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
    pub(crate) join_records: Gauge,
    /// Queues this shard built a pipeline for, and the OS thread it ran on.
    /// Written once per queue assignment, not per record.
    pub(crate) queues: Mutex<Vec<QueueId>>,
    pub(crate) thread: Mutex<Option<String>>,
}

impl ShardCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
            join_records: self.join_records.get(),
            queues: self.queues.lock().map(|q| q.clone()).unwrap_or_default(),
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
    /// Records kept in join state by this shard's queues now (a gauge: it
    /// rises as records arrive and falls as their windows close or their
    /// queue leaves the shard).
    pub join_records: u64,
    /// Queues this shard has owned (built a pipeline for).
    pub queues: Vec<QueueId>,
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
    /// Records not yet committed per queue this instance owns: the broker's
    /// end offset minus the committed offset, refreshed at most once a
    /// second at commit time.
    pub lag: BTreeMap<QueueId, u64>,
}

impl JobMetrics {
    /// The lag summed over the queues this instance owns.
    pub fn total_lag(&self) -> u64 {
        self.lag.values().sum()
    }

    /// Sum of a counter over the shards.
    pub fn total(&self, counter: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(counter).sum()
    }
}
