//! Rebuilding a queue's store from its state-topic queue.

use bytes::Bytes;

use crate::changelog::Change;
use crate::error::{Result, StateError};
use crate::store::{Checkpoint, QueueStore};

/// Replays one state-topic queue into a [`QueueStore`], marker by marker.
///
/// Changes are held back until the marker that follows them, then applied
/// with the checkpoint of that marker in one atomic RocksDB batch. Changes
/// after the last marker belong to a commit that never completed (the
/// writer crashed before its marker): [`finish`](Self::finish) discards them.
#[derive(Debug, Default)]
pub struct Restore {
    pending: Vec<Change>,
    /// Markers applied.
    pub markers: u64,
    /// Changes applied.
    pub applied: u64,
    /// The checkpoint of the last marker applied.
    pub checkpoint: Option<Checkpoint>,
}

/// What a finished restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Markers applied.
    pub markers: u64,
    /// Changes applied.
    pub applied: u64,
    /// Changes after the last marker, discarded.
    pub discarded: u64,
    /// Where the store now stands.
    pub checkpoint: Option<Checkpoint>,
}

impl Restore {
    /// Feeds the message at `offset` of the state-topic queue.
    ///
    /// # Errors
    ///
    /// [`StateError::Malformed`] if the message is not a change (the caller
    /// applies its error policy and goes on); [`StateError::RocksDb`] if
    /// applying a marker's changes fails.
    pub fn feed(&mut self, store: &mut QueueStore, offset: i64, body: &Bytes) -> Result<()> {
        match Change::decode(body).map_err(|e| StateError::Malformed(format!("{e} at state offset {offset}")))? {
            Change::Marker { source_next } => {
                let checkpoint = Checkpoint {
                    state_next: offset + 1,
                    source_next,
                };
                store.apply_restored(&self.pending, checkpoint)?;
                self.applied += self.pending.len() as u64;
                self.pending.clear();
                self.markers += 1;
                self.checkpoint = Some(checkpoint);
            }
            Change::Abort => self.pending.clear(),
            change => self.pending.push(change),
        }
        Ok(())
    }

    /// Ends the restore, discarding changes after the last marker.
    pub fn finish(self) -> RestoreSummary {
        RestoreSummary {
            markers: self.markers,
            applied: self.applied,
            discarded: self.pending.len() as u64,
            checkpoint: self.checkpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Bytes {
        Change::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
        .encode()
    }

    #[test]
    fn applies_up_to_the_last_marker_and_discards_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        let log = [
            put("a", "1"),
            put("b", "1"),
            Change::Marker { source_next: 10 }.encode(),
            put("a", "2"),
            Bytes::from_static(b"garbage"),
            Change::Marker { source_next: 20 }.encode(),
            put("a", "3"), // the writer crashed before its marker
        ];
        let mut with_abort = log.to_vec();
        with_abort.extend([
            Change::Abort.encode(),
            put("b", "9"),
            Change::Marker { source_next: 21 }.encode(),
        ]);
        let mut restore = Restore::default();
        let mut malformed = 0;
        for (offset, body) in log.iter().enumerate() {
            if let Err(e) = restore.feed(&mut store, offset as i64, body) {
                assert!(matches!(e, StateError::Malformed(_)), "{e}");
                malformed += 1;
            }
        }
        let summary = restore.finish();
        assert_eq!(malformed, 1);
        assert_eq!(
            summary,
            RestoreSummary {
                markers: 2,
                applied: 3,
                discarded: 1,
                checkpoint: Some(Checkpoint {
                    state_next: 6,
                    source_next: 20
                }),
            }
        );
        assert_eq!(store.get(b"a").expect("get"), Some(Bytes::from_static(b"2")));
        assert_eq!(store.checkpoint().expect("cp"), summary.checkpoint);

        // The next owner wrote an abort before its changes: the orphan
        // `a = 3` is never applied, its own `b = 9` is.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let mut store2 = QueueStore::open(dir2.path().join("q"), 100).expect("open");
        let mut restore = Restore::default();
        for (offset, body) in with_abort.iter().enumerate() {
            let _ = restore.feed(&mut store2, offset as i64, body);
        }
        assert_eq!(restore.finish().discarded, 0);
        assert_eq!(store2.get(b"a").expect("get"), Some(Bytes::from_static(b"2")));
        assert_eq!(store2.get(b"b").expect("get"), Some(Bytes::from_static(b"9")));
    }
}
