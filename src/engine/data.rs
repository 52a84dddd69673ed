//! [`Data`]: a client's JSON value, kept as the exact text the client sent.
//!
//! slct never looks inside a process's data or a sent value, so it keeps them as text
//! from the request body to the response: a number such as `1e15` comes back as `1e15`
//! (a parsed `f64` would come back as `1000000000000000.0`, several times longer), and no
//! replica spends time parsing or re-encoding them. The text is validated once, when the
//! API parses the request.
//!
//! In JSON (the API) a `Data` is embedded verbatim; in the binary codec of the log and
//! the tables ([`crate::codec`]) it is a string. Which one is chosen by serde's
//! `is_human_readable`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value as text. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Data(Arc<str>);

impl Data {
    /// JSON `null`.
    pub fn null() -> Data {
        Data(Arc::from("null"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for a `Data` made from JSON).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.trim() == "null"
    }

    /// The value parsed (for tests and tools; slct itself never needs it).
    pub fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.0)
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::null()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<serde_json::Value> for Data {
    fn from(value: serde_json::Value) -> Self {
        Data(Arc::from(value.to_string()))
    }
}

impl From<Box<RawValue>> for Data {
    fn from(raw: Box<RawValue>) -> Self {
        Data(Arc::from(raw.get()))
    }
}

/// Compares by value (so `1.0` and `1.00` differ, as texts do); for tests.
impl PartialEq<serde_json::Value> for Data {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value().is_ok_and(|v| &v == other)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let raw =
                RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(Data::from)
        } else {
            String::deserialize(deserializer).map(|s| Data(Arc::from(s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_back_as_sent() {
        let body = r#"{"data": {"n": 1e15, "big": 123456789012345678901234567890}}"#;
        #[derive(Deserialize, Serialize)]
        struct Body {
            data: Data,
        }
        let parsed: Body = serde_json::from_str(body).unwrap();
        assert_eq!(
            parsed.data.as_str(),
            r#"{"n": 1e15, "big": 123456789012345678901234567890}"#
        );
        let out = serde_json::to_string(&parsed).unwrap();
        assert_eq!(
            out,
            r#"{"data":{"n": 1e15, "big": 123456789012345678901234567890}}"#
        );
    }

    #[test]
    fn binary_form_is_the_text() {
        let data = Data::from(serde_json::json!({"a": [1, 2]}));
        let bytes = postcard::to_allocvec(&data).unwrap();
        let back: Data = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, data);
        assert!(Data::null().is_null());
    }
}
