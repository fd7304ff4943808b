//! One queue's store: a write-back cache in front of its own RocksDB.

use std::collections::HashMap;

use ahash::RandomState;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBatch, DB};

use crate::changelog::Change;
use crate::decoded::{Decoded, Entry, Layer, ValueCodec};
use crate::error::{Result, StateError};
use crate::journal::{Dirty, Journal};

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
    pub(crate) const LEN: usize = 33;
    /// The last byte: the state format of the database (the changelog
    /// version; 3 since MessagePack keys and values). Older databases
    /// (16 or 32 bytes, no format byte) hold keys this release would never
    /// look up, and are refused.
    pub(crate) const FORMAT: u8 = 3;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
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
    pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
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

impl Dirty for Slot {
    fn is_dirty(&self) -> bool {
        self.dirty
    }
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
    journal: Journal<Slot>,
    /// The decoded layers over the byte cache, one per operator that asked
    /// for one ([`update`](QueueStore::update)), by the operator's id.
    layers: Vec<(u32, Box<dyn Layer>)>,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore")
            .field("path", &self.path)
            .field("cached", &self.cache.len())
            .field("dirty", &self.dirty)
            .field("decoded", &self.layers.iter().map(|(_, l)| l.len()).sum::<usize>())
            .finish()
    }
}

fn rocks_error(path: &Path, e: rocksdb::Error) -> StateError {
    StateError::RocksDb {
        path: path.display().to_string(),
        source: e,
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
            journal: Journal::default(),
            layers: Vec::new(),
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
        // A corrupt database may not let RocksDB destroy it: its files
        // are removed all the same.
        let destroyed = DB::destroy(&Options::default(), path).map_err(|e| rocks_error(path, e));
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(_) if !path.exists() => Ok(()),
            Err(_) => destroyed,
        }
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
        debug_assert!(!self.decoded_holds(key), "a decoded key read as bytes");
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
        for (_, layer) in &mut self.layers {
            layer.begin_record();
        }
    }

    /// Undoes the writes since [`begin_record`](Self::begin_record): a
    /// record that failed half-way (an error or a panic downstream of one
    /// of its aggregations) leaves the state as it was.
    pub fn rollback_record(&mut self) {
        for (_, layer) in &mut self.layers {
            layer.rollback_record();
        }
        self.journal.undo(&mut self.cache, &mut self.dirty);
    }

    /// Remembers `key`'s slot before its first write of this record.
    fn journal(&mut self, key: &[u8]) {
        self.journal.remember(&self.cache, key);
    }

    /// Sets `key` to `value` (in the cache until the next commit).
    pub fn put(&mut self, key: Bytes, value: Bytes) {
        self.write(key, Some(value));
    }

    /// Like [`put`](Self::put), copying `key` only if the cache does not
    /// hold it yet (the common case of an update needs no allocation).
    pub fn put_slice(&mut self, key: &[u8], value: Bytes) {
        debug_assert!(!self.decoded_holds(key), "a decoded key written as bytes");
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
        debug_assert!(!self.decoded_holds(&key), "a decoded key written as bytes");
        self.journal(&key);
        self.metrics.writes += 1;
        let slot = self.cache.entry(key).or_insert(Slot {
            value: None,
            dirty: false,
        });
        slot.set(value, &mut self.dirty);
    }

    /// Keys written since the last commit (a key written both as bytes
    /// and decoded since counts twice: an upper bound, 0 only when
    /// nothing is to commit).
    pub fn dirty_len(&self) -> usize {
        self.dirty + self.decoded_dirty()
    }

    /// Decoded values not encoded yet.
    pub fn decoded_dirty(&self) -> usize {
        self.layers.iter().map(|(_, l)| l.dirty()).sum()
    }

    /// Whether the cache is over its capacity: time to commit early.
    pub fn is_full(&self) -> bool {
        self.dirty_len() >= self.capacity
    }

    /// The value of `key` as bytes, from the byte cache or RocksDB, without
    /// caching it (the decoded layer above keeps it).
    fn read_bytes(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.cache.get(key) {
            Some(slot) => Ok(slot.value.clone()),
            None => Ok(self
                .db
                .get(key)
                .map_err(|e| rocks_error(&self.path, e))?
                .map(Bytes::from)),
        }
    }

    /// The decoded layer of operator `layer`, created on first use.
    ///
    /// # Panics
    ///
    /// If the operator asked for its layer before with another codec (two
    /// operators under one id: a bug of the engine).
    fn layer<C: ValueCodec>(&mut self, layer: u32) -> &mut Decoded<C> {
        let at = match self.layers.iter().position(|(id, _)| *id == layer) {
            Some(at) => at,
            None => {
                self.layers.push((layer, Box::new(Decoded::<C>::default())));
                self.layers.len() - 1
            }
        };
        self.layers[at]
            .1
            .as_any_mut()
            .downcast_mut::<Decoded<C>>()
            .expect("one codec per decoded layer")
    }

    /// Makes sure `key` is cached in `layer`, decoding it from the bytes
    /// below on a miss; counts the read.
    fn load<C: ValueCodec>(&mut self, layer: u32, key: &[u8]) -> Result<()> {
        self.metrics.gets += 1;
        if self.layer::<C>(layer).entries.contains_key(key) {
            self.metrics.cache_hits += 1;
            return Ok(());
        }
        let value = match self.read_bytes(key)? {
            Some(bytes) => Some(C::decode(&bytes).map_err(|message| StateError::Codec {
                key: format!("{key:?}"),
                message: format!("store {layer}: {message}"),
            })?),
            None => None,
        };
        self.layer::<C>(layer)
            .entries
            .insert(Bytes::copy_from_slice(key), Entry { value, dirty: false });
        Ok(())
    }

    /// Applies `f` to the decoded value of `key` (`None`: no value; set it
    /// to `None` to delete the key) in operator `layer`'s decoded layer,
    /// and returns what `f` returns. The value stays decoded until
    /// [`encode_decoded`](Self::encode_decoded); a
    /// [`rollback_record`](Self::rollback_record) undoes the update.
    ///
    /// # Errors
    ///
    /// [`StateError::Codec`] if the stored bytes of `key` do not decode
    /// (another release's format, another state type): nothing changes;
    /// [`StateError::RocksDb`] on a read failure.
    ///
    /// # Panics
    ///
    /// If `layer` was used with another codec before.
    pub fn update<C: ValueCodec, R>(
        &mut self,
        layer: u32,
        key: &[u8],
        f: impl FnOnce(&mut Option<C::Value>) -> R,
    ) -> Result<R> {
        self.load::<C>(layer, key)?;
        self.metrics.writes += 1;
        let decoded = self.layer::<C>(layer);
        decoded.journal(key);
        let out = match decoded.entries.get_mut(key) {
            Some(entry) => f(&mut entry.value),
            None => unreachable!("loaded above"),
        };
        decoded.mark_dirty(key);
        Ok(out)
    }

    /// Applies `f` to the decoded value of `key` in operator `layer`'s
    /// decoded layer (`None`: no value), and returns what `f` returns.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    ///
    /// # Panics
    ///
    /// If `layer` was used with another codec before.
    pub fn read<C: ValueCodec, R>(
        &mut self,
        layer: u32,
        key: &[u8],
        f: impl FnOnce(Option<&C::Value>) -> R,
    ) -> Result<R> {
        self.load::<C>(layer, key)?;
        let value = self.layer::<C>(layer).entries.get(key).and_then(|e| e.value.as_ref());
        Ok(f(value))
    }

    /// Encodes operator `layer`'s decoded values updated since its last
    /// encode into the byte cache, where [`changes`](Self::changes) and
    /// [`commit`](Self::commit) find them. A value that fails to encode is
    /// handed to `failed` with its key and why, and stays dirty: the next
    /// [`commit`](Self::commit) refuses to run (and a checkpoint stops
    /// before its changelog): the value is never lost. Call it before every checkpoint (the operators do, from their
    /// flush).
    pub fn encode_decoded(&mut self, layer: u32, mut failed: impl FnMut(Bytes, String)) {
        let mut layers = std::mem::take(&mut self.layers);
        for (_, l) in layers.iter_mut().filter(|(id, _)| *id == layer) {
            l.encode(&mut |key, value| self.write_encoded(key, value), &mut failed);
        }
        self.layers = layers;
    }

    /// Encodes every layer's decoded values, as
    /// [`encode_decoded`](Self::encode_decoded) does one's, and returns the
    /// failures. The state protocol's guard: the operators have encoded
    /// their layers by then.
    pub fn encode_all_decoded(&mut self) -> Vec<(Bytes, String)> {
        let mut failures = Vec::new();
        let mut layers = std::mem::take(&mut self.layers);
        for (_, layer) in &mut layers {
            layer.encode(&mut |key, value| self.write_encoded(key, value), &mut |key, message| {
                failures.push((key, message))
            });
        }
        self.layers = layers;
        failures
    }

    /// [`StateError::Codec`] if a decoded value is not encoded yet: a
    /// commit (or restore) now would lose it.
    fn refuse_unencoded(&self, what: &str) -> Result<()> {
        match self.decoded_dirty() {
            0 => Ok(()),
            n => Err(StateError::Codec {
                key: format!("({n} keys)"),
                message: format!("decoded values not encoded before a {what} (it would lose them)"),
            }),
        }
    }

    /// Whether a decoded layer holds `key` (whose bytes are then not the
    /// byte API's to read or write).
    fn decoded_holds(&self, key: &[u8]) -> bool {
        self.layers.iter().any(|(_, l)| l.contains(key))
    }

    /// Writes an encoded value below its decoded layer: dirty, counted,
    /// not journaled (an encode is no record's write).
    fn write_encoded(&mut self, key: Bytes, value: Option<Bytes>) {
        let slot = self.cache.entry(key).or_insert(Slot {
            value: None,
            dirty: false,
        });
        slot.set(value, &mut self.dirty);
    }

    /// The writes since the last commit, as changelog messages of the
    /// owner of `epoch`. Decoded values must be encoded first
    /// ([`encode_decoded`](Self::encode_decoded)): they are not listed.
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
    /// [`StateError::Codec`] if a decoded value is not encoded yet
    /// ([`encode_decoded`](Self::encode_decoded)): nothing is written.
    pub fn commit(&mut self, checkpoint: Checkpoint) -> Result<()> {
        self.refuse_unencoded("commit")?;
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
        // The bytes of decoded values are now in RocksDB; the decoded
        // layers answer for those keys.
        for (_, layer) in &self.layers {
            layer.for_each_entry(&mut |key, _| {
                self.cache.remove(key);
            });
        }
        let decoded: usize = self.layers.iter().map(|(_, l)| l.len()).sum();
        if self.cache.len() + decoded > self.capacity {
            self.cache.clear();
            for (_, layer) in &mut self.layers {
                layer.clear();
            }
        }
        self.metrics.commits += 1;
        Ok(())
    }

    /// Applies restored changes (those before a marker) and the checkpoint
    /// they lead to, in one atomic batch. The cache must be clean.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the write fails; [`StateError::Codec`] if
    /// a decoded value is not encoded yet (nothing is written).
    pub fn apply_restored(&mut self, changes: &[Change], checkpoint: Checkpoint) -> Result<()> {
        self.refuse_unencoded("restore")?;
        // Clean (as the cache must be): the restored values replace them.
        for (_, layer) in &mut self.layers {
            layer.clear();
        }
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

    /// Every key starting with `prefix` that has a value now, in key
    /// order: RocksDB's, overlaid with the byte cache's writes and the
    /// decoded layers' (so a key written or deleted since the last commit
    /// is listed as it is now). An operator rebuilds what it indexes in
    /// memory from it (a window operator its open windows).
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] on a read failure.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Bytes>> {
        let mut keys = std::collections::BTreeSet::new();
        let from = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator(from) {
            let (key, _) = item.map_err(|e| rocks_error(&self.path, e))?;
            if !key.starts_with(prefix) {
                break;
            }
            if key.as_ref() != CHECKPOINT_KEY {
                keys.insert(Bytes::from(key.into_vec()));
            }
        }
        let mut overlay = |key: &Bytes, present: bool| {
            if key.starts_with(prefix) {
                if present {
                    keys.insert(key.clone());
                } else {
                    keys.remove(key);
                }
            }
        };
        for (key, slot) in self.cache.iter().filter(|(_, s)| s.dirty) {
            overlay(key, slot.value.is_some());
        }
        for (_, layer) in &self.layers {
            layer.for_each_entry(&mut overlay);
        }
        Ok(keys.into_iter().collect())
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

    use crate::decoded::Decimal;

    fn add(store: &mut QueueStore, key: &[u8], n: u64) -> u64 {
        store
            .update::<Decimal, _>(7, key, |v| {
                let v = v.get_or_insert(0);
                *v += n;
                *v
            })
            .expect("update")
    }

    fn cp(n: i64) -> Checkpoint {
        Checkpoint {
            state_next: n,
            source_next: Some(n),
            epoch: 0,
            token: 1,
        }
    }

    #[test]
    fn decoded_values_reach_the_changelog_and_rocksdb_once_encoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        {
            let mut store = QueueStore::open(&path, 100).expect("open");
            assert_eq!(add(&mut store, b"a", 2), 2);
            assert_eq!(add(&mut store, b"a", 3), 5);
            assert_eq!(add(&mut store, b"b", 1), 1);
            store.update::<Decimal, _>(7, b"b", |v| *v = None).expect("delete");
            assert_eq!(store.decoded_dirty(), 2);
            assert!(store.changes(0).is_empty(), "nothing is bytes yet");
            store.encode_decoded(7, |k, m| panic!("{k:?}: {m}"));
            assert_eq!(store.decoded_dirty(), 0);
            let mut changes = store.changes(0);
            changes.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
            assert_eq!(
                changes,
                [
                    Change::Delete { epoch: 0, key: b("b") },
                    Change::Put {
                        epoch: 0,
                        key: b("a"),
                        value: b("5")
                    }
                ]
            );
            store.commit(cp(1)).expect("commit");
            assert_eq!(store.dirty_len(), 0);
            // The decoded layer still answers, from memory.
            let hits = store.metrics().cache_hits;
            assert_eq!(
                store.read::<Decimal, _>(7, b"a", |v| v.copied()).expect("read"),
                Some(5)
            );
            assert_eq!(store.metrics().cache_hits, hits + 1);
        }
        let mut store = QueueStore::open(&path, 100).expect("reopen");
        assert_eq!(store.scan().expect("scan"), [(b("a"), b("5"))]);
        assert_eq!(add(&mut store, b"a", 1), 6, "decoded from RocksDB on a miss");
        assert_eq!(store.read::<Decimal, _>(7, b"b", |v| v.copied()).expect("read"), None);
    }

    #[test]
    fn a_rolled_back_record_undoes_its_decoded_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        store.begin_record();
        add(&mut store, b"a", 1);
        store.begin_record();
        add(&mut store, b"a", 10);
        add(&mut store, b"a", 100);
        add(&mut store, b"new", 1);
        store.put(b("bytes"), b("x"));
        store.rollback_record();
        assert_eq!(
            store.read::<Decimal, _>(7, b"a", |v| v.copied()).expect("read"),
            Some(1)
        );
        assert_eq!(store.read::<Decimal, _>(7, b"new", |v| v.copied()).expect("read"), None);
        assert_eq!(store.get(b"bytes").expect("get"), None);
        assert_eq!(store.decoded_dirty(), 1, "the earlier record's update stays");
        assert_eq!(store.dirty_len(), 1);
        // A rollback right after an encode undoes nothing that is bytes.
        store.begin_record();
        add(&mut store, b"a", 1);
        store.encode_decoded(7, |k, m| panic!("{k:?}: {m}"));
        store.rollback_record();
        assert_eq!(
            store.read::<Decimal, _>(7, b"a", |v| v.copied()).expect("read"),
            Some(2)
        );
        assert_eq!(store.changes(0).len(), 1);
    }

    #[test]
    fn a_value_that_does_not_encode_is_reported_kept_and_stops_the_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        add(&mut store, b"k", 10);
        add(&mut store, b"j", 1);
        store.encode_decoded(7, |k, m| panic!("{k:?}: {m}"));
        store.commit(cp(1)).expect("commit");
        add(&mut store, b"k", 3);
        add(&mut store, b"j", 1);
        let mut failed = Vec::new();
        store.encode_decoded(7, |k, m| failed.push((k, m)));
        assert_eq!(failed, [(b("k"), "13 is unlucky".to_string())]);
        assert_eq!(
            store.changes(0),
            [Change::Put {
                epoch: 0,
                key: b("j"),
                value: b("2")
            }]
        );
        assert_eq!(store.decoded_dirty(), 1, "kept, not dropped");
        assert_eq!(
            store.read::<Decimal, _>(7, b"k", |v| v.copied()).expect("read"),
            Some(13)
        );
        let err = store.commit(cp(2)).expect_err("a commit would lose k");
        assert!(matches!(err, StateError::Codec { .. }), "{err}");
        assert_eq!(store.checkpoint().expect("checkpoint"), Some(cp(1)), "nothing written");
        // The guard of the state protocol sees the same failure.
        assert_eq!(store.encode_all_decoded(), [(b("k"), "13 is unlucky".to_string())]);
        // Once the value encodes, the commit goes through.
        add(&mut store, b"k", 1);
        assert!(store.encode_all_decoded().is_empty());
        store.commit(cp(2)).expect("commit");
        assert_eq!(store.scan().expect("scan"), [(b("j"), b("2")), (b("k"), b("14"))]);
    }

    #[test]
    fn a_panicking_encode_is_a_failure_of_its_value_not_of_the_store() {
        struct Panics;
        impl ValueCodec for Panics {
            type Value = u64;
            fn encode(_: &u64) -> std::result::Result<Bytes, String> {
                panic!("no serializer for you")
            }
            fn decode(_: &[u8]) -> std::result::Result<u64, String> {
                Ok(0)
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        store.update::<Panics, _>(3, b"p", |v| *v = Some(1)).expect("update");
        add(&mut store, b"k", 1);
        let failures = store.encode_all_decoded();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].1.contains("no serializer for you"), "{failures:?}");
        assert_eq!(store.decoded_dirty(), 1);
        assert_eq!(store.changes(0).len(), 1, "the other layer encoded");
    }

    #[test]
    fn a_stored_value_that_does_not_decode_is_a_codec_error_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        store.put(b("k"), b("not a number"));
        let err = store.update::<Decimal, _>(7, b"k", |_| ()).expect_err("no decode");
        assert!(matches!(err, StateError::Codec { .. }), "{err}");
        assert!(!err.is_retriable());
        assert_eq!(store.decoded_dirty(), 0);
        assert_eq!(store.get(b"k").expect("get"), Some(b("not a number")));
    }

    #[test]
    fn a_commit_over_capacity_empties_the_decoded_layers_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 2).expect("open");
        for k in [&b"a"[..], b"b", b"c"] {
            add(&mut store, k, 1);
        }
        assert!(store.is_full());
        store.encode_decoded(7, |k, m| panic!("{k:?}: {m}"));
        store.commit(cp(1)).expect("commit");
        assert_eq!(format!("{store:?}").matches("cached: 0").count(), 1, "{store:?}");
        assert!(format!("{store:?}").contains("decoded: 0"), "{store:?}");
        assert_eq!(add(&mut store, b"c", 1), 2, "read back from RocksDB");
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
