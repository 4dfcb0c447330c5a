//! Reading event files, including one still being written: complete records are returned, a partial last
//! record is left for the next poll, and damaged records are reported (file and offset) and skipped.

use crate::fast::SimpleScalars;
use crate::proto::Event;
use crate::record::{decode_frame, Frame, FRAME_OVERHEAD};
use prost::Message;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Records longer than this are taken for damaged framing rather than waited for.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// A record that could not be read; reading went on after it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The length field's checksum is wrong: bytes up to the next valid record were skipped.
    #[error("{file}: offset {offset}: record length checksum mismatch, skipped {skipped} bytes")]
    BadLength {
        file: String,
        offset: u64,
        skipped: u64,
    },
    /// The data's checksum is wrong: this one record was skipped.
    #[error(
        "{file}: offset {offset}: record data checksum mismatch, skipped the record ({size} bytes)"
    )]
    BadData {
        file: String,
        offset: u64,
        size: u64,
    },
    /// The file ends inside a record (or in damage with no valid record after it).
    #[error("{file}: offset {offset}: file ends inside a record, ignored the last {bytes} bytes")]
    Truncated {
        file: String,
        offset: u64,
        bytes: u64,
    },
    /// The file ends in bytes that hold no valid record at all (damage, or a file that is no event file).
    #[error("{file}: offset {offset}: the last {bytes} bytes hold no valid record (damaged, or not TensorBoard event data), ignored them")]
    NoRecord {
        file: String,
        offset: u64,
        bytes: u64,
    },
    /// The checksums match but the data is not an Event message.
    #[error("{file}: offset {offset}: record is not a valid Event: {reason}")]
    Undecodable {
        file: String,
        offset: u64,
        reason: String,
    },
}

/// What one parse of a buffer gave.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Events with the file offset of their record, in file order.
    pub events: Vec<(u64, Event)>,
    pub errors: Vec<RecordError>,
    /// Bytes of the buffer used; the rest is an incomplete record (or damage not yet resolvable).
    pub consumed: usize,
}

/// Parses the records at the start of `buf` (which begins at file offset `base`) into a list. See
/// [`visit_events`].
pub fn parse_events(buf: &[u8], base: u64, file: &str) -> Parsed {
    let mut events = Vec::new();
    let (errors, consumed) = visit_events(buf, base, file, |o, e| events.push((o, e)));
    Parsed {
        events,
        errors,
        consumed,
    }
}

/// Hands each complete record's event (with its file offset) to `f`, in file order, without keeping them.
/// Stops before an incomplete record. After a bad length checksum it looks for the next offset where a whole
/// valid record starts; if none is in the buffer yet, it stops there (the bytes may still be arriving)
/// without reporting. Returns the damaged records and the bytes used. Never panics.
pub fn visit_events(
    buf: &[u8],
    base: u64,
    file: &str,
    mut f: impl FnMut(u64, Event),
) -> (Vec<RecordError>, usize) {
    visit_frames(buf, base, file, |offset, data| {
        Event::decode(data).map(|e| f(offset, e))
    })
}

/// A record as [`visit_decoded`] hands it over: scalar-only events in their allocation-free form, every
/// other event decoded in full.
pub enum Decoded<'r, 'a> {
    Scalars(&'r SimpleScalars<'a>),
    Event(Event),
}

impl Decoded<'_, '_> {
    pub fn wall_time(&self) -> f64 {
        match self {
            Decoded::Scalars(s) => s.wall_time,
            Decoded::Event(e) => e.wall_time,
        }
    }
}

/// [`visit_events`] for importers: the commonest records (only `simple_value` scalars) skip prost.
pub fn visit_decoded<'a>(
    buf: &'a [u8],
    base: u64,
    file: &str,
    mut f: impl FnMut(u64, Decoded<'_, 'a>),
) -> (Vec<RecordError>, usize) {
    let mut fast = SimpleScalars::default();
    visit_frames(buf, base, file, |offset, data| {
        if fast.decode(data) {
            f(offset, Decoded::Scalars(&fast));
            Ok(())
        } else {
            Event::decode(data).map(|e| f(offset, Decoded::Event(e)))
        }
    })
}

/// The framing walk behind [`visit_events`]: hands each whole record's data to `decode`, whose error makes
/// the record [`RecordError::Undecodable`].
fn visit_frames<'a>(
    buf: &'a [u8],
    base: u64,
    file: &str,
    mut decode: impl FnMut(u64, &'a [u8]) -> Result<(), prost::DecodeError>,
) -> (Vec<RecordError>, usize) {
    let mut errors = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let offset = base + pos as u64;
        match frame_at(&buf[pos..]) {
            Frame::Record { data, size } => {
                if let Err(e) = decode(offset, data) {
                    errors.push(RecordError::Undecodable {
                        file: file.to_string(),
                        offset,
                        reason: e.to_string(),
                    });
                }
                pos += size;
            }
            Frame::Incomplete => break,
            Frame::BadDataCrc { size } => {
                errors.push(RecordError::BadData {
                    file: file.to_string(),
                    offset,
                    size: size as u64,
                });
                pos += size;
            }
            Frame::BadLengthCrc => match resync(&buf[pos..]) {
                Some(skip) => {
                    errors.push(RecordError::BadLength {
                        file: file.to_string(),
                        offset,
                        skipped: skip as u64,
                    });
                    pos += skip;
                }
                None => break,
            },
        }
    }
    (errors, pos)
}

/// [`decode_frame`] with oversized lengths treated as damage.
fn frame_at(buf: &[u8]) -> Frame<'_> {
    if buf.len() >= 8 {
        let mut len = [0u8; 8];
        len.copy_from_slice(&buf[..8]);
        if u64::from_le_bytes(len) > MAX_RECORD_BYTES {
            return Frame::BadLengthCrc;
        }
    }
    decode_frame(buf)
}

/// The distance to the next offset where a complete, valid record starts.
fn resync(buf: &[u8]) -> Option<usize> {
    (1..buf.len().saturating_sub(FRAME_OVERHEAD - 1))
        .find(|&i| matches!(frame_at(&buf[i..]), Frame::Record { .. }))
}

/// Follows one event file: each [`EventFileReader::poll`] returns the records completed since the last one.
#[derive(Debug)]
pub struct EventFileReader {
    path: PathBuf,
    name: String,
    file: Option<File>,
    /// File offset of `pending[0]`.
    offset: u64,
    pending: Vec<u8>,
}

impl EventFileReader {
    /// A reader starting at the beginning of `path` (opened lazily: the file may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::starting_at(path, 0)
    }

    /// A reader that resumes at `offset`, a record boundary returned earlier by [`Self::offset`].
    pub fn starting_at(path: impl Into<PathBuf>, offset: u64) -> Self {
        let path = path.into();
        EventFileReader {
            name: path.display().to_string(),
            path,
            file: None,
            offset,
            pending: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The offset of the first byte not yet returned as an event or an error (a record boundary).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes read but not yet usable: a record still being written (or damage not yet resolvable).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// For a file that is complete (its writer is gone): the bytes left after the last record, as an error.
    pub fn trailing_error(&self) -> Option<RecordError> {
        if self.pending.is_empty() {
            return None;
        }
        let (file, offset, bytes) = (self.name.clone(), self.offset, self.pending.len() as u64);
        Some(match frame_at(&self.pending) {
            Frame::BadLengthCrc => RecordError::NoRecord {
                file,
                offset,
                bytes,
            },
            _ => RecordError::Truncated {
                file,
                offset,
                bytes,
            },
        })
    }

    /// Reads what was appended since the last poll and returns the records it completes.
    pub fn poll(&mut self) -> std::io::Result<Parsed> {
        let before = self.offset;
        let mut events = Vec::new();
        let errors = self.poll_each(|o, e| events.push((o, e)))?;
        Ok(Parsed {
            consumed: (self.offset - before) as usize,
            events,
            errors,
        })
    }

    /// Like [`Self::poll`], handing each event to `f` instead of collecting them (a large file is not held
    /// decoded in memory). Returns the damaged records.
    pub fn poll_each(
        &mut self,
        mut f: impl FnMut(u64, Event),
    ) -> std::io::Result<Vec<RecordError>> {
        let name = self.name.clone();
        self.poll_pieces(|buf, base| visit_events(buf, base, &name, &mut f))
    }

    /// [`Self::poll_each`] through [`visit_decoded`] (scalar-only records without prost).
    pub fn poll_decoded(
        &mut self,
        mut f: impl FnMut(u64, Decoded<'_, '_>),
    ) -> std::io::Result<Vec<RecordError>> {
        let name = self.name.clone();
        self.poll_pieces(|buf, base| visit_decoded(buf, base, &name, &mut f))
    }

    /// Opens the file (at the reader's offset) the first time, then reads what was appended in pieces.
    fn poll_pieces(
        &mut self,
        mut visit: impl FnMut(&[u8], u64) -> (Vec<RecordError>, usize),
    ) -> std::io::Result<Vec<RecordError>> {
        if self.file.is_none() {
            let mut f = File::open(&self.path)?;
            f.seek(SeekFrom::Start(self.offset + self.pending.len() as u64))?;
            self.file = Some(f);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        let mut errors = Vec::new();
        read_in_pieces(file, &mut self.pending, &mut self.offset, |buf, base| {
            let (e, consumed) = visit(buf, base);
            errors.extend(e);
            consumed
        })?;
        Ok(errors)
    }
}

/// Most bytes of a file's first record that [`read_identity`] hashes.
const IDENTITY_DATA_BYTES: u64 = 4096;

/// What tells an event file from another of the same name: a hash of its first record (a writer's first
/// record holds the time it created the file), or `None` while that record's data is not whole yet (then the
/// file has no whole record to ingest). A file replaced by another under its name gets another identity, so an
/// importer reads it anew instead of from where it left the old one, and its batches get other ids. Also
/// returns the bytes read: the start of the file, which a caller reading `src` on may still need.
pub fn read_identity(src: &mut impl Read) -> std::io::Result<(Option<u64>, Vec<u8>)> {
    let mut head = Vec::new();
    src.take(12).read_to_end(&mut head)?;
    if head.len() < 12 {
        return Ok((None, head));
    }
    let len = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
    let want = len.min(IDENTITY_DATA_BYTES);
    let got = src.take(want).read_to_end(&mut head)? as u64;
    let identity = (got == want).then(|| flightlog_model::fnv1a64(&head));
    Ok((identity, head))
}

/// Why what was read of a file before (its first `read` bytes, from the file whose identity was `was`) is
/// not the start of the file as it is now (`len` bytes, identity `is`), if it is not: the file is shorter, or
/// another file took its name. Such a file is read anew from its start.
pub fn replaced_since(
    read: u64,
    was: Option<u64>,
    len: u64,
    is: Option<u64>,
) -> Option<&'static str> {
    if len < read {
        return Some("is shorter than what was read of it");
    }
    match (was, is) {
        (Some(was), Some(is)) if was != is => Some("was replaced by another file"),
        _ => None,
    }
}

/// [`read_identity`] of the file at `path`.
pub fn file_identity(path: &Path) -> std::io::Result<Option<u64>> {
    read_identity(&mut File::open(path)?).map(|(identity, _)| identity)
}

/// Bytes read per piece by [`read_in_pieces`]: small enough to stay in cache and to reuse one buffer.
pub const READ_PIECE: usize = 1 << 18;

/// Reads `src` to its end a piece at a time into `buf`, whose bytes start at file offset `*offset`, handing
/// the buffer to `visit` after each read; `visit` returns how many leading bytes it used (whole records),
/// which are dropped and counted into `*offset`. What is left at the end (a partial record) stays in `buf`.
///
/// One buffer is reused instead of reading a whole file into fresh memory, whose page faults cost more than
/// decoding it. A piece that completes no record (a large record, or damage with no valid record after it
/// yet) makes the next read as large as the buffer, so a long stretch is scanned a bounded number of times.
pub fn read_in_pieces(
    src: &mut impl Read,
    buf: &mut Vec<u8>,
    offset: &mut u64,
    mut visit: impl FnMut(&[u8], u64) -> usize,
) -> std::io::Result<()> {
    loop {
        let want = READ_PIECE.max(buf.len());
        let got = src.take(want as u64).read_to_end(buf)?;
        let consumed = visit(buf, *offset).min(buf.len());
        buf.drain(..consumed);
        *offset += consumed as u64;
        if got == 0 {
            break;
        }
    }
    if buf.capacity() > 4 * READ_PIECE && buf.len() < READ_PIECE {
        buf.shrink_to(READ_PIECE);
    }
    Ok(())
}
