//! Property tests of the state crate's decoders (issue 15): state-topic
//! messages (claims, changes, batches, markers, snapshots) and local
//! checkpoints. Arbitrary bytes never panic and end in an error (or, for a
//! checkpoint, `None`: it is rebuilt); every valid value round-trips;
//! another version is refused by its number.
//!
//! Cases per property: `PROPTEST_CASES` (1,000 in `.cargo/config.toml`);
//! `PROPTEST_CASES=1000000 cargo test --release -p rocketmq-streams-state props` runs a
//! million.

use bytes::Bytes;
use proptest::prelude::*;

use crate::changelog::Change;
use crate::error::StateError;
use crate::store::Checkpoint;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Any message a writer of this release puts on the state topic.
fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<u64>().prop_map(|token| Change::Claim { token }),
        (any::<i64>(), bytes(40), bytes(100)).prop_map(|(epoch, key, value)| Change::Put { epoch, key, value }),
        (any::<i64>(), bytes(40)).prop_map(|(epoch, key)| Change::Delete { epoch, key }),
        (any::<i64>(), any::<u64>(), any::<i64>()).prop_map(|(epoch, token, source_next)| Change::Marker {
            epoch,
            token,
            source_next
        }),
        (any::<i64>(), bytes(40), bytes(100)).prop_map(|(epoch, key, value)| Change::Snapshot { epoch, key, value }),
        (
            any::<i64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u64>(),
            proptest::option::of(any::<i64>())
        )
            .prop_map(|(epoch, token, source_next, count, begin)| {
                Change::SnapshotEnd {
                    epoch,
                    token,
                    source_next,
                    count,
                    begin,
                }
            }),
        (
            any::<i64>(),
            proptest::collection::vec((bytes(40), proptest::option::of(bytes(100))), 0..20)
        )
            .prop_map(|(epoch, entries)| Change::Batch { epoch, entries }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_messages_never_panic(body in bytes(300)) {
        match Change::decode(&body) {
            Ok(_) | Err(StateError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "not a malformed-message error: {e}"),
        }
    }

    /// This version's header, then arbitrary bytes: every kind's lengths
    /// and counts meet arbitrary data.
    #[test]
    fn arbitrary_bodies_of_every_kind_never_panic(kind in 0u8..10, rest in bytes(300)) {
        let mut body = Change::Claim { token: 0 }.encode().to_vec();
        body.truncate(1);
        body.push(kind);
        body.extend_from_slice(&rest);
        match Change::decode(&Bytes::from(body)) {
            Ok(_) | Err(StateError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "not a malformed-message error: {e}"),
        }
    }

    #[test]
    fn changes_round_trip(change in change()) {
        let body = change.encode();
        prop_assert_eq!(Change::decode(&body).expect("a message this release wrote"), change);
    }

    /// A checkpoint's changes framed into batches read back as the same
    /// keys and values, in order.
    #[test]
    fn framed_batches_round_trip(
        epoch in any::<i64>(),
        changes in proptest::collection::vec(
            (bytes(40), proptest::option::of(bytes(100))).prop_map(move |(key, value)| match value {
                Some(value) => Change::Put { epoch: 0, key, value },
                None => Change::Delete { epoch: 0, key },
            }),
            0..50,
        ),
    ) {
        let mut read = Vec::new();
        for body in Change::frame(epoch, &changes) {
            match Change::decode(&body).expect("a batch this release wrote") {
                Change::Batch { epoch: e, entries } => {
                    prop_assert_eq!(e, epoch);
                    read.extend(entries);
                }
                other => prop_assert!(false, "not a batch: {other:?}"),
            }
        }
        let written: Vec<(Bytes, Option<Bytes>)> = changes
            .iter()
            .map(|c| match c {
                Change::Put { key, value, .. } => (key.clone(), Some(value.clone())),
                Change::Delete { key, .. } => (key.clone(), None),
                _ => unreachable!("only puts and deletes are generated"),
            })
            .collect();
        prop_assert_eq!(read, written);
    }

    /// A valid message cut short or with bytes flipped is an error or
    /// some message: never a panic.
    #[test]
    fn damaged_messages_never_panic(
        change in change(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut body = change.encode().to_vec();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] ^= byte;
        }
        let cut_at = cut.index(body.len() + 1);
        let _ = Change::decode(&Bytes::from(body[..cut_at].to_vec()));
        let _ = Change::decode(&Bytes::from(body));
    }

    #[test]
    fn another_version_is_refused_by_its_number(version in (0u8..u8::MAX).prop_map(|v| if v >= crate::changelog::VERSION { v + 1 } else { v }), rest in bytes(100)) {
        let mut body = vec![version];
        body.extend_from_slice(&rest);
        match Change::decode(&Bytes::from(body)) {
            Err(StateError::Malformed(why)) => prop_assert!(
                why.contains(&format!("version {version}")),
                "the error names the version: {why}"
            ),
            other => prop_assert!(false, "expected a version error, got {other:?}"),
        }
    }

    #[test]
    fn arbitrary_checkpoints_never_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
        let decoded = Checkpoint::decode(&b);
        prop_assert!(decoded.is_none() || b.len() == Checkpoint::LEN);
    }

    /// Checkpoint-sized bytes: this format's are read (whatever the words
    /// hold), another format's are refused (the database is rebuilt).
    #[test]
    fn checkpoint_sized_bytes_are_read_by_their_format_byte(
        words in proptest::collection::vec(any::<u8>(), Checkpoint::LEN - 1),
        format in any::<u8>(),
    ) {
        let mut b = words;
        b.push(format);
        prop_assert_eq!(Checkpoint::decode(&b).is_some(), format == Checkpoint::FORMAT);
    }

    #[test]
    fn checkpoints_round_trip(
        state_next in any::<i64>(),
        source_next in proptest::option::of(0i64..),
        epoch in any::<i64>(),
        token in any::<u64>(),
    ) {
        let cp = Checkpoint { state_next, source_next, epoch, token };
        prop_assert_eq!(Checkpoint::decode(&cp.encode()), Some(cp));
    }
}
