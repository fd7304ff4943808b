//! A record's writes to a cache, undoable: what `QueueStore`'s byte cache
//! and its decoded layers both keep, so a record that fails half-way
//! leaves the state as it was.

use std::collections::HashMap;

use ahash::RandomState;
use bytes::Bytes;

/// A cached entry a journal can put back: it knows whether it is dirty.
pub(crate) trait Dirty: Clone {
    /// Whether the entry was written since the last commit (or encode).
    fn is_dirty(&self) -> bool;
}

/// Each key written since the record began, with its entry before its
/// first write (`None`: it was not cached).
pub(crate) struct Journal<V>(Vec<(Bytes, Option<V>)>);

impl<V> Default for Journal<V> {
    fn default() -> Self {
        Journal(Vec::new())
    }
}

impl<V: Dirty> Journal<V> {
    /// Forgets what was written: a new record begins, or what was written
    /// is no longer the record's to undo.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Remembers `key`'s entry in `map` before its first write of this
    /// record (a key written twice is remembered once, as it first was).
    pub(crate) fn remember(&mut self, map: &HashMap<Bytes, V, RandomState>, key: &[u8]) {
        if self.0.iter().any(|(k, _)| k.as_ref() == key) {
            return;
        }
        let entry = match map.get_key_value(key) {
            Some((k, v)) => (k.clone(), Some(v.clone())),
            None => (Bytes::copy_from_slice(key), None),
        };
        self.0.push(entry);
    }

    /// Puts every remembered entry back into `map`, newest first, and
    /// keeps `dirty` (the count of dirty entries in `map`) right.
    pub(crate) fn undo(&mut self, map: &mut HashMap<Bytes, V, RandomState>, dirty: &mut usize) {
        while let Some((key, before)) = self.0.pop() {
            let now_dirty = map.get(&key).is_some_and(Dirty::is_dirty);
            let was_dirty = before.as_ref().is_some_and(Dirty::is_dirty);
            match before {
                Some(entry) => {
                    map.insert(key, entry);
                }
                None => {
                    map.remove(&key);
                }
            }
            match (was_dirty, now_dirty) {
                (false, true) => *dirty -= 1,
                (true, false) => *dirty += 1,
                _ => {}
            }
        }
    }
}
