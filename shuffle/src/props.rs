//! Property tests of the frame decoder (issue 15): arbitrary bytes never
//! panic and end in a [`DecodeError`]; every frame the writer builds reads
//! back as the records pushed; another version is refused by its number.
//!
//! Cases per property: `PROPTEST_CASES` (1,000 in `.cargo/config.toml`);
//! `PROPTEST_CASES=1000000 cargo test --release -p rocketmq-streams-shuffle props` runs a
//! million.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Every record of `body` read as a frame, or the first error.
fn read_all(body: &Bytes) -> Result<Vec<ShuffleRecord>, DecodeError> {
    Frame::decode(body)?.records().collect()
}

fn record() -> impl Strategy<Value = ShuffleRecord> {
    (
        any::<u16>(),
        any::<i64>(),
        any::<u64>(),
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(node, offset, seq, timestamp, key, value)| ShuffleRecord {
            node,
            origin: Origin { queue: 0, offset, seq },
            timestamp,
            key: Bytes::from(key),
            value: Bytes::from(value),
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_all(&Bytes::from(body));
    }

    /// Bytes after a valid header: the header's count and the records'
    /// lengths meet arbitrary data.
    #[test]
    fn arbitrary_records_after_a_header_never_panic(
        count in any::<u32>(),
        rest in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut body = FrameWriter::new(7, 0, 0).finish().to_vec();
        body[HEADER - 4..HEADER].copy_from_slice(&count.to_le_bytes());
        body.extend_from_slice(&rest);
        let body = Bytes::from(body);
        match read_all(&body) {
            Ok(records) => prop_assert_eq!(records.len(), count as usize),
            Err(DecodeError::Truncated(_) | DecodeError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn frames_round_trip(origin in any::<u64>(), records in proptest::collection::vec(record(), 1..30)) {
        let (first_offset, first_time) = (records[0].origin.offset, records[0].timestamp);
        let mut writer = FrameWriter::new(origin, first_offset, first_time);
        for r in &records {
            writer.push(r.node, r.origin.offset, r.origin.seq, r.timestamp, &r.key, &r.value);
        }
        let body = writer.finish();
        let frame = Frame::decode(&body).expect("a frame the writer built");
        prop_assert_eq!(frame.origin, origin);
        prop_assert_eq!(frame.count as usize, records.len());
        let read = read_all(&body).expect("its records");
        prop_assert_eq!(read.len(), records.len());
        for (got, want) in read.iter().zip(&records) {
            prop_assert_eq!(got.node, want.node);
            prop_assert_eq!(got.origin.queue, origin);
            prop_assert_eq!(got.origin.offset, want.origin.offset);
            prop_assert_eq!(got.origin.seq, want.origin.seq);
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(&got.key, &want.key);
            prop_assert_eq!(&got.value, &want.value);
        }
    }

    /// A valid frame cut short, or with bytes flipped, is an error or
    /// reads as some records: never a panic.
    #[test]
    fn damaged_frames_never_panic(
        records in proptest::collection::vec(record(), 1..10),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut writer = FrameWriter::new(3, records[0].origin.offset, records[0].timestamp);
        for r in &records {
            writer.push(r.node, r.origin.offset, r.origin.seq, r.timestamp, &r.key, &r.value);
        }
        let mut body = writer.finish().to_vec();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] ^= byte;
        }
        let cut_at = cut.index(body.len() + 1);
        let _ = read_all(&Bytes::from(body[..cut_at].to_vec()));
        let _ = read_all(&Bytes::from(body));
    }

    #[test]
    fn another_version_is_refused_by_its_number(version in (0u8..u8::MAX).prop_map(|v| if v >= VERSION { v + 1 } else { v }), rest in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut body = vec![version];
        body.extend_from_slice(&rest);
        match Frame::decode(&Bytes::from(body)) {
            Err(DecodeError::Version(v)) => prop_assert_eq!(v, version),
            other => prop_assert!(false, "expected a version error, got {other:?}"),
        }
    }
}
