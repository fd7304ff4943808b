//! The engine's own binary encoding: keys and values in the shuffle topic,
//! and state values in the store and the changelog.
//!
//! MessagePack through `rmp-serde`, structs as maps (field names kept):
//! self-describing like JSON, so every serde type a JSON job used keeps
//! working (untagged enums, `#[serde(flatten)]`, `serde_json::Value`,
//! skipped fields), while numbers are binary and strings carry a length
//! instead of escapes. `tuning.md` says why this crate and not another.
//!
//! The shuffle frame's version (`rocketmq_streams_shuffle::VERSION`) covers
//! the keys and values inside it; a state value starts with its own
//! version byte, [`STATE_VERSION`], so a value written by another release
//! fails its record with a clear error instead of being misread.
//!
//! Sources and sinks keep the format the user chose (`Json`, `Utf8`, ...).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SerdeError;

/// The deepest nesting a decoded value may have (as serde_json's limit).
const MAX_DEPTH: usize = 128;

/// The first byte of every state value this release writes.
pub const STATE_VERSION: u8 = 1;

/// Appends `value`, MessagePack-encoded, to `buf`.
///
/// # Errors
///
/// A [`SerdeError`] if `value`'s `Serialize` fails; `buf` may then hold
/// part of it (callers truncate).
pub(crate) fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T, what: &str) -> Result<(), SerdeError> {
    rmp_serde::encode::write_named(buf, value).map_err(|e| SerdeError::new("msgpack", format!("{what}: {e}")))
}

/// Decodes a MessagePack value.
///
/// # Errors
///
/// A [`SerdeError`] naming `what` if `bytes` is not an encoding of `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, SerdeError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    // serde_json's limit: nested input cannot exhaust a shard's stack.
    de.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| SerdeError::new("msgpack", format!("{what}: {e}")))?;
    // A value followed by more bytes is not what was written: two keys that
    // differ only after their value would otherwise decode alike.
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(SerdeError::new(
            "msgpack",
            format!("{what}: {} bytes after the value", bytes.len() as u64 - used),
        ));
    }
    Ok(value)
}

/// Encodes a state value: [`STATE_VERSION`], then MessagePack.
///
/// # Errors
///
/// A [`SerdeError`] if `value`'s `Serialize` fails.
pub(crate) fn encode_state<T: Serialize>(value: &T) -> Result<bytes::Bytes, SerdeError> {
    let mut buf = Vec::with_capacity(16);
    buf.push(STATE_VERSION);
    encode_into(&mut buf, value, "state")?;
    Ok(bytes::Bytes::from(buf))
}

/// Decodes a state value written by [`encode_state`].
///
/// # Errors
///
/// A [`SerdeError`] for another version's value or one that is not an
/// encoding of `T` (an accumulator whose state type changed).
pub(crate) fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SerdeError> {
    match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => decode(rest, "state"),
        Some((v, _)) => Err(SerdeError::new(
            "state",
            format!("state value of format version {v}; this release reads version {STATE_VERSION}"),
        )),
        None => Err(SerdeError::new("state", "an empty state value")),
    }
}

/// The codec of a decoded state layer holding `S`: [`encode_state`] and
/// [`decode_state`], so a value kept decoded is stored exactly as one
/// encoded per update was.
pub(crate) struct StateCodec<S>(std::marker::PhantomData<fn() -> S>);

impl<S: Serialize + DeserializeOwned + Clone + 'static> rocketmq_streams_state::ValueCodec for StateCodec<S> {
    type Value = S;

    fn encode(value: &S) -> Result<bytes::Bytes, String> {
        encode_state(value).map_err(|e| e.to_string())
    }

    fn decode(bytes: &[u8]) -> Result<S, String> {
        decode_state(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        note: Option<String>,
        value: f64,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        Text(String),
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let mut buf = Vec::new();
        encode_into(&mut buf, &value, "test").expect("encodes");
        assert_eq!(decode::<T>(&buf, "test").expect("decodes"), value);
        let state = encode_state(&value).expect("encodes");
        assert_eq!(decode_state::<T>(&state).expect("decodes"), value);
    }

    #[test]
    fn what_json_carried_round_trips() {
        round_trip("héllo".to_string());
        round_trip((String::from("w"), 42u64));
        round_trip(Reading {
            sensor: "s1".into(),
            note: None,
            value: -2.5,
        });
        round_trip(Reading {
            sensor: "s1".into(),
            note: Some("hot".into()),
            value: f64::MAX,
        });
        round_trip(vec![Loose::Number(-7), Loose::Text("x".into())]);
        round_trip(serde_json::json!({"a": [1, 2.5, null, "s"], "b": {"c": true}}));
        round_trip(BTreeMap::from([(1u32, "one".to_string())]));
        round_trip(u64::MAX);
        round_trip(());
    }

    #[test]
    fn a_short_string_is_shorter_than_json() {
        let mut buf = Vec::new();
        encode_into(&mut buf, "word", "test").expect("encodes");
        assert_eq!(buf.len(), 5);
        assert_eq!(serde_json::to_vec("word").expect("json").len(), 6);
    }

    #[test]
    fn foreign_or_other_version_state_is_an_error() {
        assert!(decode_state::<u64>(b"").is_err());
        let err = decode_state::<u64>(b"\x09\x01").expect_err("version");
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(decode_state::<u64>(b"\x01\xc1").is_err());
        assert!(decode_state::<String>(b"\x01\x05").is_err());
        // Trailing bytes: not the value that was written.
        assert!(decode_state::<u64>(b"\x01\x05\x05").is_err());
        // Nesting deeper than the decoder's limit is an error, not a stack overflow.
        let deep = [0x91u8; 100_000];
        assert!(decode::<serde_json::Value>(&deep, "deep").is_err());
    }
}
