//! The keyBy shuffle of rocketmq-streams: which shuffle queue a key goes to,
//! and the wire format of a shuffled record.
//!
//! `key_by` ends the first stage of a job: every record leaves the shard
//! that read it as a message in the job's shuffle topic (`<job>-shuffle`),
//! in the queue [`partition`] picks from the serialized key, so that every
//! record of a key reaches the one shard that owns that shuffle queue (and
//! the key's state).
//!
//! ```text
//!  source queue ─► shard A: … ─► key_by ─► encode ─► <job>-shuffle queue partition(key)
//!                                                          │
//!                        shard B (owns that queue) ◄───────┘  decode ─► aggregate (state) ─► …
//! ```
//!
//! # Wire format, version 1
//!
//! All integers little-endian.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 1 |
//! | 2 | node: the `key_by` node of the topology the record is for |
//! | 8 | origin: [`origin_id`] of the queue the record was read from |
//! | 8 | origin offset: the offset of that input record |
//! | 4 | seq: the index of this output among those of the same input record |
//! | 8 | event timestamp, ms |
//! | 4 | key length *k* |
//! | *k* | key bytes |
//! | rest | value bytes |
//!
//! The origin (queue, offset, seq) makes every shuffled record unique and
//! ordered per origin queue: replays of the first stage after a crash write
//! the same records again, and the owner of the shuffle queue drops those it
//! already applied. [`ShuffleRecord::decode`] returns the key and value as
//! slices of the message body (no copy) and rejects anything malformed with
//! a [`DecodeError`] — it never panics on input.
#![warn(missing_docs)]

use bytes::{BufMut, Bytes, BytesMut};

/// The wire-format version this crate writes.
pub const VERSION: u8 = 1;
const HEADER: usize = 1 + 2 + 8 + 8 + 4 + 8 + 4;

/// A stable 64-bit hash (FNV-1a): the same bytes give the same value on every
/// machine, process and version, unlike `std`'s randomly keyed hasher.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys; fold the high half in.
    h ^ (h >> 32)
}

/// The shuffle queue (index into the shuffle topic's sorted queues) of a
/// serialized key.
///
/// # Panics
///
/// Panics if `queues` is 0: a shuffle topic always has queues.
pub fn partition(key: &[u8], queues: u32) -> u32 {
    assert!(queues > 0, "a shuffle topic has at least one queue");
    (stable_hash(key) % u64::from(queues)) as u32
}

/// The compact id of an origin queue in shuffled records: the stable hash
/// of its name (`topic@broker#queue`).
pub fn origin_id(queue_name: &str) -> u64 {
    stable_hash(queue_name.as_bytes())
}

/// Where a shuffled record came from: unique per output of an input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// [`origin_id`] of the input queue.
    pub queue: u64,
    /// Offset of the input record in that queue.
    pub offset: i64,
    /// Index of this output among the outputs of that input record.
    pub seq: u32,
}

/// One keyed record on its way through the shuffle topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleRecord {
    /// The topology node (the `key_by`) the record is for.
    pub node: u16,
    /// Where it came from.
    pub origin: Origin,
    /// Event time, ms since the epoch.
    pub timestamp: i64,
    /// The serialized key.
    pub key: Bytes,
    /// The serialized value.
    pub value: Bytes,
}

/// Why a message body is not a shuffled record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed header or than the key length it declares.
    #[error("truncated shuffle record: {0} bytes")]
    Truncated(usize),
    /// Written by a version this build does not read.
    #[error("shuffle record version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
}

impl DecodeError {
    /// Whether retrying helps: never, the bytes will not change.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

impl ShuffleRecord {
    /// Encodes the record into one message body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER + self.key.len() + self.value.len());
        out.put_u8(VERSION);
        out.put_u16_le(self.node);
        out.put_u64_le(self.origin.queue);
        out.put_i64_le(self.origin.offset);
        out.put_u32_le(self.origin.seq);
        out.put_i64_le(self.timestamp);
        out.put_u32_le(self.key.len() as u32);
        out.put_slice(&self.key);
        out.put_slice(&self.value);
        out.freeze()
    }

    /// Encodes a record whose key and value are written straight into the
    /// body by `write_key` and `write_value`: one allocation per record,
    /// where serializing key and value first and then [`encode`](Self::encode)
    /// takes three. `capacity` is a guess of the body's size. Returns the
    /// body and the key as a slice of it (for [`partition`], no copy).
    ///
    /// # Errors
    ///
    /// The first error of `write_key` or `write_value`.
    ///
    /// # Panics
    ///
    /// If the key written is 4 GiB or longer.
    pub fn encode_with<E>(
        node: u16,
        origin: Origin,
        timestamp: i64,
        capacity: usize,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
        write_value: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(Bytes, Bytes), E> {
        let mut out = Vec::with_capacity(capacity.max(HEADER));
        out.push(VERSION);
        out.extend_from_slice(&node.to_le_bytes());
        out.extend_from_slice(&origin.queue.to_le_bytes());
        out.extend_from_slice(&origin.offset.to_le_bytes());
        out.extend_from_slice(&origin.seq.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        write_key(&mut out)?;
        let key_len = out.len() - HEADER;
        let key_len_field = u32::try_from(key_len).expect("a shuffle key under 4 GiB");
        out[HEADER - 4..HEADER].copy_from_slice(&key_len_field.to_le_bytes());
        write_value(&mut out)?;
        let body = Bytes::from(out);
        let key = body.slice(HEADER..HEADER + key_len);
        Ok((body, key))
    }

    /// Decodes a message body; key and value are slices of `body`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if `body` is truncated or of another version.
    pub fn decode(body: &Bytes) -> Result<ShuffleRecord, DecodeError> {
        let b = body.as_ref();
        if b.is_empty() {
            return Err(DecodeError::Truncated(0));
        }
        if b[0] != VERSION {
            return Err(DecodeError::Version(b[0]));
        }
        if b.len() < HEADER {
            return Err(DecodeError::Truncated(b.len()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let key_len = u32_at(31) as usize;
        let key_end = HEADER.checked_add(key_len).filter(|&e| e <= b.len());
        let Some(key_end) = key_end else {
            return Err(DecodeError::Truncated(b.len()));
        };
        Ok(ShuffleRecord {
            node: u16_at(1),
            origin: Origin {
                queue: u64_at(3),
                offset: u64_at(11) as i64,
                seq: u32_at(19),
            },
            timestamp: u64_at(23) as i64,
            key: body.slice(HEADER..key_end),
            value: body.slice(key_end..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ShuffleRecord {
        ShuffleRecord {
            node: 7,
            origin: Origin {
                queue: origin_id("lines@broker-a#3"),
                offset: 123_456,
                seq: 2,
            },
            timestamp: 1_700_000_000_123,
            key: Bytes::from_static(b"\"word\""),
            value: Bytes::from_static(b"\"word\""),
        }
    }

    #[test]
    fn round_trip_without_copying_the_payload() {
        let body = record().encode();
        let decoded = ShuffleRecord::decode(&body).expect("decodes");
        assert_eq!(decoded, record());
        // The value is a view into the message body, not a copy.
        let start = body.as_ptr() as usize;
        let value = decoded.value.as_ptr() as usize;
        assert!(value >= start && value < start + body.len());
    }

    #[test]
    fn encode_with_writes_the_same_body_as_encode() {
        let r = record();
        let (body, key) = ShuffleRecord::encode_with::<()>(
            r.node,
            r.origin,
            r.timestamp,
            0,
            |b| {
                b.extend_from_slice(&r.key);
                Ok(())
            },
            |b| {
                b.extend_from_slice(&r.value);
                Ok(())
            },
        )
        .expect("encodes");
        assert_eq!(body, r.encode());
        assert_eq!(key, r.key);
        let failed = ShuffleRecord::encode_with(r.node, r.origin, r.timestamp, 64, |_| Ok(()), |_| Err("no value"));
        assert_eq!(failed, Err("no value"));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let body = record().encode();
        for len in 0..body.len() {
            let cut = body.slice(..len);
            match ShuffleRecord::decode(&cut) {
                // Cutting only into the value still leaves a valid record.
                Ok(r) => assert!(len >= HEADER + r.key.len()),
                Err(e) => assert!(!e.is_retriable()),
            }
        }
        let mut v2 = body.to_vec();
        v2[0] = 2;
        assert_eq!(ShuffleRecord::decode(&Bytes::from(v2)), Err(DecodeError::Version(2)));
        let mut huge_key = body.to_vec();
        huge_key[31..35].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ShuffleRecord::decode(&Bytes::from(huge_key)),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn partition_is_stable_and_spreads_keys() {
        // Fixed values: the partition of a key must never change between builds.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325 ^ (0xcbf2_9ce4_8422_2325 >> 32));
        assert_eq!(partition(b"\"hello\"", 8), partition(b"\"hello\"", 8));
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[partition(format!("\"word{i}\"").as_bytes(), 8) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
