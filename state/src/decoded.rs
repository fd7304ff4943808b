//! The decoded layer of a [`QueueStore`](crate::QueueStore): state values
//! kept as the operator's own type between checkpoints.
//!
//! An aggregation reads and writes its key's state once per record. Kept as
//! bytes, every update costs a decode and an encode (and an allocation for
//! the encoded value); kept decoded, an update is the operator's own
//! arithmetic on a value in a hash map. The bytes are made once per key per
//! checkpoint, by [`QueueStore::encode_decoded`](crate::QueueStore::encode_decoded),
//! which the operator calls from its flush before the changelog is written.
//!
//! ```text
//!  operator ── update / read ──► Decoded<C>  (HashMap key → C::Value, dirty flags, record journal)
//!                                   │ miss: bytes from the layer below, C::decode
//!                                   │ encode_decoded (before each checkpoint): C::encode
//!                                   ▼
//!                                 byte cache ── commit ──► RocksDB
//! ```
//!
//! A layer is one operator's: its keys share the operator's prefix and its
//! values one type, and only the layer reads and writes them (the byte API
//! on such a key would see the last encoded value, not the current one).
//! [`QueueStore::changes`](crate::QueueStore::changes) lists bytes only, so
//! [`OwnedQueue::checkpoint`](crate::OwnedQueue::checkpoint) encodes what
//! an operator left, and [`QueueStore::commit`](crate::QueueStore::commit)
//! refuses to run while a value is not encoded: a value that cannot be
//! encoded stops the checkpoint (its queue's offsets stay uncommitted),
//! never vanishes.
//!
//! A value must survive its codec unchanged (encode, then decode, is the
//! identity): between checkpoints the operator sees the value it wrote,
//! after an eviction or a restore the decoded bytes.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ahash::RandomState;
use bytes::Bytes;

use crate::journal::{Dirty, Journal};

/// How the values of a decoded layer become bytes and back: the format
/// they have in RocksDB and in the changelog.
pub trait ValueCodec: 'static {
    /// The decoded value.
    type Value: Clone + 'static;

    /// The bytes of `value`.
    ///
    /// # Errors
    ///
    /// A message saying why `value` cannot be encoded.
    fn encode(value: &Self::Value) -> Result<Bytes, String>;

    /// The value `bytes` encode.
    ///
    /// # Errors
    ///
    /// A message saying why `bytes` is not a value of this codec (another
    /// release's format, another type).
    fn decode(bytes: &[u8]) -> Result<Self::Value, String>;
}

/// A cached value: `None` when the key has no value.
#[derive(Clone)]
pub(crate) struct Entry<V> {
    pub(crate) value: Option<V>,
    /// Newer than the bytes below it: to encode before the next checkpoint.
    pub(crate) dirty: bool,
}

impl<V: Clone> Dirty for Entry<V> {
    fn is_dirty(&self) -> bool {
        self.dirty
    }
}

/// One operator's decoded values.
pub(crate) struct Decoded<C: ValueCodec> {
    pub(crate) entries: HashMap<Bytes, Entry<C::Value>, RandomState>,
    /// Entries whose value is newer than the bytes below.
    pub(crate) dirty: usize,
    /// Each key written since the record began, with its entry before
    /// (`None`: not cached), for a rollback.
    journal: Journal<Entry<C::Value>>,
}

impl<C: ValueCodec> Default for Decoded<C> {
    fn default() -> Self {
        Decoded {
            entries: HashMap::default(),
            dirty: 0,
            journal: Journal::default(),
        }
    }
}

impl<C: ValueCodec> Decoded<C> {
    /// Remembers `key`'s entry before its first write of this record.
    pub(crate) fn journal(&mut self, key: &[u8]) {
        self.journal.remember(&self.entries, key);
    }

    /// Marks `key`'s entry dirty (it must be cached), counting it once.
    pub(crate) fn mark_dirty(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.get_mut(key) {
            if !entry.dirty {
                entry.dirty = true;
                self.dirty += 1;
            }
        }
    }
}

/// What the store does with every layer, whatever its value type.
pub(crate) trait Layer: Any {
    /// Starts a record: the journal is emptied.
    fn begin_record(&mut self);
    /// Undoes the writes since the record began.
    fn rollback_record(&mut self);
    /// Entries newer than the bytes below.
    fn dirty(&self) -> usize;
    /// Entries cached.
    fn len(&self) -> usize;
    /// Forgets every clean entry.
    fn clear(&mut self);
    /// Whether `key` is cached.
    fn contains(&self, key: &[u8]) -> bool;
    /// Calls `f` with every cached key and whether it has a value.
    fn for_each_entry(&self, f: &mut dyn FnMut(&Bytes, bool));
    /// Encodes every dirty entry into `put` (key, bytes or `None` for a
    /// delete), marking it clean; an entry that fails to encode (or whose
    /// encoding panics) is reported to `failed` and stays dirty.
    fn encode(&mut self, put: &mut dyn FnMut(Bytes, Option<Bytes>), failed: &mut dyn FnMut(Bytes, String));
    /// For the downcast to the layer's type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<C: ValueCodec> Layer for Decoded<C> {
    fn begin_record(&mut self) {
        self.journal.clear();
    }

    fn rollback_record(&mut self) {
        self.journal.undo(&mut self.entries, &mut self.dirty);
    }

    fn dirty(&self) -> usize {
        self.dirty
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        if self.dirty == 0 {
            self.entries.clear();
        } else {
            self.entries.retain(|_, e| e.dirty);
        }
        self.journal.clear();
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&Bytes, bool)) {
        for (key, entry) in &self.entries {
            f(key, entry.value.is_some());
        }
    }

    fn encode(&mut self, put: &mut dyn FnMut(Bytes, Option<Bytes>), failed: &mut dyn FnMut(Bytes, String)) {
        if self.dirty == 0 {
            return;
        }
        for (key, entry) in self.entries.iter_mut().filter(|(_, e)| e.dirty) {
            // `encode` runs the user's `Serialize`: a panic there is a
            // failure of this value, not of the shard.
            let encoded = match &entry.value {
                None => Ok(None),
                Some(value) => match catch_unwind(AssertUnwindSafe(|| C::encode(value))) {
                    Ok(result) => result.map(Some),
                    Err(panic) => Err(format!("encoding panicked: {}", panic_message(panic.as_ref()))),
                },
            };
            match encoded {
                Ok(bytes) => {
                    entry.dirty = false;
                    self.dirty -= 1;
                    put(key.clone(), bytes);
                }
                // Stays dirty: a commit refuses to run past it.
                Err(message) => failed(key.clone(), message),
            }
        }
        // What is journaled describes entries before an encode that has
        // made them clean: a rollback now would undo what is checkpointed.
        self.journal.clear();
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Decimal text; 13 does not encode. The codec of the state crate's tests.
#[cfg(test)]
pub(crate) struct Decimal;

#[cfg(test)]
impl ValueCodec for Decimal {
    type Value = u64;
    fn encode(value: &u64) -> Result<Bytes, String> {
        if *value == 13 {
            return Err("13 is unlucky".into());
        }
        Ok(Bytes::from(value.to_string()))
    }
    fn decode(bytes: &[u8]) -> Result<u64, String> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a decimal: {bytes:?}"))
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
