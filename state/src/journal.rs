//! A record's writes to a cache, undoable: what `QueueStore`'s byte cache
//! and its decoded layers both keep, so a record that fails half-way
//! leaves the state as it was.

use std::collections::{HashMap, HashSet};

use ahash::RandomState;
use bytes::Bytes;

/// A cached entry a journal can put back: it knows whether it is dirty.
pub(crate) trait Dirty: Clone {
    /// Whether the entry was written since the last commit (or encode).
    fn is_dirty(&self) -> bool;
}

/// Each key written since the record began, with its entry before its
/// first write (`None`: it was not cached).
pub(crate) struct Journal<V> {
    entries: Vec<(Bytes, Option<V>)>,
    /// The keys of `entries` once there are more than [`SCAN_UP_TO`]:
    /// work outside any one record (a join's expiry, a window's firing)
    /// writes many keys, which a scan per write would make quadratic.
    index: HashSet<Bytes, RandomState>,
}

/// Journals up to this long are searched by a scan (most records write
/// a few keys).
const SCAN_UP_TO: usize = 8;

impl<V> Default for Journal<V> {
    fn default() -> Self {
        Journal {
            entries: Vec::new(),
            index: HashSet::default(),
        }
    }
}

impl<V: Dirty> Journal<V> {
    /// Forgets what was written: a new record begins, or what was written
    /// is no longer the record's to undo.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    /// Remembers `key`'s entry in `map` before its first write of this
    /// record (a key written twice is remembered once, as it first was).
    pub(crate) fn remember(&mut self, map: &HashMap<Bytes, V, RandomState>, key: &[u8]) {
        if self.entries.len() <= SCAN_UP_TO {
            if self.entries.iter().any(|(k, _)| k.as_ref() == key) {
                return;
            }
        } else {
            if self.index.is_empty() {
                self.index.extend(self.entries.iter().map(|(k, _)| k.clone()));
            }
            if self.index.contains(key) {
                return;
            }
        }
        let entry = match map.get_key_value(key) {
            Some((k, v)) => (k.clone(), Some(v.clone())),
            None => (Bytes::copy_from_slice(key), None),
        };
        if !self.index.is_empty() {
            self.index.insert(entry.0.clone());
        }
        self.entries.push(entry);
    }

    /// Puts every remembered entry back into `map`, newest first, and
    /// keeps `dirty` (the count of dirty entries in `map`) right.
    pub(crate) fn undo(&mut self, map: &mut HashMap<Bytes, V, RandomState>, dirty: &mut usize) {
        self.index.clear();
        while let Some((key, before)) = self.entries.pop() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct E(u32, bool);

    impl Dirty for E {
        fn is_dirty(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn a_long_journal_remembers_each_key_once_as_it_first_was_and_undoes_all() {
        let mut map: HashMap<Bytes, E, RandomState> = HashMap::default();
        let key = |i: u32| Bytes::from(format!("k{i}"));
        for i in 0..5 {
            map.insert(key(i), E(i, false));
        }
        let before = map.clone();
        let mut journal = Journal::default();
        let mut dirty = 0;
        // More keys than a scan covers, each written twice.
        for round in 0..2 {
            for i in 0..50 {
                journal.remember(&map, &key(i));
                map.insert(key(i), E(100 + round, true));
                if round == 0 {
                    dirty += 1;
                }
            }
        }
        assert_eq!(journal.entries.len(), 50, "each key once");
        journal.undo(&mut map, &mut dirty);
        assert_eq!(map, before);
        assert_eq!(dirty, 0);
        assert!(journal.index.is_empty());
    }
}
