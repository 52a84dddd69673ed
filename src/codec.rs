//! The binary encoding of everything slct writes for itself: state-machine records,
//! Raft log entries and Raft messages. JSON is for clients only.
//!
//! postcard: compact (variable-length integers, no field names), fast, and plain serde,
//! so every stored type is an ordinary `#[derive(Serialize, Deserialize)]` without the
//! JSON-only attributes (`tag`, `skip_serializing_if`, `untagged`) that a format without
//! field names cannot read back. The JSON shape clients see is owned by the view types
//! in [`crate::engine::types`].
//!
//! Client values ([`crate::engine::Data`]) are strings in this encoding, copied, never parsed.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that did not encode, or bytes that did not decode as the type asked for.
/// On its own it is neither a storage nor a network failure: the storage layer wraps it
/// in [`StoreError::Codec`](crate::engine::StoreError::Codec), the Raft network in a network
/// error.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value cannot be encoded.
    #[error("cannot encode: {0}")]
    Encode(postcard::Error),
    /// The bytes are not an encoding of the type asked for (damaged, cut short, or of
    /// another type).
    #[error("cannot decode: {0}")]
    Decode(postcard::Error),
}

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_allocvec(value).map_err(CodecError::Encode)
}

/// Encodes a value of many KiB (a log entry, an append of entries): its length is found
/// first ([`encoded_len`]), so the buffer is allocated once at its size. Grown by
/// doubling instead, each step was a copy and, at these sizes, fresh pages to fault in.
pub fn encode_sized<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_capacity(value, encoded_len(value)?)
}

/// Encodes a value into a buffer allocated for `capacity` bytes: [`encode_sized`] for a
/// caller that knows about how long the encoding is already.
pub fn encode_with_capacity<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, Vec::with_capacity(capacity)).map_err(CodecError::Encode)
}

/// The length of a value's encoding, found without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    postcard::experimental::serialized_size(value).map_err(CodecError::Encode)
}

/// Decodes a value; a failure means the bytes are corrupt or of another type. Bytes
/// after the value are ignored (a record may carry more after it, see
/// [`decode_prefix`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(CodecError::Decode)
}

/// Decodes the value at the start of `bytes` and returns it with the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), CodecError> {
    postcard::take_from_bytes(bytes).map_err(CodecError::Decode)
}
