//! State stores for rocketmq-streams: keyed state that survives crashes
//! exactly once and moves with its queue.
//!
//! Stateful operators (count, sum, min, max, avg, aggregate) keep their
//! state per **owning queue** — the shuffle-topic queue whose records they
//! aggregate — so a queue's state can be restored, moved or dropped on its
//! own. The layers, over raw bytes:
//!
//! ```text
//!  operators: aggregations update / read decoded values; other state get / put / delete bytes
//!      │
//!  decoded layers (one per aggregation: key → its own state type, dirty flags)
//!      │  encode_decoded, once per key per checkpoint (from the operator's flush)
//!  QueueStore: write-back cache (HashMap, dirty keys) ── commit ──► RocksDB (one per owned queue)
//!      │ changes(epoch)                                   (entries + checkpoint, one atomic batch)
//!      ▼
//!  OwnedQueue (claim, restore, checkpoint, fencing) ──► StateLog: state topic <job>-state, queue i ⇄ shuffle queue i
//!        Claim{token} | Batch{epoch, puts/deletes} … | Marker{epoch, token, source_next} | …
//! ```
//!
//! The protocol lives in [`OwnedQueue`]; the runtime only schedules it.
//! It talks to the state topic through the small [`StateLog`] trait, so
//! every step runs the same against a broker and against [`MemoryLog`] in
//! a unit test (whose readable end can trail its acknowledged end, as a
//! busy broker's does).
//!
//! # Owners and epochs
//!
//! RocketMQ has no producer fencing, so the state queue fences its own
//! writers. A new owner (an instance given the queue by a rebalance, or
//! restarting) first appends a [`Change::Claim`] with a random token; the
//! claim's offset is the owner's **epoch**. Every change and marker carries
//! its writer's epoch. Offsets grow in log order, so a later claim always
//! has a higher epoch. Reading the queue, only the epoch of the last claim
//! counts: a claim voids the changes not yet followed by their marker, and
//! changes or markers of an older epoch that come after a newer claim (an
//! old owner still running: paused, partitioned, or between its revoke and
//! its stop) are ignored.
//!
//! # Commit protocol
//!
//! Every commit interval, when a store's cache holds too many dirty keys,
//! and on stop, the owner of a queue *q*:
//!
//! 1. has already sent every sink output of the records processed so far
//!    and awaited their acknowledgements, and encoded the values its
//!    aggregations keep decoded ([`QueueStore::encode_decoded`]; one that
//!    does not encode stops the checkpoint here);
//! 2. sends the store's dirty entries, framed as [`Change::Batch`]es of up to
//!    [`MAX_BATCH_BYTES`] (a release before issue 11 sent one
//!    [`Change::Put`] / [`Change::Delete`] per key; restores still read them)
//!    to *q*'s state-topic queue and awaits the acknowledgement;
//! 3. sends [`Change::Marker`] `{epoch, token, source_next}` — the next
//!    offset of *q* — and awaits it: from here the state up to
//!    `source_next` is durable;
//! 4. writes the same entries and a [`Checkpoint`] (marker offset + 1,
//!    `source_next`, epoch, token) to RocksDB in one batch;
//! 5. only then reports `source_next` for the consumer-offset commit.
//!
//! If an append's acknowledged offsets show that somebody else wrote since
//! this owner's last append, the owner reads what they wrote; a newer
//! claim there fails the checkpoint with [`StateError::Fenced`] and the
//! runtime drops the queue.
//!
//! Shuffled records carry their origin (input queue, offset, index); the
//! highest origin applied per input queue is itself state (written and
//! restored like any other key), and records at or below it are dropped.
//!
//! # Restore
//!
//! When a queue is assigned ([`OwnedQueue::claim`]):
//!
//! 1. append the claim; its acknowledged offset *c* is the new epoch;
//! 2. wait until *c* is readable (bounded: [`ProtocolOptions::visibility_wait`],
//!    then [`StateError::NotVisible`]). Offsets are readable in order, so
//!    then everything acknowledged before the claim — by any owner — is
//!    readable too: the restore knows the true end of the queue without
//!    trusting a readable end;
//! 3. **identity**: the local database's checkpoint names the message at
//!    its `state_next - 1` (the owner's claim, marker or snapshot end,
//!    with epoch and token). If that message is there and matches, the
//!    database is this queue's and the restore replays only the tail after
//!    it; otherwise (a topic deleted and created again) it is rebuilt, and
//!    the reason logged. It is never discarded for being ahead of a
//!    readable end. A rebuild (or a new owner without local state) starts
//!    from the latest valid **snapshot**, found searching back from the
//!    claim, or from the queue's start if there is none;
//! 4. replay up to and including the claim under the epoch rules
//!    ([`Restore`]), then record the new epoch in the local checkpoint.
//!
//! **Offsets and state come from one place:** processing resumes at the
//! last applied marker's `source_next` ([`OwnedQueue::source_next`]), not
//! at the consumer offset committed for the queue (an old owner may have
//! committed past the state the new owner sees). The runtime seeks the
//! consumer there when a batch starts beyond it.
//!
//! A queue's local database is kept when the queue is revoked, so an owner
//! that gets it back replays only the tail. The runtime runs each restore
//! as a task of its own: a shard's other queues go on while one queue
//! restores, and the restoring queue's batches are held until its state
//! is there (past 16 of them, the runtime's back-pressure stops polling
//! for that shard rather than drop any). A queue whose beginning the
//! broker's retention deleted, when the restore needs it, is a hard
//! [`StateError::Truncated`] that names the fix, never a silent skip.
//!
//! # The bug this fixed: restores that lost counts
//!
//! On a busy two-core machine the word-count tests lost counts after a
//! restart, a SIGKILL and a rebalance, each time after the warning "local
//! state is not from this state topic; rebuilding" with the local
//! checkpoint past the queue's end (`from=1961 end=1027`).
//!
//! *Cause.* A send's acknowledgement is not readability. RocketMQ assigns
//! a message its queue offset when it appends it to the commit log and
//! acknowledges the send then; the message becomes readable — counted in
//! the queue's max offset, returned by pulls — only once the broker's
//! dispatch ("reput") service has built its consume-queue entry, later and
//! on its own thread (apache/rocketmq issue 1613 describes the gap). On a
//! machine whose two cores are busy with the job, the broker and a test,
//! the dispatch trailed the acknowledgements by hundreds to thousands of
//! messages for seconds (in the SIGKILL test the readable end was seen
//! rising from 32,402 to 43,958 while the local checkpoint said 46,018).
//! The old restore read the queue's max offset as its true end: a local
//! checkpoint beyond it was taken for state of another topic and thrown
//! away, the state rebuilt from the readable prefix, and processing
//! resumed at the committed consumer offset — which was past the records
//! that prefix had counted. A new owner without local state had the same
//! flaw: it stopped at the readable end and missed the last checkpoints.
//!
//! *Fix.* The restore writes its claim first and waits until the claim is
//! readable, so it reads every acknowledged message before it; the local
//! database proves its identity by a message of the queue instead of by
//! offsets; and processing resumes at the restored marker, so even a
//! restore that saw less could only replay input, never skip it.
//!
//! # Failure cases
//!
//! | crash or event between | after restart |
//! |---|---|
//! | processing and step 2 | state = last marker; records after it are replayed from its `source_next` and applied once |
//! | 2 and 3 (entries, no marker) | the next claim voids the entries; as above |
//! | 3 and 4 | RocksDB is one marker behind; restore replays from its checkpoint and catches up |
//! | 4 and 5 (offset not committed) | the queue resumes at the marker's `source_next`; records before it that come again are at or below the restored high-water mark: dropped |
//! | the first stage re-sends shuffled records (its offsets were not committed) | the duplicates' origins are at or below the high-water mark: dropped |
//! | an old owner keeps writing after a newer claim | its changes and markers are ignored; its next checkpoint fails with `Fenced` and it restores the queue again (or its revoke comes first) |
//! | the broker's readable end trails its acknowledgements | the restore waits for its own claim (re-claiming each second, bounded, then `NotVisible`) |
//! | a local database of another queue (topic recreated) | identity check fails; rebuilt from the queue, reason logged |
//! | retention deleted the queue's start | the restore starts from the latest snapshot |
//! | retention deleted what the restore needs, and every snapshot | `Truncated`, a hard error naming the fix |
//! | a restore fails transiently (broker unreachable, claim not readable) | the runtime tries it again with a growing pause; the queue's batches wait |
//! | a restore cancelled by a revoke whose claim is still under way | the claim may land after the new owner's and fence it: the new owner restores the queue again at once (slower, still exact) |
//! | a rebalance briefly gives a queue to two instances | each fences the other's checkpoints in turn, restoring the other's writes each time, until the rebalance revokes the queue from one (slower, still exact) |
//!
//! So restored state never counts a replayed record twice nor skips one.
//! Sink outputs remain at-least-once (a replayed record's update may be
//! emitted again).
//!
//! # Snapshots: bounded restore
//!
//! After a checkpoint, once the queue has taken
//! [`ProtocolOptions::snapshot_after`] messages (and at least twice the
//! last snapshot's entries) since its last snapshot, the owner appends the
//! whole state — RocksDB, just committed at that marker — as
//! [`Change::Snapshot`] entries followed by [`Change::SnapshotEnd`]
//! `{epoch, token, source_next, count}`. A snapshot is valid when the
//! `count` messages before its end are exactly its entries, of its epoch:
//! nobody wrote in between, and the owner's fence checks on every append
//! guarantee no newer claim came before them. A restore without local
//! state reads one snapshot and the tail after it; the broker's retention
//! may delete everything before the latest snapshot. A queue whose
//! beginning is gone with no snapshot left is [`StateError::Truncated`].
//!
//! A queue that stays idle writes no checkpoints; its owner still writes a
//! snapshot once the last one is older than
//! [`ProtocolOptions::snapshot_max_age`] (24 h), so its state outlives the
//! broker's retention (72 h by default).
//!
//! # Messages a restore cannot read
//!
//! Bytes that no release of this engine wrote (their first byte is no
//! format version, [`Change::is_foreign`]) are listed in the restore's
//! summary for the job's error policy (skipped or dead-lettered, counted):
//! they hold no state. A message of this engine's format that does not
//! decode — corrupt, or written by an older release (version 1, without
//! epochs; version 2, with JSON keys and values the operators of this
//! release would never look up) — stops the restore with
//! [`StateError::Malformed`]: skipping it could lose state or apply a
//! fenced owner's changes. So does a local checkpoint of another layout or
//! state format, which is never taken for "no local state".
//!
//! # Format
//!
//! Version 3 (this release): every message starts with the version byte
//! and a kind; a checkpoint's changes are [`Change::Batch`]es of up to
//! [`MAX_BATCH_BYTES`]; keys and values are opaque bytes here (the
//! operators write MessagePack, with a version byte on state values). The
//! layouts are on [`Change`].
#![warn(missing_docs)]

mod changelog;
mod decoded;
mod error;
mod failpoint;
mod journal;
mod log;
mod owner;
#[cfg(test)]
mod props;
mod restore;
mod store;

pub use changelog::{Change, Epoch, MAX_BATCH_BYTES};
pub use decoded::ValueCodec;
pub use error::{Result, StateError};
pub use failpoint::{failpoint, STEPS as FAILPOINTS};
pub use log::{LogChunk, LogRecord, MemoryLog, StateLog};
pub use owner::{new_token, FenceProbe, OwnedQueue, ProtocolOptions};
pub use restore::{Restore, RestoreSummary};
pub use store::{Checkpoint, Compression, QueueStore, RocksDbOptions, StoreMetrics};
