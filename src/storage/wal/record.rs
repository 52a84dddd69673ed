//! The record format of the write-ahead log.
//!
//! A record is a 9-byte header — payload length (`u32`), CRC-32C (`u32`) of the length,
//! kind and payload, and the kind (`u8`) — followed by the payload; integers are
//! little-endian. Segments are zero-filled before use, so nine zero bytes (a kind of 0
//! is never written) mark where the written records of a segment end.

use std::ops::Range;

/// Bytes before a record's payload.
pub const HEADER_LEN: usize = 9;

/// Largest payload a record may claim: past this, a length field is damage.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// A record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The first record of every segment: everything needed to replay the log from this
    /// segment on, as it stood when the segment was begun.
    Segment(SegmentHead),
    /// A log entry (the payload is opaque to the log).
    Entry { index: u64, data: Vec<u8> },
    /// The vote (opaque).
    Vote(Vec<u8>),
    /// The committed log id (opaque).
    Committed(Vec<u8>),
    /// Entries from `from` on are gone.
    Truncate { from: u64 },
    /// Entries up to `through` (inclusive) are gone; `id` names the last of them.
    Purge { through: u64, id: Vec<u8> },
}

/// What a segment's first record carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentHead {
    /// The segment's sequence number (also its file name).
    pub seq: u64,
    /// The index the next entry appended had, when the segment was begun.
    pub next_index: u64,
    /// The vote then.
    pub vote: Option<Vec<u8>>,
    /// The committed log id then.
    pub committed: Option<Vec<u8>>,
    /// The purge point then: the last purged index and its opaque id.
    pub purged: Option<(u64, Vec<u8>)>,
}

const SEGMENT: u8 = 1;
const ENTRY: u8 = 2;
const VOTE: u8 = 3;
const COMMITTED: u8 = 4;
const TRUNCATE: u8 = 5;
const PURGE: u8 = 6;

impl Record {
    /// Appends the record, header and payload, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let kind = match self {
            Record::Segment(head) => {
                put_u64(out, head.seq);
                put_u64(out, head.next_index);
                put_opt(out, head.vote.as_deref());
                put_opt(out, head.committed.as_deref());
                match &head.purged {
                    Some((through, id)) => {
                        out.push(1);
                        put_u64(out, *through);
                        put_bytes(out, id);
                    }
                    None => out.push(0),
                }
                SEGMENT
            }
            Record::Entry { index, data } => {
                put_u64(out, *index);
                out.extend_from_slice(data);
                ENTRY
            }
            Record::Vote(vote) => {
                out.extend_from_slice(vote);
                VOTE
            }
            Record::Committed(committed) => {
                out.extend_from_slice(committed);
                COMMITTED
            }
            Record::Truncate { from } => {
                put_u64(out, *from);
                TRUNCATE
            }
            Record::Purge { through, id } => {
                put_u64(out, *through);
                out.extend_from_slice(id);
                PURGE
            }
        };
        let len = u32::try_from(out.len() - start - HEADER_LEN).expect("record over 4 GiB");
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 8] = kind;
        let crc = checksum(&out[start..start + 4], kind, &out[start + HEADER_LEN..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// What is found at an offset of a segment.
#[derive(Debug)]
pub enum Found {
    /// A whole record with a good checksum, and the offset just past it.
    Record(Record, usize),
    /// Nine zero bytes, or fewer up to the end of the file: the end of the written records.
    End,
    /// Something else; `extent` is the bytes the record claims (clamped to the buffer).
    Bad {
        reason: String,
        extent: Range<usize>,
    },
}

/// Reads the record at `at` in `buf`.
pub fn read_at(buf: &[u8], at: usize) -> Found {
    let Some(header) = buf.get(at..at + HEADER_LEN) else {
        // A full segment ends in fewer zero bytes than a header.
        if buf
            .get(at..)
            .is_none_or(|rest| rest.iter().all(|&b| b == 0))
        {
            return Found::End;
        }
        return Found::Bad {
            reason: "record header cut off by the end of the file".to_owned(),
            extent: at.min(buf.len())..buf.len(),
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Found::End;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind = header[8];
    let end = at + HEADER_LEN + len;
    if len > MAX_PAYLOAD || end > buf.len() {
        return Found::Bad {
            reason: format!("record length {len} runs past the end of the file"),
            extent: at..buf.len(),
        };
    }
    let payload = &buf[at + HEADER_LEN..end];
    if checksum(&header[0..4], kind, payload) != crc {
        return Found::Bad {
            reason: "checksum mismatch".to_owned(),
            extent: at..end,
        };
    }
    match decode(kind, payload) {
        Some(record) => Found::Record(record, end),
        None => Found::Bad {
            reason: format!("undecodable record of kind {kind}"),
            extent: at..end,
        },
    }
}

fn checksum(len: &[u8], kind: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(len);
    let crc = crc32c::crc32c_append(crc, &[kind]);
    crc32c::crc32c_append(crc, payload)
}

fn decode(kind: u8, payload: &[u8]) -> Option<Record> {
    let mut r = Reader(payload);
    let record = match kind {
        SEGMENT => {
            let seq = r.u64()?;
            let next_index = r.u64()?;
            let vote = r.opt()?;
            let committed = r.opt()?;
            let purged = match r.u8()? {
                0 => None,
                1 => Some((r.u64()?, r.bytes()?)),
                _ => return None,
            };
            if !r.0.is_empty() {
                return None;
            }
            Record::Segment(SegmentHead {
                seq,
                next_index,
                vote,
                committed,
                purged,
            })
        }
        ENTRY => Record::Entry {
            index: r.u64()?,
            data: r.0.to_vec(),
        },
        VOTE => Record::Vote(payload.to_vec()),
        COMMITTED => Record::Committed(payload.to_vec()),
        TRUNCATE => {
            let from = r.u64()?;
            r.0.is_empty().then_some(Record::Truncate { from })?
        }
        PURGE => Record::Purge {
            through: r.u64()?,
            id: r.0.to_vec(),
        },
        _ => return None,
    };
    Some(record)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("field over 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        Some(self.take(len)?.to_vec())
    }

    fn opt(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let records = [
            Record::Segment(SegmentHead {
                seq: 3,
                next_index: 10,
                vote: Some(b"v".to_vec()),
                committed: None,
                purged: Some((4, b"p".to_vec())),
            }),
            Record::Entry {
                index: 7,
                data: b"data".to_vec(),
            },
            Record::Vote(b"vote".to_vec()),
            Record::Committed(vec![]),
            Record::Truncate { from: 5 },
            Record::Purge {
                through: 2,
                id: b"id".to_vec(),
            },
        ];
        let mut buf = Vec::new();
        for record in &records {
            record.encode_into(&mut buf);
        }
        buf.extend_from_slice(&[0; 32]);
        let mut at = 0;
        for record in &records {
            match read_at(&buf, at) {
                Found::Record(found, next) => {
                    assert_eq!(&found, record);
                    at = next;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(read_at(&buf, at), Found::End));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut buf = Record::Vote(b"vote".to_vec()).encode();
        buf[HEADER_LEN + 1] ^= 0x10;
        assert!(matches!(read_at(&buf, 0), Found::Bad { .. }));
    }
}
