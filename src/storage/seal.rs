//! slct's own checksum on every value it keeps in sled.
//!
//! sled 0.34 checks a CRC on each record of its log, but what it does with a bad one
//! depends on where the record lies: on reopening it may stop recovery at the record
//! (silently dropping every later write, acknowledged Raft entries included), panic, or
//! — for a page it reads later — return an error. A value sealed here carries a CRC-32
//! of its key and bytes, so a value that comes back different from what was written is
//! caught wherever it is read, whatever sled did, and is never served, applied or
//! replicated. (A value that does not come back at all is the flush marker's business:
//! see [`marker`](super::marker).)
//!
//! Layout: the value's bytes, then the CRC-32 (IEEE) of the key's length (`u32`), the key
//! and the value, big-endian. Binding the key catches a record that lands under the
//! wrong key too.
//!
//! A reference to a value kept in a file of its own ([`sm::values`](super::sm::values))
//! is sealed the same way but with [`REFERENCE_DOMAIN`] hashed first, so the two are
//! told apart by which checksum holds (the writer of a reference makes sure that only
//! its own does).

/// Bytes a seal adds to each value.
pub const SEAL_BYTES: usize = 4;

/// What a reference's checksum covers before the key: no inline value's does.
const REFERENCE_DOMAIN: &[u8] = b"slct value file reference";

/// The value as stored: `value` followed by its checksum under `key`.
pub fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    seal_in(b"", key, value)
}

/// A reference as stored: `reference` followed by its checksum under `key`, in the
/// references' own domain.
pub fn seal_reference(key: &[u8], reference: &[u8]) -> Vec<u8> {
    seal_in(REFERENCE_DOMAIN, key, reference)
}

/// The reference inside `stored` if its checksum under `key` holds as a reference's.
pub fn unseal_reference<'a>(key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
    let split = stored.len().checked_sub(SEAL_BYTES)?;
    let (reference, sum) = stored.split_at(split);
    (checksum_in(REFERENCE_DOMAIN, key, reference).to_be_bytes() == sum).then_some(reference)
}

fn seal_in(domain: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(value.len() + SEAL_BYTES);
    stored.extend_from_slice(value);
    stored.extend_from_slice(&checksum_in(domain, key, value).to_be_bytes());
    stored
}

/// The value inside `stored` if its checksum under `key` holds; `None` if it is damaged.
pub fn unseal(key: &[u8], mut stored: Vec<u8>) -> Option<Vec<u8>> {
    let split = stored.len().checked_sub(SEAL_BYTES)?;
    let sum = stored[split..]
        .iter()
        .fold(0u32, |sum, &b| (sum << 8) | u32::from(b));
    stored.truncate(split);
    (checksum(key, &stored) == sum).then_some(stored)
}

fn checksum(key: &[u8], value: &[u8]) -> u32 {
    checksum_in(b"", key, value)
}

fn checksum_in(domain: &[u8], key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(domain);
    let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    hasher.update(&key_len.to_be_bytes());
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_comes_back() {
        let stored = seal(b"key", b"value");
        assert_eq!(stored.len(), 5 + SEAL_BYTES);
        assert_eq!(unseal(b"key", stored).as_deref(), Some(&b"value"[..]));
        assert_eq!(unseal(b"k", seal(b"k", b"")).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn any_flipped_bit_or_cut_or_other_key_is_caught() {
        let stored = seal(b"key", b"some value");
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut damaged = stored.clone();
                damaged[byte] ^= 1 << bit;
                assert_eq!(unseal(b"key", damaged), None, "byte {byte} bit {bit}");
            }
        }
        for len in 0..stored.len() {
            assert_eq!(unseal(b"key", stored[..len].to_vec()), None, "cut to {len}");
        }
        assert_eq!(unseal(b"kex", stored), None);
    }

    #[test]
    fn a_reference_is_told_from_a_value() {
        let reference = seal_reference(b"key", b"file 1");
        assert_eq!(unseal_reference(b"key", &reference), Some(&b"file 1"[..]));
        assert_eq!(unseal(b"key", reference.clone()), None);
        assert_eq!(unseal_reference(b"kex", &reference), None);
        assert_eq!(unseal_reference(b"key", &seal(b"key", b"file 1")), None);
    }
}
