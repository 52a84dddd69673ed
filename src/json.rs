//! Parsing JSON that slct did not write: request bodies and callback answers.
//!
//! Both come from strangers and are parsed alike: an empty body is refused, nesting
//! deeper than [`MAX_DEPTH`] is refused before parsing (a deeply nested document costs
//! stack and time in every replica that decodes it again), and a field the target type
//! does not know is named in the refusal (design.md §3: a misspelt field must not be
//! dropped silently). The API answers a [`Refusal`] as 400 with its code; the callback
//! dispatcher counts it as a failed attempt.

use serde::de::DeserializeOwned;

/// Deepest JSON nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a body was refused: a stable error code and a sentence for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_json` (empty, malformed or mistyped), `too_deep`, or `invalid` (a field
    /// the type does not know).
    pub code: &'static str,
    /// What is wrong, for the sender.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Parses a body that must be a JSON object (serde would otherwise read `[]` as a
/// struct whose fields all have defaults).
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    check_size_and_depth(bytes)?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(Refusal::new(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    deserialize(bytes)
}

/// Parses a body of any JSON value: depth first, then JSON into `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    check_size_and_depth(bytes)?;
    deserialize(bytes)
}

/// Refuses an empty body and one nested deeper than [`MAX_DEPTH`].
fn check_size_and_depth(bytes: &[u8]) -> Result<(), Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::new(
            "invalid_json",
            "the request body must be JSON and is empty",
        ));
    }
    if depth(bytes) > MAX_DEPTH {
        return Err(Refusal::new(
            "too_deep",
            format!("JSON may be nested at most {MAX_DEPTH} levels deep"),
        ));
    }
    Ok(())
}

fn deserialize<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| match unknown_field(&e) {
        Some(message) => Refusal::new("invalid", message),
        None => Refusal::new(
            "invalid_json",
            format!("the request body is not valid: {e}"),
        ),
    })
}

/// serde's refusal of a field a `deny_unknown_fields` type does not know, as a sentence
/// naming the field, where it is, and the fields that would do.
fn unknown_field(e: &serde_json::Error) -> Option<String> {
    const HEAD: &str = "unknown field `";
    let text = e.to_string();
    let rest = text.strip_prefix(HEAD)?;
    let end = rest.find("`, ")?;
    let (name, tail) = (&rest[..end], &rest[end + 3..]);
    let expected = tail
        .find(" at line ")
        .map_or(tail, |at| &tail[..at])
        .replace('`', "");
    Some(format!(
        "unknown field {name:?} at line {} column {}: check its spelling; {expected}",
        e.line(),
        e.column()
    ))
}

/// The deepest nesting of arrays and objects in a JSON text, ignoring brackets inside
/// strings. Works on invalid JSON too (the parser rejects that afterwards).
pub fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut at) = (0usize, 0usize, 0usize);
    while let Some(&b) = bytes.get(at) {
        at += 1;
        match b {
            b'"' => at = string_end(bytes, at),
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Where the string whose text begins at `at` (after its opening quote) ends: after its
/// closing quote, or at the end of `bytes` if it has none. A string's text is most of a
/// request's bytes (a state's data), so it is skipped to the next quote or backslash at
/// a time rather than looked at byte by byte.
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(found) = bytes
        .get(at..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        let i = at + found;
        if bytes[i] == b'"' {
            return i + 1;
        }
        at = i + 2; // the backslash and the byte it escapes
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(br#"{"a": [1, {"b": "[[[[\"{"}]}"#), 3);
        assert_eq!(depth(&b"[".repeat(65)), 65);
    }

    /// [`depth`] as a plain walk over every byte.
    fn depth_byte_by_byte(bytes: &[u8]) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    proptest::proptest! {
        #[test]
        fn depth_skipping_strings_agrees_with_a_walk_over_every_byte(
            text in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\ a".to_vec()), 0..64)
        ) {
            proptest::prop_assert_eq!(depth(&text), depth_byte_by_byte(&text));
        }
    }

    #[test]
    fn parse_sorts_failures_into_codes() {
        let code = |b: &[u8]| parse::<Value>(b).unwrap_err().code;
        assert_eq!(code(b""), "invalid_json");
        assert_eq!(code(b"{\"a\":"), "invalid_json");
        assert_eq!(code(&b"[".repeat(100)), "too_deep");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse::<Value>(ok.as_bytes()).is_ok());
        assert_eq!(
            parse_object::<Value>(b" []").unwrap_err().code,
            "invalid_json"
        );
        assert!(parse_object::<Value>(b" {}").is_ok());
    }

    #[test]
    fn an_unknown_field_is_invalid_and_named() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            data: Option<Value>,
        }
        let e = parse_object::<Body>(br#"{"data": 1, "selectz": []}"#).unwrap_err();
        assert_eq!(e.code, "invalid");
        assert!(
            e.message
                .starts_with("unknown field \"selectz\" at line 1 column "),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("; expected data"), "{}", e.message);
    }
}
