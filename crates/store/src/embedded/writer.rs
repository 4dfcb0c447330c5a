//! The single writer thread: callers hand it closures, it runs everything pending in one transaction (each
//! closure in its own savepoint), commits once, then answers them all: one commit (and, under
//! [`super::Durability::EveryCommit`], one sync) serves every caller of the group.

use super::blocks::{tail_cache, TailCache};
use super::durability::LogSync;
use super::events::{LastEvent, StreamKey, REMEMBERED_SERIES};
use super::file_changes::FileChanges;
use super::fork_gate::using_sqlite;
use super::job_cache::JobCache;
use super::log_files::LogFiles;
use super::sql_err;
use crossbeam_channel::{Receiver, Sender};
use flightlog_model::{Error, Result};
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most commands run per transaction, so one commit never waits on an unbounded queue.
const MAX_GROUP: usize = 512;
/// How long the queue must stay empty before the writer folds the write-ahead log into the database file and
/// truncates it. Short, so a data directory at rest holds only what is kept (no multi-MB log of pages already
/// copied); long enough that a steady stream of writes never pays for a checkpoint between two commits.
const IDLE_CHECKPOINT: Duration = Duration::from_millis(20);
/// The first wait before retrying an idle checkpoint that readers blocked. Reads are short, so a retry soon after
/// usually succeeds; a data directory measured right after a burst of reads then holds no stale log.
const CHECKPOINT_RETRY: Duration = Duration::from_millis(5);

/// What a command sees: the connection (inside the group's transaction) and the writer's caches.
pub struct WriteCtx {
    pub conn: Connection,
    pub tails: TailCache,
    /// Each series' newest points event, which the next append of the series replaces (see [`super::events::emit_points`]).
    pub points: JobCache<LastEvent>,
    /// Each log stream's newest `log_appended` event, replaced the same way (see [`super::events::emit_log_append`]).
    pub log_appends: JobCache<LastEvent, StreamKey>,
    /// Log stream files written by the group, synced before its commit.
    pub logs: LogFiles,
    /// Files the group placed, replaced or deleted: finished once it commits, undone if it does not.
    pub files: FileChanges,
    /// The newest event seq inserted by the current group.
    pub last_seq: u64,
    /// The newest seq of an event that [`Announce::uploads_and_run_ends`] announces, inserted by the current
    /// group.
    pub last_followed_seq: u64,
}

impl WriteCtx {
    /// Starts tracking what the next job touches in the writer's caches.
    fn begin_job(&mut self) {
        self.tails.begin_job();
        self.points.begin_job();
        self.log_appends.begin_job();
    }

    /// The job was rolled back: the caches forget what it touched, and its file changes are undone.
    fn forget_job(&mut self) {
        self.tails.forget_job();
        self.points.forget_job();
        self.log_appends.forget_job();
        self.files.undo_job();
    }

    /// The commit failed: the caches forget everything, and the group's file changes are undone.
    fn forget_all(&mut self) {
        self.tails.clear();
        self.points.clear();
        self.log_appends.clear();
        self.files.rolled_back();
    }
}

/// The watch channels commits are announced on: the newest event seq of every commit (stream readers), and
/// the newest seq of an upload or a run's end (followers of those, who need not wake for every metric commit).
#[derive(Clone)]
pub struct Announce {
    pub events: Arc<watch::Sender<u64>>,
    pub uploads_and_run_ends: Arc<watch::Sender<u64>>,
}

impl Announce {
    /// Both channels start at `newest`: nothing committed so far is new to anyone.
    pub fn new(newest: u64) -> Announce {
        Announce {
            events: Arc::new(watch::Sender::new(newest)),
            uploads_and_run_ends: Arc::new(watch::Sender::new(newest)),
        }
    }
}

/// Called after the group's commit (or its failure) with the commit's outcome.
type Reply = Box<dyn FnOnce(Result<()>) + Send>;
/// A command: runs inside its savepoint, says whether it succeeded, and returns how to answer its caller.
type Job = Box<dyn FnOnce(&mut WriteCtx) -> (bool, Reply) + Send>;

/// The handle callers use to submit writes.
pub struct Writer {
    tx: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `conn` (log files in `logs`, commits reported to `sync`), announcing every
    /// commit on `announce`.
    pub fn start(
        conn: Connection,
        logs: LogFiles,
        sync: LogSync,
        announce: Announce,
    ) -> Result<Writer> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let ctx = WriteCtx {
            conn,
            tails: tail_cache(),
            points: JobCache::new(REMEMBERED_SERIES),
            log_appends: JobCache::new(REMEMBERED_SERIES),
            logs,
            files: FileChanges::default(),
            last_seq: 0,
            last_followed_seq: 0,
        };
        let thread = flightlog_model::background::spawn("flightlog-writer", move || {
            run(ctx, rx, sync, announce)
        })
        .map_err(|e| Error::storage(format!("starting the writer thread: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` in the writer thread and waits until its transaction is committed. An `Err` from `f` rolls back
    /// only what `f` did.
    pub fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded::<Result<R>>(1);
        self.submit(f, move |result| {
            let _ = reply_tx.send(result);
        });
        reply_rx.recv().map_err(|_| crate::write_not_applied())?
    }

    /// Queues `f` for the writer thread and returns at once; `done` gets `f`'s result once the transaction is
    /// committed (or the error), on the writer thread. Async callers use it so that no thread is parked to wait.
    /// If the writer fails without answering, `done` is dropped uncalled: wait on a channel it owns to see that.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<R> + Send + 'static,
        done: impl FnOnce(Result<R>) + Send + 'static,
    ) {
        let job: Job = Box::new(move |ctx| {
            let result = f(ctx);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit| done(commit.and(result)));
            (ok, reply)
        });
        let Some(sender) = self.tx.as_ref() else {
            return;
        };
        // A send fails only when the writer thread is gone; the job, and `done` with it, is then dropped.
        let _ = sender.send(job);
    }
}

impl Drop for Writer {
    /// Closes the queue and waits for the writer to finish what was already submitted.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer loop: block for one command, gather whatever else is queued, run them as one group. After
/// [`IDLE_CHECKPOINT`] without commands, checkpoints and truncates the log (retried while readers block it).
fn run(mut ctx: WriteCtx, rx: Receiver<Job>, sync: LogSync, announce: Announce) {
    // `Some(wait)`: the log holds frames to fold in once the queue has been empty for `wait`. A checkpoint a
    // reader blocked is retried after CHECKPOINT_RETRY, then waiting twice as long each time (at most a second).
    let mut idle: Option<Duration> = None;
    let mut retry = CHECKPOINT_RETRY;
    loop {
        let first = match idle {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(job) => job,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    idle = (!using_sqlite(|| idle_checkpoint(&ctx.conn))).then_some(retry);
                    retry = (retry * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        idle = Some(IDLE_CHECKPOINT);
        retry = CHECKPOINT_RETRY;
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        using_sqlite(|| run_group(&mut ctx, jobs, &announce));
        sync.committed();
    }
    // Whatever commits still wait for a sync get it before the log is folded in.
    drop(sync);
    // A clean stop folds the write-ahead log back into the database file, so the data dir holds only what is
    // kept (and the next open has no log to replay).
    using_sqlite(move || {
        if let Err(e) = ctx.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(
                "checkpoint on close failed (the log is replayed on the next open): {e}"
            );
        }
        drop(ctx);
    });
}

/// Copies the committed log into the database file and truncates the log, without waiting: if a reader still
/// uses the log, SQLite checkpoints what it can and this returns `false` (try again later). Durability does
/// not depend on it: the log is synced by each commit or by [`LogSync`], and a checkpoint syncs the log before
/// it copies from it.
fn idle_checkpoint(conn: &Connection) -> bool {
    let _ = conn.busy_timeout(Duration::ZERO);
    let done = match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(busy) => busy == 0,
        Err(e) => {
            tracing::debug!("idle checkpoint skipped: {e}");
            false
        }
    };
    let _ = conn.busy_timeout(super::schema::BUSY_TIMEOUT);
    done
}

/// Runs one group in one transaction and answers every caller once the commit is durable (see
/// [`super::Durability`] for how far). If the transaction
/// cannot even start, the jobs are dropped unrun and their callers get an error. Log bytes the group wrote to
/// files are synced first: a commit never records a length whose bytes could still be lost.
fn run_group(ctx: &mut WriteCtx, jobs: Vec<Job>, announce: &Announce) {
    ctx.last_seq = 0;
    ctx.last_followed_seq = 0;
    if let Err(e) = run_cached(&ctx.conn, "BEGIN IMMEDIATE") {
        tracing::error!("cannot start a write transaction: {e}");
        return;
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
    for job in jobs {
        // SQLite ends the whole transaction on some errors (a full disk during a cache spill): a later job's
        // savepoint would then open a transaction of its own and commit at its release, while every caller is
        // told the group failed. The jobs left are dropped unrun; their callers get an error.
        if ctx.conn.is_autocommit() {
            tracing::error!("the write transaction was rolled back by the database; the rest of the group is not run");
            break;
        }
        replies.extend(run_job(ctx, job));
    }
    let commit = ctx.logs.sync().and_then(|()| {
        run_cached(&ctx.conn, "COMMIT")
            .map(|_| ())
            .map_err(sql_err("committing"))
    });
    if commit.is_err() {
        let _ = ctx.conn.execute_batch("ROLLBACK");
        ctx.forget_all();
    } else {
        ctx.files.committed();
        raise(&announce.events, ctx.last_seq);
        raise(&announce.uploads_and_run_ends, ctx.last_followed_seq);
    }
    for reply in replies {
        reply(commit.clone());
    }
}

/// Moves `channel` up to `newest` (0: the group inserted no such event), waking its watchers.
fn raise(channel: &watch::Sender<u64>, newest: u64) {
    channel.send_if_modified(|cur| {
        let newer = newest > *cur;
        if newer {
            *cur = newest;
        }
        newer
    });
}

/// Runs one job in a savepoint; a failed job is rolled back alone and the tail cache forgets what it touched.
/// A panicking job is rolled back too and its caller, whose reply is dropped, gets an error.
fn run_job(ctx: &mut WriteCtx, job: Job) -> Option<Reply> {
    if let Err(e) = run_cached(&ctx.conn, "SAVEPOINT job") {
        tracing::error!("cannot start a savepoint: {e}");
        return None;
    }
    ctx.begin_job();
    let seqs_before = (ctx.last_seq, ctx.last_followed_seq);
    let (ok, reply) = match catch_unwind(AssertUnwindSafe(|| job(ctx))) {
        Ok((ok, reply)) => (ok, Some(reply)),
        Err(_) => (false, None),
    };
    if ok {
        let _ = run_cached(&ctx.conn, "RELEASE job");
        ctx.files.keep_job();
    } else {
        let _ = run_cached(&ctx.conn, "ROLLBACK TO job");
        let _ = run_cached(&ctx.conn, "RELEASE job");
        ctx.forget_job();
        (ctx.last_seq, ctx.last_followed_seq) = seqs_before;
    }
    reply
}

/// Runs a statement from the connection's statement cache: the transaction and savepoint statements run
/// several times per group, and parsing them each time was a measurable part of a small write.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}
