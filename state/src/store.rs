//! One queue's store: a write-back cache in front of its own RocksDB.

use std::collections::HashMap;

use ahash::RandomState;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBatch, DB};

use crate::changelog::Change;
use crate::error::{Result, StateError};

/// The RocksDB key of the checkpoint; never a user key (the runtime's keys
/// start with a 2-byte node id below `0xFFFF`) and never in the changelog.
const CHECKPOINT_KEY: &[u8] = b"\xff\xff checkpoint";

/// What a local RocksDB reflects, and which state-topic queue it came from.
///
/// The database holds the state-topic queue's state up to (excluding)
/// `state_next`. The message at `state_next - 1` is the owner's claim
/// (`epoch`, `token`), one of its markers or the end of a snapshot
/// (`epoch`, `token`, `source_next`): a restore reads that message back to
/// prove the database belongs to this very queue before it trusts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The state-topic offset to resume the restore from.
    pub state_next: i64,
    /// The source offset the last marker covered
    /// (`Change::Marker::source_next`); `None` before any marker.
    pub source_next: Option<i64>,
    /// The epoch of the owner that wrote the message at `state_next - 1`.
    pub epoch: i64,
    /// That owner's claim token.
    pub token: u64,
}

impl Checkpoint {
    const LEN: usize = 33;
    /// The last byte: the state format of the database (the changelog
    /// version; 3 since MessagePack keys and values). Older databases
    /// (16 or 32 bytes, no format byte) hold keys this release would never
    /// look up, and are refused.
    const FORMAT: u8 = 3;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.state_next.to_le_bytes());
        out[8..16].copy_from_slice(&self.source_next.unwrap_or(-1).to_le_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.token.to_le_bytes());
        out[32] = Self::FORMAT;
        out
    }

    /// `None` for anything but a checkpoint of this layout and format (an
    /// older release's 16- or 32-byte checkpoint included: it cannot be
    /// verified or its keys are of another format, and
    /// [`QueueStore::checkpoint`] refuses it).
    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != Self::LEN || b[32] != Self::FORMAT {
            return None;
        }
        let word = |at: usize| -> Option<[u8; 8]> { b.get(at..at + 8)?.try_into().ok() };
        let source_next = i64::from_le_bytes(word(8)?);
        Some(Checkpoint {
            state_next: i64::from_le_bytes(word(0)?),
            source_next: (source_next >= 0).then_some(source_next),
            epoch: i64::from_le_bytes(word(16)?),
            token: u64::from_le_bytes(word(24)?),
        })
    }
}

#[derive(Debug, Clone)]
struct Slot {
    /// `None`: deleted.
    value: Option<Bytes>,
    dirty: bool,
}

impl Slot {
    /// Writes `value`, counting the slot in `dirty` the first time.
    fn set(&mut self, value: Option<Bytes>, dirty: &mut usize) {
        if !self.dirty {
            self.dirty = true;
            *dirty += 1;
        }
        self.value = value;
    }
}

/// Counters of one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Reads.
    pub gets: u64,
    /// Reads answered by the cache.
    pub cache_hits: u64,
    /// Writes (puts and deletes).
    pub writes: u64,
    /// Commits (cache flushes to RocksDB).
    pub commits: u64,
}

/// The state of one owned queue: a write-back cache over a RocksDB of its own.
///
/// Reads go to the cache, then RocksDB (the value is then cached). Writes
/// only touch the cache and mark the key dirty. [`changes`](Self::changes)
/// lists the dirty keys as changelog messages; once those (and a commit
/// marker) are acknowledged by the broker, [`commit`](Self::commit) writes
/// them to RocksDB in one atomic batch together with the new
/// [`Checkpoint`], so RocksDB always reflects exactly a prefix of the state
/// topic that ends at a marker.
pub struct QueueStore {
    db: DB,
    path: PathBuf,
    /// aHash: several times faster than SipHash on short keys, and still
    /// seeded at random, so keys from the input cannot be chosen to collide.
    cache: HashMap<Bytes, Slot, RandomState>,
    dirty: usize,
    capacity: usize,
    metrics: StoreMetrics,
    /// Each key written since [`begin_record`](QueueStore::begin_record)
    /// with its slot before (`None`: not cached), for a rollback.
    journal: Vec<(Bytes, Option<Slot>)>,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore")
            .field("path", &self.path)
            .field("cached", &self.cache.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}

fn rocks_error(path: &Path, e: rocksdb::Error) -> StateError {
    StateError::RocksDb {
        path: path.display().to_string(),
        message: e.into_string(),
    }
}

/// How a queue's RocksDB compresses its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression: least CPU, most disk.
    None,
    /// LZ4: cheap, modest ratio. The default.
    #[default]
    Lz4,
    /// Zstandard: better ratio, more CPU per flush and compaction.
    Zstd,
}

/// RocksDB settings of every owned queue's database.
///
/// Each owned queue has a database of its own, so every figure here is per
/// queue: a shard owning 8 queues holds up to 8 × `max_write_buffers` ×
/// `write_buffer_bytes` of memtables and 8 block caches. The write-back cache
/// in front ([`QueueStore`]'s `capacity`) absorbs most reads and writes; the
/// database sees one batch per commit and the reads that miss the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbOptions {
    /// Bytes of one memtable before it is flushed to a file (at least
    /// 64 KiB). Default: 8 MiB.
    pub write_buffer_bytes: usize,
    /// Memtables kept (one being written, the rest being flushed; at least
    /// 2). Default: 2.
    pub max_write_buffers: i32,
    /// Bytes of the block cache that serves reads missing the write-back
    /// cache. Default: 8 MiB.
    pub block_cache_bytes: usize,
    /// Compression of the files. Default: LZ4.
    pub compression: Compression,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        RocksDbOptions {
            write_buffer_bytes: 8 << 20,
            max_write_buffers: 2,
            block_cache_bytes: 8 << 20,
            compression: Compression::Lz4,
        }
    }
}

impl RocksDbOptions {
    fn to_rocksdb(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(self.write_buffer_bytes.max(64 << 10));
        opts.set_max_write_buffer_number(self.max_write_buffers.max(2));
        opts.set_compression_type(match self.compression {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        });
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(self.block_cache_bytes));
        opts.set_block_based_table_factory(&table);
        opts
    }
}

impl QueueStore {
    /// Opens (or creates) the store in `path`; the cache holds up to
    /// `capacity` entries between commits before clean ones are evicted.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the database cannot be opened.
    pub fn open(path: impl Into<PathBuf>, capacity: usize) -> Result<QueueStore> {
        Self::open_with(path, capacity, &RocksDbOptions::default())
    }

    /// Like [`open`](Self::open), with RocksDB settings of the caller's.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the database cannot be opened.
    pub fn open_with(path: impl Into<PathBuf>, capacity: usize, rocksdb: &RocksDbOptions) -> Result<QueueStore> {
        let path = path.into();
        let db = DB::open(&rocksdb.to_rocksdb(), &path).map_err(|e| rocks_error(&path, e))?;
        Ok(QueueStore {
            db,
            path,
            cache: HashMap::default(),
            dirty: 0,
            capacity,
            metrics: StoreMetrics::default(),
            journal: Vec::new(),
        })
    }

    /// Deletes the database in `path`, if any.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if it exists and cannot be deleted.
    pub fn destroy(path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        DB::destroy(&Options::default(), path).map_err(|e| rocks_error(path, e))?;
        let _ = std::fs::remove_dir_all(path);
        Ok(())
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint RocksDB holds, if any.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] on a read failure; [`StateError::Malformed`]
    /// for a checkpoint of another layout (never taken for "none": the
    /// database would then be rebuilt and its state lost).
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let raw = self.db.get(CHECKPOINT_KEY).map_err(|e| rocks_error(&self.path, e))?;
        match raw {
            None => Ok(None),
            Some(raw) => Checkpoint::decode(&raw).map(Some).ok_or_else(|| {
                StateError::Malformed(format!(
                    "local checkpoint in {} ({} bytes) has a layout this release does not read (written by an \
                     older release?); it is left as it is: move the directory away to restore from the state topic",
                    self.path.display(),
                    raw.len()
                ))
            }),
        }
    }

    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] on a read failure.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.metrics.gets += 1;
        if let Some(slot) = self.cache.get(key) {
            self.metrics.cache_hits += 1;
            return Ok(slot.value.clone());
        }
        let value = self
            .db
            .get(key)
            .map_err(|e| rocks_error(&self.path, e))?
            .map(Bytes::from);
        self.cache.insert(
            Bytes::copy_from_slice(key),
            Slot {
                value: value.clone(),
                dirty: false,
            },
        );
        Ok(value)
    }

    /// Starts a record: its writes can be undone by
    /// [`rollback_record`](Self::rollback_record) until the next call.
    pub fn begin_record(&mut self) {
        self.journal.clear();
    }

    /// Undoes the writes since [`begin_record`](Self::begin_record): a
    /// record that failed half-way (an error or a panic downstream of one
    /// of its aggregations) leaves the state as it was.
    pub fn rollback_record(&mut self) {
        while let Some((key, before)) = self.journal.pop() {
            let now_dirty = self.cache.get(&key).is_some_and(|s| s.dirty);
            let was_dirty = before.as_ref().is_some_and(|s| s.dirty);
            match before {
                Some(slot) => {
                    self.cache.insert(key, slot);
                }
                None => {
                    self.cache.remove(&key);
                }
            }
            match (was_dirty, now_dirty) {
                (false, true) => self.dirty -= 1,
                (true, false) => self.dirty += 1,
                _ => {}
            }
        }
    }

    /// Remembers `key`'s slot before its first write of this record.
    fn journal(&mut self, key: &[u8]) {
        if self.journal.iter().any(|(k, _)| k.as_ref() == key) {
            return;
        }
        let entry = match self.cache.get_key_value(key) {
            Some((k, slot)) => (k.clone(), Some(slot.clone())),
            None => (Bytes::copy_from_slice(key), None),
        };
        self.journal.push(entry);
    }

    /// Sets `key` to `value` (in the cache until the next commit).
    pub fn put(&mut self, key: Bytes, value: Bytes) {
        self.write(key, Some(value));
    }

    /// Like [`put`](Self::put), copying `key` only if the cache does not
    /// hold it yet (the common case of an update needs no allocation).
    pub fn put_slice(&mut self, key: &[u8], value: Bytes) {
        self.journal(key);
        match self.cache.get_mut(key) {
            Some(slot) => {
                self.metrics.writes += 1;
                slot.set(Some(value), &mut self.dirty);
            }
            None => self.write(Bytes::copy_from_slice(key), Some(value)),
        }
    }

    /// Deletes `key` (in the cache until the next commit).
    pub fn delete(&mut self, key: Bytes) {
        self.write(key, None);
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) {
        self.journal(&key);
        self.metrics.writes += 1;
        let slot = self.cache.entry(key).or_insert(Slot {
            value: None,
            dirty: false,
        });
        slot.set(value, &mut self.dirty);
    }

    /// Keys written since the last commit.
    pub fn dirty_len(&self) -> usize {
        self.dirty
    }

    /// Whether the cache is over its capacity: time to commit early.
    pub fn is_full(&self) -> bool {
        self.dirty >= self.capacity
    }

    /// The writes since the last commit, as changelog messages of the
    /// owner of `epoch`.
    pub fn changes(&self, epoch: i64) -> Vec<Change> {
        self.cache
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| match &s.value {
                Some(v) => Change::Put {
                    epoch,
                    key: k.clone(),
                    value: v.clone(),
                },
                None => Change::Delete { epoch, key: k.clone() },
            })
            .collect()
    }

    /// Writes the dirty entries and `checkpoint` to RocksDB atomically, marks
    /// them clean, and evicts clean entries if the cache is over capacity.
    /// Call once the changelog messages of [`changes`](Self::changes) and
    /// their marker are acknowledged.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the write fails; the entries stay dirty.
    pub fn commit(&mut self, checkpoint: Checkpoint) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, s) in self.cache.iter().filter(|(_, s)| s.dirty) {
            match &s.value {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        batch.put(CHECKPOINT_KEY, checkpoint.encode());
        self.db.write(batch).map_err(|e| rocks_error(&self.path, e))?;
        for slot in self.cache.values_mut() {
            slot.dirty = false;
        }
        self.dirty = 0;
        if self.cache.len() > self.capacity {
            self.cache.clear();
        }
        self.metrics.commits += 1;
        Ok(())
    }

    /// Applies restored changes (those before a marker) and the checkpoint
    /// they lead to, in one atomic batch. The cache must be clean.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the write fails.
    pub fn apply_restored(&mut self, changes: &[Change], checkpoint: Checkpoint) -> Result<()> {
        let mut batch = WriteBatch::default();
        for c in changes {
            match c {
                Change::Put { key, value, .. } => batch.put(key, value),
                Change::Delete { key, .. } => batch.delete(key),
                Change::Snapshot { key, value, .. } => batch.put(key, value),
                Change::Batch { entries, .. } => {
                    for (key, value) in entries {
                        match value {
                            Some(value) => batch.put(key, value),
                            None => batch.delete(key),
                        }
                        self.cache.remove(key);
                    }
                }
                Change::Marker { .. } | Change::Claim { .. } | Change::SnapshotEnd { .. } => {}
            }
            if let Change::Put { key, .. } | Change::Delete { key, .. } | Change::Snapshot { key, .. } = c {
                self.cache.remove(key);
            }
        }
        batch.put(CHECKPOINT_KEY, checkpoint.encode());
        self.db.write(batch).map_err(|e| rocks_error(&self.path, e))
    }

    /// Every key and value committed to RocksDB, except the checkpoint, in
    /// key order, read lazily (a snapshot of the queue's state, once the
    /// cache is committed).
    pub fn entries(&self) -> impl Iterator<Item = Result<(Bytes, Bytes)>> + '_ {
        self.db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|item| {
                item.map(|(k, v)| (Bytes::from(k.into_vec()), Bytes::from(v.into_vec())))
                    .map_err(|e| rocks_error(&self.path, e))
            })
            .filter(|item| !matches!(item, Ok((k, _)) if k.as_ref() == CHECKPOINT_KEY))
    }

    /// Every key and value in RocksDB, except the checkpoint (for tests and
    /// tools; reads the whole database).
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] on a read failure.
    pub fn scan(&self) -> Result<Vec<(Bytes, Bytes)>> {
        self.entries().collect()
    }

    /// The store's counters.
    pub fn metrics(&self) -> StoreMetrics {
        self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_of_an_older_format_is_refused_not_taken_for_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = QueueStore::open(dir.path().join("q"), 10).expect("open");
        let current = Checkpoint {
            state_next: 5,
            source_next: Some(7),
            epoch: 2,
            token: 9,
        };
        store.db.put(CHECKPOINT_KEY, current.encode()).expect("put");
        assert_eq!(store.checkpoint().expect("reads"), Some(current));
        // 16 bytes (before epochs), 32 bytes (JSON state), a future format.
        let mut future = current.encode();
        future[32] = 4;
        for old in [&[0u8; 16][..], &current.encode()[..32], &future[..]] {
            store.db.put(CHECKPOINT_KEY, old).expect("put");
            let err = store.checkpoint().expect_err("refused");
            assert!(matches!(err, StateError::Malformed(_)), "{err}");
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn writes_stay_in_the_cache_until_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q0");
        {
            let mut store = QueueStore::open(&path, 100).expect("open");
            store.put(b("a"), b("1"));
            store.put(b("b"), b("2"));
            store.delete(b("b"));
            assert_eq!(store.get(b"a").expect("get"), Some(b("1")));
            assert_eq!(store.get(b"b").expect("get"), None);
            assert_eq!(store.dirty_len(), 2);
            let mut changes = store.changes(4);
            changes.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
            assert_eq!(
                changes,
                [
                    Change::Delete { epoch: 4, key: b("b") },
                    Change::Put {
                        epoch: 4,
                        key: b("a"),
                        value: b("1")
                    }
                ]
            );
        }
        // Never committed: nothing reached RocksDB.
        let store = QueueStore::open(&path, 100).expect("reopen");
        assert!(store.scan().expect("scan").is_empty());
        assert_eq!(store.checkpoint().expect("checkpoint"), None);
    }

    #[test]
    fn put_slice_updates_like_put_and_counts_a_key_dirty_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 10).expect("open");
        store.put_slice(b"k", b("1"));
        store.put_slice(b"k", b("2"));
        store.put(b("j"), b("3"));
        store.put_slice(b"j", b("4"));
        assert_eq!(store.get(b"k").expect("get"), Some(b("2")));
        assert_eq!(store.get(b"j").expect("get"), Some(b("4")));
        assert_eq!(store.dirty_len(), 2);
        assert_eq!(store.metrics().writes, 4);
    }

    #[test]
    fn a_rolled_back_record_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 10).expect("open");
        store.put(b("a"), b("1"));
        store
            .commit(Checkpoint {
                state_next: 1,
                source_next: Some(1),
                epoch: 0,
                token: 1,
            })
            .expect("commit");
        store.begin_record();
        store.put(b("b"), b("1"));
        store.begin_record();
        store.put_slice(b"a", b("2"));
        store.put_slice(b"a", b("3"));
        store.put(b("c"), b("1"));
        store.delete(b("b"));
        store.rollback_record();
        assert_eq!(store.get(b"a").expect("get"), Some(b("1")));
        assert_eq!(
            store.get(b"b").expect("get"),
            Some(b("1")),
            "the earlier record's write stays"
        );
        assert_eq!(store.get(b"c").expect("get"), None);
        assert_eq!(store.dirty_len(), 1);
        assert_eq!(
            store.changes(0),
            [Change::Put {
                epoch: 0,
                key: b("b"),
                value: b("1")
            }]
        );
    }

    #[test]
    fn a_store_reopens_under_other_rocksdb_options() {
        // Changing the knobs between runs must not cost the local state.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let cp = Checkpoint {
            state_next: 3,
            source_next: Some(7),
            epoch: 1,
            token: 5,
        };
        let zstd = RocksDbOptions {
            compression: Compression::Zstd,
            write_buffer_bytes: 1 << 20,
            ..RocksDbOptions::default()
        };
        {
            let mut store = QueueStore::open_with(&path, 10, &zstd).expect("open");
            store.put(b("k"), b("v"));
            store.commit(cp).expect("commit");
        }
        let none = RocksDbOptions {
            compression: Compression::None,
            block_cache_bytes: 0,
            ..RocksDbOptions::default()
        };
        let mut store = QueueStore::open_with(&path, 10, &none).expect("reopen");
        assert_eq!(store.checkpoint().expect("checkpoint"), Some(cp));
        assert_eq!(store.get(b"k").expect("get"), Some(b("v")));
    }

    #[test]
    fn commit_writes_entries_and_checkpoint_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q1");
        let cp = Checkpoint {
            state_next: 10,
            source_next: Some(99),
            epoch: 1,
            token: 5,
        };
        {
            let mut store = QueueStore::open(&path, 1).expect("open");
            store.put(b("a"), b("1"));
            store.put(b("c"), b("3"));
            assert!(store.is_full());
            store.commit(cp).expect("commit");
            assert_eq!(store.dirty_len(), 0);
            assert!(store.changes(1).is_empty());
            // Over capacity: the cache was emptied; reads fall through to RocksDB.
            assert_eq!(store.get(b"c").expect("get"), Some(b("3")));
        }
        let store = QueueStore::open(&path, 100).expect("reopen");
        assert_eq!(store.checkpoint().expect("checkpoint"), Some(cp));
        assert_eq!(store.scan().expect("scan"), [(b("a"), b("1")), (b("c"), b("3"))]);
        drop(store);
        QueueStore::destroy(&path).expect("destroy");
        assert!(!path.exists());
    }

    #[test]
    fn restored_changes_apply_with_their_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q2"), 100).expect("open");
        let cp = Checkpoint {
            state_next: 3,
            source_next: Some(7),
            epoch: 1,
            token: 5,
        };
        store
            .apply_restored(
                &[
                    Change::Put {
                        epoch: 1,
                        key: b("x"),
                        value: b("1"),
                    },
                    Change::Put {
                        epoch: 1,
                        key: b("x"),
                        value: b("2"),
                    },
                    Change::Put {
                        epoch: 1,
                        key: b("y"),
                        value: b("1"),
                    },
                    Change::Delete { epoch: 1, key: b("y") },
                ],
                cp,
            )
            .expect("apply");
        assert_eq!(store.get(b"x").expect("get"), Some(b("2")), "latest value wins");
        assert_eq!(store.get(b"y").expect("get"), None, "tombstones delete");
        assert_eq!(store.checkpoint().expect("checkpoint"), Some(cp));
    }
}
