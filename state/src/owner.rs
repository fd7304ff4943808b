//! One owner's hold on one queue's state: claim and restore, checkpoint,
//! snapshots, fencing. The protocol of the crate docs, in one place.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::changelog::{Change, Epoch};
use crate::error::{Result, StateError};
use crate::failpoint::failpoint;
use crate::log::{LogRecord, StateLog};
use crate::restore::{Restore, RestoreSummary};
use crate::store::{Checkpoint, QueueStore, RocksDbOptions};

/// How an owner reads and writes its state queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolOptions {
    /// Longest wait for an acknowledged offset to become readable before
    /// the restore fails with [`StateError::NotVisible`]. Default: 60 s.
    pub visibility_wait: Duration,
    /// Pause between two looks at a readable end that trails. Default: 20 ms.
    pub poll_interval: Duration,
    /// Messages per read. Default: 1024.
    pub read_batch: u32,
    /// How long a claim may stay unreadable before the owner claims again.
    /// A broker whose dispatch stalled until its next write (see the crate
    /// docs) then makes the new claim, and all before it, readable.
    /// Default: 1 s.
    pub reclaim_after: Duration,
    /// Changes written to the queue since its last snapshot after which a
    /// checkpoint writes a new one (and at least twice the last snapshot's
    /// entries, so snapshots take at most a third of the queue): a
    /// [`Change::Batch`](crate::Change::Batch) counts its entries, any
    /// other message one. A restore without local state then reads at most
    /// about this many changes plus one snapshot. (After a restart the
    /// count starts from the messages replayed, an underestimate when they
    /// were batches.) Default: 100,000.
    pub snapshot_after: u64,
    /// Messages per append of a snapshot. Default: 512.
    pub snapshot_batch: usize,
    /// Longest time between two snapshots of a queue, busy or idle, so
    /// that an idle queue's state outlives the broker's retention (72 h by
    /// default): [`OwnedQueue::snapshot_if_old`]. Default: 24 h.
    pub snapshot_max_age: Duration,
}

impl Default for ProtocolOptions {
    fn default() -> Self {
        ProtocolOptions {
            visibility_wait: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            read_batch: 1024,
            reclaim_after: Duration::from_secs(1),
            snapshot_after: 100_000,
            snapshot_batch: 512,
            snapshot_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// A token for a new claim: random enough that two claims never share one.
pub fn new_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The state of one queue held by its current owner: the store, the
/// owner's epoch, and where the state stands in the source.
///
/// Made by [`claim`](Self::claim); advanced by
/// [`checkpoint`](Self::checkpoint). While a batch runs, the caller may
/// [`take_store`](Self::take_store) and give it back with
/// [`put_store`](Self::put_store).
#[derive(Debug)]
pub struct OwnedQueue {
    store: Option<QueueStore>,
    epoch: Epoch,
    token: u64,
    source_next: Option<i64>,
    /// Where this owner's next append lands if nobody else writes.
    write_next: i64,
    /// Messages in the queue since its last snapshot (or since the start
    /// of what the restore read, when it found none).
    since_snapshot: u64,
    /// Entries of the last snapshot written or restored (0: none known).
    snapshot_len: u64,
    /// A newer claim seen by an append whose own error was not returned
    /// (a snapshot's): the next checkpoint fails `Fenced` with it.
    fenced_by: Option<Epoch>,
    /// When this owner last wrote a snapshot (or claimed the queue).
    last_snapshot: Instant,
    options: ProtocolOptions,
}

/// Where a restore starts.
struct Start {
    /// The local database's checkpoint, or a snapshot's.
    checkpoint: Option<Checkpoint>,
    /// The first offset to replay.
    from: i64,
    /// Entries of the snapshot it starts from (0: none).
    snapshot_len: u64,
}

impl OwnedQueue {
    /// Claims the queue of `log` for a new owner and restores its state
    /// into the RocksDB at `path`:
    ///
    /// 1. appends a [`Change::Claim`]; its acknowledged offset *c* is the
    ///    new epoch;
    /// 2. waits (bounded) until *c* is readable: then so is everything
    ///    acknowledged before it, whoever wrote it;
    /// 3. keeps the local database if the message its checkpoint names is
    ///    there and matches (its identity); otherwise starts from the
    ///    latest valid snapshot, or the start of the queue;
    /// 4. replays the queue up to and including *c* ([`Restore`]).
    ///
    /// # Errors
    ///
    /// [`StateError::NotVisible`] if the claim does not become readable in
    /// time; [`StateError::Truncated`] if retention deleted what the
    /// restore needs; [`StateError::Log`] and [`StateError::RocksDb`] as
    /// they come (but a corrupt local database, which is rebuilt from the
    /// queue once: its summary's `discarded_local` says so); [`StateError::Malformed`] for a message of this engine's
    /// format that does not decode (corrupt state, or an older release's).
    /// Foreign bytes ([`Change::is_foreign`]) are no error: they are listed
    /// in the summary for the caller's error policy.
    pub async fn claim<L: StateLog>(
        log: &L,
        path: &Path,
        cache: usize,
        rocksdb: &RocksDbOptions,
        options: ProtocolOptions,
    ) -> Result<(OwnedQueue, RestoreSummary)> {
        match Self::claim_once(log, path, cache, rocksdb, options.clone()).await {
            // A corrupt local database proves nothing: the state queue
            // holds the state, so it is rebuilt from there (once), never
            // retried as it is.
            Err(e) if e.is_corruption() => {
                tracing::warn!(queue = %log.name(), path = %path.display(), error = %e,
                    "local state is corrupt; rebuilding it from the state queue");
                QueueStore::destroy(path)?;
                let (owned, mut summary) = Self::claim_once(log, path, cache, rocksdb, options).await?;
                summary.discarded_local = Some(format!("the local database was corrupt: {e}"));
                Ok((owned, summary))
            }
            result => result,
        }
    }

    /// One try of [`claim`](Self::claim).
    async fn claim_once<L: StateLog>(
        log: &L,
        path: &Path,
        cache: usize,
        rocksdb: &RocksDbOptions,
        options: ProtocolOptions,
    ) -> Result<(OwnedQueue, RestoreSummary)> {
        let mut store = QueueStore::open_with(path, cache, rocksdb)?;
        let local = store.checkpoint()?;
        let token = new_token();
        let (claim_at, first) = claim_readable(log, token, &options).await?;

        let mut discarded_local = None;
        let mut start = None;
        if let Some(cp) = local {
            match verify(log, &cp, claim_at, first, &options).await? {
                Ok(()) => {
                    start = Some(Start {
                        checkpoint: Some(cp),
                        from: cp.state_next,
                        snapshot_len: 0,
                    })
                }
                Err(why) => discarded_local = Some(why),
            }
        }
        let from_local = start.is_some();
        let start = match start {
            Some(start) => start,
            None => {
                let snapshot = find_snapshot(log, first, claim_at, &options).await?;
                if snapshot.is_none() && first > 0 {
                    // Neither a snapshot nor the queue's start is left: the
                    // local database (if any) is kept for the operator.
                    return Err(StateError::Truncated {
                        queue: log.name(),
                        needed: 0,
                        first,
                    });
                }
                if let Some(why) = &discarded_local {
                    tracing::warn!(queue = %log.name(), "local state is not from this state queue ({why}); rebuilding it from the queue");
                }
                // Whatever the database holds is not a checkpoint of this
                // queue (or an interrupted restore): start empty.
                drop(store);
                QueueStore::destroy(path)?;
                store = QueueStore::open_with(path, cache, rocksdb)?;
                match snapshot {
                    Some((checkpoint, entries)) => {
                        store.apply_restored(&entries, checkpoint)?;
                        Start {
                            checkpoint: Some(checkpoint),
                            from: checkpoint.state_next,
                            snapshot_len: entries.len() as u64,
                        }
                    }
                    None => Start {
                        checkpoint: None,
                        from: 0,
                        snapshot_len: 0,
                    },
                }
            }
        };
        if start.from < first {
            return Err(StateError::Truncated {
                queue: log.name(),
                needed: start.from,
                first,
            });
        }
        let mut restore = Restore::new(start.checkpoint);
        let mut malformed = Vec::new();
        scan(log, start.from, claim_at, &options, |record| {
            match restore.feed(&mut store, record.offset, &record.body) {
                Ok(()) => failpoint("restore.replay"),
                Err(StateError::Malformed(why)) if Change::is_foreign(&record.body) => {
                    malformed.push((record.offset, record.body.clone(), why))
                }
                Err(e) => return Err(e),
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        // The last message fed was the claim: the epoch is ours.
        debug_assert_eq!(restore.epoch(), Some(claim_at));
        let source_next = restore.source_next();
        let mut summary = restore.finish(&mut store, claim_at + 1)?;
        summary.applied += start.snapshot_len;
        summary.from_local = from_local;
        summary.discarded_local = discarded_local;
        summary.malformed = malformed;
        Ok((
            OwnedQueue {
                store: Some(store),
                epoch: claim_at,
                token,
                source_next,
                write_next: claim_at + 1,
                // From a snapshot: what follows it. Otherwise the queue may
                // hold no snapshot (or one before the local checkpoint):
                // count from its first offset, at worst one snapshot early.
                since_snapshot: u64::try_from(claim_at + 1 - if start.snapshot_len > 0 { start.from } else { first })
                    .unwrap_or(0),
                snapshot_len: start.snapshot_len,
                fenced_by: None,
                last_snapshot: Instant::now(),
                options,
            },
            summary,
        ))
    }

    /// This owner's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The source offset the state is complete up to: the next source
    /// record to process. `None` before the first marker of the queue.
    pub fn source_next(&self) -> Option<i64> {
        self.source_next
    }

    /// The store, unless it was taken.
    pub fn store(&mut self) -> Option<&mut QueueStore> {
        self.store.as_mut()
    }

    /// Takes the store out (to lend it to a batch's processing).
    pub fn take_store(&mut self) -> Option<QueueStore> {
        self.store.take()
    }

    /// Gives back the store [`take_store`](Self::take_store) took.
    pub fn put_store(&mut self, store: QueueStore) {
        self.store = Some(store);
    }

    fn store_ref(&self) -> &QueueStore {
        self.store.as_ref().expect("the store is back before a checkpoint")
    }

    /// Makes the state up to source offset `source_next` durable: sends
    /// the store's dirty entries and then a marker (each acknowledged),
    /// then commits them to RocksDB with the new checkpoint, and writes a
    /// snapshot when one is due. Returns the checkpoint.
    ///
    /// # Errors
    ///
    /// [`StateError::Fenced`] if a newer owner claimed the queue (the
    /// caller drops it); [`StateError::Log`] and [`StateError::RocksDb`] as
    /// they come, the entries staying dirty.
    ///
    /// # Panics
    ///
    /// If the store is taken.
    pub async fn checkpoint<L: StateLog>(&mut self, log: &L, source_next: i64) -> Result<Checkpoint> {
        if let Some(newer) = self.fenced_by {
            return Err(StateError::Fenced {
                queue: log.name(),
                epoch: self.epoch,
                newer,
            });
        }
        // The operators encoded their decoded values in their flush; any
        // left (a path that checkpoints without flushing) are encoded here,
        // and one that cannot be is an error, never a silent loss.
        let store = self.store.as_mut().expect("the store is back before a checkpoint");
        if store.decoded_dirty() > 0 {
            if let Some((key, message)) = store.encode_all_decoded().into_iter().next() {
                return Err(StateError::Codec {
                    key: format!("{key:?}"),
                    message,
                });
            }
        }
        let changes = self.store_ref().changes(self.epoch);
        let entries = changes.len() as u64;
        let bodies = Change::frame(self.epoch, &changes);
        drop(changes);
        failpoint("checkpoint.before-changelog");
        if !bodies.is_empty() {
            let messages = bodies.len() as u64;
            // Before the marker: a newer owner's claim among the changes
            // means this owner must stop here.
            self.append(log, bodies).await?;
            // `append` counted messages; a restore replays entries, and
            // snapshots are due by those.
            self.since_snapshot += entries.saturating_sub(messages);
        }
        failpoint("checkpoint.before-marker");
        let marker = Change::Marker {
            epoch: self.epoch,
            token: self.token,
            source_next,
        };
        let at = self.append(log, vec![marker.encode()]).await?;
        failpoint("checkpoint.before-rocksdb");
        let checkpoint = Checkpoint {
            state_next: at + 1,
            source_next: Some(source_next),
            epoch: self.epoch,
            token: self.token,
        };
        self.store
            .as_mut()
            .expect("the store is back before a checkpoint")
            .commit(checkpoint)?;
        self.source_next = Some(source_next);
        failpoint("checkpoint.before-offset-commit");
        let due = self.options.snapshot_after.max(2 * self.snapshot_len);
        if self.since_snapshot >= due {
            // The checkpoint stands whatever becomes of the snapshot: one
            // that fails is not valid, and the next due checkpoint tries
            // again (a newer claim it met fails that checkpoint).
            if let Err(error) = self.snapshot(log, source_next).await {
                tracing::warn!(queue = %log.name(), %error, "snapshot not written; the next checkpoint tries again");
            }
        }
        Ok(checkpoint)
    }

    /// Writes a snapshot if the last one is older than
    /// [`ProtocolOptions::snapshot_max_age`] (an idle queue's state then
    /// outlives the broker's retention). Call when the store is committed
    /// (no checkpoint under way); a failure is logged, not returned.
    pub async fn snapshot_if_old<L: StateLog>(&mut self, log: &L) {
        if self.fenced_by.is_some() || self.last_snapshot.elapsed() < self.options.snapshot_max_age {
            return;
        }
        if let Err(error) = self.snapshot(log, self.source_next.unwrap_or(-1)).await {
            tracing::warn!(queue = %log.name(), %error, "snapshot not written; the next due one tries again");
        }
    }

    /// Writes the whole state (RocksDB, just committed at a marker) as a
    /// snapshot of the state up to `source_next` (-1: no marker yet). A snapshot interrupted (a crash, a newer claim, a failed
    /// send) is simply not valid; the next one is tried at the next due
    /// checkpoint.
    async fn snapshot<L: StateLog>(&mut self, log: &L, source_next: i64) -> Result<()> {
        let mut count = 0u64;
        let mut chunk = Vec::with_capacity(self.options.snapshot_batch);
        let mut entries = Vec::new();
        // Collected first: the database's iterator borrows the store, and
        // appends need `self`. Entries are `Bytes` of the values RocksDB
        // holds, so this is the state's size once, for the snapshot's span.
        for entry in self.store_ref().entries() {
            entries.push(entry?);
        }
        // Where the entries begin: the first offset of the first append
        // that was acknowledged whole. A part of it stored by a failed try
        // before (the sink splits an append into sends and stops at the
        // first that fails) lies before it, outside the snapshot; parts of
        // later appends stored twice lie inside it, and a restore reads
        // them as the repeats they are (see `find_snapshot`).
        let mut begin = None;
        for (key, value) in entries {
            chunk.push(
                Change::Snapshot {
                    epoch: self.epoch,
                    key,
                    value,
                }
                .encode(),
            );
            count += 1;
            if chunk.len() >= self.options.snapshot_batch {
                let n = chunk.len() as i64;
                let last = self.append(log, std::mem::take(&mut chunk)).await?;
                begin.get_or_insert(last + 1 - n);
            }
        }
        if !chunk.is_empty() {
            let n = chunk.len() as i64;
            let last = self.append(log, chunk).await?;
            begin.get_or_insert(last + 1 - n);
        }
        let end = Change::SnapshotEnd {
            epoch: self.epoch,
            token: self.token,
            source_next,
            count,
            // No entries: the end itself, if nobody writes before it.
            begin: Some(begin.unwrap_or(self.write_next)),
        };
        self.append(log, vec![end.encode()]).await?;
        self.since_snapshot = 0;
        self.snapshot_len = count;
        self.last_snapshot = Instant::now();
        Ok(())
    }

    /// Appends `bodies` and returns the offset of the last. If somebody
    /// else wrote since this owner's previous append, looks for a newer
    /// claim among what they wrote: [`StateError::Fenced`] if there is one.
    async fn append<L: StateLog>(&mut self, log: &L, bodies: Vec<Bytes>) -> Result<i64> {
        let n = bodies.len() as i64;
        let last = log.append(bodies).await?;
        let expected = self.write_next;
        self.write_next = last + 1;
        self.since_snapshot += u64::try_from(last + 1 - expected).unwrap_or(0);
        if last + 1 - n == expected {
            return Ok(last);
        }
        tracing::trace!(queue = %log.name(), expected, last, "another writer: checking for a newer claim");
        wait_readable(log, last, &self.options, Instant::now(), None).await?;
        let epoch = self.epoch;
        match claim_after(log, epoch, expected, last, &self.options).await? {
            Some(newer) => {
                self.fenced_by = Some(newer);
                Err(StateError::Fenced {
                    queue: log.name(),
                    epoch,
                    newer,
                })
            }
            None => Ok(last),
        }
    }

    /// Makes sure that everything the broker of this queue acknowledged
    /// before now — to any queue of that broker, by any writer — is
    /// readable: appends a marker that repeats the last one (the state it
    /// marks is unchanged; a restore applies nothing at it) and waits, at
    /// most `patience`, until it is readable. A broker makes its messages
    /// readable in the order it stored them, so then every earlier one is
    /// too. `false` when it did not become readable in time, or the queue
    /// has no marker yet to repeat.
    ///
    /// Why: an idle step may close windows only once every record the job
    /// consumed has arrived here; the shuffle frames behind the group's
    /// committed offsets are acknowledged, but maybe not yet readable, and
    /// a shuffle queue's end read too early misses them. This is exact
    /// whatever else the broker is busy with, where a broker-wide dispatch
    /// backlog of zero may never be seen on a shared broker (issue 28).
    ///
    /// # Errors
    ///
    /// [`StateError::Fenced`] if a newer owner claimed the queue;
    /// [`StateError::Log`] as it comes.
    pub async fn settle<L: StateLog>(&mut self, log: &L, patience: Duration) -> Result<bool> {
        let Some(source_next) = self.source_next else {
            return Ok(false);
        };
        let marker = Change::Marker {
            epoch: self.epoch,
            token: self.token,
            source_next,
        };
        let at = self.append(log, vec![marker.encode()]).await?;
        let since = Instant::now();
        Ok(wait_readable(log, at, &self.options, since, Some(patience))
            .await?
            .is_some())
    }

    /// What tells this owner, without touching its store, whether a newer
    /// owner has claimed the queue since its last append (see
    /// [`FenceProbe`]).
    pub fn fence_probe(&self) -> FenceProbe {
        FenceProbe {
            epoch: self.epoch,
            from: self.write_next,
            options: self.options.clone(),
        }
    }

    /// Closes the store, keeping the database: an owner that gets the
    /// queue back replays only what was written since.
    pub fn close(self) {
        drop(self.store);
    }
}

/// Checks, away from the owner, whether a newer owner claimed its queue:
/// the runtime asks before every send of a keyed queue's outputs, and
/// again before each retry of a failed send. An owner that runs on after
/// another claimed its queue (a rebalance that gave the queue to two
/// instances for a while, or the owner cut off from the broker of its
/// output or state queue) must not deliver results computed on state that
/// the newer owner has already replayed and emitted: its late outputs
/// would land after the newer owner's and undo a key's latest result.
#[derive(Debug, Clone)]
pub struct FenceProbe {
    epoch: Epoch,
    /// Where the owner's own writes end: a newer claim can only be after it
    /// (the owner's appends check what came before).
    from: i64,
    options: ProtocolOptions,
}

impl FenceProbe {
    /// The owner's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The offset of a claim newer than the owner's, among the readable
    /// messages after its last append, if there is one.
    ///
    /// # Errors
    ///
    /// [`StateError::Log`] if the state queue cannot be read (its broker
    /// unreachable: the caller cannot tell, and must not send).
    pub async fn newer_claim<L: StateLog>(&self, log: &L) -> Result<Option<i64>> {
        let (_, end) = log.bounds().await?;
        if end <= self.from {
            return Ok(None);
        }
        claim_after(log, self.epoch, self.from, end - 1, &self.options).await
    }
}

/// The offset of the first claim newer than `epoch` among the messages
/// `from..=last` of `log` (readable), if any.
async fn claim_after<L: StateLog>(
    log: &L,
    epoch: Epoch,
    from: i64,
    last: i64,
    options: &ProtocolOptions,
) -> Result<Option<i64>> {
    let mut newer = None;
    scan(log, from, last, options, |r| {
        if r.offset > epoch && matches!(Change::decode(&r.body), Ok(Change::Claim { .. })) {
            newer = Some(r.offset);
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })
    .await?;
    Ok(newer)
}

/// Feeds `f` every message of `log` from `from` through `last` (both
/// readable), in order, until it breaks. A read that returns nothing
/// before `last` is retried, bounded by [`ProtocolOptions::visibility_wait`].
async fn scan<L: StateLog>(
    log: &L,
    mut from: i64,
    last: i64,
    options: &ProtocolOptions,
    mut f: impl FnMut(&LogRecord) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let mut stalled_since: Option<Instant> = None;
    while from <= last {
        let chunk = log.read(from, options.read_batch).await?;
        let skipped_to = chunk.records.first().map_or(chunk.next, |r| r.offset);
        if skipped_to > from {
            // The broker moved us forward: retention deleted `from`.
            return Err(StateError::Truncated {
                queue: log.name(),
                needed: from,
                first: skipped_to,
            });
        }
        if chunk.records.is_empty() {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > options.visibility_wait {
                return Err(not_visible(log, last, from, since.elapsed()));
            }
            log.pause(options.poll_interval).await;
            continue;
        }
        stalled_since = None;
        for record in chunk.records.iter().take_while(|r| r.offset <= last) {
            if f(record)?.is_break() {
                return Ok(());
            }
        }
        from = chunk.next.max(from + 1);
    }
    Ok(())
}

/// Finds the latest valid snapshot before `claim_at`, searching back from
/// the claim: the checkpoint it stands for and its entries.
async fn find_snapshot<L: StateLog>(
    log: &L,
    first: i64,
    claim_at: i64,
    options: &ProtocolOptions,
) -> Result<Option<(Checkpoint, Vec<Change>)>> {
    let mut hi = claim_at;
    while hi > first {
        let lo = (hi - i64::from(options.read_batch)).max(first);
        let mut ends = Vec::new();
        scan(log, lo, hi - 1, options, |r| {
            if let Ok(Change::SnapshotEnd {
                epoch,
                token,
                source_next,
                count,
                begin,
            }) = Change::decode(&r.body)
            {
                // An end of before issue 28: its entries are the `count`
                // messages before it.
                let begin = begin.unwrap_or_else(|| r.offset - i64::try_from(count).unwrap_or(i64::MAX));
                ends.push((r.offset, epoch, token, source_next, count, begin));
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        for &(at, epoch, token, source_next, count, begin) in ends.iter().rev() {
            if begin < first || begin > at {
                continue;
            }
            let mut entries = SnapshotEntries::new(epoch);
            scan(log, begin, at - 1, options, |r| {
                Ok(if entries.take(&r.body) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                })
            })
            .await?;
            if let Some(entries) = entries.complete(count) {
                let checkpoint = Checkpoint {
                    state_next: at + 1,
                    source_next: (source_next >= 0).then_some(source_next),
                    epoch,
                    token,
                };
                return Ok(Some((checkpoint, entries)));
            }
        }
        hi = lo;
    }
    Ok(None)
}

/// The entries of one snapshot, read in order from its first offset to
/// its end, and whether they are valid.
///
/// A snapshot is written in key order (RocksDB's), so its keys increase.
/// An append the sink had partly stored before it failed and that was
/// then sent again whole shows as a run of keys that do not increase: each
/// must repeat, with the same value, an entry read before it. Anything
/// else (a message that is no snapshot entry of the snapshot's epoch, a
/// key out of order that is no repeat) makes the snapshot invalid.
struct SnapshotEntries {
    epoch: Epoch,
    entries: Vec<Change>,
    valid: bool,
}

impl SnapshotEntries {
    fn new(epoch: Epoch) -> SnapshotEntries {
        SnapshotEntries {
            epoch,
            entries: Vec::new(),
            valid: true,
        }
    }

    /// Takes the next message; `false` once the snapshot is invalid.
    fn take(&mut self, body: &Bytes) -> bool {
        let (key, value) = match Change::decode(body) {
            Ok(Change::Snapshot { epoch, key, value }) if epoch == self.epoch => (key, value),
            _ => {
                self.valid = false;
                return false;
            }
        };
        let last = match self.entries.last() {
            Some(Change::Snapshot { key, .. }) => Some(key),
            _ => None,
        };
        if last.is_none_or(|last| key > *last) {
            self.entries.push(Change::Snapshot {
                epoch: self.epoch,
                key,
                value,
            });
            return true;
        }
        // Not increasing: only a repeat of an entry already read will do.
        let repeat = self
            .entries
            .binary_search_by(|e| match e {
                Change::Snapshot { key: k, .. } => k.cmp(&key),
                _ => std::cmp::Ordering::Less,
            })
            .is_ok_and(|at| matches!(&self.entries[at], Change::Snapshot { value: v, .. } if *v == value));
        self.valid = repeat;
        repeat
    }

    /// The entries, if the snapshot is valid and holds `count` of them.
    fn complete(self, count: u64) -> Option<Vec<Change>> {
        (self.valid && self.entries.len() as u64 == count).then_some(self.entries)
    }
}

/// Appends a claim and waits until it is readable, claiming again each
/// [`ProtocolOptions::reclaim_after`]; returns the offset of the last claim
/// (the epoch) and the queue's first offset.
async fn claim_readable<L: StateLog>(log: &L, token: u64, options: &ProtocolOptions) -> Result<(i64, i64)> {
    let started = Instant::now();
    loop {
        let claim_at = log.append(vec![Change::Claim { token }.encode()]).await?;
        match wait_readable(log, claim_at, options, started, Some(options.reclaim_after)).await? {
            Some((first, _)) => return Ok((claim_at, first)),
            None => tracing::debug!(queue = %log.name(), claim_at, "claim not readable yet; claiming again"),
        }
    }
}

/// Waits until `offset` is readable and returns the queue's bounds then;
/// `None` once `patience` (if any) has passed. Fails with
/// [`StateError::NotVisible`] once [`ProtocolOptions::visibility_wait`] has
/// passed since `since`.
async fn wait_readable<L: StateLog>(
    log: &L,
    offset: i64,
    options: &ProtocolOptions,
    since: Instant,
    patience: Option<Duration>,
) -> Result<Option<(i64, i64)>> {
    let waiting = Instant::now();
    loop {
        let (first, end) = log.bounds().await?;
        if end > offset {
            return Ok(Some((first, end)));
        }
        if since.elapsed() > options.visibility_wait {
            return Err(not_visible(log, offset, end, since.elapsed()));
        }
        if patience.is_some_and(|p| waiting.elapsed() > p) {
            return Ok(None);
        }
        log.pause(options.poll_interval).await;
    }
}

fn not_visible<L: StateLog>(log: &L, acknowledged: i64, visible: i64, waited: Duration) -> StateError {
    StateError::NotVisible {
        queue: log.name(),
        acknowledged,
        visible,
        waited,
    }
}

/// Whether the local checkpoint `cp` was built from this queue: the
/// message at `cp.state_next - 1` must be the claim or marker it names.
/// `Ok(Err(why))`: it was not (a different queue, e.g. a topic deleted and
/// created again); the caller rebuilds.
async fn verify<L: StateLog>(
    log: &L,
    cp: &Checkpoint,
    claim_at: i64,
    first: i64,
    options: &ProtocolOptions,
) -> Result<std::result::Result<(), String>> {
    let at = cp.state_next - 1;
    if at >= claim_at {
        // Everything acknowledged before our claim is readable, and the
        // local database claims more than that.
        return Ok(Err(format!(
            "the local checkpoint names offset {at}, past this queue's claim at {claim_at}"
        )));
    }
    if at < first {
        // Retention deleted it: nothing proves the database is this
        // queue's, and the tail after it may be gone too. A snapshot may
        // still serve; the caller rebuilds from it or fails `Truncated`.
        return Ok(Err(format!(
            "offset {at}, which the local checkpoint names, was deleted (the queue begins at {first})"
        )));
    }
    let mut found = None;
    scan(log, at, at, options, |r| {
        found = Some(r.body.clone());
        Ok(ControlFlow::Break(()))
    })
    .await?;
    let matches = match found.as_ref().map(Change::decode) {
        Some(Ok(Change::Claim { token })) => at == cp.epoch && token == cp.token,
        Some(Ok(
            Change::Marker {
                epoch,
                token,
                source_next,
            }
            | Change::SnapshotEnd {
                epoch,
                token,
                source_next,
                ..
            },
        )) => epoch == cp.epoch && token == cp.token && source_next == cp.source_next.unwrap_or(-1),
        _ => false,
    };
    Ok(if matches {
        Ok(())
    } else {
        Err(format!(
            "offset {at} is not the claim or marker the local checkpoint names (epoch {}, token {:#x})",
            cp.epoch, cp.token
        ))
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::log::MemoryLog;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn claim(log: &impl StateLog, dir: &Path) -> Result<(OwnedQueue, RestoreSummary)> {
        claim_with(log, dir, ProtocolOptions::default())
    }

    fn claim_with(log: &impl StateLog, dir: &Path, options: ProtocolOptions) -> Result<(OwnedQueue, RestoreSummary)> {
        let options = ProtocolOptions {
            visibility_wait: Duration::from_millis(200),
            ..options
        };
        block_on(OwnedQueue::claim(log, dir, 100, &RocksDbOptions::default(), options))
    }

    /// A log whose appends are sent again whole after a failure, as the
    /// runtime's sends are (`send_with_retry`): what a failed try stored
    /// stays, and is stored again.
    struct Resending<'a>(&'a MemoryLog);

    impl StateLog for Resending<'_> {
        fn name(&self) -> String {
            self.0.name()
        }

        async fn append(&self, bodies: Vec<Bytes>) -> Result<i64> {
            loop {
                match self.0.append(bodies.clone()).await {
                    Err(e) if e.is_retriable() => continue,
                    result => return result,
                }
            }
        }

        async fn bounds(&self) -> Result<(i64, i64)> {
            self.0.bounds().await
        }

        async fn read(&self, from: i64, max: u32) -> Result<crate::log::LogChunk> {
            self.0.read(from, max).await
        }

        async fn pause(&self, pause: Duration) {
            self.0.pause(pause).await
        }
    }

    /// Every key and value of the owner's committed state.
    fn state_of(owner: &mut OwnedQueue) -> Vec<(Bytes, Bytes)> {
        owner.store().expect("store").scan().expect("scan")
    }

    /// Counts `words` into the owner's store, as the runtime's count does.
    fn count(owner: &mut OwnedQueue, words: &[&str]) {
        let store = owner.store().expect("store");
        for w in words {
            let n = store
                .get(w.as_bytes())
                .expect("get")
                .map_or(0, |v| String::from_utf8_lossy(&v).parse::<u64>().expect("a count"));
            store.put(b(w), b(&(n + 1).to_string()));
        }
    }

    fn value(owner: &mut OwnedQueue, key: &str) -> Option<String> {
        let v = owner.store().expect("store").get(key.as_bytes()).expect("get")?;
        Some(String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn a_checkpoint_encodes_decoded_values_an_operator_left_and_refuses_one_that_cannot_be() {
        use crate::decoded::Decimal;
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut owner, _) = claim(&log, &dir.path().join("q")).expect("claim");
        let store = owner.store().expect("store");
        store.update::<Decimal, _>(1, b"a", |v| *v = Some(12)).expect("update");
        block_on(owner.checkpoint(&log, 1)).expect("checkpoint");
        owner
            .store()
            .expect("store")
            .update::<Decimal, _>(1, b"a", |v| *v = Some(13))
            .expect("update");
        let err = block_on(owner.checkpoint(&log, 2)).expect_err("13 does not encode");
        assert!(matches!(err, StateError::Codec { .. }), "{err}");
        owner.close();
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, _) = claim(&log, &other.path().join("q")).expect("restore");
        assert_eq!(moved.source_next(), Some(1));
        assert_eq!(value(&mut moved, "a").as_deref(), Some("12"));
    }

    /// The failure of issue 10, without a broker: the broker acknowledged a
    /// checkpoint's changes and marker, but its readable end trails them
    /// when the next owner restores. The old restore took the local
    /// database for foreign (its checkpoint was past the readable end) and
    /// rebuilt it from the shorter queue, while the committed source offset
    /// skipped the records in between: counts were lost.
    #[test]
    fn a_restore_behind_a_trailing_end_loses_nothing() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let (mut owner, summary) = claim(&log, &path).expect("claim");
        assert_eq!((summary.markers, summary.from_local), (0, false));
        assert_eq!(owner.source_next(), None);
        count(&mut owner, &["a", "b", "a"]);
        block_on(owner.checkpoint(&log, 3)).expect("checkpoint");
        // From here on the broker makes each append readable only after a
        // few polls: the next checkpoint is acknowledged, not yet readable.
        log.hide_appends_for(5);
        count(&mut owner, &["a", "c"]);
        let cp = block_on(owner.checkpoint(&log, 5)).expect("checkpoint");
        assert!(
            block_on(log.bounds()).expect("bounds").1 < cp.state_next,
            "the end trails"
        );
        owner.close();

        // The same instance restarts on its local database.
        let (mut again, summary) = claim(&log, &path).expect("restore");
        assert!(summary.from_local, "the local database was kept: {summary:?}");
        assert_eq!(summary.discarded_local, None);
        assert_eq!(again.source_next(), Some(5));
        assert_eq!(value(&mut again, "a").as_deref(), Some("3"));
        assert_eq!(value(&mut again, "c").as_deref(), Some("1"));
        count(&mut again, &["c"]);
        block_on(again.checkpoint(&log, 6)).expect("checkpoint");
        again.close();

        // Another instance, with no local database, while the end trails.
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, summary) = claim(&log, &other.path().join("q")).expect("restore");
        assert!(!summary.from_local);
        assert_eq!(moved.source_next(), Some(6));
        assert_eq!(value(&mut moved, "a").as_deref(), Some("3"));
        assert_eq!(value(&mut moved, "b").as_deref(), Some("1"));
        assert_eq!(value(&mut moved, "c").as_deref(), Some("2"));
    }

    #[test]
    fn a_restore_reads_one_snapshot_and_the_tail_and_survives_retention() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let small = ProtocolOptions {
            snapshot_after: 8,
            snapshot_batch: 2,
            read_batch: 3,
            ..ProtocolOptions::default()
        };
        let (mut owner, _) = claim_with(&log, &dir.path().join("q"), small.clone()).expect("claim");
        let mut snapshot_ends = Vec::new();
        for i in 0..12i64 {
            count(&mut owner, &["a", if i % 2 == 0 { "b" } else { "c" }]);
            let before = log.acknowledged_end();
            block_on(owner.checkpoint(&log, i + 1)).expect("checkpoint");
            for at in before..log.acknowledged_end() {
                if matches!(
                    Change::decode(&log.get(at).expect("message")),
                    Ok(Change::SnapshotEnd { .. })
                ) {
                    snapshot_ends.push(at);
                }
            }
        }
        owner.close();
        assert!(snapshot_ends.len() >= 2, "snapshots were written: {snapshot_ends:?}");
        let last_end = *snapshot_ends.last().expect("a snapshot");
        // Retention deleted everything before the last snapshot's entries.
        log.truncate_before(last_end - 3);
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, summary) = claim_with(&log, &other.path().join("q"), small.clone()).expect("restore");
        assert!(!summary.from_local);
        assert_eq!(moved.source_next(), Some(12));
        assert_eq!(value(&mut moved, "a").as_deref(), Some("12"));
        assert_eq!(value(&mut moved, "b").as_deref(), Some("6"));
        assert_eq!(value(&mut moved, "c").as_deref(), Some("6"));
        // It read the snapshot and what followed it, not the whole queue.
        assert!(summary.markers < 12, "{summary:?}");
        moved.close();

        // Past the last snapshot: nothing to restore from, a clear error.
        log.truncate_before(last_end + 1);
        let third = tempfile::tempdir().expect("tempdir");
        let err = claim_with(&log, &third.path().join("q"), small).expect_err("truncated");
        assert!(matches!(err, StateError::Truncated { needed: 0, .. }), "{err}");
    }

    #[test]
    fn an_idle_queue_is_snapshotted_by_age_and_outlives_retention() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let aged = ProtocolOptions {
            snapshot_max_age: Duration::ZERO,
            ..ProtocolOptions::default()
        };
        // A queue that never got a record: nothing but its claims.
        let (mut idle, _) = claim_with(&log, &dir.path().join("q"), aged.clone()).expect("claim");
        block_on(idle.snapshot_if_old(&log));
        idle.close();
        let end = log.acknowledged_end();
        assert!(matches!(
            Change::decode(&log.get(end - 1).expect("message")),
            Ok(Change::SnapshotEnd {
                source_next: -1,
                count: 0,
                ..
            })
        ));
        // Retention deletes all but the snapshot: a new owner restores.
        log.truncate_before(end - 1);
        let other = tempfile::tempdir().expect("tempdir");
        let (moved, _) = claim_with(&log, &other.path().join("q"), aged).expect("restored from the snapshot");
        assert_eq!(moved.source_next(), None);
    }

    #[test]
    fn foreign_bytes_go_to_the_policy_but_corrupt_or_old_state_stops_the_restore() {
        let log = MemoryLog::new();
        log.append_now(Bytes::from_static(b"\xffsomebody else's message"));
        let dir = tempfile::tempdir().expect("tempdir");
        let (owner, summary) = claim(&log, &dir.path().join("q")).expect("foreign bytes are skipped");
        assert_eq!(summary.malformed.len(), 1);
        owner.close();
        for (body, says) in [
            (&b"\x03\x02\x01"[..], "bad length"),
            (&b"\x01\x02\x00\x00\x00\x00\x00\x00\x00\x00"[..], "version 1"),
            (&b"\x02\x04\x00\x00\x00\x00\x00\x00\x00\x00"[..], "version 2"),
        ] {
            let log = MemoryLog::new();
            log.append_now(Bytes::from_static(body));
            let fresh = tempfile::tempdir().expect("tempdir");
            let err = claim(&log, &fresh.path().join("q")).expect_err("state that does not decode stops the restore");
            assert!(
                matches!(err, StateError::Malformed(_)) && err.to_string().contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn a_claim_that_never_becomes_readable_fails_with_a_clear_error() {
        let log = MemoryLog::new();
        log.hide_appends_for(u64::MAX / 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let err = claim(&log, &dir.path().join("q")).expect_err("must not restore from a short queue");
        assert!(
            matches!(
                err,
                StateError::NotVisible {
                    acknowledged: 0,
                    visible: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_retriable());
    }

    #[test]
    fn a_claim_stuck_behind_a_stalled_dispatch_is_made_again() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut owner, _) = claim(&log, &dir.path().join("q")).expect("claim");
        count(&mut owner, &["a"]);
        block_on(owner.checkpoint(&log, 1)).expect("checkpoint");
        owner.close();
        // The broker makes a write readable only when the next one comes.
        log.stall_appends(1);
        let options = ProtocolOptions {
            visibility_wait: Duration::from_secs(10),
            reclaim_after: Duration::from_millis(1),
            ..ProtocolOptions::default()
        };
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, _) = block_on(OwnedQueue::claim(
            &log,
            &other.path().join("q"),
            100,
            &RocksDbOptions::default(),
            options,
        ))
        .expect("a second claim makes the first readable");
        assert_eq!(moved.epoch(), 4, "claimed again after the stalled claim at 3");
        assert_eq!(moved.source_next(), Some(1));
        assert_eq!(value(&mut moved, "a").as_deref(), Some("1"));
    }

    #[test]
    fn a_fence_probe_sees_a_newer_claim_and_only_that() {
        let log = MemoryLog::new();
        let (da, db) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (mut a, _) = claim(&log, &da.path().join("q")).expect("claim a");
        count(&mut a, &["x"]);
        block_on(a.checkpoint(&log, 1)).expect("checkpoint a");
        let probe = a.fence_probe();
        assert_eq!(probe.epoch(), a.epoch());
        assert_eq!(
            block_on(probe.newer_claim(&log)).expect("probe"),
            None,
            "a's own writes"
        );
        // b claims while a waits to send (its output's broker down).
        let (b, _) = claim(&log, &db.path().join("q")).expect("claim b");
        assert_eq!(block_on(probe.newer_claim(&log)).expect("probe"), Some(b.epoch()));
        assert_eq!(
            block_on(b.fence_probe().newer_claim(&log)).expect("probe"),
            None,
            "b is the newest owner"
        );
    }

    #[test]
    fn a_fenced_owner_is_told_and_its_late_writes_never_count() {
        let log = MemoryLog::new();
        let (da, db, dc) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (mut a, _) = claim(&log, &da.path().join("q")).expect("claim a");
        count(&mut a, &["x", "y"]);
        block_on(a.checkpoint(&log, 2)).expect("checkpoint a");
        // A rebalance gives the queue to b while a still runs (a paused owner).
        let (mut b, _) = claim(&log, &db.path().join("q")).expect("claim b");
        assert_eq!(b.source_next(), Some(2));
        // a processes records b will process too, and tries to checkpoint.
        count(&mut a, &["x", "x"]);
        let err = block_on(a.checkpoint(&log, 4)).expect_err("a is fenced");
        assert!(
            matches!(err, StateError::Fenced { newer, .. } if newer == b.epoch()),
            "{err}"
        );
        count(&mut b, &["x"]);
        block_on(b.checkpoint(&log, 3)).expect("checkpoint b");
        // A third owner sees b's state, never a's late writes.
        let (mut c, summary) = claim(&log, &dc.path().join("q")).expect("claim c");
        assert_eq!(c.source_next(), Some(3));
        assert_eq!(value(&mut c, "x").as_deref(), Some("2"));
        assert_eq!(value(&mut c, "y").as_deref(), Some("1"));
        assert!(summary.ignored > 0 || summary.discarded > 0, "{summary:?}");
    }

    #[test]
    fn a_local_database_of_another_queue_is_rebuilt_and_a_truncated_queue_refused() {
        let (first, second) = (MemoryLog::new(), MemoryLog::new());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let (mut owner, _) = claim(&first, &path).expect("claim");
        for i in 0..5 {
            count(&mut owner, &["k"]);
            block_on(owner.checkpoint(&first, i + 1)).expect("checkpoint");
        }
        owner.close();
        // The state topic was deleted and created again: a shorter queue.
        second.append_now(Change::Claim { token: 7 }.encode());
        let (mut rebuilt, summary) = claim(&second, &path).expect("restore");
        assert!(summary.discarded_local.is_some(), "{summary:?}");
        assert_eq!(value(&mut rebuilt, "k"), None);
        assert_eq!(rebuilt.source_next(), None);
        rebuilt.close();

        // Retention deleted the beginning of the queue: nothing to restore from.
        first.truncate_before(3);
        let empty = tempfile::tempdir().expect("tempdir");
        let err = claim(&first, &empty.path().join("q")).expect_err("truncated");
        assert!(
            matches!(
                err,
                StateError::Truncated {
                    needed: 0,
                    first: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retriable());
    }

    /// Issue 28: a corrupt local database failed the restore with an error
    /// counted retriable, so the runtime retried it forever. It is now
    /// rebuilt from the state queue.
    #[test]
    fn a_corrupt_local_database_is_rebuilt_from_the_queue() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let (mut owner, _) = claim(&log, &path).expect("claim");
        count(&mut owner, &["a", "b", "a"]);
        block_on(owner.checkpoint(&log, 3)).expect("checkpoint");
        owner.close();
        std::fs::write(path.join("CURRENT"), b"not a manifest name").expect("corrupt it");
        let (mut again, summary) = claim(&log, &path).expect("rebuilt");
        assert!(
            summary
                .discarded_local
                .as_deref()
                .is_some_and(|why| why.contains("corrupt")),
            "{summary:?}"
        );
        assert_eq!(again.source_next(), Some(3));
        assert_eq!(value(&mut again, "a").as_deref(), Some("2"));
        assert_eq!(value(&mut again, "b").as_deref(), Some("1"));
    }

    /// A settling marker is readable, repeats the state, and neither a
    /// restore from the local database nor one from the queue alone sees
    /// any change from it.
    #[test]
    fn a_settling_marker_changes_no_state() {
        let log = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let (mut owner, _) = claim(&log, &path).expect("claim");
        assert!(
            !block_on(owner.settle(&log, Duration::from_millis(10))).expect("settle"),
            "no marker yet"
        );
        count(&mut owner, &["a", "b"]);
        block_on(owner.checkpoint(&log, 2)).expect("checkpoint");
        // Uncheckpointed changes stay out of the log.
        count(&mut owner, &["a"]);
        assert!(block_on(owner.settle(&log, Duration::from_millis(10))).expect("settle"));
        log.hide_appends_for(u64::MAX / 2);
        assert!(
            !block_on(owner.settle(&log, Duration::from_millis(10))).expect("settle"),
            "not readable in time"
        );
        log.hide_appends_for(0);
        log.reveal_all();
        owner.close();
        for fresh in [false, true] {
            let other = tempfile::tempdir().expect("tempdir");
            let at = if fresh { other.path().join("q") } else { path.clone() };
            let (mut again, summary) = claim(&log, &at).expect("restore");
            assert_eq!(summary.from_local, !fresh);
            assert_eq!(again.source_next(), Some(2));
            assert_eq!(
                value(&mut again, "a").as_deref(),
                Some("1"),
                "the third count was never checkpointed"
            );
            again.close();
        }
    }

    /// Issue 28: a snapshot append that the sink stored in part, failed,
    /// and sent again whole reads `C1, P, C2, End`, P repeating C2's start.
    /// Taking the `count` messages before the end as the snapshot lost the
    /// first |P| keys on a restore from it.
    #[test]
    fn a_snapshot_append_stored_in_part_and_sent_again_restores_every_key() {
        let memory = MemoryLog::new();
        let log = Resending(&memory);
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ProtocolOptions {
            snapshot_after: 1,
            snapshot_batch: 4,
            ..ProtocolOptions::default()
        };
        let (mut owner, _) = claim_with(&log, &dir.path().join("q"), options.clone()).expect("claim");
        let words: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        count(&mut owner, &words.iter().map(String::as_str).collect::<Vec<_>>());
        // The checkpoint's appends: its batch, its marker, then the
        // snapshot's chunks of 4, 4 and 2 entries and its end. The second
        // chunk stores 2 entries, fails, and is sent again.
        memory.fail_append_after(3, 2);
        block_on(owner.checkpoint(&log, 10)).expect("checkpoint");
        let expected = state_of(&mut owner);
        owner.close();
        assert_eq!(expected.len(), 10, "ten counts: {expected:?}");
        let end = memory.acknowledged_end() - 1;
        let Ok(Change::SnapshotEnd { count: 10, begin, .. }) = Change::decode(&memory.get(end).expect("end")) else {
            panic!("no snapshot end at {end}");
        };
        assert_eq!(end - begin.expect("a begin"), 12, "10 entries and the 2 stored twice");

        // A new owner without local state starts from the snapshot.
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, summary) = claim_with(&log, &other.path().join("q"), options).expect("restore");
        assert!(!summary.from_local);
        assert_eq!(summary.applied, 10, "from the snapshot: {summary:?}");
        assert_eq!(state_of(&mut moved), expected);
    }

    /// The same re-sent prefix under an end written before issue 28 (no
    /// begin): its last `count` messages are not the snapshot, and it is
    /// refused, so the restore reads the queue from its start instead.
    #[test]
    fn an_old_snapshot_end_over_a_re_sent_prefix_is_not_taken() {
        let log = MemoryLog::new();
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        log.append_now(Change::Claim { token: 1 }.encode());
        log.append_now(
            Change::Batch {
                epoch: 0,
                entries: (0..4).map(|i| (b(&format!("k{i}")), Some(b("1")))).collect(),
            }
            .encode(),
        );
        log.append_now(
            Change::Marker {
                epoch: 0,
                token: 1,
                source_next: 4,
            }
            .encode(),
        );
        let entry = |i: u32| {
            Change::Snapshot {
                epoch: 0,
                key: b(&format!("k{i}")),
                value: b("1"),
            }
            .encode()
        };
        for i in [0, 1, 2, 2, 3] {
            log.append_now(entry(i));
        }
        log.append_now(
            Change::SnapshotEnd {
                epoch: 0,
                token: 1,
                source_next: 4,
                count: 4,
                begin: None,
            }
            .encode(),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut owner, summary) = claim(&log, &dir.path().join("q")).expect("restore");
        assert_eq!(summary.markers, 1, "replayed from the start: {summary:?}");
        assert_eq!(state_of(&mut owner).len(), 4);
        owner.close();
        // With the queue's start deleted there is nothing valid to restore
        // from: a clear error, never a state without k0.
        log.truncate_before(3);
        let fresh = tempfile::tempdir().expect("tempdir");
        let err = claim(&log, &fresh.path().join("q")).expect_err("no valid snapshot");
        assert!(matches!(err, StateError::Truncated { .. }), "{err}");
    }

    /// A snapshot's entry that is out of order and repeats nothing (another
    /// value for a key read before) makes the snapshot invalid.
    #[test]
    fn snapshot_entries_take_repeats_and_refuse_anything_else() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let entry = |epoch, k: &str, v: &str| {
            Change::Snapshot {
                epoch,
                key: b(k),
                value: b(v),
            }
            .encode()
        };
        let mut entries = SnapshotEntries::new(3);
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "1"), ("b", "2"), ("c", "3")] {
            assert!(entries.take(&entry(3, k, v)));
        }
        assert_eq!(entries.complete(3).map(|e| e.len()), Some(3));
        let mut changed = SnapshotEntries::new(3);
        assert!(changed.take(&entry(3, "a", "1")) && changed.take(&entry(3, "b", "2")));
        assert!(!changed.take(&entry(3, "a", "9")), "another value for a");
        assert!(changed.complete(2).is_none());
        let mut other_epoch = SnapshotEntries::new(3);
        assert!(!other_epoch.take(&entry(4, "a", "1")));
        let mut short = SnapshotEntries::new(3);
        assert!(short.take(&entry(3, "a", "1")));
        assert!(short.complete(2).is_none(), "fewer entries than its end counts");
    }

    /// A checkpoint's changelog append stored in part and failed, the
    /// checkpoint failing with it; or stored in part and sent again whole:
    /// either way a restore reads exactly the state of the last marker.
    #[test]
    fn a_changelog_append_stored_in_part_loses_and_adds_nothing() {
        let memory = MemoryLog::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut owner, _) = claim(&memory, &dir.path().join("q")).expect("claim");
        count(&mut owner, &["a", "b"]);
        block_on(owner.checkpoint(&memory, 2)).expect("checkpoint");
        // Two batches (each over MAX_BATCH_BYTES / 2); the first is stored
        // and the append fails.
        let big = "x".repeat(crate::MAX_BATCH_BYTES / 2 + 1);
        owner.store().expect("store").put(b("big1"), b(&big));
        owner.store().expect("store").put(b("big2"), b(&big));
        count(&mut owner, &["a"]);
        memory.fail_append_after(0, 1);
        let err = block_on(owner.checkpoint(&memory, 3)).expect_err("the append failed");
        assert!(err.is_retriable(), "{err}");
        // The entries stayed dirty; the next checkpoint sends them again.
        count(&mut owner, &["b"]);
        block_on(owner.checkpoint(&memory, 4)).expect("checkpoint");
        let expected = state_of(&mut owner);
        owner.close();
        let other = tempfile::tempdir().expect("tempdir");
        let (mut moved, _) = claim(&memory, &other.path().join("q")).expect("restore");
        assert_eq!(moved.source_next(), Some(4));
        assert_eq!(state_of(&mut moved), expected);
        assert_eq!(value(&mut moved, "a").as_deref(), Some("2"));
        assert_eq!(value(&mut moved, "b").as_deref(), Some("2"));
        moved.close();

        // Sent again whole by the log itself (the runtime's retry).
        let log = Resending(&memory);
        let (mut third, _) = claim(&log, &other.path().join("q")).expect("claim");
        third.store().expect("store").put(b("big1"), b(&format!("{big}y")));
        third.store().expect("store").put(b("big2"), b(&format!("{big}y")));
        count(&mut third, &["a"]);
        memory.fail_append_after(0, 1);
        block_on(third.checkpoint(&log, 5)).expect("checkpoint");
        let expected = state_of(&mut third);
        third.close();
        let fourth = tempfile::tempdir().expect("tempdir");
        let (mut moved, _) = claim(&log, &fourth.path().join("q")).expect("restore");
        assert_eq!(moved.source_next(), Some(5));
        assert_eq!(state_of(&mut moved), expected);
        assert_eq!(value(&mut moved, "a").as_deref(), Some("3"));
    }
}
