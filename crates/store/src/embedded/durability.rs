//! When acknowledged commits reach the disk: at every commit, or within a fixed interval, by a syncer thread
//! beside the writer.

use flightlog_model::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest and longest interval [`Durability::Interval`] accepts.
const INTERVAL_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(60));

/// How far an acknowledged write is guaranteed to have gone.
///
/// Either way an acknowledged write survives a crash of the server process (kill -9): it is committed to the
/// write-ahead log in the operating system before the ack, and the database is never left inconsistent.
/// The modes differ only on power loss or a kernel crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is synced to the disk before it is acknowledged (SQLite `synchronous=FULL`): nothing
    /// acknowledged is lost even on power loss. Each commit then waits for the device, and on a busy machine
    /// for the wake-up after it.
    EveryCommit,
    /// Commits are acknowledged once written to the log (SQLite `synchronous=NORMAL`); a syncer thread syncs
    /// the log this long after the first commit not yet synced, so power loss loses about that window at most.
    /// The approach of Redis's `appendfsync everysec` and PostgreSQL's `synchronous_commit=off`.
    Interval(Duration),
}

impl Default for Durability {
    /// A 100 ms window: a training loop's log calls never wait on the device, and a power cut costs at
    /// most the last tenth of a second of metrics.
    fn default() -> Self {
        Durability::Interval(Duration::from_millis(100))
    }
}

/// How many log frames (pages) make the writer checkpoint after a commit under [`Durability::Interval`].
/// SQLite's default, 1000, suits a log synced at each commit; unsynced, the writer's checkpoint would first sync
/// ~4 MB of log itself and stall the commits behind it (a single-point log call's p99 went from 2 to 7 ms).
/// With the syncer syncing and copying in the background, the writer checkpoints only when a steady stream
/// never leaves the log idle enough to restart: every 8 MB (p99 as low as at 16 MB, and half the log a data
/// directory can hold between a burst and its idle checkpoint).
const WRITER_CHECKPOINT_FRAMES: i64 = 2048;

impl Durability {
    /// Sets up the writer's connection for this mode: its `synchronous` level and when it checkpoints.
    pub(crate) fn configure_writer(self, conn: &rusqlite::Connection) -> Result<()> {
        let (synchronous, frames) = match self {
            Durability::EveryCommit => ("FULL", 1000),
            Durability::Interval(_) => ("NORMAL", WRITER_CHECKPOINT_FRAMES),
        };
        let failed = super::sql_err("configuring the writer");
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(&failed)?;
        conn.pragma_update(None, "wal_autocheckpoint", frames)
            .map_err(failed)
    }
}

impl FromStr for Durability {
    type Err = Error;

    /// `always`, or an interval such as `100ms` or `1s`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("always") {
            return Ok(Durability::EveryCommit);
        }
        let bad = || {
            Error::invalid(
                "sync policy",
                format!(
                    "'{s}' is neither 'always' (sync every commit) nor an interval from 1ms to 60s such as \
                     '100ms' or '1s'"
                ),
            )
        };
        let (digits, unit) = match s.strip_suffix("ms") {
            Some(d) => (d, Duration::from_millis(1)),
            None => (s.strip_suffix('s').ok_or_else(bad)?, Duration::from_secs(1)),
        };
        let n: u32 = digits.trim().parse().map_err(|_| bad())?;
        let interval = unit * n;
        if interval < INTERVAL_RANGE.0 || interval > INTERVAL_RANGE.1 {
            return Err(bad());
        }
        Ok(Durability::Interval(interval))
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::EveryCommit => f.write_str("always"),
            Durability::Interval(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

/// [`Durability::Interval`]'s syncer: a thread that syncs the write-ahead log one interval after the first
/// commit not yet synced, so the writer never waits on the device, and wakes at most once per sync. Every
/// commit reported before a sync starts is covered by it: a commit waits at most the interval plus one sync.
/// Under [`Durability::EveryCommit`] there is no thread and reports cost nothing.
pub(crate) struct LogSync {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the writer and the syncer share.
#[derive(Default)]
struct Shared {
    /// Commits were reported since the syncer last started a sync.
    dirty: AtomicBool,
    /// The store is closing: sync what is reported, without waiting out the interval, and stop.
    closing: AtomicBool,
}

impl LogSync {
    /// For the database at `db` (its log is `<db>-wal`). Under [`Durability::Interval`] each round is a
    /// checkpoint on the syncer's own connection, which syncs the log before copying it, and a sync of the log
    /// only where the checkpoint could not copy all of it. The writer's own checkpoints (see
    /// [`WRITER_CHECKPOINT_FRAMES`]) then find the log already synced and mostly copied and stall it briefly.
    pub fn start(db: &Path, durability: Durability) -> Result<LogSync> {
        let Durability::Interval(interval) = durability else {
            return Ok(LogSync {
                shared: Arc::default(),
                thread: None,
            });
        };
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let conn = super::fork_gate::using_sqlite(|| super::open_connection(db))?;
        Self::spawn(interval, move || {
            if !super::fork_gate::using_sqlite(|| checkpointed_whole_log(&conn)) {
                if let Err(e) = sync_file(&wal) {
                    tracing::error!("{e}");
                }
            }
        })
    }

    /// Starts the syncer thread, which calls `sync` when one is due. `sync` (with the connection it owns) is
    /// dropped under the fork gate: closing a connection uses SQLite too.
    fn spawn(interval: Duration, mut sync: impl FnMut() + Send + 'static) -> Result<LogSync> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = flightlog_model::background::spawn("flightlog-sync", move || {
            run(interval, &theirs, &mut sync);
            super::fork_gate::using_sqlite(move || drop(sync));
        })
        .map_err(|e| Error::storage(format!("starting the log sync thread: {e}")))?;
        Ok(LogSync {
            shared,
            thread: Some(thread),
        })
    }

    /// A commit happened. Wakes the syncer only if it was idle: reports while a sync is pending ride on it.
    pub fn committed(&self) {
        if let Some(t) = &self.thread {
            if !self.shared.dirty.swap(true, Ordering::AcqRel) {
                t.thread().unpark();
            }
        }
    }
}

impl Drop for LogSync {
    /// Stops the thread after a last sync of whatever was reported.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The syncer loop: park until a commit is reported, let the interval pass, then clear the report and `sync`
/// (a commit reported after the clearing waits for the next round). On close, one last `sync` at once if
/// anything was reported.
fn run(interval: Duration, shared: &Shared, mut sync: impl FnMut()) {
    loop {
        while !shared.dirty.load(Ordering::Acquire) {
            if shared.closing.load(Ordering::Acquire) {
                return;
            }
            std::thread::park();
        }
        let at = Instant::now() + interval;
        while !shared.closing.load(Ordering::Acquire) {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
        shared.dirty.store(false, Ordering::Release);
        sync();
    }
}

/// Runs a PASSIVE checkpoint (it copies what no reader still needs and never waits on the writer or on
/// readers) and says whether it copied the whole log. If it did, SQLite synced the log before copying from it
/// (the connection's `synchronous` is FULL), so every commit reported so far is on the disk and a sync of
/// ours would only repeat it; if readers held frames back, or it failed, the log still needs [`sync_file`].
fn checkpointed_whole_log(conn: &rusqlite::Connection) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    }) {
        Ok((frames, copied)) => frames >= 0 && copied == frames,
        Err(e) => {
            tracing::debug!("background checkpoint skipped: {e}");
            false
        }
    }
}

/// `fdatasync` of the log through a handle of its own: the sync covers the file, whichever handle wrote.
/// Opened per sync, so a log SQLite recreated is never missed through a stale handle.
fn sync_file(wal: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::storage(format!(
            "syncing {} failed: {e}; commits since the last sync survive a server crash but not a power loss",
            wal.display()
        ))
    };
    std::fs::OpenOptions::new()
        .append(true)
        .open(wal)
        .map_err(failed)?
        .sync_data()
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn policies_parse_and_print() {
        assert_eq!(
            "always".parse::<Durability>().unwrap(),
            Durability::EveryCommit
        );
        assert_eq!(
            " 250ms".parse::<Durability>().unwrap(),
            Durability::Interval(Duration::from_millis(250))
        );
        assert_eq!(
            "2s".parse::<Durability>().unwrap(),
            Durability::Interval(Duration::from_secs(2))
        );
        assert_eq!(Durability::default().to_string(), "100ms");
        assert_eq!(Durability::EveryCommit.to_string(), "always");
    }

    #[test]
    fn bad_policies_say_what_is_accepted() {
        for bad in ["", "never", "0ms", "61s", "10", "-5ms", "1.5s", "5 min"] {
            let err = bad.parse::<Durability>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid sync policy: '{}' is neither", bad.trim()))
                    && err.contains("'always'")
                    && err.contains("'100ms'"),
                "{bad}: {err}"
            );
        }
    }

    /// A syncer on `interval` that records when each sync happened.
    fn recording(interval: Duration) -> (LogSync, Arc<Mutex<Vec<Instant>>>) {
        let syncs = Arc::new(Mutex::new(Vec::new()));
        let theirs = syncs.clone();
        let sync = LogSync::spawn(interval, move || {
            theirs.lock().unwrap().push(Instant::now())
        })
        .unwrap();
        (sync, syncs)
    }

    #[test]
    fn reports_within_an_interval_share_one_sync_after_it() {
        let interval = Duration::from_millis(60);
        let (sync, syncs) = recording(interval);
        let first = Instant::now();
        sync.committed();
        std::thread::sleep(Duration::from_millis(20));
        sync.committed();
        std::thread::sleep(interval * 2);
        let second = Instant::now();
        sync.committed();
        std::thread::sleep(interval * 2);
        drop(sync);
        let syncs = syncs.lock().unwrap();
        assert_eq!(
            syncs.len(),
            2,
            "one sync per interval with reports, none on a quiet close"
        );
        assert!(
            syncs[0] >= first + interval && syncs[0] < second,
            "{:?}",
            syncs[0] - first
        );
        assert!(syncs[1] >= second + interval, "{:?}", syncs[1] - second);
    }

    #[test]
    fn a_close_syncs_what_was_reported_without_waiting_out_the_interval() {
        let (sync, syncs) = recording(Duration::from_secs(30));
        let reported = Instant::now();
        sync.committed();
        drop(sync);
        let syncs = syncs.lock().unwrap();
        assert_eq!(syncs.len(), 1);
        assert!(syncs[0] < reported + Duration::from_secs(5));
    }

    #[test]
    fn the_writer_syncs_and_checkpoints_as_its_mode_says() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read =
            |pragma: &str| -> i64 { conn.pragma_query_value(None, pragma, |r| r.get(0)).unwrap() };
        Durability::EveryCommit.configure_writer(&conn).unwrap();
        assert_eq!((read("synchronous"), read("wal_autocheckpoint")), (2, 1000));
        Durability::default().configure_writer(&conn).unwrap();
        assert_eq!(
            (read("synchronous"), read("wal_autocheckpoint")),
            (1, WRITER_CHECKPOINT_FRAMES)
        );
    }

    #[test]
    fn a_checkpoint_held_back_by_a_reader_leaves_the_sync_to_us() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let writer = super::super::open_connection(&db).unwrap();
        Durability::default().configure_writer(&writer).unwrap();
        writer
            .execute_batch("CREATE TABLE t (v BLOB); INSERT INTO t VALUES (zeroblob(10000));")
            .unwrap();
        let syncer = super::super::open_connection(&db).unwrap();
        assert!(checkpointed_whole_log(&syncer), "nothing holds frames back");
        // A reader's snapshot keeps the checkpoint from copying frames committed after it began.
        let reader = super::super::open_connection(&db).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap();
        writer
            .execute("INSERT INTO t VALUES (zeroblob(10000))", [])
            .unwrap();
        assert!(!checkpointed_whole_log(&syncer));
        reader.execute_batch("COMMIT").unwrap();
        assert!(checkpointed_whole_log(&syncer));
    }

    #[test]
    fn every_commit_starts_no_thread() {
        let sync = LogSync::start(Path::new("/nonexistent/x.db"), Durability::EveryCommit).unwrap();
        assert!(sync.thread.is_none());
        sync.committed();
        assert!(!sync.shared.dirty.load(Ordering::Acquire));
    }

    #[test]
    fn a_failed_sync_names_the_file_and_what_is_at_risk() {
        let dir = tempfile::tempdir().unwrap();
        let err = sync_file(&dir.path().join("gone.db-wal"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gone.db-wal") && err.contains("power loss"),
            "{err}"
        );
    }
}
