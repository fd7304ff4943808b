//! The messages of the state topic: claims, changes and commit markers.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StateError;

/// The format version this release writes and reads. Version 3 (issue 11)
/// added [`Change::Batch`] and comes with MessagePack state values and
/// keys; version 2 state (JSON values and keys) is refused, since its
/// keys would never be found again and every count would silently restart.
pub(crate) const VERSION: u8 = 3;
const PUT: u8 = 0;
const DELETE: u8 = 1;
const MARKER: u8 = 2;
const CLAIM: u8 = 4;
const SNAPSHOT: u8 = 5;
const SNAPSHOT_END: u8 = 6;
const BATCH: u8 = 7;
const ENTRY_PUT: u8 = 0;
const ENTRY_DELETE: u8 = 1;

/// The size a [`Change::Batch`] is closed at when a checkpoint's changes
/// are framed: the next entry starts a new message (one entry larger than
/// this gets a message of its own).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// An owner's epoch: the state-topic offset of the [`Change::Claim`] that
/// made it the owner. Offsets grow in log order, so a later claim always
/// has a higher epoch, and no two claims share one.
pub type Epoch = i64;

/// One message of a state-topic queue.
///
/// Layout (little-endian): `version:u8 kind:u8`, then for
/// - `Claim`: `token:u64`;
/// - `Put`: `epoch:i64 key_len:u32 key value`;
/// - `Delete`: `epoch:i64 key`;
/// - `Marker`: `epoch:i64 token:u64 source_next:i64`;
/// - `Snapshot`: as `Put`;
/// - `SnapshotEnd`: `epoch:i64 token:u64 source_next:i64 count:u64`, then
///   `begin:i64` (since issue 28; an end without it is read with `begin:
///   None`);
/// - `Batch`: `epoch:i64 count:u32`, then `count` entries, each
///   `tag:u8 key_len:u32 key`, and for a put (`tag` 0; 1 is a delete)
///   `value_len:u32 value`.
///
/// A checkpoint writes its changes as `Batch`es of up to
/// [`MAX_BATCH_BYTES`] (issue 11: a checkpoint is a few messages, not one
/// per key); `Put` and `Delete` of one key each are still read.
///
/// Versions 1 (before epochs: its messages carry no owner, so they cannot
/// be fenced) and 2 (JSON keys and values: its keys are not the keys this
/// release looks up) are refused with a clear error that stops the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new owner takes the queue over. Its epoch is this message's
    /// offset; `token` (random per claim) lets a local database prove it
    /// was built from this very claim (see the crate docs, "Identity").
    Claim {
        /// Random, chosen by the claiming owner.
        token: u64,
    },
    /// `key` now holds `value`.
    Put {
        /// The writer's epoch.
        epoch: Epoch,
        /// The store key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// `key` was deleted (a tombstone).
    Delete {
        /// The writer's epoch.
        epoch: Epoch,
        /// The store key.
        key: Bytes,
    },
    /// Many changes of one owner in one message: each entry is a key and
    /// its new value, or `None` for a delete.
    Batch {
        /// The writer's epoch.
        epoch: Epoch,
        /// Keys and new values (`None`: deleted), in the order written.
        entries: Vec<(Bytes, Option<Bytes>)>,
    },
    /// Every change of `epoch` since its previous marker, and no later one,
    /// results from the source records before `source_next` (the next
    /// offset of the queue that owns the state).
    Marker {
        /// The writer's epoch.
        epoch: Epoch,
        /// The writer's claim token.
        token: u64,
        /// The source offset the state is complete up to (exclusive).
        source_next: i64,
    },
    /// One entry of a snapshot: the whole state, written right after a
    /// marker, so that a restore need not replay the queue from its start.
    Snapshot {
        /// The writer's epoch.
        epoch: Epoch,
        /// The store key.
        key: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// The end of a snapshot: the messages from `begin` up to this one are
    /// its entries, `count` distinct keys in increasing order, and they are
    /// the whole state up to `source_next`. Valid only when every message
    /// in between is a [`Change::Snapshot`] of `epoch` (nobody wrote in
    /// between) and a key that does not increase repeats an entry before
    /// it with the same value: an append the sink had partly stored before
    /// it failed, sent again whole (see the crate docs, "Snapshots").
    SnapshotEnd {
        /// The writer's epoch.
        epoch: Epoch,
        /// The writer's claim token.
        token: u64,
        /// The source offset the state is complete up to (exclusive); -1
        /// before the queue's first marker.
        source_next: i64,
        /// Entries of the snapshot (distinct keys).
        count: u64,
        /// The offset of the snapshot's first entry. `None` for an end
        /// written before issue 28: its entries are then the `count`
        /// messages before it, and a re-sent prefix makes it invalid.
        begin: Option<i64>,
    },
}

impl Change {
    /// Frames `changes` (the [`Change::Put`]s and [`Change::Delete`]s of a
    /// checkpoint; other kinds are not changes and are left out) as
    /// [`Change::Batch`] message bodies of `epoch`, each up to
    /// [`MAX_BATCH_BYTES`].
    pub fn frame(epoch: Epoch, changes: &[Change]) -> Vec<Bytes> {
        let mut bodies = Vec::new();
        let mut out = BytesMut::new();
        let mut count = 0u32;
        for change in changes {
            let (key, value) = match change {
                Change::Put { key, value, .. } => (key, Some(value)),
                Change::Delete { key, .. } => (key, None),
                _ => continue,
            };
            let size = 9 + key.len() + value.map_or(0, Bytes::len);
            if count > 0 && out.len() + size > MAX_BATCH_BYTES {
                bodies.push(close_batch(std::mem::take(&mut out), count));
                count = 0;
            }
            if count == 0 {
                out.reserve(14 + size);
                open_batch(&mut out, epoch);
            }
            put_entry(&mut out, key, value);
            count += 1;
        }
        if count > 0 {
            bodies.push(close_batch(out, count));
        }
        bodies
    }

    /// Encodes the change as a message body.
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
            Change::Batch { epoch, entries } => {
                out = BytesMut::new();
                open_batch(&mut out, *epoch);
                for (key, value) in entries {
                    put_entry(&mut out, key, value.as_ref());
                }
                return close_batch(out, entries.len() as u32);
            }
            Change::Claim { token } => {
                out = BytesMut::with_capacity(10);
                out.put_u8(VERSION);
                out.put_u8(CLAIM);
                out.put_u64_le(*token);
            }
            Change::Put { epoch, key, value } | Change::Snapshot { epoch, key, value } => {
                out = BytesMut::with_capacity(14 + key.len() + value.len());
                out.put_u8(VERSION);
                out.put_u8(if matches!(self, Change::Put { .. }) {
                    PUT
                } else {
                    SNAPSHOT
                });
                out.put_i64_le(*epoch);
                out.put_u32_le(key.len() as u32);
                out.put_slice(key);
                out.put_slice(value);
            }
            Change::Delete { epoch, key } => {
                out = BytesMut::with_capacity(10 + key.len());
                out.put_u8(VERSION);
                out.put_u8(DELETE);
                out.put_i64_le(*epoch);
                out.put_slice(key);
            }
            Change::Marker {
                epoch,
                token,
                source_next,
            } => {
                out = BytesMut::with_capacity(26);
                out.put_u8(VERSION);
                out.put_u8(MARKER);
                out.put_i64_le(*epoch);
                out.put_u64_le(*token);
                out.put_i64_le(*source_next);
            }
            Change::SnapshotEnd {
                epoch,
                token,
                source_next,
                count,
                begin,
            } => {
                out = BytesMut::with_capacity(42);
                out.put_u8(VERSION);
                out.put_u8(SNAPSHOT_END);
                out.put_i64_le(*epoch);
                out.put_u64_le(*token);
                out.put_i64_le(*source_next);
                out.put_u64_le(*count);
                if let Some(begin) = begin {
                    out.put_i64_le(*begin);
                }
            }
        }
        out.freeze()
    }

    /// Whether `body` cannot have been written by any release of this
    /// engine (its first byte is no format version it ever wrote): foreign
    /// bytes in the state topic, which a restore may skip by the error
    /// policy without losing state. A body of a known version that does
    /// not decode is corrupt state, and a restore stops on it.
    pub fn is_foreign(body: &[u8]) -> bool {
        !matches!(body.first(), Some(1..=VERSION))
    }

    /// Decodes a message body; keys and values are slices of `body`.
    ///
    /// # Errors
    ///
    /// [`StateError::Malformed`] for a body that is not a change of this version.
    pub fn decode(body: &Bytes) -> Result<Change, StateError> {
        let malformed = |why: &str| StateError::Malformed(format!("state-topic message ({} bytes): {why}", body.len()));
        let b = body.as_ref();
        let i64_at = |at: usize| -> i64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            i64::from_le_bytes(a)
        };
        match b {
            [VERSION, CLAIM, rest @ ..] if rest.len() == 8 => Ok(Change::Claim {
                token: i64_at(2) as u64,
            }),
            [VERSION, kind @ (PUT | SNAPSHOT), rest @ ..] if rest.len() >= 12 => {
                let key_len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
                if rest.len() - 12 < key_len {
                    return Err(malformed("key longer than the message"));
                }
                let (epoch, key, value) = (i64_at(2), body.slice(14..14 + key_len), body.slice(14 + key_len..));
                Ok(if *kind == PUT {
                    Change::Put { epoch, key, value }
                } else {
                    Change::Snapshot { epoch, key, value }
                })
            }
            [VERSION, SNAPSHOT_END, rest @ ..] if rest.len() == 32 || rest.len() == 40 => Ok(Change::SnapshotEnd {
                epoch: i64_at(2),
                token: i64_at(10) as u64,
                source_next: i64_at(18),
                count: i64_at(26) as u64,
                begin: (rest.len() == 40).then(|| i64_at(34)),
            }),
            [VERSION, DELETE, rest @ ..] if rest.len() >= 8 => Ok(Change::Delete {
                epoch: i64_at(2),
                key: body.slice(10..),
            }),
            [VERSION, MARKER, rest @ ..] if rest.len() == 24 => Ok(Change::Marker {
                epoch: i64_at(2),
                token: i64_at(10) as u64,
                source_next: i64_at(18),
            }),
            [VERSION, BATCH, rest @ ..] if rest.len() >= 12 => {
                let count = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
                // Every entry takes at least 5 bytes: a count the body cannot
                // hold is refused before anything is allocated for it.
                if count > (rest.len() - 12) / 5 {
                    return Err(malformed("more batch entries than bytes"));
                }
                // Bounded: a corrupt count must not reserve what it claims.
                let mut entries = Vec::with_capacity(count.min(4096));
                let mut at = 14;
                let u32_at = |at: usize| -> Option<usize> {
                    let field = b.get(at..at + 4)?;
                    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize)
                };
                let slice = |at: &mut usize| -> Option<Bytes> {
                    let len = u32_at(*at)?;
                    let end = (*at + 4).checked_add(len).filter(|&e| e <= b.len())?;
                    let field = body.slice(*at + 4..end);
                    *at = end;
                    Some(field)
                };
                for _ in 0..count {
                    let tag = *b.get(at).ok_or_else(|| malformed("batch entry past the end"))?;
                    at += 1;
                    let key = slice(&mut at).ok_or_else(|| malformed("batch key past the end"))?;
                    let value = match tag {
                        ENTRY_PUT => Some(slice(&mut at).ok_or_else(|| malformed("batch value past the end"))?),
                        ENTRY_DELETE => None,
                        _ => return Err(malformed("unknown batch entry tag")),
                    };
                    entries.push((key, value));
                }
                if at != b.len() {
                    return Err(malformed("bytes after the batch's entries"));
                }
                Ok(Change::Batch {
                    epoch: i64_at(2),
                    entries,
                })
            }
            [VERSION, ..] => Err(malformed("unknown kind or bad length")),
            [1, ..] => Err(malformed(
                "version 1 (written by a release without owner epochs) is not supported; \
                 give the job a new state topic or restore it with the release that wrote it",
            )),
            [2, ..] => Err(malformed(
                "version 2 (JSON keys and state values, written by a release before framed \
                 shuffles) is not supported: its keys are not those this release looks up; \
                 give the job a new id (new state and shuffle topics) or restore it with the release that wrote it",
            )),
            [v, ..] => Err(malformed(&format!(
                "version {v} not supported (this release reads {VERSION})"
            ))),
            [] => Err(malformed("empty")),
        }
    }
}

/// Starts a [`Change::Batch`] body (its count written by [`close_batch`]).
fn open_batch(out: &mut BytesMut, epoch: Epoch) {
    out.put_u8(VERSION);
    out.put_u8(BATCH);
    out.put_i64_le(epoch);
    out.put_u32_le(0);
}

fn put_entry(out: &mut BytesMut, key: &[u8], value: Option<&Bytes>) {
    out.put_u8(if value.is_some() { ENTRY_PUT } else { ENTRY_DELETE });
    out.put_u32_le(key.len() as u32);
    out.put_slice(key);
    if let Some(value) = value {
        out.put_u32_le(value.len() as u32);
        out.put_slice(value);
    }
}

fn close_batch(mut out: BytesMut, count: u32) -> Bytes {
    out[10..14].copy_from_slice(&count.to_le_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        for c in [
            Change::Put {
                epoch: 7,
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value"),
            },
            Change::Put {
                epoch: 0,
                key: Bytes::new(),
                value: Bytes::new(),
            },
            Change::Delete {
                epoch: i64::MAX,
                key: Bytes::from_static(b"gone"),
            },
            Change::Marker {
                epoch: 3,
                token: u64::MAX,
                source_next: 42,
            },
            Change::Claim { token: 99 },
            Change::Snapshot {
                epoch: 2,
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            },
            Change::SnapshotEnd {
                epoch: 2,
                token: 3,
                source_next: 4,
                count: 5,
                begin: Some(-7),
            },
            // As written before issue 28.
            Change::SnapshotEnd {
                epoch: 2,
                token: 3,
                source_next: 4,
                count: 5,
                begin: None,
            },
            Change::Batch {
                epoch: 9,
                entries: vec![
                    (Bytes::from_static(b"k"), Some(Bytes::from_static(b"v"))),
                    (Bytes::from_static(b"gone"), None),
                    (Bytes::new(), Some(Bytes::new())),
                ],
            },
            Change::Batch {
                epoch: 9,
                entries: vec![],
            },
        ] {
            assert_eq!(Change::decode(&c.encode()).expect("decodes"), c);
        }
    }

    #[test]
    fn a_checkpoint_is_framed_into_few_batches() {
        let big = Bytes::from(vec![1u8; MAX_BATCH_BYTES / 3]);
        let mut changes: Vec<Change> = (0..1000)
            .map(|i| Change::Put {
                epoch: 4,
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from(format!("{i}")),
            })
            .collect();
        changes.push(Change::Delete {
            epoch: 4,
            key: Bytes::from_static(b"k1"),
        });
        for _ in 0..3 {
            changes.push(Change::Put {
                epoch: 4,
                key: Bytes::from_static(b"big"),
                value: big.clone(),
            });
        }
        let bodies = Change::frame(4, &changes);
        assert!(bodies.iter().all(|b| b.len() <= MAX_BATCH_BYTES));
        let mut back = Vec::new();
        for body in &bodies {
            match Change::decode(body).expect("decodes") {
                Change::Batch { epoch: 4, entries } => back.extend(entries),
                other => panic!("not a batch: {other:?}"),
            }
        }
        assert_eq!(bodies.len(), 2, "the thirds split the last frame");
        assert_eq!(back.len(), changes.len());
        assert_eq!(back[1000], (Bytes::from_static(b"k1"), None));
        assert_eq!(back[1003].1.as_ref(), Some(&big));
        assert!(Change::frame(4, &[]).is_empty());
    }

    #[test]
    fn a_cut_or_corrupt_batch_is_an_error_not_a_panic() {
        let body = Change::Batch {
            epoch: 1,
            entries: vec![
                (Bytes::from_static(b"key"), Some(Bytes::from_static(b"value"))),
                (Bytes::from_static(b"k2"), None),
            ],
        }
        .encode();
        for len in 0..body.len() {
            assert!(Change::decode(&body.slice(..len)).is_err(), "cut at {len}");
        }
        for i in 2..body.len() {
            let mut v = body.to_vec();
            v[i] ^= 0xff;
            let _ = Change::decode(&Bytes::from(v));
        }
        let mut huge = body.to_vec();
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Change::decode(&Bytes::from(huge)).is_err());
    }

    #[test]
    fn malformed_messages_are_errors() {
        for body in [
            &b""[..],
            b"\x09\x00",
            b"\x03\x09",
            b"\x03\x00\x01\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff",
            b"\x03\x02\x01",
            b"\x03\x01\x01",
            b"\x03\x04\x01",
            b"\x03\x06\x01",
            b"\x03\x07\x01",
            // Version 2 (JSON state): refused, its keys would never be found.
            b"\x02\x04\x01\x00\x00\x00\x00\x00\x00\x00",
            // Version 1: refused, never misread as version 2.
            b"\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00",
        ] {
            let err = Change::decode(&Bytes::copy_from_slice(body)).expect_err("malformed");
            assert!(!err.is_retriable());
        }
    }
}
