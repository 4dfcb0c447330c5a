//! The crash log: what log calls hand the client, written as they hand it over into a memory-mapped file, so a
//! process killed before its data was sent (kill -9, the OOM killer) leaves that data for the next replay.
//!
//! Why a mapped file: the pages of a shared file mapping are the kernel's page cache, so what a log call wrote
//! outlives the process without a system call per point (a `write` would cost more than the log call itself).
//! It does not outlive a power cut (nothing is synced); the journal, fsynced, holds data through an outage.
//!
//! `<client-id>.crashlog`, flock held while the client lives: a 4 KiB head (magic `FLCRASH1`, then a journal
//! style record holding the header JSON: server, client id, batch size), then two slots of equal size:
//!
//! ```text
//! 0   u64 committed length (the slot's bytes that hold whole records; stored after each record)
//! 8   u64 epoch (the newer slot has the higher one)
//! 16  u64 settled seq (entries up to it were delivered or journaled)
//! 64  records: u32 LE length of kind + body, u8 kind, body
//! ```
//!
//! Records say what the live client did, in order: a run or a column got its number, a point or a write was
//! queued, a run's accumulator was sealed into entries with these seqs and batch ids, an entry was queued.
//! Recovery replays them into the same accumulators ([`RunAcc`]), so each sealed batch comes back with its
//! batch id (the server drops one it stored already) and what was never sealed becomes new batches. It writes
//! the entries past the settled seq to an ordinary journal, which the replay delivers, and deletes the file.
//!
//! A slot that fills up has everything queued sealed, and the other slot takes over once all its entries are
//! settled. If they are not (the sender is a whole slot behind), the owner journals what it holds instead,
//! which empties both slots.

use crate::acc::RunAcc;
use crate::journal::{self, JournalEntry, JournalRecord, JournalWriter, ReadOutcome};
use flightlog_model::{Batch, RunId, WallTime, F64};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

const MAGIC: &[u8; 8] = b"FLCRASH1";
/// The head: magic and header record. The slots start page-aligned after it.
const HEAD: usize = 4096;
const SLOT_HEADER: usize = 64;
/// Room kept free in a slot for what sealing records (seqs and batch ids, about 45 bytes a batch).
const SEAL_RESERVE: usize = 256 * 1024;
/// A record's length and kind.
const RECORD_OVERHEAD: usize = 5;
/// A column number past this in a record is garbage (recovery would allocate that many columns).
const MAX_COLUMNS: usize = 1 << 20;
/// A scalar point's record: length, kind, run, column, has-step, step, time, value.
const SCALAR_RECORD: usize = RECORD_OVERHEAD + 4 + 4 + 1 + 8 + 8 + 8;

const COMMITTED: usize = 0;
const EPOCH: usize = 1;
const SETTLED: usize = 2;

mod kind {
    pub const RUN: u8 = 1;
    pub const COLUMN: u8 = 2;
    pub const DESCRIBE: u8 = 3;
    pub const SCALAR: u8 = 4;
    pub const METRIC: u8 = 5;
    pub const TEXT: u8 = 6;
    pub const ENTRY: u8 = 7;
    pub const SEALED: u8 = 8;
}

/// Counts forks (in the child): a forked child shares its parent's mapping, so a log it inherited must never
/// write again, or it would write into the parent's crash log.
static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn forked_child() {
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
}

#[derive(Serialize, Deserialize)]
struct Header {
    uri: String,
    client_id: String,
    /// Recovery seals with the same limit, so batches split where the live client split them.
    max_batch_points: usize,
    pid: u32,
}

/// A client's crash log, open for writing. Lives in the queue's state, under its lock.
pub(crate) struct CrashLog {
    path: PathBuf,
    /// Holds the flock that tells recovery this client is alive.
    _file: File,
    map: *mut u8,
    size: usize,
    slot_size: usize,
    /// The slot being written, and where the next record goes in it.
    cur: usize,
    pos: usize,
    epoch: u64,
    settled: u64,
    /// The highest seq recorded in each slot.
    last_seq: [u64; 2],
    next_ref: u32,
    pub(crate) fork_gen: u64,
    /// Holds records that are not settled (removed at drop only when false).
    dirty: bool,
    /// Something could not be recorded: the owner must journal what it holds, which empties the log.
    pub wants_spill: bool,
}

// SAFETY: the mapping is owned by this value alone and only touched through `&mut self`.
unsafe impl Send for CrashLog {}

impl CrashLog {
    /// Creates `<dir>/<client_id>.crashlog` of `bytes` (two slots), its blocks allocated up front: writing to a
    /// mapped page the disk has no room for would kill the process with SIGBUS.
    pub fn create(
        dir: &Path,
        uri: &str,
        client_id: &str,
        bytes: usize,
        max_batch_points: usize,
    ) -> io::Result<CrashLog> {
        let slot_size = (bytes / 2) & !4095;
        if slot_size < 2 * SEAL_RESERVE + SLOT_HEADER {
            return Err(io::Error::other(format!(
                "a crash log of {bytes} bytes is too small"
            )));
        }
        let size = HEAD + 2 * slot_size;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{client_id}.crashlog"));
        // Made under another name and renamed once whole: recovery takes an unlocked `.crashlog` for a dead
        // client's, and must never find one a live client is still making.
        let part = dir.join(format!("{client_id}.crashlog.part"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&part)?;
        let made = Self::map(
            &path,
            file,
            size,
            slot_size,
            uri,
            client_id,
            max_batch_points,
        )
        .and_then(|log| std::fs::rename(&part, &path).map(|()| log));
        if made.is_err() {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&path);
        }
        made
    }

    fn map(
        path: &Path,
        file: File,
        size: usize,
        slot_size: usize,
        uri: &str,
        client_id: &str,
        max_batch_points: usize,
    ) -> io::Result<CrashLog> {
        if !journal::try_lock(&file)? {
            return Err(io::Error::other(
                "the crash log is locked by another process",
            ));
        }
        reserve(&file, size)?;
        let header = Header {
            uri: uri.to_string(),
            client_id: client_id.to_string(),
            max_batch_points,
            pid: std::process::id(),
        };
        let mut head = MAGIC.to_vec();
        journal::encode_record(&serde_json::to_vec(&header)?, &mut head);
        if head.len() > HEAD {
            return Err(io::Error::other("the crash log header is too long"));
        }
        file.write_all_at(&head, 0)?;
        // SAFETY: a shared read-write mapping of a file of `size` bytes (allocated above), checked for failure.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                MAP_FLAGS,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        AT_FORK.call_once(|| {
            // SAFETY: registers a handler that only increments an atomic (async-signal-safe).
            unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        });
        let mut log = CrashLog {
            path: path.to_path_buf(),
            _file: file,
            map: map.cast(),
            size,
            slot_size,
            cur: 0,
            pos: SLOT_HEADER,
            epoch: 0,
            settled: 0,
            last_seq: [0; 2],
            next_ref: 1,
            fork_gen: FORK_GEN.load(Ordering::Relaxed),
            dirty: false,
            wants_spill: false,
        };
        log.start_slot(0);
        Ok(log)
    }

    /// One of a slot's header fields.
    fn field(&self, slot: usize, index: usize) -> &AtomicU64 {
        // SAFETY: inside the mapping (HEAD + slot * slot_size + index * 8 < size), 8-aligned (the mapping is
        // page-aligned, HEAD and slot_size are multiples of 4096), and only ever accessed atomically.
        unsafe { &*(self.map.add(HEAD + slot * self.slot_size + index * 8) as *const AtomicU64) }
    }

    /// False in a forked child.
    #[inline]
    fn writable(&self) -> bool {
        self.fork_gen == FORK_GEN.load(Ordering::Relaxed)
    }

    /// Empties `slot` and makes it the one written, with a new epoch.
    fn start_slot(&mut self, slot: usize) {
        if !self.writable() {
            return;
        }
        self.field(slot, COMMITTED)
            .store(SLOT_HEADER as u64, Ordering::Release);
        self.epoch += 1;
        self.field(slot, EPOCH).store(self.epoch, Ordering::Release);
        self.field(slot, SETTLED)
            .store(self.settled, Ordering::Release);
        self.cur = slot;
        self.pos = SLOT_HEADER;
        self.last_seq[slot] = 0;
    }

    /// Holds nothing that is not delivered or journaled.
    pub fn is_clean(&self) -> bool {
        !self.dirty
    }

    /// Room for `bytes` of records in the current slot (keeping the reserve for sealing).
    #[inline]
    pub fn has_room(&self, bytes: usize) -> bool {
        self.pos + bytes + SEAL_RESERVE <= self.slot_size
    }

    /// Whether `bytes` of records would fit an empty slot.
    pub fn fits_a_slot(&self, bytes: usize) -> bool {
        SLOT_HEADER + bytes + SEAL_RESERVE <= self.slot_size
    }

    /// Whether the other slot holds nothing unsettled, so it can take over.
    pub fn can_switch(&self) -> bool {
        self.last_seq[1 - self.cur] <= self.settled
    }

    /// Writes on in the other slot (the caller sealed every accumulator first, so none spans both). Series
    /// descriptions not sent yet are recorded again there.
    pub fn switch(&mut self, runs: &mut HashMap<RunId, RunAcc>) {
        self.start_slot(1 - self.cur);
        self.describe_pending(runs);
    }

    /// Empties both slots: what they held is delivered or journaled (the caller sealed every accumulator).
    pub fn reset(&mut self, runs: &mut HashMap<RunId, RunAcc>) {
        if !self.writable() {
            return;
        }
        let other = 1 - self.cur;
        self.field(other, COMMITTED)
            .store(SLOT_HEADER as u64, Ordering::Release);
        self.last_seq[other] = 0;
        self.start_slot(self.cur);
        self.wants_spill = false;
        self.describe_pending(runs);
        // Descriptions waiting for points are not worth keeping the file for at a clean close.
        self.dirty = false;
    }

    fn describe_pending(&mut self, runs: &mut HashMap<RunId, RunAcc>) {
        for (run, acc) in runs.iter_mut() {
            for col in 0..acc.scalars.len() {
                if let Some(text) = acc.scalars[col].description.clone() {
                    self.describe(run, acc, col, &text);
                }
            }
        }
    }

    /// Entries up to `seq` are delivered (or journaled).
    pub fn settle(&mut self, seq: u64) {
        if seq <= self.settled || !self.writable() {
            return;
        }
        self.settled = seq;
        for slot in 0..2 {
            self.field(slot, SETTLED).store(seq, Ordering::Release);
        }
    }

    /// Appends one record made of `parts` and commits it; false (and `wants_spill`) when it does not fit.
    /// The parts go straight into the mapping (an image is not copied on the way).
    fn put(&mut self, kind: u8, parts: &[&[u8]]) -> bool {
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; RECORD_OVERHEAD];
        head[..4].copy_from_slice(&(body as u32 + 1).to_le_bytes());
        head[4] = kind;
        self.write(&head, parts)
    }

    /// Appends a whole record (length, kind, body) and commits it.
    #[inline]
    fn put_record(&mut self, rec: &[u8]) -> bool {
        self.write(rec, &[])
    }

    #[inline]
    fn write(&mut self, head: &[u8], parts: &[&[u8]]) -> bool {
        if !self.writable() {
            return false;
        }
        let len = head.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        if self.pos + len > self.slot_size {
            self.wants_spill = true;
            return false;
        }
        // SAFETY: [pos, pos + len) lies inside the current slot (checked above), which lies inside the
        // mapping; the slices are ours and cannot overlap the mapping.
        unsafe {
            let mut at = self.map.add(HEAD + self.cur * self.slot_size + self.pos);
            for part in std::iter::once(head).chain(parts.iter().copied()) {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
        }
        self.pos += len;
        self.dirty = true;
        self.field(self.cur, COMMITTED)
            .store(self.pos as u64, Ordering::Release);
        true
    }

    /// The run's number in this slot, recorded on first use.
    #[inline]
    fn run_ref(&mut self, run: &RunId, acc: &mut RunAcc) -> u32 {
        if acc.log_ref.0 != self.epoch {
            let r = self.next_ref;
            self.next_ref = self.next_ref.wrapping_add(1);
            self.put(kind::RUN, &[&r.to_le_bytes(), run.as_str().as_bytes()]);
            acc.log_ref = (self.epoch, r);
        }
        acc.log_ref.1
    }

    /// The column's name, recorded once a slot.
    #[inline]
    fn column(&mut self, run_ref: u32, acc: &mut RunAcc, col: usize) {
        let column = &mut acc.scalars[col];
        if column.logged != self.epoch {
            let col32 = (col as u32).to_le_bytes();
            self.put(
                kind::COLUMN,
                &[&run_ref.to_le_bytes(), &col32, column.name.as_bytes()],
            );
            column.logged = self.epoch;
        }
    }

    /// An upper bound of what recording a scalar point takes, with its run and column named.
    pub fn scalar_room(run: &RunId, name: &str) -> usize {
        2 * RECORD_OVERHEAD + 4 + run.as_str().len() + 8 + name.len() + SCALAR_RECORD
    }

    /// The hot path: the record is built on the stack and copied in one piece (a copy per field cost more
    /// than the rest of the log call's recording).
    #[inline]
    pub fn scalar(
        &mut self,
        run: &RunId,
        acc: &mut RunAcc,
        col: usize,
        step: Option<i64>,
        time: WallTime,
        value: F64,
    ) {
        let r = self.run_ref(run, acc);
        self.column(r, acc, col);
        let mut rec = [0u8; SCALAR_RECORD];
        rec[0..4].copy_from_slice(&((SCALAR_RECORD - 4) as u32).to_le_bytes());
        rec[4] = kind::SCALAR;
        rec[5..9].copy_from_slice(&r.to_le_bytes());
        rec[9..13].copy_from_slice(&(col as u32).to_le_bytes());
        rec[13] = step.is_some() as u8;
        rec[14..22].copy_from_slice(&step.unwrap_or(0).to_le_bytes());
        rec[22..30].copy_from_slice(&time.0.to_le_bytes());
        rec[30..38].copy_from_slice(&value.0.to_bits().to_le_bytes());
        self.put_record(&rec);
    }

    pub fn describe(&mut self, run: &RunId, acc: &mut RunAcc, col: usize, text: &str) {
        let r = self.run_ref(run, acc);
        self.column(r, acc, col);
        let col32 = (col as u32).to_le_bytes();
        self.put(kind::DESCRIBE, &[&r.to_le_bytes(), &col32, text.as_bytes()]);
    }

    /// An upper bound of what recording a record of `body` bytes for a run takes, with the run named.
    pub fn run_record_room(run: &RunId, body: usize) -> usize {
        2 * RECORD_OVERHEAD + 8 + run.as_str().len() + body
    }

    /// A list, row, table... write, as JSON.
    pub fn metric(&mut self, run: &RunId, acc: &mut RunAcc, json: &[u8]) {
        let r = self.run_ref(run, acc);
        self.put(kind::METRIC, &[&r.to_le_bytes(), json]);
    }

    pub fn text(&mut self, run: &RunId, acc: &mut RunAcc, stream: &str, text: &str) {
        let r = self.run_ref(run, acc);
        let stream_len = (stream.len().min(u16::MAX as usize) as u16).to_le_bytes();
        self.put(
            kind::TEXT,
            &[
                &r.to_le_bytes(),
                &stream_len,
                stream.as_bytes(),
                text.as_bytes(),
            ],
        );
    }

    /// An entry queued as it is (a run created or changed, an image): its seq and [`entry_parts`].
    pub fn entry(&mut self, seq: u64, json: &[u8], raw: &[u8]) {
        let json_len = (json.len() as u32).to_le_bytes();
        if self.put(kind::ENTRY, &[&seq.to_le_bytes(), &json_len, json, raw]) {
            self.last_seq[self.cur] = self.last_seq[self.cur].max(seq);
        }
    }

    /// The run's accumulator was sealed into batches with these seqs and ids.
    pub fn sealed(&mut self, run: &RunId, acc: &mut RunAcc, first_seq: u64, batches: &[Batch]) {
        let r = self.run_ref(run, acc);
        let mut body = Vec::with_capacity(16 + batches.len() * 41);
        body.extend_from_slice(&r.to_le_bytes());
        body.extend_from_slice(&first_seq.to_le_bytes());
        for b in batches {
            let id = b.batch_id.as_deref().unwrap_or("").as_bytes();
            body.push(id.len().min(255) as u8);
            body.extend_from_slice(&id[..id.len().min(255)]);
        }
        if self.put(kind::SEALED, &[&body]) {
            let last = (first_seq + batches.len() as u64).saturating_sub(1);
            self.last_seq[self.cur] = self.last_seq[self.cur].max(last);
        }
    }
}

/// Shared, and on Linux faulted in now, on the sender: not a page fault every hundred points in log calls.
#[cfg(target_os = "linux")]
const MAP_FLAGS: libc::c_int = libc::MAP_SHARED | libc::MAP_POPULATE;
#[cfg(not(target_os = "linux"))]
const MAP_FLAGS: libc::c_int = libc::MAP_SHARED;

/// Allocates the file's blocks, so that writing to its mapped pages can never hit a full disk: that would
/// kill the process with SIGBUS. Copy-on-write filesystems (btrfs, ZFS, bcachefs) allocate anew on every
/// overwrite whatever was reserved, so no crash log is kept there.
#[cfg(target_os = "linux")]
fn reserve(file: &File, size: usize) -> io::Result<()> {
    const COPY_ON_WRITE: [u64; 3] = [0x9123_683E, 0x2FC1_2FC1, 0xCA45_1A4E];
    // SAFETY: fstatfs fills the zeroed struct we own; posix_fallocate works on our descriptor. Both checked.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if COPY_ON_WRITE.contains(&(fs.f_type as u64)) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the spool is on a copy-on-write filesystem (btrfs, ZFS, bcachefs), where a mapped file cannot be \
             reserved; set FLIGHTLOG_SPOOL to a folder on another filesystem to keep one",
        ));
    }
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _size: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "crash logs are kept on Linux only",
    ))
}

impl Drop for CrashLog {
    /// Unmaps; the file goes too once nothing in it is unsettled. In a forked child the file is the parent's.
    fn drop(&mut self) {
        let owner = self.writable();
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.map.cast(), self.size) };
        if owner && !self.dirty {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An entry as an ENTRY record holds it: after the seq, u32 length of the JSON, the JSON, then an image's bytes
/// raw (hex in JSON would double them). Returns the JSON and the raw bytes.
pub(crate) fn entry_parts(entry: &JournalEntry) -> io::Result<(Vec<u8>, &[u8])> {
    Ok(match entry {
        JournalEntry::Image { run, meta, data } => {
            let bare = JournalEntry::Image {
                run: run.clone(),
                meta: meta.clone(),
                data: Vec::new(),
            };
            (serde_json::to_vec(&bare)?, &data[..])
        }
        other => (serde_json::to_vec(other)?, &[][..]),
    })
}

/// The room an entry's record takes, with its seq and JSON length.
pub(crate) fn entry_room(json: &[u8], raw: &[u8]) -> usize {
    RECORD_OVERHEAD + 12 + json.len() + raw.len()
}

fn decode_entry(body: &[u8]) -> Option<JournalEntry> {
    let mut c = Cursor(body);
    let n = c.u32()? as usize;
    let mut entry: JournalEntry = serde_json::from_slice(c.take(n)?).ok()?;
    if let JournalEntry::Image { data, .. } = &mut entry {
        *data = c.0.to_vec();
    }
    Some(entry)
}

// --- recovery ----------------------------------------------------------------------------------------------

/// Turns the crash logs of clients that are gone (their files unlocked) into journals, and removes them.
/// Returns how many it turned.
pub fn recover_all(dir: &Path) -> io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut recovered = 0;
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().is_some_and(|x| x == "part") {
            remove_abandoned_part(&path);
            continue;
        }
        if path.extension().is_none_or(|x| x != "crashlog") {
            continue;
        }
        match recover_file(dir, &path) {
            Ok(true) => recovered += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot recover the crash log {}: {e}", path.display()),
        }
    }
    Ok(recovered)
}

/// A crash log whose making was cut short (its process died in `create`): removed once unlocked and a minute
/// old (a live client holds it for milliseconds, and may not have locked it yet).
fn remove_abandoned_part(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() >= 60));
    if old && journal::try_lock(&file).unwrap_or(false) {
        let _ = std::fs::remove_file(path);
    }
}

/// False when the file belongs to a live client (or another recovery has it).
fn recover_file(dir: &Path, path: &Path) -> io::Result<bool> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !journal::try_lock(&file)? {
        return Ok(false);
    }
    // Another recovery may have turned and removed it between our open and our lock.
    let still_there = std::fs::metadata(path).is_ok_and(|m| {
        file.metadata()
            .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev())
    });
    if !still_there {
        return Ok(false);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    match recovered_entries(&bytes) {
        Ok((header, records)) if !records.is_empty() => {
            let mut journal = JournalWriter::create(dir, &header.uri, &header.client_id)?;
            journal.append(&records)?;
            tracing::info!(
                "recovered {} entries a killed client left in {}",
                records.len(),
                path.display()
            );
        }
        Ok(_) => {}
        // A file cut short while it was being made (the process died in `create`) holds nothing.
        Err(e) => tracing::warn!("the crash log {} is unreadable: {e}", path.display()),
    }
    std::fs::remove_file(path)?;
    Ok(true)
}

/// The entries a crash log holds past its settled seq, in seq order.
fn recovered_entries(bytes: &[u8]) -> Result<(Header, Vec<JournalRecord>), String> {
    if bytes.len() < HEAD || &bytes[..8] != MAGIC {
        return Err("not a crash log (bad magic or cut short)".into());
    }
    let header: Header = match journal::read_record(&mut &bytes[8..HEAD]) {
        Ok(ReadOutcome::Record(payload)) => {
            serde_json::from_slice(&payload).map_err(|e| format!("bad header: {e}"))?
        }
        _ => return Err("no header".into()),
    };
    let slot_size = (bytes.len() - HEAD) / 2;
    let mut slots: Vec<Slot> = (0..2)
        .filter_map(|i| Slot::read(&bytes[HEAD + i * slot_size..HEAD + (i + 1) * slot_size]))
        .collect();
    slots.sort_by_key(|s| s.epoch);
    let settled = slots.iter().map(|s| s.settled).max().unwrap_or(0);
    let mut replay = Replay {
        max_batch_points: header.max_batch_points,
        entries: BTreeMap::new(),
        unsealed: Vec::new(),
        extra: Vec::new(),
    };
    for slot in &slots {
        replay.slot(slot);
    }
    let mut next = replay
        .entries
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(settled)
        .saturating_add(1);
    let mut fresh = std::mem::take(&mut replay.extra);
    for (run, mut acc) in std::mem::take(&mut replay.unsealed) {
        fresh.extend(
            acc.seal(header.max_batch_points)
                .into_iter()
                .map(|b| (run.clone(), b)),
        );
    }
    for (run, mut batch) in fresh {
        // Named by the dead client and seq, not at random: a recovery repeated (this process killed before the
        // crash log was gone) makes the same batches with the same ids, which the server stores once.
        batch.batch_id = Some(format!("{}.recovered.{next}", header.client_id));
        replay
            .entries
            .insert(next, JournalEntry::Batch { run, batch });
        next = next.saturating_add(1);
    }
    let records = replay
        .entries
        .into_iter()
        .filter(|(seq, _)| *seq > settled)
        .map(|(seq, entry)| JournalRecord { seq, entry })
        .collect();
    Ok((header, records))
}

struct Slot<'a> {
    epoch: u64,
    settled: u64,
    records: &'a [u8],
}

impl<'a> Slot<'a> {
    fn read(bytes: &'a [u8]) -> Option<Slot<'a>> {
        if bytes.len() < SLOT_HEADER {
            return None;
        }
        let word =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let committed = (word(COMMITTED) as usize).min(bytes.len());
        let epoch = word(EPOCH);
        (epoch > 0 && committed > SLOT_HEADER).then(|| Slot {
            epoch,
            settled: word(SETTLED),
            records: &bytes[SLOT_HEADER..committed],
        })
    }
}

/// Rebuilds what the live client queued.
struct Replay {
    max_batch_points: usize,
    entries: BTreeMap<u64, JournalEntry>,
    /// Accumulators a slot left unsealed (only the newest slot can: switching seals everything).
    unsealed: Vec<(RunId, RunAcc)>,
    /// Batches with no seq of their own (see the SEALED record), queued after everything else.
    extra: Vec<(RunId, Batch)>,
}

impl Replay {
    fn slot(&mut self, slot: &Slot) {
        let mut runs: HashMap<u32, RunId> = HashMap::new();
        let mut accs: BTreeMap<u32, RunAcc> = BTreeMap::new();
        let mut rest = slot.records;
        while rest.len() >= RECORD_OVERHEAD {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len == 0 || 4 + len > rest.len() {
                tracing::warn!("a crash log record is cut short; the rest of its slot is ignored");
                break;
            }
            let (kind, body) = (rest[4], &rest[5..4 + len]);
            rest = &rest[4 + len..];
            if self.record(kind, body, &mut runs, &mut accs).is_none() {
                tracing::warn!("a crash log record (kind {kind}) is malformed; the rest of its slot is ignored");
                break;
            }
        }
        for (r, acc) in accs {
            if let (false, Some(run)) = (acc.is_empty(), runs.get(&r)) {
                self.unsealed.push((run.clone(), acc));
            }
        }
    }

    fn record(
        &mut self,
        kind: u8,
        body: &[u8],
        runs: &mut HashMap<u32, RunId>,
        accs: &mut BTreeMap<u32, RunAcc>,
    ) -> Option<()> {
        let mut c = Cursor(body);
        match kind {
            kind::ENTRY => {
                let seq = c.u64()?;
                self.entries.insert(seq, decode_entry(c.0)?);
                return Some(());
            }
            kind::RUN => {
                let r = c.u32()?;
                let run = std::str::from_utf8(c.0).ok()?.parse().ok()?;
                runs.insert(r, run);
                return Some(());
            }
            _ => {}
        }
        let r = c.u32()?;
        let acc = accs.entry(r).or_default();
        match kind {
            kind::COLUMN => {
                let col = c.u32()? as usize;
                if col > MAX_COLUMNS {
                    return None; // garbage: a client numbers its columns 0, 1, 2...
                }
                acc.column_at(col, std::str::from_utf8(c.0).ok()?);
            }
            kind::DESCRIBE => {
                let col = c.u32()? as usize;
                let text = std::str::from_utf8(c.0).ok()?;
                acc.scalars.get_mut(col)?.description = Some(text.to_string());
            }
            kind::SCALAR => {
                let col = c.u32()? as usize;
                let has_step = c.take(1)?[0] == 1;
                let step = c.u64()? as i64;
                let time = WallTime(c.u64()? as i64);
                let value = F64(f64::from_bits(c.u64()?));
                if col >= acc.scalars.len() {
                    return None;
                }
                acc.push_scalar(col, has_step.then_some(step), time, value);
            }
            kind::METRIC => {
                acc.push_metric(serde_json::from_slice(c.0).ok()?);
            }
            kind::TEXT => {
                let n = u16::from_le_bytes(c.take(2)?.try_into().ok()?) as usize;
                let stream = std::str::from_utf8(c.take(n)?).ok()?;
                acc.push_text(stream, std::str::from_utf8(c.0).ok()?);
            }
            kind::SEALED => {
                let run = runs.get(&r)?.clone();
                let first = c.u64()?;
                let mut ids = Vec::new();
                while !c.0.is_empty() {
                    let n = c.take(1)?[0] as usize;
                    ids.push(std::str::from_utf8(c.take(n)?).ok()?.to_string());
                }
                let batches = acc.seal(self.max_batch_points);
                if batches.len() != ids.len() {
                    tracing::warn!(
                        "a recovered accumulator sealed into {} batches where the client sealed {}",
                        batches.len(),
                        ids.len()
                    );
                }
                for (i, mut batch) in batches.into_iter().enumerate() {
                    let Some(id) = ids.get(i) else {
                        // More than the client sealed: new entries, after everything else.
                        self.extra.push((run.clone(), batch));
                        continue;
                    };
                    batch.batch_id = Some(id.clone());
                    let entry = JournalEntry::Batch {
                        run: run.clone(),
                        batch,
                    };
                    self.entries.insert(first.saturating_add(i as u64), entry);
                }
            }
            _ => return None,
        }
        Some(())
    }
}

/// Reads little-endian fields off the front of a record body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Http;
    use crate::queue::Shared;
    use crate::ClientConfig;
    use flightlog_model::{MetricWrite, NewRun, ScalarWrite};
    use std::time::Duration;

    /// A client's queue with no sender (entries stay queued until the test says they were delivered), its
    /// crash log open.
    fn queue(dir: &Path, crash_log_bytes: usize) -> Shared {
        let q = queue_without_log(dir, crash_log_bytes);
        q.open_crash_log_now();
        q
    }

    fn queue_without_log(dir: &Path, crash_log_bytes: usize) -> Shared {
        let config = ClientConfig {
            uri: "http://127.0.0.1:9".into(),
            spool_dir: dir.to_path_buf(),
            crash_log_bytes,
            max_batch_points: 700,
            ..Default::default()
        };
        Shared::new(Http::new(&config.uri, Duration::from_secs(1)), config)
    }

    /// Every journal in `dir`, records in file order (older files first).
    fn journaled(dir: &Path) -> Vec<JournalRecord> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "journal"))
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        files
            .iter()
            .flat_map(|p| {
                journal::read_journal(&mut File::open(p).unwrap())
                    .unwrap()
                    .records
            })
            .collect()
    }

    /// (run, series, step, value) of a scalar point.
    type Point = (String, String, i64, f64);

    /// Every scalar point in the entries, and the batch ids.
    fn points(records: &[JournalRecord]) -> (Vec<Point>, Vec<String>) {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for r in records {
            if let JournalEntry::Batch { run, batch } = &r.entry {
                ids.push(batch.batch_id.clone().unwrap());
                for s in &batch.scalars {
                    let ScalarWrite {
                        name,
                        steps,
                        values,
                        ..
                    } = s;
                    for (i, v) in values.iter().enumerate() {
                        let step = steps.as_ref().map_or(-1, |st| st[i].unwrap_or(-1));
                        out.push((run.as_str().to_string(), name.clone(), step, v.0));
                    }
                }
            }
        }
        (out, ids)
    }

    fn log_points(q: &Shared, run: &RunId, name: &str, steps: std::ops::Range<i64>) {
        for s in steps {
            q.log_scalar(run, name, Some(s), s as f64 * 0.5, WallTime(s))
                .unwrap();
        }
    }

    #[test]
    fn a_killed_client_leaves_every_unsent_entry_and_point_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (RunId::new(), RunId::new());
        let q = queue(dir.path(), 4 << 20);
        q.enqueue_entry(JournalEntry::CreateRun(NewRun {
            id: Some(a.clone()),
            ..Default::default()
        }))
        .unwrap();
        q.describe_scalar(&a, "loss", "training loss").unwrap();
        log_points(&q, &a, "loss", 0..1000);
        log_points(&q, &b, "acc", 0..300);
        q.log_metric(
            &a,
            MetricWrite::List {
                name: "l".into(),
                description: None,
                values: vec![F64(1.0), F64(f64::NAN)],
                step: Some(3),
                time: Some(WallTime(1)),
            },
        )
        .unwrap();
        q.log_text(&b, "stdout", "hello\n").unwrap();
        q.flush_target(); // sealed: entries 2.. hold the points above
        let sealed = q.queued_entries();
        q.delivered_through(3); // the run and the first two batches reached the server
        log_points(&q, &a, "loss", 1000..1100); // never sealed
        log_points(&q, &b, "acc", 300..301);
        drop(q); // as a kill leaves it: the mapping's pages are the file's

        assert_eq!(recover_all(dir.path()).unwrap(), 1);
        assert!(!dir.path().join("x.crashlog").exists());
        let got = journaled(dir.path());
        let expected: Vec<_> = sealed.into_iter().filter(|r| r.seq > 3).collect();
        assert_eq!(
            &got[..expected.len()],
            &expected[..],
            "sealed entries come back as they were, ids and all"
        );
        let (tail, _) = points(&got[expected.len()..]);
        let mut want: Vec<_> = (1000..1100)
            .map(|s| {
                (
                    a.as_str().to_string(),
                    "loss".to_string(),
                    s,
                    s as f64 * 0.5,
                )
            })
            .collect();
        want.push((b.as_str().to_string(), "acc".to_string(), 300, 150.0));
        assert_eq!(tail, want, "unsealed points come back as new batches");
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(recover_all(dir.path()).unwrap(), 0, "recovered once");
    }

    #[test]
    fn what_was_queued_before_the_log_opened_is_recorded_when_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue_without_log(dir.path(), 4 << 20);
        let run = RunId::new();
        let create = JournalEntry::CreateRun(NewRun {
            id: Some(run.clone()),
            ..Default::default()
        });
        q.enqueue_entry(create.clone()).unwrap(); // the server is down: the run waits in the queue
        log_points(&q, &run, "x", 0..10);
        q.open_crash_log_now(); // the sender makes it: what is queued goes in
        log_points(&q, &run, "x", 10..20);
        drop(q);
        recover_all(dir.path()).unwrap();
        let got = journaled(dir.path());
        assert_eq!(got[0].entry, create, "the run's creation comes first");
        let (pts, _) = points(&got);
        let steps: Vec<i64> = pts.iter().map(|p| p.2).collect();
        assert_eq!(steps, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn recovering_the_same_log_twice_names_new_batches_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 4 << 20);
        let run = RunId::new();
        log_points(&q, &run, "x", 0..10); // never sealed: new batches at recovery
        drop(q);
        let log = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let copy = std::fs::read(&log).unwrap();
        recover_all(dir.path()).unwrap();
        let first = journaled(dir.path());
        for j in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(j.unwrap().path()).unwrap();
        }
        std::fs::write(&log, copy).unwrap(); // as if the recovering process died before removing it
        recover_all(dir.path()).unwrap();
        let second = journaled(dir.path());
        assert_eq!(
            points(&first),
            points(&second),
            "same points under the same batch ids"
        );
    }

    #[test]
    fn a_live_clients_crash_log_is_left_alone_and_a_closed_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 4 << 20);
        let run = RunId::new();
        log_points(&q, &run, "x", 0..10);
        assert_eq!(
            recover_all(dir.path()).unwrap(),
            0,
            "locked by its live client"
        );
        q.close_and_spill();
        drop(q);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(left.iter().all(|n| n.ends_with(".journal")), "{left:?}");
        let (pts, _) = points(&journaled(dir.path()));
        assert_eq!(pts.len(), 10, "closing journals what was not sent");
    }

    #[test]
    fn full_slots_switch_while_delivered_and_journal_when_not() {
        let dir = tempfile::tempdir().unwrap();
        // Two slots of 1 MiB, 768 KiB usable: about 20,000 points each.
        let q = queue(dir.path(), 2 << 20);
        let run = RunId::new();
        let mut logged = 0;
        for _ in 0..4 {
            log_points(&q, &run, "x", logged..logged + 15_000);
            logged += 15_000;
            q.flush_target();
            let last = q.queued_entries().last().unwrap().seq;
            q.delivered_through(last);
        }
        assert_eq!(
            q.stats().spooled_entries,
            0,
            "delivered slots are reused, nothing journaled"
        );
        // Nothing delivered from here on: the other slot stays busy, so filling this one journals.
        log_points(&q, &run, "x", logged..logged + 60_000);
        logged += 60_000;
        assert!(
            q.stats().spooled_entries > 0,
            "a slot behind the sender spills to the journal"
        );
        drop(q);
        recover_all(dir.path()).unwrap();
        let (pts, ids) = points(&journaled(dir.path()));
        let steps: Vec<i64> = pts.iter().map(|p| p.2).collect();
        assert_eq!(
            steps,
            (60_000..logged).collect::<Vec<_>>(),
            "every undelivered point once, in order"
        );
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn an_image_comes_back_whole_with_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 4 << 20);
        let run = RunId::new();
        let image = JournalEntry::Image {
            run: run.clone(),
            meta: flightlog_model::ImageWrite {
                name: "img".into(),
                description: None,
                step: Some(1),
                time: None,
                media_type: "image/png".into(),
                batch_id: Some("b1".into()),
            },
            data: (0..=255u8).collect(),
        };
        q.enqueue_entry(image.clone()).unwrap();
        drop(q);
        recover_all(dir.path()).unwrap();
        let got = journaled(dir.path());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entry, image);
    }

    #[test]
    fn a_forked_child_writes_nothing_into_its_parents_log() {
        let run = RunId::new();
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 4 << 20);
        log_points(&q, &run, "x", 0..5);
        q.with_crash_log(|log| log.fork_gen += 1); // as in a child after the atfork handler ran
        log_points(&q, &run, "x", 5..10);
        drop(q);
        recover_all(dir.path()).unwrap();
        let (pts, _) = points(&journaled(dir.path()));
        assert_eq!(
            pts.len(),
            5,
            "what the child logged is not in its parent's crash log"
        );
    }

    #[test]
    fn a_torn_or_foreign_file_is_removed_without_a_journal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dead.crashlog"), b"FLCRASH1 cut short").unwrap();
        assert_eq!(recover_all(dir.path()).unwrap(), 1);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
