//! The messages of the state topic: changes and commit markers.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StateError;

const VERSION: u8 = 1;
const PUT: u8 = 0;
const DELETE: u8 = 1;
const MARKER: u8 = 2;
const ABORT: u8 = 3;

/// One message of a state-topic queue.
///
/// Layout (little-endian): `version:u8 kind:u8` then for `Put`
/// `key_len:u32 key value`, for `Delete` `key`, for `Marker`
/// `source_next:i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` now holds `value`.
    Put {
        /// The store key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// `key` was deleted (a tombstone).
    Delete {
        /// The store key.
        key: Bytes,
    },
    /// Every change before this marker, and no change after it, results
    /// from the source records before `source_next` (the next offset of the
    /// queue that owns the state).
    Marker {
        /// The source offset the state is complete up to (exclusive).
        source_next: i64,
    },
    /// The changes since the last marker are void: a new owner restored
    /// the state without them (their writer crashed before its marker) and
    /// writes this before its own changes, so no later marker applies them.
    Abort,
}

impl Change {
    /// Encodes the change as a message body.
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
            Change::Put { key, value } => {
                out = BytesMut::with_capacity(6 + key.len() + value.len());
                out.put_u8(VERSION);
                out.put_u8(PUT);
                out.put_u32_le(key.len() as u32);
                out.put_slice(key);
                out.put_slice(value);
            }
            Change::Delete { key } => {
                out = BytesMut::with_capacity(2 + key.len());
                out.put_u8(VERSION);
                out.put_u8(DELETE);
                out.put_slice(key);
            }
            Change::Abort => {
                out = BytesMut::with_capacity(2);
                out.put_u8(VERSION);
                out.put_u8(ABORT);
            }
            Change::Marker { source_next } => {
                out = BytesMut::with_capacity(10);
                out.put_u8(VERSION);
                out.put_u8(MARKER);
                out.put_i64_le(*source_next);
            }
        }
        out.freeze()
    }

    /// Decodes a message body; keys and values are slices of `body`.
    ///
    /// # Errors
    ///
    /// [`StateError::Malformed`] for a body that is not a change of this version.
    pub fn decode(body: &Bytes) -> Result<Change, StateError> {
        let malformed = |why: &str| StateError::Malformed(format!("state-topic message ({} bytes): {why}", body.len()));
        let b = body.as_ref();
        match b {
            [VERSION, PUT, rest @ ..] if rest.len() >= 4 => {
                let key_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest.len() - 4 < key_len {
                    return Err(malformed("key longer than the message"));
                }
                Ok(Change::Put {
                    key: body.slice(6..6 + key_len),
                    value: body.slice(6 + key_len..),
                })
            }
            [VERSION, DELETE, ..] => Ok(Change::Delete { key: body.slice(2..) }),
            [VERSION, MARKER, rest @ ..] if rest.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(rest);
                Ok(Change::Marker {
                    source_next: i64::from_le_bytes(a),
                })
            }
            [VERSION, ABORT] => Ok(Change::Abort),
            [VERSION, ..] => Err(malformed("unknown kind or bad length")),
            [v, ..] => Err(malformed(&format!("version {v} not supported"))),
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
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value"),
            },
            Change::Put {
                key: Bytes::new(),
                value: Bytes::new(),
            },
            Change::Delete {
                key: Bytes::from_static(b"gone"),
            },
            Change::Marker { source_next: 42 },
            Change::Abort,
        ] {
            assert_eq!(Change::decode(&c.encode()).expect("decodes"), c);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        for body in [
            &b""[..],
            b"\x09\x00",
            b"\x01\x07",
            b"\x01\x00\xff\xff\xff\xff",
            b"\x01\x02\x01",
        ] {
            let err = Change::decode(&Bytes::copy_from_slice(body)).expect_err("malformed");
            assert!(!err.is_retriable());
        }
    }
}
