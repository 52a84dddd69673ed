//! Idempotent writes (design.md §3): a write sent with `Idempotency-Key` is applied once
//! per key; a repeat within the window gets the first reply and applies nothing.
//!
//! The proposer wraps the write in [`Op::Keyed`](super::Op::Keyed) with the key, a
//! digest of the request and the window. Applying it looks the key up in
//! [`Table::Idempotency`]: a live record with the same route and digest answers with
//! its stored reply; one with another route or digest is
//! [`Error::IdempotencyKeyReused`]; no record (or an expired one) applies the write and
//! records its reply — errors included, as they too are deterministic — until
//! `now + window`. [`Table::IdempotencyExpiry`] orders records by expiry, so advancing log
//! time deletes them like timers fire, and the records are replicated and carried in
//! snapshots like every table.
//!
//! The table is bounded in count ([`MAX_RECORDS`]) and bytes ([`MAX_BYTES`]): a record
//! that would pass either evicts the records closest to expiry first. A repeat of an
//! evicted key is applied again; the bounds are far above what a window of retries
//! needs.

use serde::{Deserialize, Serialize};

use super::command::Response;
use super::ctx::Ctx;
use super::error::Error;
use super::keys;
use super::store::{get_record, put_record};
use super::store::{Store, StoreError, Table};
use super::types::Millis;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 128;
/// Longest window a record may be kept: a week.
pub const MAX_WINDOW_MS: Millis = 7 * 86_400_000;
/// Most records kept.
pub const MAX_RECORDS: u64 = 100_000;
/// Most bytes of records kept.
pub const MAX_BYTES: u64 = 256 << 20;

/// Meta key of the number of records.
const META_COUNT: &[u8] = b"idempotency/count";
/// Meta key of the bytes of records.
const META_BYTES: &[u8] = b"idempotency/bytes";

/// What is kept of a keyed write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The kind of write (`CreateState`, `Send`, ...), named in a refusal.
    pub route: String,
    /// Digest of the request.
    pub digest: Vec<u8>,
    /// The first reply.
    pub reply: Result<Response, Error>,
    /// Log time after which the key is free again.
    pub expires_at: Millis,
}

/// An idempotency key: 1 to [`MAX_KEY`] bytes of visible ASCII (what an HTTP header
/// value holds).
pub fn check_key(key: &str) -> Result<(), Error> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_KEY || !visible {
        return Err(Error::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} bytes of visible ASCII"
        )));
    }
    Ok(())
}

/// A window: 1 ms to [`MAX_WINDOW_MS`].
pub fn check_window(window_ms: Millis) -> Result<(), Error> {
    if window_ms == 0 || window_ms > MAX_WINDOW_MS {
        return Err(Error::Invalid(format!(
            "an idempotency window lasts 1 to {MAX_WINDOW_MS} ms"
        )));
    }
    Ok(())
}

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// The live record of `key`, if any.
    pub fn idempotency_record(&mut self, key: &str) -> Result<Option<Record>, StoreError> {
        let record: Option<Record> = get_record(self.tx, Table::Idempotency, key.as_bytes())?;
        Ok(record.filter(|r| r.expires_at > self.now))
    }

    /// Records `key`'s first reply, evicting the records nearest expiry if the table
    /// would pass its bounds.
    pub fn record_idempotency(&mut self, key: &str, record: &Record) -> Result<(), StoreError> {
        // A record of this key that expired but was not yet collected goes first.
        self.forget_idempotency(key)?;
        let size = (key.len() + crate::codec::encode(record)?.len()) as u64;
        loop {
            let count: u64 = get_record(self.tx, Table::Meta, META_COUNT)?.unwrap_or(0);
            let bytes: u64 = get_record(self.tx, Table::Meta, META_BYTES)?.unwrap_or(0);
            if count < MAX_RECORDS && bytes + size <= MAX_BYTES {
                break;
            }
            let Some((oldest, _)) = self
                .tx
                .scan_from(Table::IdempotencyExpiry, &[])
                .next()
                .transpose()?
            else {
                break;
            };
            let (_, evicted) = keys::parse_at_state(&oldest)?;
            self.forget_idempotency(&evicted)?;
        }
        put_record(self.tx, Table::Idempotency, key.as_bytes().to_vec(), record)?;
        let expiry = keys::at_state(record.expires_at, key);
        self.tx.put(Table::IdempotencyExpiry, expiry, Vec::new());
        self.add_totals(1, size as i64)
    }

    /// Deletes `key`'s record and its expiry entry, if there is one.
    pub fn forget_idempotency(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(bytes) = self.tx.get(Table::Idempotency, key.as_bytes())? else {
            return Ok(());
        };
        let record: Record = crate::codec::decode(&bytes)?;
        self.tx.delete(Table::Idempotency, key.as_bytes().to_vec());
        let expiry = keys::at_state(record.expires_at, key);
        self.tx.delete(Table::IdempotencyExpiry, expiry);
        let size = (key.len() + bytes.len()) as i64;
        self.add_totals(-1, -size)
    }

    fn add_totals(&mut self, count: i64, bytes: i64) -> Result<(), StoreError> {
        for (key, delta) in [(META_COUNT, count), (META_BYTES, bytes)] {
            let current: u64 = get_record(self.tx, Table::Meta, key)?.unwrap_or(0);
            put_record(
                self.tx,
                Table::Meta,
                key.to_vec(),
                &current.saturating_add_signed(delta),
            )?;
        }
        Ok(())
    }
}
