//! Signing a callback's body (design.md §3.4): `Slct-Signature` is an HMAC-SHA256 over
//! the `Slct-Timestamp` and the body, keyed by `--callback-secret`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `Slct-Signature` header for a body sent at `timestamp` (Unix ms, the
/// `Slct-Timestamp` header): `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
///
/// Covering the timestamp lets a receiver reject replays: it recomputes the HMAC over
/// the two headers' values and the raw body, compares in constant time, and refuses a
/// timestamp older than it is willing to accept (say five minutes).
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("sha256={}", hmac_sha256_hex(secret, &signed))
}

/// Hex HMAC-SHA256 of `message` under `secret`.
fn hmac_sha256_hex(secret: &str, message: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_is_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_sha256_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let sig = signature("Jefe", 1764000000000, b"{}");
        assert_eq!(
            sig,
            format!("sha256={}", hmac_sha256_hex("Jefe", b"1764000000000.{}"))
        );
        assert_ne!(
            sig,
            signature("Jefe", 1764000000001, b"{}"),
            "a replay later"
        );
        assert_ne!(sig, signature("Jefe", 1764000000000, b"[]"));
    }
}
