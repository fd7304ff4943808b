//! The keyBy shuffle of rocketmq-streams: which shuffle queue a key goes to,
//! and the wire format of shuffled records.
//!
//! `key_by` ends the first stage of a job: every record leaves the shard
//! that read it for the job's shuffle topic (`<job>-shuffle`), in the queue
//! [`partition`] picks from the serialized key, so that every record of a
//! key reaches the one shard that owns that shuffle queue (and the key's
//! state). The records of one upstream batch bound for one shuffle queue
//! travel as one message: a [`Frame`] of up to [`MAX_FRAME_BYTES`].
//!
//! ```text
//!  source queue ─► shard A: … ─► key_by ─► FrameWriter per shuffle queue ─► one message per frame
//!                                                          │
//!       shard B (owns that queue) ◄────────────────────────┘  Frame::decode ─► records() ─► aggregate (state) ─► …
//! ```
//!
//! # Wire format, version 2
//!
//! A frame is a header and `count` records. Fixed-width integers are
//! little-endian; `varint` is LEB128 (at most 10 bytes), and `zigzag` a
//! varint of a zigzag-encoded signed value.
//!
//! | bytes | header field |
//! |---|---|
//! | 1 | version = 2 |
//! | 8 | origin: [`origin_id`] of the queue every record of the frame was read from |
//! | 8 | base offset: the origin offset of the first record |
//! | 8 | base timestamp: the event time of the first record, ms |
//! | 4 | count: records in the frame |
//!
//! | record field | encoding |
//! |---|---|
//! | node: the `key_by` node of the topology the record is for | varint |
//! | origin offset − base offset | zigzag |
//! | seq: the index of this output among those of the same input record (see [`Origin::seq`]) | varint |
//! | event timestamp − base timestamp | zigzag |
//! | key length *k*, then *k* key bytes | varint, bytes |
//! | value length *v*, then *v* value bytes | varint, bytes |
//!
//! Keys and values are MessagePack (see `rocketmq-streams`' `codec`); this
//! crate only moves their bytes. The origin (queue, offset, seq) makes every
//! shuffled record unique and ordered per origin queue: replays of the first
//! stage after a crash write the same records again, possibly framed
//! differently, and the owner of the shuffle queue drops those it already
//! applied.
//!
//! Version 1 (one record per message, JSON keys and values) is refused with
//! [`DecodeError::Version`]: drain the shuffle topic with the release that
//! wrote it, or start the job under a new id.
//!
//! [`Frame::decode`] reads the header; [`Frame::records`] yields each record
//! with its key and value as slices of the message body (no copy). Neither
//! ever panics on input, and neither allocates in proportion to a length
//! read from the input: every length is checked against the bytes left.
#![warn(missing_docs)]

use bytes::Bytes;

/// The wire-format version this crate writes and reads.
pub const VERSION: u8 = 2;
/// The frame header's size.
pub const HEADER: usize = 1 + 8 + 8 + 8 + 4;
/// The size a frame is closed at: the next record starts a new frame
/// (a single record larger than this gets a frame of its own).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// The smallest encoded record (six one-byte fields), to bound `count`.
const MIN_RECORD: usize = 6;

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
    /// Index of this output among the outputs of that input record (in a
    /// keyed stage, whose input is a frame: the input record's index in
    /// its frame × 2³², plus the output's index).
    pub seq: u64,
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

impl ShuffleRecord {
    /// This record alone as a frame: what a dead letter of one record of a
    /// larger frame carries, so that it can be read back on its own.
    pub fn to_frame(&self) -> Bytes {
        let mut w = FrameWriter::new(self.origin.queue, self.origin.offset, self.timestamp);
        w.push(
            self.node,
            self.origin.offset,
            self.origin.seq,
            self.timestamp,
            &self.key,
            &self.value,
        );
        w.finish()
    }
}

/// Why a message body is not a shuffle frame, or a record of it is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header, or a length runs past the end.
    #[error("truncated shuffle frame: {0}")]
    Truncated(String),
    /// A field does not fit its type (a varint over 10 bytes, a node over
    /// 16 bits, a count the bytes cannot hold).
    #[error("malformed shuffle frame: {0}")]
    Malformed(String),
    /// Written by a version this build does not read.
    #[error(
        "shuffle frame version {0} is not supported (this build reads version {VERSION}; version 1 \
         was the one-record-per-message JSON format: drain the shuffle topic with the release that \
         wrote it, or start the job under a new id)"
    )]
    Version(u8),
}

impl DecodeError {
    /// Whether retrying helps: never, the bytes will not change.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The most bytes a record adds to a frame besides its key and value.
pub const MAX_RECORD_OVERHEAD: usize = 3 + 10 + 10 + 10 + 5 + 5;

/// Builds one frame of records of one origin queue.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    base_offset: i64,
    base_timestamp: i64,
    count: u32,
}

impl FrameWriter {
    /// A frame of records read from origin queue `origin`; the first
    /// record's offset and event time (`base_offset`, `base_timestamp`)
    /// make the others' small deltas.
    pub fn new(origin: u64, base_offset: i64, base_timestamp: i64) -> FrameWriter {
        let mut buf = Vec::with_capacity(256);
        buf.push(VERSION);
        buf.extend_from_slice(&origin.to_le_bytes());
        buf.extend_from_slice(&base_offset.to_le_bytes());
        buf.extend_from_slice(&base_timestamp.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        FrameWriter {
            buf,
            base_offset,
            base_timestamp,
            count: 0,
        }
    }

    /// Appends a record.
    ///
    /// # Panics
    ///
    /// If the frame already holds `u32::MAX` records (a frame closes at
    /// [`MAX_FRAME_BYTES`] long before).
    pub fn push(&mut self, node: u16, offset: i64, seq: u64, timestamp: i64, key: &[u8], value: &[u8]) {
        self.count = self.count.checked_add(1).expect("a frame under 4 billion records");
        let out = &mut self.buf;
        put_varint(out, u64::from(node));
        put_varint(out, zigzag(offset.wrapping_sub(self.base_offset)));
        put_varint(out, seq);
        put_varint(out, zigzag(timestamp.wrapping_sub(self.base_timestamp)));
        put_varint(out, key.len() as u64);
        out.extend_from_slice(key);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    /// The frame's size so far, in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether a record of `key_len` + `value_len` bytes should start a
    /// new frame instead: this one holds records and would pass
    /// [`MAX_FRAME_BYTES`] with it.
    pub fn is_full_for(&self, key_len: usize, value_len: usize) -> bool {
        self.count > 0 && self.buf.len() + key_len + value_len + MAX_RECORD_OVERHEAD > MAX_FRAME_BYTES
    }

    /// The finished message body.
    pub fn finish(mut self) -> Bytes {
        self.buf[HEADER - 4..HEADER].copy_from_slice(&self.count.to_le_bytes());
        Bytes::from(self.buf)
    }
}

/// A decoded frame header over its message body.
#[derive(Debug, Clone)]
pub struct Frame {
    body: Bytes,
    /// [`origin_id`] of the queue every record of the frame was read from.
    pub origin: u64,
    base_offset: i64,
    base_timestamp: i64,
    /// Records in the frame.
    pub count: u32,
}

impl Frame {
    /// Reads a frame's header.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Version`] for another version (version 1 included);
    /// [`DecodeError::Truncated`] or [`DecodeError::Malformed`] for a
    /// header that cannot be a frame's.
    pub fn decode(body: &Bytes) -> Result<Frame, DecodeError> {
        let b = body.as_ref();
        match b.first() {
            None => return Err(DecodeError::Truncated("an empty message".into())),
            Some(&VERSION) => {}
            Some(&v) => return Err(DecodeError::Version(v)),
        }
        if b.len() < HEADER {
            return Err(DecodeError::Truncated(format!(
                "{} bytes, shorter than the {HEADER}-byte header",
                b.len()
            )));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let count = u32::from_le_bytes([b[25], b[26], b[27], b[28]]);
        if (count as usize).saturating_mul(MIN_RECORD) > b.len() - HEADER {
            return Err(DecodeError::Malformed(format!(
                "{count} records cannot fit in {} bytes",
                b.len() - HEADER
            )));
        }
        Ok(Frame {
            body: body.clone(),
            origin: u64_at(1),
            base_offset: u64_at(9) as i64,
            base_timestamp: u64_at(17) as i64,
            count,
        })
    }

    /// The records, in order. After the first `Err` (a record whose
    /// lengths run past the frame) the iterator ends: the records after a
    /// broken one cannot be found. A frame whose records end before the
    /// body does, or whose body goes on after `count` records, ends with
    /// an `Err` too.
    pub fn records(&self) -> Records<'_> {
        Records {
            frame: self,
            at: HEADER,
            left: self.count,
            done: false,
        }
    }
}

/// The records of a [`Frame`]; see [`Frame::records`].
#[derive(Debug)]
pub struct Records<'a> {
    frame: &'a Frame,
    at: usize,
    left: u32,
    done: bool,
}

impl Records<'_> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let b = self.frame.body.as_ref();
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = b.get(self.at) else {
                return Err(DecodeError::Truncated(format!(
                    "a varint runs past the end at byte {}",
                    self.at
                )));
            };
            self.at += 1;
            if i == 9 && byte > 1 {
                return Err(DecodeError::Malformed("a varint over 64 bits".into()));
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("a varint over 10 bytes".into()))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.varint()?;
        let left = self.frame.body.len() - self.at;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| DecodeError::Truncated(format!("a {len}-byte field with {left} bytes left")))?;
        let field = self.frame.body.slice(self.at..self.at + len);
        self.at += len;
        Ok(field)
    }

    fn record(&mut self) -> Result<ShuffleRecord, DecodeError> {
        let node = u16::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("a node over 16 bits".into()))?;
        let offset = self.frame.base_offset.wrapping_add(unzigzag(self.varint()?));
        let seq = self.varint()?;
        let timestamp = self.frame.base_timestamp.wrapping_add(unzigzag(self.varint()?));
        let key = self.bytes()?;
        let value = self.bytes()?;
        Ok(ShuffleRecord {
            node,
            origin: Origin {
                queue: self.frame.origin,
                offset,
                seq,
            },
            timestamp,
            key,
            value,
        })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<ShuffleRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            let extra = self.frame.body.len() - self.at;
            return (extra > 0).then(|| {
                Err(DecodeError::Malformed(format!(
                    "{extra} bytes after the frame's {} records",
                    self.frame.count
                )))
            });
        }
        self.left -= 1;
        let result = self.record();
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Frames records of many origin queues, splitting at [`MAX_FRAME_BYTES`]:
/// consecutive records of one origin share a frame.
#[derive(Debug, Default)]
pub struct Framer {
    current: Option<(u64, FrameWriter)>,
    done: Vec<Bytes>,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends a record of origin queue `origin`.
    pub fn push(&mut self, origin: u64, node: u16, offset: i64, seq: u64, timestamp: i64, key: &[u8], value: &[u8]) {
        let reuse = matches!(&self.current, Some((o, w)) if *o == origin && !w.is_full_for(key.len(), value.len()));
        if !reuse {
            if let Some((_, w)) = self.current.take() {
                self.done.push(w.finish());
            }
            self.current = Some((origin, FrameWriter::new(origin, offset, timestamp)));
        }
        if let Some((_, w)) = self.current.as_mut() {
            w.push(node, offset, seq, timestamp, key, value);
        }
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.done.is_empty()
    }

    /// The finished frames, in order.
    pub fn finish(mut self) -> Vec<Bytes> {
        if let Some((_, w)) = self.current.take() {
            self.done.push(w.finish());
        }
        self.done
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<ShuffleRecord> {
        let origin = origin_id("lines@broker-a#3");
        (0..50)
            .map(|i| ShuffleRecord {
                node: (i % 3) as u16,
                origin: Origin {
                    queue: origin,
                    offset: 123_456 + i / 4,
                    seq: (i % 4) as u64 + ((i as u64) << 32),
                },
                // Event times go back as well as forth.
                timestamp: 1_700_000_000_123 + (i % 7) * 1_000 - 3_000,
                key: Bytes::from(format!("word{i}")),
                value: Bytes::from(vec![i as u8; i as usize]),
            })
            .collect()
    }

    fn frame_of(records: &[ShuffleRecord]) -> Bytes {
        let first = &records[0];
        let mut w = FrameWriter::new(first.origin.queue, first.origin.offset, first.timestamp);
        for r in records {
            w.push(r.node, r.origin.offset, r.origin.seq, r.timestamp, &r.key, &r.value);
        }
        w.finish()
    }

    #[test]
    fn a_frame_round_trips_without_copying_the_payload() {
        let body = frame_of(&records());
        let frame = Frame::decode(&body).expect("decodes");
        assert_eq!(frame.count, 50);
        let decoded: Vec<ShuffleRecord> = frame.records().collect::<Result<_, _>>().expect("records");
        assert_eq!(decoded, records());
        // Values are views into the message body, not copies.
        let start = body.as_ptr() as usize;
        let value = decoded[10].value.as_ptr() as usize;
        assert!(value >= start && value < start + body.len());
        // Varint deltas: far smaller than fixed-width fields would be.
        let payload: usize = records().iter().map(|r| r.key.len() + r.value.len()).sum();
        assert!(body.len() < HEADER + payload + 50 * 12, "{} bytes", body.len());
    }

    #[test]
    fn one_record_frames_itself_for_a_dead_letter() {
        let r = records()[7].clone();
        let frame = Frame::decode(&r.to_frame()).expect("decodes");
        assert_eq!(frame.records().collect::<Result<Vec<_>, _>>().expect("records"), [r]);
    }

    #[test]
    fn the_framer_splits_by_origin_and_size() {
        let mut framer = Framer::new();
        let big = vec![7u8; MAX_FRAME_BYTES / 3];
        for (origin, value) in [
            (1, &big[..]),
            (1, &big[..]),
            (1, &big[..]),
            (2, &b"x"[..]),
            (1, &b"y"[..]),
        ] {
            framer.push(origin, 0, 5, 0, 9, b"k", value);
        }
        let frames = framer.finish();
        let counts: Vec<(u64, u32)> = frames
            .iter()
            .map(|b| {
                let f = Frame::decode(b).expect("decodes");
                (f.origin, f.count)
            })
            .collect();
        // Three thirds do not fit with their overhead: 2 + 1.
        assert_eq!(counts, [(1, 2), (1, 1), (2, 1), (1, 1)]);
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME_BYTES));
        assert!(Framer::new().finish().is_empty());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let body = frame_of(&records());
        // Every cut either fails in the header or ends the records with an error.
        for len in 0..body.len() {
            let cut = body.slice(..len);
            match Frame::decode(&cut) {
                Err(e) => assert!(!e.is_retriable()),
                Ok(frame) => {
                    let results: Vec<_> = frame.records().collect();
                    assert!(results.last().is_some_and(Result::is_err), "cut at {len}");
                    assert!(results.iter().rev().skip(1).all(Result::is_ok));
                }
            }
        }
        // Every single-byte corruption is an error or a different record, never a panic.
        for i in 0..body.len() {
            let mut v = body.to_vec();
            v[i] ^= 0xff;
            if let Ok(frame) = Frame::decode(&Bytes::from(v)) {
                for r in frame.records() {
                    let _ = r;
                }
            }
        }
        let mut v1 = body.to_vec();
        v1[0] = 1;
        assert!(matches!(Frame::decode(&Bytes::from(v1)), Err(DecodeError::Version(1))));
        let mut huge_count = body.to_vec();
        huge_count[25..29].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Frame::decode(&Bytes::from(huge_count)),
            Err(DecodeError::Malformed(_))
        ));
        let mut extra = body.to_vec();
        extra.push(0);
        let frame = Frame::decode(&Bytes::from(extra)).expect("header");
        assert!(frame.records().last().is_some_and(|r| r.is_err()));
        let mut long_varint = frame_of(&records()[..1]).to_vec();
        long_varint.truncate(HEADER);
        long_varint.extend_from_slice(&[0xff; 11]);
        let frame = Frame::decode(&Bytes::from(long_varint)).expect("header");
        assert!(matches!(frame.records().next(), Some(Err(DecodeError::Malformed(_)))));
    }

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for v in [0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000, -42] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn partition_is_stable_and_spreads_keys() {
        // Fixed values: the partition of a key must never change between builds.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325 ^ (0xcbf2_9ce4_8422_2325 >> 32));
        // Non-empty vectors (issue 28): FNV-1a 64 of "a" and "foobar" are
        // the published 0xaf63dc4c8601ec8c and 0x85944171f73967e8, folded;
        // a MessagePack string key (0xa5 "hello"); an origin queue's name.
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c ^ (0xaf63_dc4c_8601_ec8c >> 32));
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_2962_30c0);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_72ad_2699);
        assert_eq!(stable_hash(b"\xa5hello"), 0xe991_f68e_ef6d_a2d6);
        assert_eq!(origin_id("job-in@broker-a#3"), 0xfd80_a212_6200_2537);
        assert_eq!(
            [b"a".as_slice(), b"foobar", b"\xa5hello", b"job-in@broker-a#3"].map(|k| partition(k, 8)),
            [0, 1, 6, 7]
        );
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[partition(format!("\"word{i}\"").as_bytes(), 8) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
