//! Property tests of the core crate's decoders (issue 15): the engine's
//! MessagePack keys, values and state values ([`crate::codec`]), and the
//! built-in source formats ([`Json`], [`Utf8`], [`Raw`]). Arbitrary bytes
//! never panic and end in a [`SerdeError`] (which the error policy
//! routes); every valid value round-trips; a state value of another
//! format version is refused by its number.
//!
//! Cases per property: `PROPTEST_CASES` (1,000 in `.cargo/config.toml`);
//! `PROPTEST_CASES=1000000 cargo test --release -p rocketmq-streams props` runs a
//! million.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, decode_state, encode_into, encode_state, STATE_VERSION};
use crate::serde::{Deserializer, Json, Raw, Serializer, Utf8};

/// A user type of the shapes state and keys take: nested, optional,
/// enums, maps, byte strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shape {
    word: String,
    count: u64,
    delta: i64,
    ratio: Option<f64>,
    tags: Vec<String>,
    by: BTreeMap<String, u32>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Pair(u8, String),
    Named { at: i64 },
}

fn shape() -> impl Strategy<Value = Shape> {
    let kind = prop_oneof![
        Just(Kind::Plain),
        (any::<u8>(), ".{0,10}").prop_map(|(a, b)| Kind::Pair(a, b)),
        any::<i64>().prop_map(|at| Kind::Named { at }),
    ];
    (
        ".{0,20}",
        any::<u64>(),
        any::<i64>(),
        proptest::option::of(-1e12f64..1e12),
        proptest::collection::vec(".{0,8}", 0..5),
        proptest::collection::btree_map(".{0,8}", any::<u32>(), 0..5),
        kind,
    )
        .prop_map(|(word, count, delta, ratio, tags, by, kind)| Shape {
            word,
            count,
            delta,
            ratio,
            tags,
            by,
            kind,
        })
}

/// Any byte but `taken` (generated, not filtered: a million cases reject
/// nothing).
fn other_than(taken: u8) -> impl Strategy<Value = u8> {
    (0u8..u8::MAX).prop_map(move |v| if v >= taken { v + 1 } else { v })
}

fn body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_engine_codec(b in body(300)) {
        let _ = decode::<Shape>(&b, "value");
        let _ = decode::<(String, u64)>(&b, "value");
        let _ = decode::<Vec<Option<i64>>>(&b, "value");
        let _ = decode::<serde_json::Value>(&b, "value");
        let _ = decode_state::<Shape>(&b);
        let _ = decode_state::<BTreeMap<String, Vec<u8>>>(&b);
    }

    /// MessagePack headers that announce strings, byte strings, arrays or
    /// maps longer than the bytes that follow: an error, never a panic.
    /// (What is allocated for such a claim is bounded by the bytes there
    /// are: `rmp-serde` 1.3 reads a string through `Read::take`, and serde
    /// caps what a sequence's size hint reserves.)
    #[test]
    fn announced_lengths_past_the_body_are_errors(
        (marker, width) in prop::sample::select(vec![
            (0xd9u8, 1usize), (0xda, 2), (0xdb, 4), (0xc4, 1), (0xc5, 2), (0xc6, 4),
            (0xdc, 2), (0xdd, 4), (0xde, 2), (0xdf, 4),
        ]),
        len in any::<u32>(),
        rest in body(20),
    ) {
        // A length past the body's end that fits the marker's width.
        let max = u64::from(u32::MAX >> (32 - 8 * width as u32));
        let min = rest.len() as u64 + 1;
        let len = (min + u64::from(len) % (max - min + 1)) as u32;
        let mut b = vec![marker];
        b.extend_from_slice(&len.to_be_bytes()[4 - width..]);
        b.extend_from_slice(&rest);
        prop_assert!(decode::<serde_json::Value>(&b, "value").is_err());
        prop_assert!(decode::<Vec<u64>>(&b, "value").is_err());
        prop_assert!(decode::<String>(&b, "value").is_err());
    }

    #[test]
    fn values_round_trip(value in shape()) {
        let mut buf = Vec::new();
        encode_into(&mut buf, &value, "value").expect("encodes");
        prop_assert_eq!(decode::<Shape>(&buf, "value").expect("decodes"), value.clone());
        let state = encode_state(&value).expect("encodes");
        prop_assert_eq!(decode_state::<Shape>(&state).expect("decodes"), value);
    }

    /// A value followed by more bytes is not the value written.
    #[test]
    fn bytes_after_a_value_are_an_error(value in shape(), extra in proptest::collection::vec(any::<u8>(), 1..10)) {
        let mut buf = Vec::new();
        encode_into(&mut buf, &value, "value").expect("encodes");
        buf.extend_from_slice(&extra);
        prop_assert!(decode::<Shape>(&buf, "value").is_err());
    }

    #[test]
    fn another_state_version_is_refused_by_its_number(version in other_than(STATE_VERSION), rest in body(50)) {
        let mut b = vec![version];
        b.extend_from_slice(&rest);
        let error = decode_state::<u64>(&b).expect_err("another version");
        prop_assert!(error.to_string().contains(&format!("version {version}")), "{}", error);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_source_formats(b in body(300)) {
        let b = Bytes::from(b);
        let _ = Json::<Shape>::new().deserialize(&b);
        let _ = Json::<serde_json::Value>::new().deserialize(&b);
        let _ = Utf8.deserialize(&b);
        prop_assert_eq!(Raw.deserialize(&b).expect("any bytes"), b);
    }

    #[test]
    fn source_formats_round_trip(value in shape(), text in ".{0,50}") {
        let json = Json::<Shape>::new();
        prop_assert_eq!(json.deserialize(&json.serialize(&value).expect("json")).expect("json back"), value);
        prop_assert_eq!(Utf8.deserialize(&Utf8.serialize(&text).expect("utf8")).expect("utf8 back"), text);
    }
}
