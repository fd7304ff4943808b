//! Replaying a state-topic queue into a store: the fold of the restore.

use bytes::Bytes;

use crate::changelog::{Change, Epoch};
use crate::error::{Result, StateError};
use crate::store::{Checkpoint, QueueStore};

/// Replays one state-topic queue into a [`QueueStore`], marker by marker,
/// under the epoch rules of the crate docs:
///
/// - a [`Change::Claim`] at offset *o* makes *o* the current epoch and
///   voids the changes not yet followed by their marker (their writer
///   stopped before it);
/// - changes and markers of any other epoch are ignored (a fenced owner
///   still writing after a newer claim);
/// - changes are held back until their epoch's next marker, then applied
///   with that marker's checkpoint in one atomic RocksDB batch.
#[derive(Debug, Default)]
pub struct Restore {
    pending: Vec<Change>,
    epoch: Option<Epoch>,
    token: u64,
    source_next: Option<i64>,
    /// Where the store stands (the last marker applied, or the local
    /// checkpoint the restore started from).
    checkpoint: Option<Checkpoint>,
    markers: u64,
    applied: u64,
    discarded: u64,
    ignored: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreSummary {
    /// Markers applied.
    pub markers: u64,
    /// Changes applied (a snapshot's entries included).
    pub applied: u64,
    /// Changes of an owner that stopped before their marker, discarded.
    pub discarded: u64,
    /// Changes and markers of a fenced owner (an older epoch written after
    /// a newer claim), ignored.
    pub ignored: u64,
    /// Where the store now stands.
    pub checkpoint: Option<Checkpoint>,
    /// Whether the restore started from the local database's checkpoint
    /// (`false`: from the beginning of the queue).
    pub from_local: bool,
    /// Why the local database was discarded, if it was.
    pub discarded_local: Option<String>,
    /// Foreign messages (not of this engine's format, see
    /// [`Change::is_foreign`]): `(offset, body, why)`, for the caller's
    /// error policy. The restore went on without them.
    pub malformed: Vec<(i64, Bytes, String)>,
}

impl Restore {
    /// A restore that continues from `from`, the local database's
    /// checkpoint, or from the beginning of the queue.
    pub fn new(from: Option<Checkpoint>) -> Restore {
        Restore {
            epoch: from.map(|c| c.epoch),
            token: from.map_or(0, |c| c.token),
            source_next: from.and_then(|c| c.source_next),
            checkpoint: from,
            ..Restore::default()
        }
    }

    /// The epoch of the last claim fed (or of the starting checkpoint).
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// The source offset of the last marker applied.
    pub fn source_next(&self) -> Option<i64> {
        self.source_next
    }

    /// Feeds the message at `offset` of the state-topic queue.
    ///
    /// # Errors
    ///
    /// [`StateError::Malformed`] if the message is not a change (the caller
    /// applies its error policy and goes on); [`StateError::RocksDb`] if
    /// applying a marker's changes fails.
    pub fn feed(&mut self, store: &mut QueueStore, offset: i64, body: &Bytes) -> Result<()> {
        let change =
            Change::decode(body).map_err(|e| StateError::Malformed(format!("{e} at state offset {offset}")))?;
        match change {
            Change::Claim { token } => {
                self.discarded += self.pending.len() as u64;
                self.pending.clear();
                self.epoch = Some(offset);
                self.token = token;
            }
            Change::Marker {
                epoch,
                token,
                source_next,
            } if Some(epoch) == self.epoch => {
                let checkpoint = Checkpoint {
                    state_next: offset + 1,
                    source_next: Some(source_next),
                    epoch,
                    token,
                };
                store.apply_restored(&self.pending, checkpoint)?;
                self.applied += self.pending.len() as u64;
                self.pending.clear();
                self.markers += 1;
                self.source_next = Some(source_next);
                self.checkpoint = Some(checkpoint);
            }
            Change::Put { epoch, .. } | Change::Delete { epoch, .. } if Some(epoch) == self.epoch => {
                self.pending.push(change);
            }
            Change::Batch { epoch, entries } if Some(epoch) == self.epoch => {
                self.pending.extend(entries.into_iter().map(|(key, value)| match value {
                    Some(value) => Change::Put { epoch, key, value },
                    None => Change::Delete { epoch, key },
                }));
            }
            Change::Batch { entries, .. } => self.ignored += entries.len() as u64,
            Change::Put { .. } | Change::Delete { .. } | Change::Marker { .. } => self.ignored += 1,
            // A snapshot repeats the state the markers before it built.
            Change::Snapshot { .. } | Change::SnapshotEnd { .. } => {}
        }
        Ok(())
    }

    /// Ends the restore at `next` (one past the last message fed, which
    /// the caller's own claim was): records in the store that it stands
    /// there, in the current epoch, with the last marker's source offset.
    ///
    /// # Errors
    ///
    /// [`StateError::RocksDb`] if the checkpoint cannot be written.
    pub fn finish(mut self, store: &mut QueueStore, next: i64) -> Result<RestoreSummary> {
        self.discarded += self.pending.len() as u64;
        if let Some(epoch) = self.epoch {
            let checkpoint = Checkpoint {
                state_next: next,
                source_next: self.source_next,
                epoch,
                token: self.token,
            };
            store.apply_restored(&[], checkpoint)?;
            self.checkpoint = Some(checkpoint);
        }
        Ok(RestoreSummary {
            markers: self.markers,
            applied: self.applied,
            discarded: self.discarded,
            ignored: self.ignored,
            checkpoint: self.checkpoint,
            ..RestoreSummary::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(epoch: i64, k: &str, v: &str) -> Bytes {
        Change::Put {
            epoch,
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
        .encode()
    }

    fn marker(epoch: i64, source_next: i64) -> Bytes {
        Change::Marker {
            epoch,
            token: 1,
            source_next,
        }
        .encode()
    }

    #[test]
    fn applies_marked_changes_of_the_current_epoch_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 100).expect("open");
        let log = [
            Change::Claim { token: 1 }.encode(), // 0: epoch 0
            put(0, "a", "1"),
            put(0, "b", "1"),
            marker(0, 10),
            put(0, "a", "2"),
            Bytes::from_static(b"garbage"),
            marker(0, 20),                       // 6
            put(0, "a", "3"),                    // its writer stopped before its marker
            Change::Claim { token: 2 }.encode(), // 8: epoch 8 voids `a = 3`
            put(0, "b", "old"),                  // the fenced owner goes on writing: ignored
            put(8, "b", "9"),
            marker(0, 30),    // ignored: epoch 0 is fenced
            marker(8, 21),    // 12
            put(8, "c", "1"), // no marker
        ];
        let mut restore = Restore::new(None);
        let mut malformed = 0;
        for (offset, body) in log.iter().enumerate() {
            if let Err(e) = restore.feed(&mut store, offset as i64, body) {
                assert!(matches!(e, StateError::Malformed(_)), "{e}");
                malformed += 1;
            }
        }
        let summary = restore.finish(&mut store, log.len() as i64).expect("finish");
        assert_eq!(malformed, 1);
        assert_eq!(
            (summary.markers, summary.applied, summary.discarded, summary.ignored),
            (3, 4, 2, 2)
        );
        assert_eq!(
            summary.checkpoint,
            Some(Checkpoint {
                state_next: log.len() as i64,
                source_next: Some(21),
                epoch: 8,
                token: 2,
            })
        );
        assert_eq!(store.get(b"a").expect("get"), Some(Bytes::from_static(b"2")));
        assert_eq!(store.get(b"b").expect("get"), Some(Bytes::from_static(b"9")));
        assert_eq!(store.get(b"c").expect("get"), None);
        assert_eq!(store.checkpoint().expect("cp"), summary.checkpoint);
    }
}
