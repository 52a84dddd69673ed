//! The binary encoding of everything slct writes for itself: state-machine records,
//! Raft log entries and Raft messages. JSON is for clients only.
//!
//! postcard: compact (variable-length integers, no field names), fast, and plain serde,
//! so every stored type is an ordinary `#[derive(Serialize, Deserialize)]` without the
//! JSON-only attributes (`tag`, `skip_serializing_if`, `untagged`) that a format without
//! field names cannot read back. The JSON shape clients see is owned by the view types
//! in [`super::types`].
//!
//! Client values ([`super::Data`]) are strings in this encoding, copied, never parsed.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::store::StoreError;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError(format!("encode: {e}")))
}

/// Decodes a value; a failure means the bytes are corrupt or of another type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
}
