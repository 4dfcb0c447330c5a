//! The on-disk journal (spool): where batches and run changes wait while the server is unreachable, and where a
//! client leaves what it could not send when it is dropped.
//!
//! File format (`<client-id>-<n>.journal`, one writer process per file, which holds an exclusive `flock` on it
//! while it lives):
//!
//! ```text
//! "FLJRNL01"                        8 bytes magic
//! record(header JSON)               {"version":1,"uri":"http://…","client_id":"…","created":…,"pid":…}
//! record(entry JSON)*               {"seq":n,"entry":{"op":"batch","run":"…","batch":{…}}}
//! record = u32 LE payload length, u32 LE CRC-32 (IEEE) of the payload, payload
//! ```
//!
//! Every append is fsynced. A record cut short (the process died mid-write) or whose CRC does not match ends
//! the readable part of the file: it and anything after it are ignored. Progress is kept beside the file in
//! `<name>.acked` (the number of entry records confirmed by the server, written to a temp file and renamed),
//! so a replay resumes after the last confirmed entry; a re-sent batch keeps its `batch_id` and the server
//! drops it as a duplicate, so a crash between sending and recording progress loses and doubles nothing.

use flightlog_model::{Batch, ImageWrite, NewRun, RunId, RunPatch, WallTime};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"FLJRNL01";
/// Largest record accepted when reading (guards against reading garbage lengths).
pub const MAX_RECORD_BYTES: u32 = 1 << 30;

/// One thing to deliver to the server, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JournalEntry {
    /// Idempotent when `NewRun.id` is set (the server returns the existing run).
    CreateRun(NewRun),
    /// Deduplicated by the server through `batch.batch_id`.
    Batch { run: RunId, batch: Batch },
    /// Idempotent: applying a patch twice leaves the run as applying it once.
    UpdateRun { run: RunId, patch: RunPatch },
    /// An image and its metric point (the bytes travel hex-encoded in the journal).
    Image {
        run: RunId,
        meta: ImageWrite,
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
    },
}

/// Bytes as a lowercase hex string (journals are JSON records).
mod hex_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(de::Error::custom("bad hex digit in image data")),
        };
        if text.len() % 2 != 0 {
            return Err(de::Error::custom("odd-length hex image data"));
        }
        text.as_bytes()
            .chunks(2)
            .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

impl JournalEntry {
    pub fn run_id(&self) -> Option<&RunId> {
        match self {
            JournalEntry::CreateRun(n) => n.id.as_ref(),
            JournalEntry::Batch { run, .. }
            | JournalEntry::UpdateRun { run, .. }
            | JournalEntry::Image { run, .. } => Some(run),
        }
    }
    pub fn points(&self) -> usize {
        match self {
            JournalEntry::Batch { batch, .. } => batch.point_count() + batch.logs.len(),
            _ => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub seq: u64,
    pub entry: JournalEntry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    pub version: u32,
    pub uri: String,
    pub client_id: String,
    pub created: WallTime,
    pub pid: u32,
}

// --- CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320) -------------------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}
static CRC_TABLE: [u32; 256] = crc_table();

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

// --- records -----------------------------------------------------------------------------------------------

pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading one record found.
#[derive(Debug, PartialEq)]
pub enum ReadOutcome {
    Record(Vec<u8>),
    /// Clean end of file.
    End,
    /// A partial or corrupt record: the readable part of the file ends here.
    Torn(String),
}

pub fn read_record(r: &mut impl Read) -> io::Result<ReadOutcome> {
    let mut head = [0u8; 8];
    let n = read_full(r, &mut head)?;
    if n == 0 {
        return Ok(ReadOutcome::End);
    }
    if n < 8 {
        return Ok(ReadOutcome::Torn(format!(
            "record header cut short ({n} of 8 bytes)"
        )));
    }
    let len = u32::from_le_bytes(head[0..4].try_into().unwrap());
    let crc = u32::from_le_bytes(head[4..8].try_into().unwrap());
    if len > MAX_RECORD_BYTES {
        return Ok(ReadOutcome::Torn(format!(
            "record length {len} is not plausible"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    let got = read_full(r, &mut payload)?;
    if got < payload.len() {
        return Ok(ReadOutcome::Torn(format!(
            "record cut short ({got} of {len} bytes)"
        )));
    }
    if crc32(&payload) != crc {
        return Ok(ReadOutcome::Torn("record checksum mismatch".into()));
    }
    Ok(ReadOutcome::Record(payload))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// --- locking -------------------------------------------------------------------------------------------------

/// Takes an exclusive advisory lock on the file without waiting; `false` if another open file holds it. The lock
/// goes away with the file handle (and with the process, however it dies).
pub fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

// --- acked sidecar ---------------------------------------------------------------------------------------

pub fn acked_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".acked");
    PathBuf::from(s)
}

/// How many entry records of `journal` the server has confirmed (0 when no sidecar).
pub fn read_acked(journal: &Path) -> u64 {
    std::fs::read_to_string(acked_path(journal))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn write_acked(journal: &Path, n: u64) -> io::Result<()> {
    let path = acked_path(journal);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, n.to_string())?;
    std::fs::rename(&tmp, &path)
}

/// Removes a fully delivered journal and its sidecar.
pub fn remove_journal(journal: &Path) {
    let _ = std::fs::remove_file(journal);
    let _ = std::fs::remove_file(acked_path(journal));
}

// --- writer ----------------------------------------------------------------------------------------------

/// An open journal of this process: appends records (fsynced) and reads them back in order.
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    reader: BufReader<File>,
    /// Entry records written.
    pub written: u64,
    /// Entry records read back and completed (sent or rejected).
    pub consumed: u64,
}

impl JournalWriter {
    /// Creates `<dir>/<client_id>-<n>.journal` (exclusively; n counts up past existing files), locks it, writes
    /// the header, and syncs.
    pub fn create(dir: &Path, uri: &str, client_id: &str) -> io::Result<JournalWriter> {
        std::fs::create_dir_all(dir)?;
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!("{client_id}-{n}.journal"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100_000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        if !try_lock(&file)? {
            return Err(io::Error::other(format!(
                "journal {} is locked by another process",
                path.display()
            )));
        }
        let header = JournalHeader {
            version: 1,
            uri: uri.to_string(),
            client_id: client_id.to_string(),
            created: WallTime::now(),
            pid: std::process::id(),
        };
        let mut buf = MAGIC.to_vec();
        encode_record(
            &serde_json::to_vec(&header).map_err(io::Error::other)?,
            &mut buf,
        );
        let mut w = &file;
        w.write_all(&buf)?;
        file.sync_all()?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        let mut reader = BufReader::new(File::open(&path)?);
        reader.seek(SeekFrom::Start(buf.len() as u64))?;
        Ok(JournalWriter {
            path,
            file,
            reader,
            written: 0,
            consumed: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the records and fsyncs once.
    pub fn append(&mut self, records: &[JournalRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            let payload = serde_json::to_vec(r).map_err(io::Error::other)?;
            encode_record(&payload, &mut buf);
        }
        let mut w = &self.file;
        w.seek(SeekFrom::End(0))?;
        w.write_all(&buf)?;
        self.file.sync_data()?;
        self.written += records.len() as u64;
        Ok(())
    }

    /// Entry records written but not yet consumed.
    pub fn unsent(&self) -> u64 {
        self.written - self.consumed
    }

    /// Reads the next unconsumed record (does not consume it: call [`Self::consume`] once it is done). Only
    /// records this writer wrote completely are read, so the reader never meets a partial one.
    pub fn peek_next(&mut self) -> io::Result<Option<JournalRecord>> {
        match self.peek_next_raw()? {
            Some(payload) => Ok(Some(decode_record(&payload)?)),
            None => Ok(None),
        }
    }

    /// The next unconsumed record's payload, undecoded (decode it with [`decode_record`] outside any lock).
    pub fn peek_next_raw(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.unsent() == 0 {
            return Ok(None);
        }
        let pos = self.reader.stream_position()?;
        match read_record(&mut self.reader)? {
            ReadOutcome::Record(payload) => {
                self.reader.seek(SeekFrom::Start(pos))?;
                Ok(Some(payload))
            }
            other => Err(io::Error::other(format!(
                "own journal unreadable: {other:?}"
            ))),
        }
    }

    /// Marks the next record done: moves past it and records progress in the sidecar.
    pub fn consume(&mut self) -> io::Result<()> {
        let mut head = [0u8; 8];
        self.reader.read_exact(&mut head)?;
        let len = u32::from_le_bytes(head[0..4].try_into().unwrap()) as i64;
        self.reader.seek_relative(len)?;
        self.consumed += 1;
        write_acked(&self.path, self.consumed)
    }
}

pub fn decode_record(payload: &[u8]) -> io::Result<JournalRecord> {
    serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

// --- reading whole files (replay) ---------------------------------------------------------------------

/// A journal read from disk.
#[derive(Debug)]
pub struct JournalContents {
    pub header: JournalHeader,
    pub records: Vec<JournalRecord>,
    /// Why reading stopped early (a torn or corrupt record), if it did.
    pub torn: Option<String>,
}

pub fn read_journal(file: &mut impl Read) -> io::Result<JournalContents> {
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    if read_full(&mut r, &mut magic)? < 8 || &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a flightlog journal (bad magic)",
        ));
    }
    let header: JournalHeader = match read_record(&mut r)? {
        ReadOutcome::Record(p) => {
            serde_json::from_slice(&p).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("journal header unreadable: {other:?}"),
            ))
        }
    };
    let mut records = Vec::new();
    let mut torn = None;
    loop {
        match read_record(&mut r)? {
            ReadOutcome::Record(p) => match serde_json::from_slice::<JournalRecord>(&p) {
                Ok(rec) => records.push(rec),
                Err(e) => {
                    torn = Some(format!(
                        "record {} is not a journal entry: {e}",
                        records.len()
                    ));
                    break;
                }
            },
            ReadOutcome::End => break,
            ReadOutcome::Torn(why) => {
                torn = Some(why);
                break;
            }
        }
    }
    Ok(JournalContents {
        header,
        records,
        torn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{ScalarWrite, F64};

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    fn sample(seq: u64) -> JournalRecord {
        let run = RunId::new();
        let batch = Batch {
            batch_id: Some(format!("b{seq}")),
            scalars: vec![ScalarWrite {
                name: "loss".into(),
                steps: Some(vec![Some(1), None]),
                times: Some(vec![WallTime(5), WallTime(6)]),
                values: vec![F64(0.5), F64(f64::NAN)],
                ..Default::default()
            }],
            ..Default::default()
        };
        JournalRecord {
            seq,
            entry: JournalEntry::Batch { run, batch },
        }
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = JournalWriter::create(dir.path(), "http://x:1", "cid").unwrap();
        let recs = vec![
            sample(1),
            JournalRecord {
                seq: 2,
                entry: JournalEntry::CreateRun(NewRun {
                    id: Some(RunId::new()),
                    ..Default::default()
                }),
            },
            JournalRecord {
                seq: 3,
                entry: JournalEntry::UpdateRun {
                    run: RunId::new(),
                    patch: RunPatch {
                        status: Some(flightlog_model::RunStatus::Completed),
                        ..Default::default()
                    },
                },
            },
        ];
        w.append(&recs).unwrap();
        assert_eq!(w.peek_next().unwrap().unwrap(), recs[0]);
        w.consume().unwrap();
        assert_eq!(w.peek_next().unwrap().unwrap(), recs[1]);
        assert_eq!(read_acked(w.path()), 1);
        let path = w.path().to_path_buf();

        let all = read_journal(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(all.header.uri, "http://x:1");
        assert_eq!(all.records, recs);
        assert!(all.torn.is_none());

        // A record cut in the middle, as when the process is killed mid-write.
        let full = std::fs::read(&path).unwrap();
        let mut extra = Vec::new();
        encode_record(&serde_json::to_vec(&sample(4)).unwrap(), &mut extra);
        for cut in [3, 8, extra.len() - 1] {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&extra[..cut]);
            let got = read_journal(&mut &bytes[..]).unwrap();
            assert_eq!(got.records, recs, "cut at {cut}");
            assert!(got.torn.is_some());
        }
        // A flipped bit in the last record: its CRC fails, the earlier ones survive.
        let mut bytes = full.clone();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        let got = read_journal(&mut &bytes[..]).unwrap();
        assert_eq!(got.records.len(), 2);
        assert!(got.torn.unwrap().contains("checksum"));
    }

    #[test]
    fn journal_is_locked_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = JournalWriter::create(dir.path(), "http://x:1", "cid").unwrap();
        let other = File::open(w.path()).unwrap();
        assert!(!try_lock(&other).unwrap());
        let path = w.path().to_path_buf();
        drop(w);
        let other = File::open(&path).unwrap();
        assert!(try_lock(&other).unwrap());
        assert!(read_journal(&mut &b"NOTAJRNL"[..]).is_err());
    }
}
