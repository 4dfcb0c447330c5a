//! The data plane: per-run accumulators that log calls append to (one uncontended mutex, no allocation per
//! point once a metric's columns exist), the ordered outbox of sealed entries, the journal spill, and the
//! background sender thread.

use crate::acc::RunAcc;
use crate::crashlog::{self, CrashLog};
use crate::http::{Http, SendError};
use crate::journal::{JournalEntry, JournalRecord, JournalWriter};
use crate::ClientConfig;
use flightlog_model::*;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Retry delays double from this up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After this many failed sends in a row everything pending goes to the journal, so a crash while the server
/// is down loses nothing and memory stays flat.
const SPILL_AFTER_FAILURES: u32 = 3;
/// A send unanswered this long (a server that accepts connections but hangs, a black-holed network path) has
/// everything pending journaled, and so does what is logged while it stays unanswered: waiting for three
/// failures there takes three request timeouts (90 s by default), and a crash meanwhile lost all of it.
const SLOW_SEND: Duration = Duration::from_secs(2);
/// How often the watchdog looks for a slow send.
const WATCHDOG_TICK: Duration = Duration::from_millis(500);

/// Whether the crash log is there. It is made when the client first logs (a client that only reads makes
/// none), by the sender: allocating its file takes milliseconds, which a log call must not wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum CrashLogState {
    #[default]
    NotWanted,
    Wanted,
    Open,
    /// Could not be made (logged once), or not kept by this client.
    Unavailable,
}

/// A sealed entry waiting in memory.
pub(crate) struct Queued {
    seq: u64,
    points: usize,
    entry: Arc<JournalEntry>,
}

/// The memory entry being sent right now.
struct Inflight {
    seq: u64,
    points: usize,
    entry: Arc<JournalEntry>,
    /// A copy went to the journal while it was in flight.
    spilled: bool,
    since: Instant,
}

#[derive(Default)]
pub(crate) struct State {
    runs: HashMap<RunId, RunAcc>,
    /// Points in accumulators (not yet sealed).
    acc_points: usize,
    /// Points held in memory: accumulators, outbox and the in-flight entry.
    pub mem_points: usize,
    outbox: VecDeque<Queued>,
    inflight: Option<Inflight>,
    next_seq: u64,
    /// Every entry with seq <= done_seq is done (acknowledged or rejected).
    pub done_seq: u64,
    /// Replays of older journals (started with the client, and after each outage) still going: a flush covers
    /// them too, so a short-lived process that flushes (or exits) has delivered what an earlier, killed process
    /// left.
    replaying: usize,
    shutdown: bool,
    closed: bool,
    wake_requested: bool,
    journal: Option<JournalWriter>,
    /// Where log calls record what they queue, for recovery after a kill (made by the sender once wanted).
    crash: Option<CrashLog>,
    crash_state: CrashLogState,
    /// Totals, for `status()`.
    pub stats: Stats,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub enqueued_points: u64,
    pub sent_points: u64,
    pub sent_batches: u64,
    pub duplicate_batches: u64,
    pub rejected_entries: u64,
    pub rejected_points: u64,
    pub spooled_entries: u64,
    pub spooled_points: u64,
    pub send_failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_rejection: Option<String>,
}

pub(crate) struct Shared {
    pub http: Http,
    /// Delivers instead of `http` when set (see [`crate::backend::Sink`]).
    pub sink: Option<Arc<dyn crate::backend::Sink>>,
    pub config: ClientConfig,
    pub client_id: String,
    pub state: Mutex<State>,
    /// Wakes the sender.
    pub wake: Condvar,
    /// Wakes flush waiters.
    pub progress: Condvar,
}

impl Shared {
    pub fn new(http: Http, config: ClientConfig) -> Shared {
        Shared {
            http,
            sink: None,
            config,
            client_id: uuid::Uuid::new_v4().simple().to_string(),
            state: Mutex::new(State {
                next_seq: 1,
                ..Default::default()
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
        }
    }

    /// The state, locked. A panic elsewhere while it was held leaves it usable (no poisoning): every change
    /// to it is complete before the lock is released.
    ///
    /// std's locks, not parking_lot's: parking_lot keeps parked threads in one process-wide table, which a
    /// forked child inherits with entries for threads it does not have (whose memory the child may reuse), so a
    /// notify in the child could follow a dead entry and crash, as it did in a test. std's futex locks keep
    /// their state in the lock itself.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on `cv` until notified or `deadline`; also returns true when the deadline has passed.
    fn wait_until<'a>(
        cv: &Condvar,
        st: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> (MutexGuard<'a, State>, bool) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (st, true);
        }
        let (st, wait) = cv
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner);
        (st, wait.timed_out())
    }

    /// Where entries go: the sink's name, or the server's URI.
    pub fn destination(&self) -> &str {
        self.sink
            .as_ref()
            .map_or(self.http.base(), |s| s.destination())
    }

    fn deliver(&self, entry: &JournalEntry) -> Result<Sent, SendError> {
        match &self.sink {
            Some(sink) => send_entry(&crate::backend::SinkDeliver(&**sink), entry),
            None => send_entry(&self.http, entry),
        }
    }

    fn closed_error() -> Error {
        Error::invalid("client", "the client is closed")
    }

    // --- enqueue (hot path) ---------------------------------------------------------------------------

    #[inline]
    pub fn log_scalar(
        &self,
        run: &RunId,
        name: &str,
        step: Option<i64>,
        value: f64,
        time: WallTime,
    ) -> Result<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(Self::closed_error());
        }
        self.crash_room(st, CrashLog::scalar_room(run, name));
        let acc = match st.runs.get_mut(run) {
            Some(a) => a,
            None => st.runs.entry(run.clone()).or_default(),
        };
        let col = acc.column(name)?;
        acc.push_scalar(col, step, time, F64(value));
        if let Some(log) = &mut st.crash {
            log.scalar(run, acc, col, step, time, F64(value));
        }
        st.acc_points += 1;
        st.mem_points += 1;
        st.stats.enqueued_points += 1;
        self.after_enqueue(guard);
        Ok(())
    }

    /// Attaches a description to scalar series `name` of `run`; it travels with the series' next points.
    pub fn describe_scalar(&self, run: &RunId, name: &str, description: &str) -> Result<()> {
        validate::name("metric", name)?;
        validate::description("description", description)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(Self::closed_error());
        }
        self.crash_room(st, CrashLog::scalar_room(run, name) + description.len());
        let acc = st.runs.entry(run.clone()).or_default();
        let col = acc.column(name)?;
        acc.scalars[col].description = Some(description.to_string());
        if let Some(log) = &mut st.crash {
            log.describe(run, acc, col, description);
        }
        self.after_enqueue(guard);
        Ok(())
    }

    pub fn log_metric(&self, run: &RunId, write: MetricWrite) -> Result<()> {
        // Encoded before the lock: the crash log keeps it as JSON.
        let json = if self.keeps_crash_log() {
            serde_json::to_vec(&write).map_err(|e| Error::invalid("metric", e.to_string()))?
        } else {
            Vec::new()
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(Self::closed_error());
        }
        self.crash_room(st, CrashLog::run_record_room(run, json.len()));
        let acc = st.runs.entry(run.clone()).or_default();
        let n = acc.push_metric(write);
        if let Some(log) = &mut st.crash {
            log.metric(run, acc, &json);
        }
        // A zero-row table still wakes the sender, but holds no points in memory: sending it takes back none.
        st.acc_points += n.max(1);
        st.mem_points += n;
        st.stats.enqueued_points += n as u64;
        self.after_enqueue(guard);
        Ok(())
    }

    pub fn log_text(&self, run: &RunId, stream: &str, text: &str) -> Result<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(Self::closed_error());
        }
        self.crash_room(
            st,
            CrashLog::run_record_room(run, 2 + stream.len() + text.len()),
        );
        let acc = st.runs.entry(run.clone()).or_default();
        acc.push_text(stream, text);
        if let Some(log) = &mut st.crash {
            log.text(run, acc, stream, text);
        }
        // Count text as points too (one per 100 bytes), so the memory bound covers it.
        let n = 1 + text.len() / 100;
        st.acc_points += n;
        st.mem_points += n;
        self.after_enqueue(guard);
        Ok(())
    }

    /// Queues a control entry after everything already logged (for its run and any other).
    pub fn enqueue_entry(&self, entry: JournalEntry) -> Result<u64> {
        // The JSON before the lock (an image's bytes are written as they are), if a crash log may take it.
        let (json, raw) = if self.keeps_crash_log() {
            crashlog::entry_parts(&entry).map_err(|e| Error::invalid("entry", e.to_string()))?
        } else {
            (Vec::new(), &[][..])
        };
        let mut guard = self.lock();
        if guard.closed {
            return Err(Self::closed_error());
        }
        self.crash_room(&mut guard, crashlog::entry_room(&json, raw));
        self.seal_all(&mut guard);
        let seq = guard.next_seq;
        guard.next_seq += 1;
        guard.mem_points += 1;
        if let Some(log) = &mut guard.crash {
            log.entry(seq, &json, raw);
        }
        guard.outbox.push_back(Queued {
            seq,
            points: 1,
            entry: Arc::new(entry),
        });
        guard.wake_requested = true;
        self.wake.notify_one();
        self.after_enqueue(guard);
        Ok(seq)
    }

    #[inline]
    fn after_enqueue(&self, mut st: MutexGuard<'_, State>) {
        if st.acc_points >= self.config.max_batch_points && !st.wake_requested {
            st.wake_requested = true;
            self.wake.notify_one();
        }
        if st.mem_points > self.config.max_memory_points
            || st.crash.as_ref().is_some_and(|c| c.wants_spill)
        {
            self.spill(&mut st);
        }
    }

    // --- the crash log -----------------------------------------------------------------------------------

    /// Makes sure the crash log can take `bytes` more of records (asking for it on first use): when its slot
    /// is full, everything queued is sealed and the other slot takes over, or, while that one still holds
    /// entries not delivered, what memory holds is journaled (which empties the log).
    #[inline]
    fn crash_room(&self, st: &mut State, bytes: usize) {
        match &st.crash {
            Some(log) if log.has_room(bytes) => return,
            Some(_) => {}
            None => return self.want_crash_log(st),
        }
        self.seal_accumulators(st);
        let Some(log) = &mut st.crash else { return };
        // A seal the log could not record (`wants_spill`) must not be left behind in the old slot.
        if !log.wants_spill && log.fits_a_slot(bytes) && log.can_switch() {
            log.switch(&mut st.runs);
        } else {
            self.spill(st);
        }
    }

    #[inline]
    fn want_crash_log(&self, st: &mut State) {
        if st.crash_state == CrashLogState::NotWanted {
            st.crash_state = if self.keeps_crash_log() {
                // Made at once, not at the next flush: what is queued until then is not covered.
                st.wake_requested = true;
                self.wake.notify_one();
                CrashLogState::Wanted
            } else {
                CrashLogState::Unavailable
            };
        }
    }

    /// Clients that deliver to a server keep one; one that writes into a store in this process does not.
    fn keeps_crash_log(&self) -> bool {
        cfg!(target_os = "linux") && self.config.crash_log_bytes > 0 && self.sink.is_none()
    }

    /// Makes the crash log a log call asked for (on the sender, outside the lock). What was queued before it
    /// is sealed first and recorded as entries: a log starts with nothing in its accumulators.
    fn open_crash_log(&self) {
        let made = CrashLog::create(
            &self.config.spool_dir,
            self.destination(),
            &self.client_id,
            self.config.crash_log_bytes,
            self.config.max_batch_points,
        );
        let mut st = self.lock();
        match made {
            Ok(mut log) if !st.closed => {
                self.seal_accumulators(&mut st);
                log.reset(&mut st.runs);
                log.settle(st.done_seq);
                st.crash = Some(log);
                st.crash_state = CrashLogState::Open;
                self.record_queued(&mut st);
            }
            Ok(_) => st.crash_state = CrashLogState::Unavailable,
            Err(e) => {
                st.crash_state = CrashLogState::Unavailable;
                tracing::warn!(
                    "no crash log in {} (a killed process loses what it had not sent): {e}",
                    self.config.spool_dir.display()
                );
            }
        }
    }

    /// Records the entries queued before the crash log opened (a run created while the server was down
    /// among them: without it, what follows would be refused at replay); journals them if they do not fit.
    fn record_queued(&self, st: &mut State) {
        let State {
            outbox,
            inflight,
            crash,
            ..
        } = &mut *st;
        let Some(log) = crash else { return };
        for (seq, _, entry) in in_memory(inflight, outbox) {
            match crashlog::entry_parts(entry) {
                Ok((json, raw)) if log.has_room(crashlog::entry_room(&json, raw)) => {
                    log.entry(seq, &json, raw)
                }
                _ => log.wants_spill = true,
            }
        }
        if log.wants_spill {
            self.spill(st);
        }
    }

    /// The crash log, made now (tests have no sender).
    #[cfg(test)]
    pub fn open_crash_log_now(&self) {
        self.want_crash_log(&mut self.lock());
        self.open_crash_log();
    }

    // --- sealing and spilling ----------------------------------------------------------------------------

    /// Moves every accumulator's data into the outbox as batches (in run order of first use); journals what
    /// memory holds if the crash log could not record something.
    pub fn seal_all(&self, st: &mut State) {
        self.seal_accumulators(st);
        if st.crash.as_ref().is_some_and(|c| c.wants_spill) {
            self.spill(st);
        }
    }

    fn seal_accumulators(&self, st: &mut State) {
        if st.acc_points == 0 && st.runs.values().all(RunAcc::is_empty) {
            return;
        }
        let max = self.config.max_batch_points;
        let State {
            runs,
            outbox,
            next_seq,
            crash,
            ..
        } = st;
        for (run, acc) in runs.iter_mut() {
            if acc.is_empty() {
                continue;
            }
            let batches = acc.seal(max);
            let first = *next_seq;
            *next_seq += batches.len() as u64;
            if let Some(log) = crash {
                log.sealed(run, acc, first, &batches);
            }
            for (seq, batch) in (first..).zip(batches) {
                outbox.push_back(Queued {
                    seq,
                    points: batch.point_count() + batch.logs.len(),
                    entry: Arc::new(JournalEntry::Batch {
                        run: run.clone(),
                        batch,
                    }),
                });
            }
        }
        st.acc_points = 0;
    }

    /// Writes everything held in memory (the in-flight entry, the outbox, the accumulators) to the journal,
    /// in order. On a write failure the data stays in memory.
    ///
    /// Either way the crash log is emptied: what it recorded is now delivered or journaled, or, when the
    /// journal failed after the crash log could not record something, no longer consistent with memory.
    pub fn spill(&self, st: &mut State) {
        self.seal_accumulators(st);
        let wanted = st.crash.as_ref().is_some_and(|c| c.wants_spill);
        let journaled = self.journal_memory(st);
        if journaled || wanted {
            if let Some(log) = &mut st.crash {
                log.reset(&mut st.runs);
            }
        }
    }

    /// [`Shared::spill`]'s journal part: false when the journal could not be written.
    fn journal_memory(&self, st: &mut State) -> bool {
        let mut points = 0usize;
        let records: Vec<JournalRecord> = in_memory(&st.inflight, &st.outbox)
            .map(|(seq, n, entry)| {
                points += n;
                JournalRecord {
                    seq,
                    entry: (**entry).clone(),
                }
            })
            .collect();
        if records.is_empty() {
            return true;
        }
        if st.journal.is_none() {
            match JournalWriter::create(&self.config.spool_dir, self.destination(), &self.client_id)
            {
                Ok(j) => st.journal = Some(j),
                Err(e) => {
                    let msg = format!(
                        "cannot create the spool journal in {}: {e}",
                        self.config.spool_dir.display()
                    );
                    tracing::error!("{msg}");
                    st.stats.last_error = Some(msg);
                    return false;
                }
            }
        }
        let journal = st.journal.as_mut().expect("journal open");
        if let Err(e) = journal.append(&records) {
            let msg = format!(
                "cannot write the spool journal {}: {e}",
                journal.path().display()
            );
            tracing::error!("{msg}");
            st.stats.last_error = Some(msg);
            return false;
        }
        if let Some(inf) = &mut st.inflight {
            if !inf.spilled {
                inf.spilled = true;
            }
        }
        st.outbox.clear();
        st.stats.spooled_entries += records.len() as u64;
        st.stats.spooled_points += points as u64;
        st.mem_points = 0;
        tracing::debug!(entries = records.len(), points, "spilled to the journal");
        true
    }

    // --- flush / close ------------------------------------------------------------------------------

    /// Seals what is pending and returns the seq that, once done, means everything before now is delivered.
    pub fn flush_target(&self) -> u64 {
        let mut st = self.lock();
        self.seal_all(&mut st);
        st.wake_requested = true;
        self.wake.notify_one();
        st.next_seq - 1
    }

    pub fn wait_done(&self, target: u64, deadline: Instant) -> bool {
        let mut st = self.lock();
        let done = |st: &State| st.done_seq >= target && st.replaying == 0;
        while !done(&st) {
            let (guard, timed_out) = Self::wait_until(&self.progress, st, deadline);
            st = guard;
            if timed_out {
                return done(&st);
            }
        }
        true
    }

    /// Marks the start-up replay of older journals as going (see `State::replaying`) until the returned guard
    /// is dropped, which a panic in the replay does too.
    pub fn replaying(self: &Arc<Self>) -> impl Drop + Send + 'static {
        struct Replayed(Arc<Shared>);
        impl Drop for Replayed {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                st.replaying = st.replaying.saturating_sub(1);
                drop(st);
                self.0.progress.notify_all();
            }
        }
        self.lock().replaying += 1;
        Replayed(self.clone())
    }

    pub fn close_and_spill(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.spill(&mut st);
        // Everything it recorded is delivered or journaled now: its file goes (a process that exits without
        // dropping the client would leave it for the next start to find empty).
        if st.crash.as_ref().is_some_and(CrashLog::is_clean) {
            st.crash = None;
        }
        st.shutdown = true;
        self.wake.notify_all();
        self.progress.notify_all();
    }

    pub fn pending(&self) -> (u64, u64, u64) {
        let st = self.lock();
        let journal = st.journal.as_ref().map_or(0, |j| j.unsent());
        let entries = in_memory(&st.inflight, &st.outbox).count() as u64;
        (st.mem_points as u64, entries, journal)
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    // --- the sender thread ---------------------------------------------------------------------------

    pub fn run_sender(self: Arc<Self>) {
        let mut backoff = MIN_BACKOFF;
        let mut last_seal = Instant::now();
        loop {
            // Wait for something to do.
            let crash_log_wanted = {
                let mut st = self.lock();
                loop {
                    if st.shutdown {
                        return;
                    }
                    let has_journal = st.journal.as_ref().is_some_and(|j| j.unsent() > 0);
                    if st.wake_requested || !st.outbox.is_empty() || has_journal {
                        break;
                    }
                    let deadline = last_seal + self.config.flush_interval;
                    if Instant::now() >= deadline {
                        break;
                    }
                    st = Self::wait_until(&self.wake, st, deadline).0;
                }
                st.wake_requested = false;
                self.seal_all(&mut st);
                last_seal = Instant::now();
                st.crash_state == CrashLogState::Wanted
            };
            if crash_log_wanted {
                self.open_crash_log();
            }
            // Send everything queued, oldest first.
            loop {
                let after_outage = self.lock().stats.consecutive_failures > 0;
                match self.send_next() {
                    Step::Idle => break,
                    Step::Done => {
                        backoff = MIN_BACKOFF;
                        if after_outage {
                            self.start_replay();
                        }
                    }
                    Step::Failed => {
                        let deadline = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        let mut st = self.lock();
                        while !st.shutdown && Instant::now() < deadline {
                            st = Self::wait_until(&self.wake, st, deadline).0;
                        }
                        if st.shutdown {
                            return;
                        }
                    }
                    Step::Shutdown => return,
                }
                // Keep a steady flow under heavy logging.
                let mut st = self.lock();
                if st.acc_points >= self.config.max_batch_points
                    || Instant::now() >= last_seal + self.config.flush_interval
                {
                    self.seal_all(&mut st);
                    st.wake_requested = false;
                    last_seal = Instant::now();
                }
            }
            // A fully delivered journal is removed.
            let mut st = self.lock();
            if st.journal.as_ref().is_some_and(|j| j.unsent() == 0) && st.inflight.is_none() {
                if let Some(j) = st.journal.take() {
                    crate::journal::remove_journal(j.path());
                }
            }
        }
    }

    /// With `replay_on_start`, sends the journals older processes (or earlier clients) left for this server,
    /// in the background; a flush waits for it. Run when the client starts, and again each time the server
    /// answers after an outage: a replay that found it down gave up, and those entries would otherwise wait
    /// for another process or `flightlog sync` however long this one lives.
    pub fn start_replay(self: &Arc<Self>) {
        let dir = self.config.spool_dir.clone();
        if !self.config.replay_on_start || !dir.is_dir() {
            return;
        }
        let uri = self.destination().to_string();
        let replaying = self.replaying();
        let started = flightlog_model::background::spawn("flightlog-replay", move || {
            let _replaying = replaying;
            match crate::replay::replay_spool(&dir, Some(&uri)) {
                Ok(r) if r.entries_sent > 0 || r.entries_rejected > 0 => tracing::info!(
                    "replayed {} spooled entries from {}",
                    r.entries_sent,
                    dir.display()
                ),
                Ok(_) => {}
                Err(e) => tracing::debug!("spool replay: {e}"),
            }
        });
        if let Err(e) = started {
            tracing::warn!("cannot start the spool replay: {e}");
        }
    }

    /// Journals what is held in memory while a send goes unanswered past [`SLOW_SEND`], every
    /// [`WATCHDOG_TICK`], until the client shuts down. A thread of its own: the sender is the one waiting.
    pub fn run_watchdog(self: Arc<Self>) {
        let mut st = self.lock();
        while !st.shutdown {
            let stalled = st
                .inflight
                .as_ref()
                .is_some_and(|i| i.since.elapsed() >= SLOW_SEND);
            let in_memory = st.inflight.as_ref().is_some_and(|i| !i.spilled)
                || !st.outbox.is_empty()
                || st.acc_points > 0;
            if stalled && in_memory {
                tracing::debug!(
                    "a send is unanswered after {SLOW_SEND:?}: journaling what is pending"
                );
                self.spill(&mut st);
            }
            st = Self::wait_until(&self.progress, st, Instant::now() + WATCHDOG_TICK).0;
        }
    }

    fn send_next(&self) -> Step {
        // 1. The journal holds the oldest entries.
        let mut st = self.lock();
        if st.shutdown {
            return Step::Shutdown;
        }
        if let Some(j) = st.journal.as_mut().filter(|j| j.unsent() > 0) {
            let decoded = match j.peek_next_raw() {
                Ok(Some(raw)) => {
                    // Decoded outside the lock: a big batch takes milliseconds to parse.
                    drop(st);
                    crate::journal::decode_record(&raw)
                }
                Ok(None) => return Step::Idle,
                Err(e) => {
                    drop(st);
                    Err(e)
                }
            };
            let rec = match decoded {
                Ok(r) => r,
                Err(e) => {
                    let mut st = self.lock();
                    if let Some(j) = st.journal.take() {
                        let msg = format!(
                            "cannot read the spool journal {}: {e}; its remaining entries are left for `flightlog sync`",
                            j.path().display()
                        );
                        tracing::error!("{msg}");
                        st.stats.last_error = Some(msg);
                    }
                    // Leave the file for a later replay; carry on with a fresh journal.
                    return Step::Done;
                }
            };
            let result = self.deliver(&rec.entry);
            let mut st = self.lock();
            return match result {
                Err(SendError::Retry(e)) => self.note_failure(&mut st, e),
                other => {
                    let points = rec.entry.points();
                    self.note_result(&mut st, other, points);
                    if let Some(j) = st.journal.as_mut() {
                        if let Err(e) = j.consume() {
                            tracing::warn!("cannot record journal progress: {e}");
                        }
                    }
                    st.done_seq = st.done_seq.max(rec.seq);
                    Self::settle(&mut st);
                    self.progress.notify_all();
                    Step::Done
                }
            };
        }
        // 2. Then memory, oldest first.
        let Some(q) = st.outbox.pop_front() else {
            return Step::Idle;
        };
        let entry = q.entry.clone();
        st.inflight = Some(Inflight {
            seq: q.seq,
            points: q.points,
            entry: q.entry,
            spilled: false,
            since: Instant::now(),
        });
        drop(st);
        let result = self.deliver(&entry);
        let mut st = self.lock();
        let inf = st.inflight.take().expect("inflight");
        match result {
            Err(SendError::Retry(e)) => {
                if !inf.spilled {
                    // Back to the front, to be retried before anything newer.
                    st.outbox.push_front(Queued {
                        seq: inf.seq,
                        points: inf.points,
                        entry: inf.entry,
                    });
                }
                self.note_failure(&mut st, e)
            }
            other => {
                self.note_result(&mut st, other, inf.points);
                if inf.spilled {
                    // Its journal copy is the next record there: already delivered, skip it.
                    if let Some(j) = st.journal.as_mut() {
                        if let Err(e) = j.consume() {
                            tracing::warn!("cannot record journal progress: {e}");
                        }
                    }
                } else {
                    st.mem_points = st.mem_points.saturating_sub(inf.points);
                }
                st.done_seq = st.done_seq.max(inf.seq);
                Self::settle(&mut st);
                self.progress.notify_all();
                Step::Done
            }
        }
    }

    /// The entries queued in memory, oldest first.
    #[cfg(test)]
    pub fn queued_entries(&self) -> Vec<JournalRecord> {
        let st = self.lock();
        st.outbox
            .iter()
            .map(|q| JournalRecord {
                seq: q.seq,
                entry: (*q.entry).clone(),
            })
            .collect()
    }

    #[cfg(test)]
    pub fn with_crash_log(&self, f: impl FnOnce(&mut CrashLog)) {
        f(self.lock().crash.as_mut().expect("a crash log"))
    }

    /// As if the sender had delivered every entry up to `seq`.
    #[cfg(test)]
    pub fn delivered_through(&self, seq: u64) {
        let mut st = self.lock();
        while st.outbox.front().is_some_and(|q| q.seq <= seq) {
            let q = st.outbox.pop_front().expect("front");
            st.mem_points -= q.points;
        }
        st.done_seq = seq;
        Self::settle(&mut st);
    }

    /// Tells the crash log what is delivered, so a recovery does not send it again.
    fn settle(st: &mut State) {
        if let Some(log) = &mut st.crash {
            log.settle(st.done_seq);
        }
    }

    fn note_result(&self, st: &mut State, result: Result<Sent, SendError>, points: usize) {
        if st.stats.consecutive_failures > 0 {
            // The server answers again: the outage is over, and so is its error.
            st.stats.last_error = None;
        }
        st.stats.consecutive_failures = 0;
        match result {
            Ok(Sent::Batch {
                duplicate,
                rejected,
            }) => {
                st.stats.sent_batches += 1;
                if duplicate {
                    st.stats.duplicate_batches += 1;
                }
                let lost = rejected.as_ref().map_or(0, |r| r.0);
                st.stats.sent_points += points.saturating_sub(lost) as u64;
                if let Some((n, e)) = rejected {
                    let msg =
                        format!("the server rejected part of the logged data ({n} points): {e}");
                    tracing::warn!("{msg}");
                    st.stats.rejected_entries += 1;
                    st.stats.rejected_points += n as u64;
                    st.stats.last_rejection = Some(msg.clone());
                    st.stats.last_error = Some(msg);
                }
            }
            Ok(Sent::Other) => {}
            Err(SendError::Reject(e)) | Err(SendError::Retry(e)) => {
                let msg = format!("the server rejected logged data: {e}");
                tracing::warn!("{msg}");
                st.stats.rejected_entries += 1;
                st.stats.rejected_points += points as u64;
                st.stats.last_rejection = Some(msg.clone());
                st.stats.last_error = Some(msg);
            }
        }
    }

    fn note_failure(&self, st: &mut State, e: Error) -> Step {
        st.stats.send_failures += 1;
        st.stats.consecutive_failures += 1;
        if st.stats.consecutive_failures == 1 {
            tracing::warn!("cannot send logged data (will retry, spooling to disk meanwhile): {e}");
        }
        st.stats.last_error = Some(e.to_string());
        if st.stats.consecutive_failures >= SPILL_AFTER_FAILURES
            || st.mem_points > self.config.max_memory_points
        {
            self.spill(st);
        }
        Step::Failed
    }
}

/// The entries memory holds, oldest first, with their seqs and points: the one in flight (unless it was
/// journaled while in flight) and the outbox.
fn in_memory<'a>(
    inflight: &'a Option<Inflight>,
    outbox: &'a VecDeque<Queued>,
) -> impl Iterator<Item = (u64, usize, &'a Arc<JournalEntry>)> + 'a {
    let unspilled = inflight.as_ref().filter(|i| !i.spilled);
    unspilled
        .map(|i| (i.seq, i.points, &i.entry))
        .into_iter()
        .chain(outbox.iter().map(|q| (q.seq, q.points, &q.entry)))
}

enum Step {
    Idle,
    Done,
    Failed,
    Shutdown,
}

pub(crate) enum Sent {
    /// A batch was stored (`duplicate`: it had been stored before). `rejected` holds the points of parts the
    /// server refused and why, when a batch had to be split to save its valid parts.
    Batch {
        duplicate: bool,
        rejected: Option<(usize, Error)>,
    },
    Other,
}

/// Delivers one entry. Creating a run that exists (same id) answers 200 with it: success. A batch the server
/// refuses as a whole (batches are atomic) is split into one batch per metric, each with a batch id derived
/// from the original (so a replay deduplicates the same way), and the valid parts are stored.
pub(crate) fn send_entry<D: crate::backend::Deliver + ?Sized>(
    to: &D,
    entry: &JournalEntry,
) -> Result<Sent, SendError> {
    match entry {
        JournalEntry::CreateRun(new) => {
            to.create_run(new)?;
            Ok(Sent::Other)
        }
        JournalEntry::Batch { run, batch } => match to.write_batch(run, batch) {
            Ok(ack) => Ok(Sent::Batch {
                duplicate: ack.duplicate,
                rejected: None,
            }),
            Err(SendError::Reject(e))
                if splittable(&e)
                    && batch.scalars.len()
                        + batch.metrics.len()
                        + (!batch.logs.is_empty()) as usize
                        > 1 =>
            {
                let mut duplicate = true;
                let mut rejected: Option<(usize, Error)> = None;
                for part in split_batch(batch) {
                    let n = part.point_count() + part.logs.len();
                    match to.write_batch(run, &part) {
                        Ok(ack) => duplicate &= ack.duplicate,
                        Err(SendError::Reject(e)) => {
                            let total = rejected.as_ref().map_or(0, |r| r.0) + n;
                            rejected = Some((total, rejected.map_or(e, |r| r.1)));
                        }
                        Err(retry) => return Err(retry),
                    }
                }
                Ok(Sent::Batch {
                    duplicate,
                    rejected,
                })
            }
            Err(e) => Err(e),
        },
        JournalEntry::UpdateRun { run, patch } => {
            to.update_run(run, patch)?;
            Ok(Sent::Other)
        }
        JournalEntry::Image { run, meta, data } => {
            // Journals written before log_image checked the size: the server would close the connection
            // mid-body, which reads as an outage, so such an entry would be retried forever.
            validate::image_size(data.len()).map_err(SendError::Reject)?;
            to.write_image(run, meta, data)?;
            Ok(Sent::Other)
        }
    }
}

/// Errors about the data in a batch (not about the run, which would fail every part alike).
fn splittable(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidArgument { .. } | Error::Conflict { .. } | Error::TooLarge { .. }
    )
}

fn split_batch(batch: &Batch) -> Vec<Batch> {
    let base = batch.batch_id.clone().unwrap_or_default();
    let mut parts = Vec::new();
    for s in &batch.scalars {
        parts.push(Batch {
            scalars: vec![s.clone()],
            ..Default::default()
        });
    }
    for m in &batch.metrics {
        parts.push(Batch {
            metrics: vec![m.clone()],
            ..Default::default()
        });
    }
    if !batch.logs.is_empty() {
        parts.push(Batch {
            logs: batch.logs.clone(),
            ..Default::default()
        });
    }
    for (i, p) in parts.iter_mut().enumerate() {
        p.batch_id = Some(format!("{base}.{i}"));
    }
    parts
}
