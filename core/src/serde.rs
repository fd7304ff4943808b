//! How record values become bytes and back.
//!
//! A source turns the message body (`bytes::Bytes`) into a `T` with a
//! [`Deserializer<T>`]; a sink turns a `T` into the body of the message it
//! produces with a [`Serializer<T>`]. Ready implementations: [`Raw`]
//! (`Bytes`, no copy), [`Utf8`] (`String`) and [`Json`] (any serde type).

use std::marker::PhantomData;

use bytes::Bytes;

use crate::error::SerdeError;

/// Turns a message body into a value.
pub trait Deserializer<T>: Send + Sync + 'static {
    /// Decodes `body`.
    ///
    /// # Errors
    ///
    /// Returns a [`SerdeError`] when `body` is not a valid encoding; the
    /// record then goes through the job's error policy.
    fn deserialize(&self, body: &Bytes) -> Result<T, SerdeError>;

    /// A short name for `Topology::describe`.
    fn name(&self) -> &'static str;
}

/// Turns a value into a message body.
pub trait Serializer<T>: Send + Sync + 'static {
    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// Returns a [`SerdeError`] when `value` cannot be encoded.
    fn serialize(&self, value: &T) -> Result<Bytes, SerdeError>;

    /// A short name for `Topology::describe`.
    fn name(&self) -> &'static str;
}

/// The body as it is: `Bytes`, shared with the client's buffer, never copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Deserializer<Bytes> for Raw {
    fn deserialize(&self, body: &Bytes) -> Result<Bytes, SerdeError> {
        Ok(body.clone())
    }
    fn name(&self) -> &'static str {
        "raw"
    }
}

impl Serializer<Bytes> for Raw {
    fn serialize(&self, value: &Bytes) -> Result<Bytes, SerdeError> {
        Ok(value.clone())
    }
    fn name(&self) -> &'static str {
        "raw"
    }
}

/// UTF-8 text as `String` (one copy out of the message buffer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Deserializer<String> for Utf8 {
    fn deserialize(&self, body: &Bytes) -> Result<String, SerdeError> {
        std::str::from_utf8(body)
            .map(str::to_owned)
            .map_err(|e| SerdeError::new("utf8", e.to_string()))
    }
    fn name(&self) -> &'static str {
        "utf8"
    }
}

impl Serializer<String> for Utf8 {
    fn serialize(&self, value: &String) -> Result<Bytes, SerdeError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
    fn name(&self) -> &'static str {
        "utf8"
    }
}

/// JSON through serde, for any `T: Serialize` / `T: DeserializeOwned`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON format for `T`.
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T: serde::de::DeserializeOwned + 'static> Deserializer<T> for Json<T> {
    fn deserialize(&self, body: &Bytes) -> Result<T, SerdeError> {
        serde_json::from_slice(body).map_err(|e| SerdeError::new("json", e.to_string()))
    }
    fn name(&self) -> &'static str {
        "json"
    }
}

impl<T: serde::Serialize + 'static> Serializer<T> for Json<T> {
    fn serialize(&self, value: &T) -> Result<Bytes, SerdeError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| SerdeError::new("json", e.to_string()))
    }
    fn name(&self) -> &'static str {
        "json"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        amount: f64,
    }

    #[test]
    fn raw_shares_the_buffer() {
        let body = Bytes::from_static(b"abc");
        let out = Raw.deserialize(&body).expect("raw");
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn utf8_round_trips_and_rejects_invalid_text() {
        let s = Utf8.deserialize(&Bytes::from_static("héllo".as_bytes())).expect("utf8");
        assert_eq!(s, "héllo");
        assert_eq!(Utf8.serialize(&s).expect("ser"), Bytes::from("héllo"));
        let err = Utf8.deserialize(&Bytes::from_static(&[0xff, 0xfe])).unwrap_err();
        assert_eq!(err.format(), "utf8");
    }

    #[test]
    fn json_round_trips_and_rejects_malformed_input() {
        let json = Json::<Order>::new();
        let bytes = json.serialize(&Order { id: 7, amount: 2.5 }).expect("ser");
        assert_eq!(json.deserialize(&bytes).expect("de"), Order { id: 7, amount: 2.5 });
        let err = json.deserialize(&Bytes::from_static(b"{not json")).unwrap_err();
        assert_eq!(err.format(), "json");
    }
}
