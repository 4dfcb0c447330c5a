//! The run lifecycle of a submitted command: Queued → Preparing → Running → Finalizing → an outcome.

use crate::capture::{self, Echo, Tail};
use crate::error::RunnerError;
use crate::folders::FolderSync;
use crate::snapshot::{self, Snapshot, SnapshotLimits, SNAPSHOT_PREFIX};
use crate::target::{self, ComputeTarget, Job, JobExit, JobSpec};
use crate::tracker::Tracker;
use crate::{props, signals};
use flightlog_model::{ErrorDetails, NewRun, Run, RunId, RunPatch, RunStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The property that marks a run as submitted (its value is the compute target): `runs cancel` asks such a
/// run's submitter to stop it instead of marking it Canceled itself.
pub const TARGET_PROPERTY: &str = "compute_target";

/// The property that records a submitted run's exit code (as the submitting command exits with it).
pub const EXIT_CODE_PROPERTY: &str = "exit_code";

/// The exit code of a submission stopped by `--timeout` (as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// The exit code of a canceled submission (as a shell after Ctrl-C).
pub const EXIT_CANCELED: i32 = 130;

/// How often `./logs` is looked at for changes.
const LOGS_POLL: Duration = Duration::from_secs(2);

/// What to run and how to record it.
#[derive(Clone, Debug)]
pub struct Submission {
    /// Experiment name; `None`: the Default experiment.
    pub experiment: Option<String>,
    /// Create the experiment when it does not exist (else it is an error).
    pub create_experiment: bool,
    pub display_name: Option<String>,
    pub source_dir: PathBuf,
    pub command: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    pub parent_id: Option<RunId>,
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the run is stopped.
    pub grace: Duration,
    /// Echo the job's output to this process's stdout/stderr.
    pub show_output: bool,
    pub limits: SnapshotLimits,
    /// Upload the snapshot (a sweep's children share their parent's).
    pub snapshot: bool,
    /// Extra environment variables for the job (the tracking variables set by the lifecycle win).
    pub env: BTreeMap<String, String>,
    /// Stop the job as canceled when this is set too (a sweep's children, when the sweep is canceled).
    pub canceled_with: Option<Arc<AtomicBool>>,
    /// Where the job runs and its `./outputs` and `./logs` are read, when not in the source dir (a parallel
    /// sweep's child: [`crate::workdir::ChildDir`]).
    pub working_dir: Option<PathBuf>,
}

impl Submission {
    /// Where the job runs: its own working dir if it has one, else the source dir.
    fn work_dir<'a>(&'a self, prepared: &'a Prepared) -> &'a Path {
        self.working_dir.as_deref().unwrap_or(&prepared.source_dir)
    }

    pub fn new(command: Vec<String>) -> Self {
        Submission {
            experiment: None,
            create_experiment: true,
            display_name: None,
            source_dir: PathBuf::from("."),
            command,
            tags: BTreeMap::new(),
            params: BTreeMap::new(),
            parent_id: None,
            timeout: None,
            grace: Duration::from_secs(10),
            show_output: false,
            limits: SnapshotLimits::default(),
            snapshot: true,
            env: BTreeMap::new(),
            canceled_with: None,
            working_dir: None,
        }
    }
}

/// Whether a run should stop as canceled: Ctrl-C or SIGTERM to this process, a cancel of the run (set by
/// its watcher while this lives), or of the sweep it belongs to.
pub(crate) struct CancelFlags {
    own: Arc<AtomicBool>,
    outer: Option<Arc<AtomicBool>>,
    stop_watch: Arc<AtomicBool>,
}

impl Drop for CancelFlags {
    fn drop(&mut self) {
        self.stop_watch.store(true, Ordering::SeqCst);
    }
}

impl CancelFlags {
    /// Starts following the run's status (the watcher stops when this is dropped).
    pub(crate) fn watch(tracker: &dyn Tracker, id: &RunId, outer: Option<Arc<AtomicBool>>) -> Self {
        let flags = CancelFlags {
            own: Arc::new(AtomicBool::new(false)),
            outer,
            stop_watch: Arc::new(AtomicBool::new(false)),
        };
        tracker.watch_cancel(id, flags.own.clone(), flags.stop_watch.clone());
        flags
    }

    /// The flag a cancel of this run sets, for runs that stop with it (a sweep's children).
    pub(crate) fn run_canceled(&self) -> Arc<AtomicBool> {
        self.own.clone()
    }

    pub(crate) fn requested(&self) -> bool {
        signals::requested()
            || self.own.load(Ordering::SeqCst)
            || self
                .outer
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// The outcome of a submission that got as far as creating its run.
#[derive(Clone, Debug)]
pub struct Finished {
    pub run_id: RunId,
    pub status: RunStatus,
    /// What the submitting command should exit with: the job's own code, 124 on timeout, 130 when canceled,
    /// 126/127 when the command could not be executed.
    pub exit_code: i32,
    pub error: Option<ErrorDetails>,
}

/// Checked input: what [`execute`] needs, found before any run or process exists.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub experiment_id: String,
    pub source_dir: PathBuf,
    pub snapshot: Snapshot,
}

/// Checks the input (command, source directory and its snapshot, experiment) without starting anything.
pub fn prepare(tracker: &dyn Tracker, sub: &Submission) -> Result<Prepared, RunnerError> {
    let (source_dir, snapshot) = check_source(sub)?;
    let experiment_id = match &sub.experiment {
        None => "0".to_string(),
        Some(name) => tracker
            .get_experiment_id(name, sub.create_experiment)?
            .ok_or_else(|| RunnerError::UnknownExperiment(name.clone()))?,
    };
    Ok(Prepared {
        experiment_id,
        source_dir,
        snapshot,
    })
}

/// [`prepare`] for a caller that already knows the experiment (the Python SDK's `exp.submit`): no lookup.
pub fn prepare_in(sub: &Submission, experiment_id: &str) -> Result<Prepared, RunnerError> {
    let (source_dir, snapshot) = check_source(sub)?;
    Ok(Prepared {
        experiment_id: experiment_id.to_string(),
        source_dir,
        snapshot,
    })
}

/// The command is given, the source directory is readable and its snapshot fits the limits.
fn check_source(sub: &Submission) -> Result<(PathBuf, Snapshot), RunnerError> {
    if sub.command.is_empty() || sub.command[0].is_empty() {
        return Err(RunnerError::NoCommand);
    }
    let source_dir = sub
        .source_dir
        .canonicalize()
        .map_err(|e| RunnerError::SourceDir {
            path: sub.source_dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let snapshot = snapshot::scan(&source_dir)?;
    snapshot.check(&source_dir, sub.limits)?;
    Ok((source_dir, snapshot))
}

/// Runs a submission from start to outcome: [`prepare`], then [`execute`].
pub fn submit(
    tracker: Arc<dyn Tracker>,
    target: &dyn ComputeTarget,
    sub: &Submission,
    on_created: &mut dyn FnMut(&Run),
) -> Result<Finished, RunnerError> {
    let prepared = prepare(tracker.as_ref(), sub)?;
    execute(tracker, target, sub, prepared, on_created)
}

/// Creates the run (Queued), snapshots (Preparing), runs the job (Running; its properties are probed and
/// recorded meanwhile), uploads its outputs (Finalizing) and records the outcome. `on_created` learns the run
/// as soon as it exists (so a user can attach to it from elsewhere while it prepares).
pub fn execute(
    tracker: Arc<dyn Tracker>,
    target: &dyn ComputeTarget,
    sub: &Submission,
    prepared: Prepared,
    on_created: &mut dyn FnMut(&Run),
) -> Result<Finished, RunnerError> {
    let run = create_run(tracker.as_ref(), target, sub, &prepared)?;
    on_created(&run);
    execute_created(tracker, target, sub, prepared, &run.id, &mut || {})
}

/// [`execute`] for a run that already exists (Queued): a detached supervisor drives the run its submitting
/// process created (the Python SDK's `exp.submit`, which returns while the job runs on). `on_started` is
/// called once the job has started, could not be started, or was canceled before it started.
pub fn execute_created(
    tracker: Arc<dyn Tracker>,
    target: &dyn ComputeTarget,
    sub: &Submission,
    prepared: Prepared,
    id: &RunId,
    on_started: &mut dyn FnMut(),
) -> Result<Finished, RunnerError> {
    let result = drive(tracker.clone(), target, sub, prepared, id, on_started);
    if let Err(e) = &result {
        fail_unfinished(tracker.as_ref(), id, e);
    }
    result
}

/// An error after the run exists (its snapshot upload refused, the server failing) must not leave the run
/// active for good, where `runs wait` would wait on it forever: it is marked Failed (error code `submit`,
/// exit code 4, as the submit that reports the error exits). A run that has ended stays as it is.
fn fail_unfinished(tracker: &dyn Tracker, id: &RunId, e: &RunnerError) {
    let error = ErrorDetails {
        message: format!("the submission failed: {e}"),
        code: Some("submit".into()),
        details: None,
    };
    let patch = outcome_patch(RunStatus::Failed, Some(error), 4);
    if let Err(err) = tracker.update_run(id, &patch) {
        tracing::warn!("cannot mark run {id} Failed after '{e}': {err}");
    }
}

fn drive(
    tracker: Arc<dyn Tracker>,
    target: &dyn ComputeTarget,
    sub: &Submission,
    prepared: Prepared,
    id: &RunId,
    on_started: &mut dyn FnMut(),
) -> Result<Finished, RunnerError> {
    let id = id.clone();
    set_status(tracker.as_ref(), &id, RunStatus::Preparing)?;
    let properties = record_properties(tracker.clone(), sub, &prepared, target, &id);
    if sub.snapshot {
        upload_snapshot(tracker.as_ref(), &id, &prepared.snapshot)?;
    }
    let cancel = CancelFlags::watch(tracker.as_ref(), &id, sub.canceled_with.clone());
    let spec = job_spec(tracker.as_ref(), sub, &prepared, &id);
    let running = set_status(tracker.as_ref(), &id, RunStatus::Running)?;
    let work = sub.work_dir(&prepared);
    let mut outputs = FolderSync::since_now(work.join("outputs"), "outputs");
    let logs = FolderSync::since_now(work.join("logs"), "logs");
    let ending = if !running || cancel.requested() {
        // Canceled while it prepared (a refused move to Running means a cancel got there first, before
        // the watcher's first look): nothing to start.
        on_started();
        Ending::Canceled
    } else {
        let started = target.start(&spec);
        on_started();
        match started {
            Ok(job) => supervise(tracker.clone(), sub, &id, job, logs, &cancel),
            Err(f) => Ending::NotStarted(f),
        }
    };
    drop(cancel);
    let _ = properties.join();
    let _ = set_status(tracker.as_ref(), &id, RunStatus::Finalizing);
    outputs.sync(tracker.as_ref(), &id);
    tracker.flush(Duration::from_secs(30));
    finish(tracker.as_ref(), &id, ending)
}

/// Probes and records the run's properties on a thread of their own: the probes (`python3 --version` alone
/// can take a few hundred ms behind a version-manager shim) must not delay the job's start. Joined before
/// Finalizing, so the properties are there when the run ends.
fn record_properties(
    tracker: Arc<dyn Tracker>,
    sub: &Submission,
    prepared: &Prepared,
    target: &dyn ComputeTarget,
    id: &RunId,
) -> std::thread::JoinHandle<()> {
    let (cmd, dir, name, id) = (
        sub.command.clone(),
        prepared.source_dir.clone(),
        target.name().to_string(),
        id.clone(),
    );
    std::thread::spawn(move || {
        let patch = RunPatch {
            add_properties: props::collect(&cmd, &dir, &name),
            ..Default::default()
        };
        if let Err(e) = tracker.update_run(&id, &patch) {
            tracing::warn!("cannot record the run's properties: {e}");
        }
    })
}

/// Creates the run, Queued, with the command and the compute target recorded.
pub fn create_run(
    tracker: &dyn Tracker,
    target: &dyn ComputeTarget,
    sub: &Submission,
    prepared: &Prepared,
) -> Result<Run, RunnerError> {
    let command = props::command_line(&sub.command);
    let new = NewRun {
        experiment_id: prepared.experiment_id.parse()?,
        display_name: sub.display_name.clone(),
        parent_id: sub.parent_id.clone(),
        status: Some(RunStatus::Queued),
        tags: sub.tags.clone(),
        params: sub.params.clone(),
        properties: BTreeMap::from([(TARGET_PROPERTY.to_string(), target.name().to_string())]),
        user: props::user_name(),
        host: props::hostname(),
        command: Some(command),
        ..Default::default()
    };
    Ok(tracker.create_run(&new)?)
}

/// Moves the run on and says whether it moved; a run canceled meanwhile by someone else is left as it is
/// (the outcome says so).
fn set_status(tracker: &dyn Tracker, id: &RunId, status: RunStatus) -> Result<bool, RunnerError> {
    match tracker.update_run(id, &RunPatch::to_status(status)) {
        Ok(_) => Ok(true),
        Err(flightlog_model::Error::IllegalTransition { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn upload_snapshot(
    tracker: &dyn Tracker,
    id: &RunId,
    snap: &Snapshot,
) -> Result<(), RunnerError> {
    for f in &snap.files {
        tracker.put_file(id, &format!("{SNAPSHOT_PREFIX}/{}", f.rel), &f.path)?;
    }
    Ok(())
}

fn job_spec(tracker: &dyn Tracker, sub: &Submission, prepared: &Prepared, id: &RunId) -> JobSpec {
    let uri = tracker.tracking_uri();
    let mut env = sub.env.clone();
    env.insert("FLIGHTLOG_TRACKING_URI".to_string(), uri.clone());
    env.insert("FLIGHTLOG_RUN_ID".to_string(), id.to_string());
    env.insert(
        "FLIGHTLOG_EXPERIMENT_ID".to_string(),
        prepared.experiment_id.clone(),
    );
    env.insert("MLFLOW_TRACKING_URI".to_string(), uri);
    env.insert("MLFLOW_RUN_ID".to_string(), id.to_string());
    env.insert(
        "MLFLOW_EXPERIMENT_ID".to_string(),
        prepared.experiment_id.clone(),
    );
    if std::env::var_os("PYTHONUNBUFFERED").is_none() && !env.contains_key("PYTHONUNBUFFERED") {
        // Live output from Python scripts, whose stdout is a pipe here.
        env.insert("PYTHONUNBUFFERED".to_string(), "1".to_string());
    }
    JobSpec {
        command: sub.command.clone(),
        working_dir: sub.work_dir(prepared).to_path_buf(),
        env,
    }
}

/// How the job ended, before it is recorded.
#[derive(Debug)]
enum Ending {
    Exited {
        exit: JobExit,
        stderr_tail: Vec<String>,
    },
    TimedOut(Duration),
    Canceled,
    NotStarted(target::StartFailure),
}

/// Captures the job's output, syncs `./logs`, and waits for it to end, to time out, or to be canceled.
fn supervise(
    tracker: Arc<dyn Tracker>,
    sub: &Submission,
    id: &RunId,
    mut job: Box<dyn Job>,
    mut logs: FolderSync,
    cancel: &CancelFlags,
) -> Ending {
    let tail = Tail::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (out, err) = job.take_output();
    let streams = [
        (out, "stdout", Echo::Stdout, None),
        (err, "stderr", Echo::Stderr, Some(tail.clone())),
    ];
    let mut readers = 0;
    for (reader, name, echo, tail) in streams {
        let Some(reader) = reader else { continue };
        let (t, run, done) = (tracker.clone(), id.clone(), done_tx.clone());
        let echo = if sub.show_output { echo } else { Echo::None };
        readers += 1;
        std::thread::spawn(move || {
            capture::pump(reader, t, run, name, echo, tail);
            let _ = done.send(());
        });
    }
    let started = Instant::now();
    let mut last_logs = Instant::now();
    let ending = loop {
        if let Ok(Some(exit)) = job.try_wait() {
            break Ending::Exited {
                exit,
                stderr_tail: Vec::new(),
            };
        }
        if cancel.requested() {
            target::stop(job.as_mut(), sub.grace);
            break Ending::Canceled;
        }
        if let Some(limit) = sub.timeout.filter(|t| started.elapsed() >= *t) {
            target::stop(job.as_mut(), sub.grace);
            break Ending::TimedOut(limit);
        }
        if last_logs.elapsed() >= LOGS_POLL {
            logs.sync(tracker.as_ref(), id);
            last_logs = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Output still in the pipes is read to its end. The job ends with its main process: what it left
    // running in the background gets a few seconds to finish, then is stopped with it (it would otherwise
    // outlive the run, its later output lost).
    await_readers(&done_rx, &mut readers, BACKGROUND_LEFT_FOR);
    if job.alive() {
        tracing::warn!(
            "the command exited but left processes running in its process group: stopping them"
        );
        target::stop(job.as_mut(), sub.grace);
        await_readers(&done_rx, &mut readers, Duration::from_secs(1));
    }
    logs.sync(tracker.as_ref(), id);
    match ending {
        Ending::Exited { exit, .. } => Ending::Exited {
            exit,
            stderr_tail: tail.lines(),
        },
        other => other,
    }
}

/// How long processes the job left in the background may still run (and write) after its main process
/// has exited.
const BACKGROUND_LEFT_FOR: Duration = Duration::from_secs(5);

/// Waits until the output readers still running (`left`) are done, at most `within`.
fn await_readers(done: &mpsc::Receiver<()>, left: &mut usize, within: Duration) {
    let deadline = Instant::now() + within;
    while *left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if done.recv_timeout(wait).is_err() {
            return;
        }
        *left -= 1;
    }
}

/// Records the outcome; the run's final status is what the server ends up with (a cancel by someone else
/// while the job finished wins as the lifecycle allows).
fn finish(tracker: &dyn Tracker, id: &RunId, ending: Ending) -> Result<Finished, RunnerError> {
    let (status, exit_code, error) = outcome(ending);
    let patch = outcome_patch(status, error.clone(), exit_code);
    let mut sent = tracker.update_run(id, &patch);
    if let Err(flightlog_model::Error::InvalidArgument { .. }) = sent {
        // Error details the server refuses must not leave the run active: the outcome goes without them.
        let without_details = RunPatch {
            error: error.clone().map(|e| ErrorDetails { details: None, ..e }),
            ..patch.clone()
        };
        sent = tracker.update_run(id, &without_details);
    }
    if let Err(flightlog_model::Error::Conflict { .. }) = sent {
        // The script set an `exit_code` property of its own: the outcome matters more than the property.
        let status_only = RunPatch {
            add_properties: BTreeMap::new(),
            ..patch.clone()
        };
        sent = tracker.update_run(id, &status_only);
    }
    let (final_status, error) = match sent {
        Ok(r) => (r.status, r.error),
        Err(flightlog_model::Error::IllegalTransition { .. }) => {
            let r = tracker.get_run(id)?;
            if matches!(r.status, RunStatus::Completed | RunStatus::Failed) {
                // The job ended its own run (`mlflow.start_run()`'s exit, the SDK's `complete()`): the
                // submitter's outcome (the exit code) is the run's. Only a cancel by someone else stands.
                let reopened = RunPatch {
                    reopen: true,
                    ..patch.clone()
                };
                let r = tracker.update_run(id, &reopened).unwrap_or(r);
                (r.status, r.error)
            } else {
                (r.status, r.error)
            }
        }
        Err(flightlog_model::Error::Transport(e)) => {
            // The job has ended: its outcome is queued (and journaled) rather than lost.
            tracing::warn!("cannot reach the server to record the outcome now ({e}); queued");
            tracker.update_run_later(id, patch)?;
            (status, error)
        }
        Err(e) => return Err(e.into()),
    };
    let exit_code = match final_status {
        RunStatus::Canceled if status != RunStatus::Canceled => EXIT_CANCELED,
        _ => exit_code,
    };
    Ok(Finished {
        run_id: id.clone(),
        status: final_status,
        exit_code,
        error,
    })
}

/// The patch that records a submitted run's outcome: status, error, and the `exit_code` property, readable by
/// anyone later (`run.get_details()`, also for outcomes without error details) and what `runs wait` takes as
/// the sign that a submitted run's end is final.
pub(crate) fn outcome_patch(
    status: RunStatus,
    error: Option<ErrorDetails>,
    exit_code: i32,
) -> RunPatch {
    RunPatch {
        status: Some(status),
        error,
        add_properties: BTreeMap::from([(EXIT_CODE_PROPERTY.to_string(), exit_code.to_string())]),
        ..Default::default()
    }
}

/// Most of the stderr tail kept in a run's error details: far below the server's limit on details (256 KiB),
/// since one "line" can be a whole progress bar redrawn with `\r` thousands of times.
const MAX_TAIL_BYTES: usize = 16 * 1024;

/// The end of `text`, at most [`MAX_TAIL_BYTES`] (cut at a character boundary, marked with `…`).
pub(crate) fn last_bytes(text: &str) -> String {
    if text.len() <= MAX_TAIL_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - MAX_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Status, exit code and error details of an ending.
fn outcome(ending: Ending) -> (RunStatus, i32, Option<ErrorDetails>) {
    match ending {
        Ending::Exited {
            exit: JobExit::Code(0),
            ..
        } => (RunStatus::Completed, 0, None),
        Ending::Exited { exit, stderr_tail } => {
            let message = match exit {
                JobExit::Code(c) => format!("the command exited with code {c}"),
                JobExit::Signal(s) => format!("the command was killed by signal {s}"),
            };
            let details = (!stderr_tail.is_empty()).then(|| {
                format!(
                    "last lines of stderr:\n{}",
                    last_bytes(&stderr_tail.join("\n"))
                )
            });
            let error = ErrorDetails {
                message,
                code: Some(format!("exit_code={}", exit.shell_code())),
                details,
            };
            (RunStatus::Failed, exit.shell_code(), Some(error))
        }
        Ending::TimedOut(limit) => {
            let error = ErrorDetails {
                message: format!("timed out after {} s", limit.as_secs_f64()),
                code: Some("timeout".into()),
                details: None,
            };
            (RunStatus::Failed, EXIT_TIMEOUT, Some(error))
        }
        Ending::Canceled => (RunStatus::Canceled, EXIT_CANCELED, None),
        Ending::NotStarted(f) => {
            let error = ErrorDetails {
                message: f.reason,
                code: Some("not_started".into()),
                details: None,
            };
            (RunStatus::Failed, f.code, Some(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::LocalProcess;
    use flightlog_model::{ExperimentId, Lifecycle, WallTime};
    use parking_lot::Mutex;
    use std::path::Path;

    /// Records what the lifecycle does, in order, and answers like a server would.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        logs: Mutex<Vec<(String, String)>>,
        status: Mutex<Option<RunStatus>>,
        cancel_after_running: bool,
        /// `runs cancel` lands while the run prepares, before its watcher has looked.
        cancel_while_preparing: bool,
        /// The server is gone when the outcome is recorded.
        unreachable_at_the_end: bool,
    }

    impl Recorder {
        fn run(&self, id: &RunId) -> Run {
            Run {
                id: id.clone(),
                experiment_id: ExperimentId::default(),
                display_name: String::new(),
                description: String::new(),
                parent_id: None,
                status: self.status.lock().unwrap_or(RunStatus::NotStarted),
                lifecycle: Lifecycle::Active,
                created_time: WallTime::now(),
                start_time: None,
                end_time: None,
                error: None,
                tags: Default::default(),
                properties: Default::default(),
                params: Default::default(),
                user: String::new(),
                host: String::new(),
                command: None,
                metrics: Vec::new(),
            }
        }
    }

    impl Tracker for Recorder {
        fn tracking_uri(&self) -> String {
            "http://127.0.0.1:9".into()
        }
        fn get_experiment_id(
            &self,
            name: &str,
            create: bool,
        ) -> flightlog_model::Result<Option<String>> {
            Ok((create || name == "known").then(|| "3".to_string()))
        }
        fn create_run(&self, new: &NewRun) -> flightlog_model::Result<Run> {
            *self.status.lock() = new.status;
            self.calls
                .lock()
                .push(format!("create {:?}", new.status.unwrap()));
            Ok(self.run(&RunId::new()))
        }
        fn update_run(&self, id: &RunId, patch: &RunPatch) -> flightlog_model::Result<Run> {
            if let Some(s) = patch.status {
                if self.unreachable_at_the_end && s.is_terminal() {
                    return Err(flightlog_model::Error::Transport(
                        "connection refused".into(),
                    ));
                }
                let cur = self.status.lock().unwrap();
                cur.transition(s)?;
                *self.status.lock() = Some(s);
                self.calls.lock().push(format!("status {s:?}"));
                if s == RunStatus::Preparing && self.cancel_while_preparing {
                    *self.status.lock() = Some(RunStatus::CancelRequested);
                }
            }
            if !patch.add_properties.is_empty() {
                self.calls.lock().push("properties".into());
            }
            let mut r = self.run(id);
            r.error = patch.error.clone();
            Ok(r)
        }
        fn update_run_later(&self, _: &RunId, patch: RunPatch) -> flightlog_model::Result<()> {
            self.calls
                .lock()
                .push(format!("later {:?}", patch.status.unwrap()));
            Ok(())
        }
        fn get_run(&self, id: &RunId) -> flightlog_model::Result<Run> {
            Ok(self.run(id))
        }
        fn log_text(&self, _: &RunId, stream: &str, text: &str) -> flightlog_model::Result<()> {
            self.logs.lock().push((stream.into(), text.into()));
            Ok(())
        }
        fn put_file(&self, _: &RunId, path: &str, _: &Path) -> flightlog_model::Result<()> {
            self.calls.lock().push(format!("put {path}"));
            Ok(())
        }
        fn put_bytes(&self, _: &RunId, path: &str, _: &[u8]) -> flightlog_model::Result<()> {
            self.calls.lock().push(format!("put {path}"));
            Ok(())
        }
        fn flush(&self, _: Duration) {}
        fn watch_cancel(&self, _: &RunId, flag: Arc<AtomicBool>, _: Arc<AtomicBool>) {
            if self.cancel_after_running {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    flag.store(true, Ordering::SeqCst);
                });
            }
        }
    }

    fn sub(dir: &Path, cmd: &[&str]) -> Submission {
        let mut s = Submission::new(cmd.iter().map(|s| s.to_string()).collect());
        s.source_dir = dir.to_path_buf();
        s.grace = Duration::from_millis(500);
        s
    }

    fn submit_sh(rec: &Arc<Recorder>, dir: &Path, script: &str) -> Finished {
        submit(
            rec.clone(),
            &LocalProcess,
            &sub(dir, &["sh", "-c", script]),
            &mut |_| {},
        )
        .unwrap()
    }

    fn statuses(r: &Recorder) -> Vec<String> {
        r.calls
            .lock()
            .iter()
            .filter(|c| !c.starts_with("put snapshot/"))
            .cloned()
            .collect()
    }

    #[test]
    fn a_successful_command_walks_the_whole_lifecycle() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("train.sh"),
            "echo hi; mkdir -p outputs; echo m > outputs/model.txt",
        )
        .unwrap();
        let rec = Arc::new(Recorder::default());
        let f = submit(
            rec.clone(),
            &LocalProcess,
            &sub(d.path(), &["sh", "train.sh"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(f.status, RunStatus::Completed);
        assert_eq!(f.exit_code, 0);
        let calls = statuses(&rec);
        // The properties are probed while the job runs, and recorded before Finalizing.
        let props_at = calls.iter().position(|c| c == "properties").unwrap();
        let fin_at = calls.iter().position(|c| c == "status Finalizing").unwrap();
        assert!(props_at < fin_at, "{calls:?}");
        let mut order = calls.clone();
        order.remove(props_at);
        assert_eq!(
            order,
            vec![
                "create Queued",
                "status Preparing",
                "status Running",
                "status Finalizing",
                "put outputs/model.txt",
                "status Completed",
                "properties"
            ]
        );
        assert!(rec
            .calls
            .lock()
            .contains(&"put snapshot/train.sh".to_string()));
        let logs = rec.logs.lock();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, "stdout");
        assert!(logs[0].1.ends_with("Z hi\n"), "{:?}", logs[0].1);
    }

    #[test]
    fn a_failing_command_records_its_code_and_stderr_tail() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::default());
        let f = submit(
            rec.clone(),
            &LocalProcess,
            &sub(d.path(), &["sh", "-c", "echo boom >&2; exit 3"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(f.status, RunStatus::Failed);
        assert_eq!(f.exit_code, 3);
        let e = f.error.unwrap();
        assert_eq!(e.message, "the command exited with code 3");
        assert_eq!(e.details.unwrap(), "last lines of stderr:\nboom");
    }

    #[test]
    fn timeout_cancel_and_unexecutable_commands() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::default());
        let mut s = sub(d.path(), &["sleep", "30"]);
        s.timeout = Some(Duration::from_millis(300));
        let f = submit(rec.clone(), &LocalProcess, &s, &mut |_| {}).unwrap();
        assert_eq!((f.status, f.exit_code), (RunStatus::Failed, EXIT_TIMEOUT));
        assert_eq!(f.error.unwrap().message, "timed out after 0.3 s");

        let rec = Arc::new(Recorder {
            cancel_after_running: true,
            ..Default::default()
        });
        let f = submit(
            rec.clone(),
            &LocalProcess,
            &sub(d.path(), &["sleep", "30"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            (f.status, f.exit_code),
            (RunStatus::Canceled, EXIT_CANCELED)
        );

        let rec = Arc::new(Recorder::default());
        let f = submit(
            rec.clone(),
            &LocalProcess,
            &sub(d.path(), &["./nope"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((f.status, f.exit_code), (RunStatus::Failed, 127));
        assert!(f.error.unwrap().message.contains("cannot execute './nope'"));
    }

    #[test]
    fn a_cancel_while_the_run_prepares_keeps_the_job_from_starting() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder {
            cancel_while_preparing: true,
            ..Default::default()
        });
        let s = sub(d.path(), &["touch", "started"]);
        let f = submit(rec.clone(), &LocalProcess, &s, &mut |_| {}).unwrap();
        assert_eq!(
            (f.status, f.exit_code),
            (RunStatus::Canceled, EXIT_CANCELED)
        );
        assert!(!d.path().join("started").exists());
        assert!(statuses(&rec).contains(&"status Canceled".to_string()));
        assert!(!statuses(&rec).contains(&"status Running".to_string()));
    }

    #[test]
    fn only_outputs_and_logs_written_by_this_job_are_uploaded() {
        let d = tempfile::tempdir().unwrap();
        for (rel, text) in [
            ("outputs/old.bin", "run 1"),
            ("outputs/model.bin", "run 1"),
            ("logs/old.log", "run 1"),
        ] {
            std::fs::create_dir_all(d.path().join(rel).parent().unwrap()).unwrap();
            std::fs::write(d.path().join(rel), text).unwrap();
        }
        let rec = Arc::new(Recorder::default());
        let job = "echo run 2, longer > outputs/model.bin; echo new > logs/new.log";
        let f = submit_sh(&rec, d.path(), job);
        assert_eq!(f.status, RunStatus::Completed);
        let puts: Vec<String> = rec
            .calls
            .lock()
            .iter()
            .filter(|c| c.starts_with("put "))
            .cloned()
            .collect();
        assert_eq!(puts, vec!["put logs/new.log", "put outputs/model.bin"]);
    }

    /// Whether the process lives (a zombie, exited but not yet reaped by init, does not).
    fn process_lives(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn background_processes_are_stopped_when_the_job_ends() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::default());
        let job =
            "sleep 300 >/dev/null 2>&1 & echo $! > bg.pid; (sleep 1; echo late) & echo main done";
        let f = submit_sh(&rec, d.path(), job);
        assert_eq!(f.status, RunStatus::Completed);
        let pid = std::fs::read_to_string(d.path().join("bg.pid")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_lives(pid.trim()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !process_lives(pid.trim()),
            "the background sleep outlived the run"
        );
        // A background process that writes within the time it is given is still recorded.
        let stdout: String = rec
            .logs
            .lock()
            .iter()
            .filter(|(s, _)| s == "stdout")
            .map(|(_, t)| t.as_str())
            .collect();
        assert!(
            stdout.contains(" main done\n") && stdout.contains(" late\n"),
            "{stdout}"
        );
    }

    #[test]
    fn bad_input_is_refused_before_any_run_exists() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::default());
        let e = submit(rec.clone(), &LocalProcess, &sub(d.path(), &[]), &mut |_| {}).unwrap_err();
        assert!(matches!(e, RunnerError::NoCommand));
        let e = submit(
            rec.clone(),
            &LocalProcess,
            &sub(Path::new("/nonexistent"), &["true"]),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot read the source directory '/nonexistent'"));
        let mut s = sub(d.path(), &["true"]);
        s.experiment = Some("unknown".into());
        s.create_experiment = false;
        let e = submit(rec.clone(), &LocalProcess, &s, &mut |_| {}).unwrap_err();
        assert!(matches!(e, RunnerError::UnknownExperiment(_)));
        assert!(rec.calls.lock().is_empty());
    }

    #[test]
    fn the_outcome_is_queued_when_the_server_is_gone_at_the_end() {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder {
            unreachable_at_the_end: true,
            ..Default::default()
        });
        let s = sub(d.path(), &["sh", "-c", "exit 4"]);
        let f = submit(rec.clone(), &LocalProcess, &s, &mut |_| {}).unwrap();
        assert_eq!((f.status, f.exit_code), (RunStatus::Failed, 4));
        assert_eq!(rec.calls.lock().last().unwrap(), "later Failed");
    }
}
