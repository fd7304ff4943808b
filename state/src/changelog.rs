//! The messages of the state topic: claims, changes and commit markers.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StateError;

/// The format version this release writes and reads.
const VERSION: u8 = 2;
const PUT: u8 = 0;
const DELETE: u8 = 1;
const MARKER: u8 = 2;
const CLAIM: u8 = 4;
const SNAPSHOT: u8 = 5;
const SNAPSHOT_END: u8 = 6;

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
/// - `SnapshotEnd`: `epoch:i64 token:u64 source_next:i64 count:u64`.
///
/// Version 1 (before epochs) is refused with a clear error that stops the
/// restore: its messages carry no owner, so they cannot be fenced.
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
    /// The end of a snapshot: the `count` messages before this one are its
    /// entries, and they are the whole state up to `source_next`. Valid
    /// only when those messages are exactly `count` [`Change::Snapshot`]s
    /// of `epoch` (nobody wrote in between).
    SnapshotEnd {
        /// The writer's epoch.
        epoch: Epoch,
        /// The writer's claim token.
        token: u64,
        /// The source offset the state is complete up to (exclusive); -1
        /// before the queue's first marker.
        source_next: i64,
        /// Entries of the snapshot.
        count: u64,
    },
}

impl Change {
    /// Encodes the change as a message body.
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
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
            } => {
                out = BytesMut::with_capacity(34);
                out.put_u8(VERSION);
                out.put_u8(SNAPSHOT_END);
                out.put_i64_le(*epoch);
                out.put_u64_le(*token);
                out.put_i64_le(*source_next);
                out.put_u64_le(*count);
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
            [VERSION, SNAPSHOT_END, rest @ ..] if rest.len() == 32 => Ok(Change::SnapshotEnd {
                epoch: i64_at(2),
                token: i64_at(10) as u64,
                source_next: i64_at(18),
                count: i64_at(26) as u64,
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
            [VERSION, ..] => Err(malformed("unknown kind or bad length")),
            [1, ..] => Err(malformed(
                "version 1 (written by a release without owner epochs) is not supported; \
                 give the job a new state topic or restore it with the release that wrote it",
            )),
            [v, ..] => Err(malformed(&format!(
                "version {v} not supported (this release reads {VERSION})"
            ))),
            [] => Err(malformed("empty")),
        }
    }
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
            },
        ] {
            assert_eq!(Change::decode(&c.encode()).expect("decodes"), c);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        for body in [
            &b""[..],
            b"\x09\x00",
            b"\x02\x07",
            b"\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff",
            b"\x02\x02\x01",
            b"\x02\x01\x01",
            b"\x02\x04\x01",
            b"\x02\x06\x01",
            // Version 1: refused, never misread as version 2.
            b"\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00",
        ] {
            let err = Change::decode(&Bytes::copy_from_slice(body)).expect_err("malformed");
            assert!(!err.is_retriable());
        }
    }
}
