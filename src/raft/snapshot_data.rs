//! What openraft moves between nodes as a snapshot: the tables file and the value files
//! it lists, as one stream.
//!
//! On disk a snapshot is its tables file and links to the value files it refers to
//! ([`super::snapshot_files`]). openraft's chunked transport (the v1 network that
//! `openraft-legacy` keeps) sends a snapshot as one stream of bytes, read in chunks at
//! offsets, and receives it into one file. So the stream is assembled
//! as it is read, never copied to disk first: the tables file, then each listed value
//! file's bytes in list order, then a footer — the tables file's length and [`MAGIC`] —
//! by which the receiver takes it apart again ([`unpack`]), checking each value's length
//! and CRC-32 against its reference.

use std::fs::File;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use super::snapshot::{self, Meta};
use super::snapshot_files::{Reader, SnapshotFiles};

/// Ends every snapshot stream, after the tables file's length.
const MAGIC: &[u8; 8] = b"SLCTSTR1";
/// Bytes of the footer.
const FOOTER_BYTES: u64 = 16;
/// Most bytes one read of an outgoing stream takes from disk.
const READ_CHUNK: usize = 1 << 20;

/// A snapshot as openraft holds it: one of this node's, to read, or one being received.
#[derive(Debug)]
pub enum SnapshotData {
    /// One of this node's snapshots, read as the stream described above.
    Outgoing(Outgoing),
    /// A stream being received from the leader into a file.
    Incoming(tokio::fs::File),
}

/// A snapshot of this node read as one stream. It holds the tables file open (a newer
/// snapshot may replace it meanwhile) and keeps the links it reads from being pruned
/// until it is dropped.
#[derive(Debug)]
pub struct Outgoing {
    parts: Arc<Parts>,
    /// Where the next read starts.
    pos: u64,
    /// Bytes read from `pos` on, not yet handed out.
    buffered: Vec<u8>,
    /// A read from disk under way, at `pos`.
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
    _reader: Reader,
}

/// The pieces of an outgoing stream, in order.
#[derive(Debug)]
struct Parts {
    /// (offset in the stream, length, what holds the bytes).
    pieces: Vec<(u64, u64, Piece)>,
    len: u64,
}

#[derive(Debug)]
enum Piece {
    Tables(File),
    Value(PathBuf),
    Footer([u8; FOOTER_BYTES as usize]),
}

impl Outgoing {
    /// The snapshot whose tables file `tables` is open (`reader` taken before it was
    /// opened), its value files linked in `files`; and its metadata.
    pub fn open(tables: File, files: &SnapshotFiles, reader: Reader) -> io::Result<(Meta, Self)> {
        let meta = snapshot::read_meta(&tables)?;
        let references = snapshot::read_files(&tables)?;
        let tables_len = tables.metadata()?.len();
        let mut footer = [0u8; FOOTER_BYTES as usize];
        footer[..8].copy_from_slice(&tables_len.to_be_bytes());
        footer[8..].copy_from_slice(MAGIC);
        let mut pieces = vec![(0, tables_len, Piece::Tables(tables))];
        let mut at = tables_len;
        for reference in &references {
            pieces.push((
                at,
                reference.value_len(),
                Piece::Value(files.path(reference)),
            ));
            at += reference.value_len();
        }
        pieces.push((at, FOOTER_BYTES, Piece::Footer(footer)));
        let parts = Parts {
            pieces,
            len: at + FOOTER_BYTES,
        };
        let outgoing = Outgoing {
            parts: Arc::new(parts),
            pos: 0,
            buffered: Vec::new(),
            reading: None,
            _reader: reader,
        };
        Ok((meta, outgoing))
    }
}

impl Parts {
    /// Up to `want` bytes from offset `at` (fewer at a piece's end; none at the end).
    fn read_at(&self, at: u64, want: usize) -> io::Result<Vec<u8>> {
        let i = self.pieces.partition_point(|(start, _, _)| *start <= at);
        let Some((start, len, piece)) = i.checked_sub(1).map(|i| &self.pieces[i]) else {
            return Ok(Vec::new());
        };
        let offset = at - start;
        if offset >= *len {
            return Ok(Vec::new());
        }
        let mut bytes = vec![0u8; want.min((len - offset) as usize)];
        match piece {
            Piece::Tables(file) => file.read_exact_at(&mut bytes, offset)?,
            Piece::Value(path) => File::open(path)?.read_exact_at(&mut bytes, offset)?,
            Piece::Footer(footer) => {
                let n = bytes.len();
                bytes.copy_from_slice(&footer[offset as usize..][..n]);
            }
        }
        Ok(bytes)
    }
}

impl AsyncRead for Outgoing {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.buffered.is_empty() {
                let n = buf.remaining().min(this.buffered.len());
                buf.put_slice(&this.buffered[..n]);
                this.buffered.drain(..n);
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            if let Some(reading) = this.reading.as_mut() {
                let read = ready!(Pin::new(reading).poll(cx));
                this.reading = None;
                this.buffered = read.map_err(io::Error::other)??;
                if this.buffered.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.pos >= this.parts.len || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let (parts, at) = (this.parts.clone(), this.pos);
            let want = buf.remaining().min(READ_CHUNK);
            this.reading = Some(tokio::task::spawn_blocking(move || parts.read_at(at, want)));
        }
    }
}

impl AsyncSeek for Outgoing {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = match position {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => this.parts.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => this.pos.checked_add_signed(delta),
        };
        this.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a snapshot",
            )
        })?;
        // A read under way was for the old position: let it finish unseen.
        this.reading = None;
        this.buffered.clear();
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

impl AsyncWrite for Outgoing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a snapshot of this node is read, not written",
        )))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).poll_read(cx, buf),
            SnapshotData::Incoming(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).start_seek(position),
            SnapshotData::Incoming(file) => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).poll_complete(cx),
            SnapshotData::Incoming(file) => Pin::new(file).poll_complete(cx),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).poll_write(cx, bytes),
            SnapshotData::Incoming(file) => Pin::new(file).poll_write(cx, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).poll_flush(cx),
            SnapshotData::Incoming(file) => Pin::new(file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Outgoing(outgoing) => Pin::new(outgoing).poll_shutdown(cx),
            SnapshotData::Incoming(file) => Pin::new(file).poll_shutdown(cx),
        }
    }
}

/// Takes the stream `data` apart: its tables file into a new file `tables` (synced),
/// and each value into `files` (durable), unless a link of that name is there already
/// (names are random ids, never reused: it is the same value). Each value is checked
/// against its reference as it is copied; anything that does not add up is an error.
pub async fn unpack(
    data: &mut SnapshotData,
    tables: &Path,
    files: &SnapshotFiles,
) -> io::Result<()> {
    let len = data.seek(SeekFrom::End(0)).await?;
    let footer_at = len
        .checked_sub(FOOTER_BYTES)
        .ok_or_else(|| invalid("the snapshot stream is too short"))?;
    data.seek(SeekFrom::Start(footer_at)).await?;
    let mut footer = [0u8; FOOTER_BYTES as usize];
    data.read_exact(&mut footer).await?;
    if &footer[8..] != MAGIC {
        return Err(invalid("the snapshot stream has no footer"));
    }
    let tables_len = u64::from_be_bytes(footer[..8].try_into().expect("eight bytes"));
    if tables_len > footer_at {
        return Err(invalid("the snapshot stream's footer is damaged"));
    }
    data.seek(SeekFrom::Start(0)).await?;
    let mut out = tokio::fs::File::create(tables).await?;
    let copied = tokio::io::copy(&mut (&mut *data).take(tables_len), &mut out).await?;
    if copied != tables_len {
        return Err(invalid("the snapshot stream ended inside its tables"));
    }
    out.sync_all().await?;
    drop(out);
    let references = {
        let tables = tables.to_owned();
        tokio::task::spawn_blocking(move || snapshot::read_files(&File::open(tables)?))
            .await
            .map_err(io::Error::other)??
    };
    let mut at = tables_len;
    for reference in &references {
        let path = files.path(reference);
        let end = at
            .checked_add(reference.value_len())
            .filter(|end| *end <= footer_at)
            .ok_or_else(|| invalid("the snapshot stream ended inside its values"))?;
        if tokio::fs::try_exists(&path).await? {
            at = end;
            continue;
        }
        data.seek(SeekFrom::Start(at)).await?;
        let partial = path.with_extension("part");
        let mut out = tokio::fs::File::create(&partial).await?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = reference.value_len();
        let mut chunk = vec![0u8; READ_CHUNK];
        while left > 0 {
            let n = (left as usize).min(chunk.len());
            data.read_exact(&mut chunk[..n]).await?;
            crc.update(&chunk[..n]);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk[..n]).await?;
            left -= n as u64;
        }
        if crc.finalize() != reference.crc() {
            return Err(invalid(
                "a value in the snapshot stream does not match its CRC-32",
            ));
        }
        out.sync_all().await?;
        drop(out);
        tokio::fs::rename(&partial, &path).await?;
        at = end;
    }
    if at != footer_at {
        return Err(invalid(
            "the snapshot stream holds more than its tables list",
        ));
    }
    files.sync()
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}
