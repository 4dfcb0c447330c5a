//! The embedded store: SQLite (WAL) in `<data>/flightlog.db` for metadata, compressed metric blocks, log stream
//! lengths and events; plain files under `<data>/artifacts/<run_id>/` for artifacts and `<data>/logs/<run_id>/`
//! for log text; `<data>/tmp/` for uploads in flight.

mod artifacts;
mod blocks;
mod documents;
mod durability;
mod events;
mod experiments;
mod file_changes;
pub mod fork_gate;
mod job_cache;
mod log_files;
mod logs;
mod metrics;
mod names;
mod paging;
mod repeats;
mod runs;
mod schema;
mod summaries;
mod writer;

#[cfg(test)]
mod tests;

use crate::{BatchDone, ByteReader, FileOwner, FileUpload, Store};
pub use durability::Durability;
use flightlog_model::*;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;
use writer::{WriteCtx, Writer};

/// Idle read connections kept for reuse; more are opened on demand under load.
const READ_POOL_SIZE: usize = 8;

/// The default [`Store`]: everything under one data directory.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// The process that opened it: a forked child inherits the store but not its writer and syncer threads.
    owner_pid: u32,
}

impl Drop for EmbeddedStore {
    /// In a forked child the store must never close: that would join writer and syncer threads the child does
    /// not have (a wait that never ends) and close SQLite connections the parent still uses. One reference is
    /// leaked instead, so whoever holds the inherited store may drop it.
    fn drop(&mut self) {
        if std::process::id() != self.owner_pid {
            std::mem::forget(self.inner.clone());
        }
    }
}

/// What every operation needs; shared so helpers can take `&Inner`.
struct Inner {
    dirs: Dirs,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    announce: writer::Announce,
}

/// The data directory's parts.
struct Dirs {
    db: PathBuf,
    artifacts: PathBuf,
    logs: PathBuf,
    tmp: PathBuf,
}

/// A temp file this old is left by a process that died mid-upload (kill -9, power loss): no live upload
/// writes to one for a day.
const STALE_TEMP_FILE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A fresh name for a file in `tmp`: the process id first, so that a later open can tell the files of a
/// process that is gone (they are its crash's leftovers) from those of another process sharing the folder.
fn temp_name() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Whether a `tmp` entry may still be in use: younger than [`STALE_TEMP_FILE`] and, where its name carries
/// the process id ([`temp_name`]), that process is alive.
fn temp_file_in_use(name: &str, meta: &std::fs::Metadata) -> bool {
    let pid = name
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        .filter(|&pid| pid > 0);
    let young = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age <= STALE_TEMP_FILE);
    // Signal 0 checks that the process exists; EPERM means it does (another user's).
    let alive = |pid| {
        let signalled = unsafe { libc::kill(pid, 0) } == 0;
        signalled || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    };
    young && pid.is_none_or(alive)
}

/// Removes what crashed processes left in `tmp`: uploads cut short and files parked by writes that never
/// committed. Each crash mid-upload left its partial file there for a day, so a crash loop with retried large
/// uploads filled the disk; entries of live processes sharing the folder stay. A failure only leaves a file.
fn remove_stale_temp_files(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if temp_file_in_use(&entry.file_name().to_string_lossy(), &meta) {
            continue;
        }
        let _ = if meta.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
    }
}

impl EmbeddedStore {
    /// [`EmbeddedStore::open_with`] the default [`Durability`].
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore> {
        Self::open_with(data_dir, Durability::default())
    }

    /// Opens (creating if needed) the data directory: makes its folders, migrates the schema, ensures the
    /// Default experiment, and starts the writer thread, which commits with `durability`.
    pub fn open_with(data_dir: &Path, durability: Durability) -> Result<EmbeddedStore> {
        let dirs = Dirs {
            db: data_dir.join("flightlog.db"),
            artifacts: data_dir.join("artifacts"),
            logs: data_dir.join("logs"),
            tmp: data_dir.join("tmp"),
        };
        for d in [data_dir, &dirs.artifacts, &dirs.logs, &dirs.tmp] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::storage(format!("creating {}: {e}", d.display())))?;
        }
        remove_stale_temp_files(&dirs.tmp);
        // Only the SQLite work is gated: the writer thread started below enters the gate itself, and waiting
        // for it from inside the gate could deadlock with a fork waiting to close it.
        let (conn, newest) = fork_gate::using_sqlite(|| -> Result<(Connection, i64)> {
            let mut conn = open_connection(&dirs.db)?;
            durability.configure_writer(&conn)?;
            schema::migrate(&mut conn)?;
            let newest: i64 = conn
                .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
                .map_err(sql_err("reading the newest event"))?;
            Ok((conn, newest))
        })?;
        let announce = writer::Announce::new(newest as u64);
        let log_files = log_files::LogFiles::new(dirs.logs.clone());
        let log_sync = durability::LogSync::start(&dirs.db, durability)?;
        let writer = Writer::start(conn, log_files, log_sync, announce.clone())?;
        let inner = Inner {
            dirs,
            writer,
            readers: Mutex::new(Vec::new()),
            announce,
        };
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
            owner_pid: std::process::id(),
        })
    }
}

/// Opens and configures one connection to the database file.
fn open_connection(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::storage(format!("opening {}: {e}", path.display())))?;
    schema::configure(&conn)?;
    Ok(conn)
}

/// How many columns a comma-separated column list names (so a row's later columns are found by position).
const fn column_count(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut n, mut i) = (1, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
}

/// A comma-separated column list with each column prefixed by `alias.`, for queries that join tables.
fn qualified(list: &str, alias: &str) -> String {
    list.split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps a SQLite error to `Error::Storage`, saying what was being done.
fn sql_err(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::storage(format!("{context}: {e}"))
}

impl Drop for Inner {
    /// Closing a connection is a use of SQLite like any other (see [`fork_gate`]).
    fn drop(&mut self) {
        fork_gate::using_sqlite(|| self.idle_readers().clear());
    }
}

impl Inner {
    /// The pool of idle read connections. std's mutex rather than parking_lot's, whose process-wide table of
    /// parked threads a forked child inherits (see the client's queue); a pool is usable after a panic.
    fn idle_readers(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a pooled read connection inside a read transaction (one consistent snapshot).
    fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        fork_gate::using_sqlite(|| {
            let conn = match self.idle_readers().pop() {
                Some(c) => c,
                None => open_connection(&self.dirs.db)?,
            };
            conn.execute_batch("BEGIN")
                .map_err(sql_err("starting a read"))?;
            let result = f(&conn);
            // A connection whose read transaction did not close cleanly is dropped rather than reused.
            if conn.execute_batch("COMMIT").is_ok() {
                let mut pool = self.idle_readers();
                if pool.len() < READ_POOL_SIZE {
                    pool.push(conn);
                }
            }
            result
        })
    }

    /// Runs `f` in the writer thread; see [`Writer::write`].
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.writer.write(f)
    }
}

impl Store for EmbeddedStore {
    fn create_experiment(&self, new: NewExperiment) -> Result<Experiment> {
        experiments::create(&self.inner, new)
    }
    fn get_experiment(&self, id: ExperimentId) -> Result<Experiment> {
        self.inner.read(|c| experiments::get(c, id))
    }
    fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        self.inner.read(|c| experiments::get_by_name(c, name))
    }
    fn list_experiments(&self, query: &ExperimentQuery) -> Result<Page<Experiment>> {
        self.inner.read(|c| experiments::list(c, query))
    }
    fn update_experiment(&self, id: ExperimentId, patch: ExperimentPatch) -> Result<Experiment> {
        experiments::update(&self.inner, id, patch)
    }

    fn create_run_once(&self, new: NewRun) -> Result<(Run, bool)> {
        runs::create(&self.inner, new)
    }
    fn get_run(&self, id: &RunId) -> Result<Run> {
        self.inner.read(|c| runs::get_with_metrics(c, id))
    }
    fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>> {
        self.inner.read(|c| runs::list(c, query))
    }
    fn get_runs(&self, ids: &[RunId]) -> Result<Vec<Run>> {
        self.inner.read(|c| runs::get_many(c, ids))
    }
    fn update_run(&self, id: &RunId, patch: RunPatch) -> Result<Run> {
        runs::update(&self.inner, id, patch)
    }

    fn write_batch(&self, run: &RunId, batch: Batch) -> Result<BatchAck> {
        metrics::write_batch(&self.inner, run, batch)
    }
    fn write_batch_then(&self, run: &RunId, batch: Batch, done: BatchDone) {
        metrics::write_batch_then(&self.inner, run, batch, done)
    }
    fn update_run_and_write_batch(
        &self,
        run: &RunId,
        patch: RunPatch,
        batch: Batch,
    ) -> Result<BatchAck> {
        runs::validate_patch(&patch)?;
        metrics::validate_batch(&batch)?;
        let run = run.clone();
        self.inner.write(move |ctx| {
            runs::update_in(ctx, &run, patch)?;
            metrics::apply_batch(ctx, &run, batch)
        })
    }
    fn write_image(&self, run: &RunId, meta: ImageWrite, bytes: &[u8]) -> Result<Record> {
        artifacts::write_image(&self.inner, run, meta, bytes)
    }
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        self.inner.read(|c| metrics::list(c, run))
    }
    fn fill_metrics(&self, runs: &mut [Run]) -> Result<()> {
        self.inner.read(|c| metrics::fill_metrics(c, runs))
    }
    fn metric_info(&self, run: &RunId, name: &str) -> Result<SeriesInfo> {
        self.inner.read(|c| metrics::info(c, run, name))
    }
    fn read_scalars(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<ScalarSeries> {
        metrics::read_scalars(&self.inner, run, name, range)
    }
    fn read_downsampled(
        &self,
        run: &RunId,
        name: &str,
        range: &ReadRange,
        buckets: u32,
    ) -> Result<ScalarSeries> {
        metrics::read_downsampled(&self.inner, run, name, range, buckets)
    }
    fn read_records(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<Vec<Record>> {
        self.inner
            .read(|c| metrics::read_records(c, run, name, range))
    }

    fn append_log(&self, run: &RunId, stream: &str, data: &[u8]) -> Result<u64> {
        logs::append(&self.inner, run, stream, data)
    }
    fn read_log(&self, run: &RunId, stream: &str, offset: u64, max_bytes: u64) -> Result<LogSlice> {
        self.inner
            .read(|c| logs::read(c, &self.inner.dirs.logs, run, stream, offset, max_bytes))
    }
    fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>> {
        self.inner.read(|c| logs::list(c, run))
    }

    fn begin_file(&self, owner: &FileOwner, path: &str) -> Result<Box<dyn FileUpload>> {
        Ok(Box::new(artifacts::begin(&self.inner, owner, path)?))
    }
    fn open_file(&self, owner: &FileOwner, path: &str) -> Result<(ArtifactInfo, ByteReader)> {
        artifacts::open(&self.inner, owner, path)
    }
    fn list_files(
        &self,
        owner: &FileOwner,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>> {
        artifacts::list(&self.inner, owner, prefix, recursive)
    }
    fn delete_file(&self, owner: &FileOwner, path: &str) -> Result<()> {
        artifacts::delete(&self.inner, owner, path)
    }
    fn delete_model_files(&self, model: &str) -> Result<()> {
        artifacts::delete_model_files(&self.inner, model)
    }

    fn events_since(&self, filter: &EventFilter, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.inner.read(|c| events::since(c, filter, after, limit))
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.announce.events.subscribe()
    }
    fn subscribe_uploads_and_run_ends(&self) -> watch::Receiver<u64> {
        self.inner.announce.uploads_and_run_ends.subscribe()
    }

    fn put_document(&self, kind: &str, id: &str, body: &serde_json::Value) -> Result<()> {
        documents::put(&self.inner, kind, id, body)
    }
    fn get_document(&self, kind: &str, id: &str) -> Result<Option<serde_json::Value>> {
        self.inner.read(|c| documents::get(c, kind, id))
    }
    fn list_documents(&self, kind: &str) -> Result<Vec<(String, serde_json::Value)>> {
        self.inner.read(|c| documents::list(c, kind))
    }
    fn delete_document(&self, kind: &str, id: &str) -> Result<bool> {
        documents::delete(&self.inner, kind, id)
    }
    fn append_document_items(
        &self,
        kind: &str,
        id: &str,
        items: &[serde_json::Value],
    ) -> Result<()> {
        documents::append_items(&self.inner, kind, id, items)
    }
    fn document_items(&self, kind: &str, id: &str) -> Result<Vec<serde_json::Value>> {
        self.inner.read(|c| documents::items(c, kind, id))
    }
}
