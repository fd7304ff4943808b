//! State stores for rocketmq-streams: keyed state that survives crashes
//! exactly once and moves with its queue.
//!
//! Stateful operators (count, sum, min, max, avg, aggregate) keep their
//! state per **owning queue** — the shuffle-topic queue whose records they
//! aggregate — so a queue's state can be restored, moved or dropped on its
//! own. The layers, over raw bytes:
//!
//! ```text
//!  typed access (serde, in the operators)
//!      │  get / put / delete
//!  QueueStore: write-back cache (HashMap, dirty keys) ── commit ──► RocksDB (one per owned queue)
//!      │ changes()                                        (entries + checkpoint, one atomic batch)
//!      ▼
//!  state topic <job>-state, queue i ⇄ shuffle queue i:  Put | Delete | … | Marker{source_next}
//! ```
//!
//! # Commit protocol
//!
//! Every commit interval, when a store's cache holds too many dirty keys,
//! and on stop, the shard that owns a queue *q*:
//!
//! 1. has already sent every sink output of the records processed so far
//!    and awaited their acknowledgements;
//! 2. sends the store's dirty entries ([`Change::Put`] / [`Change::Delete`])
//!    to *q*'s state-topic queue and awaits the acknowledgement;
//! 3. sends [`Change::Marker`] `{source_next}` — the next offset of *q* —
//!    and awaits it: from here the state up to `source_next` is durable;
//! 4. writes the same entries and a [`Checkpoint`] (marker offset + 1,
//!    `source_next`) to RocksDB in one batch;
//! 5. only then reports `source_next` for the consumer-offset commit.
//!
//! Shuffled records carry their origin (input queue, offset, index); the
//! highest origin applied per input queue is itself state (written and
//! restored like any other key), and records at or below it are dropped.
//!
//! **Restore** (a queue is assigned): open the local RocksDB; replay the
//! state queue from the checkpoint's offset (from the start if there is no
//! local database, or it is ahead of the topic, i.e. not this topic's
//! prefix), applying changes only when their marker arrives
//! ([`Restore`]); discard what follows the last marker, and write
//! [`Change::Abort`] before the first new change so that no later marker
//! applies those orphans.
//!
//! # Failure cases
//!
//! | crash between | after restart |
//! |---|---|
//! | processing and step 2 | state = last marker; records after it are replayed from the committed offset and applied once |
//! | 2 and 3 (entries, no marker) | the entries are discarded on restore; as above |
//! | 3 and 4 | RocksDB is one marker behind; restore replays from its checkpoint and catches up |
//! | 4 and 5 (offset not committed) | records between the committed offset and the marker are replayed; their origins are at or below the restored high-water mark, so they are dropped |
//! | the first stage re-sends shuffled records (its offsets were not committed) | the duplicates' origins are at or below the high-water mark: dropped |
//!
//! So restored state never counts a replayed record twice. Sink outputs
//! remain at-least-once (a replayed record's update may be emitted again).
//!
//! **Not covered:** two instances writing one state queue at once (a
//! revoked owner still flushing while the new owner restores). The window
//! is the rebalance; RocketMQ offers no fencing token to close it.
#![warn(missing_docs)]

mod changelog;
mod error;
mod restore;
mod store;

pub use changelog::Change;
pub use error::{Result, StateError};
pub use restore::{Restore, RestoreSummary};
pub use store::{Checkpoint, Compression, QueueStore, RocksDbOptions, StoreMetrics};
