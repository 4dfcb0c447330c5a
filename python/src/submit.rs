//! Script runs from Python (`exp.submit`): the run is created by the submitting process, a detached supervisor
//! drives it through the runner crate's lifecycle, and `wait_for_completion`/`cancel` follow it from anywhere.

use crate::{NativeClient, OrPy};
use flightlog_client::Client;
use flightlog_model::{Error, Result, RunId};
use flightlog_runner::{
    lifecycle, signals, snapshot, tracker, wait, LocalProcess, RunnerError, Submission, Tracker,
};
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `ScriptRunConfig` and `exp.submit` ask for, as JSON from `flightlog/script_run.py`.
#[derive(serde::Deserialize)]
struct Spec {
    source_dir: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<f64>,
    #[serde(default)]
    grace_seconds: Option<f64>,
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(what, format!("must be a number of seconds ≥ 0, not {s}")))
}

fn submission(spec: &str) -> Result<Submission> {
    let spec: Spec =
        serde_json::from_str(spec).map_err(|e| Error::invalid("submission", e.to_string()))?;
    let mut sub = Submission::new(spec.command);
    sub.source_dir = PathBuf::from(spec.source_dir);
    sub.env = spec.env;
    sub.tags = spec.tags;
    sub.display_name = spec.display_name;
    sub.timeout = spec
        .timeout_seconds
        .map(|t| seconds("max_run_duration_seconds", t))
        .transpose()?;
    if let Some(g) = spec.grace_seconds {
        sub.grace = seconds("grace", g)?;
    }
    Ok(sub)
}

/// A runner error as the matching `flightlog.errors` exception (bad input is an `InvalidArgumentError`,
/// a snapshot over the limits a `TooLargeError`), with the runner's own message.
fn runner_err(e: RunnerError) -> PyErr {
    let code = match &e {
        RunnerError::Model(m) => return crate::to_py(m.clone()),
        RunnerError::SnapshotTooLarge { .. } => "TOO_LARGE",
        _ => "INVALID_ARGUMENT",
    };
    Python::attach(|py| {
        let made = py
            .import("flightlog.errors")
            .and_then(|m| m.getattr("from_code"))
            .and_then(|f| f.call1((code, e.to_string())));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        }
    })
}

/// Checks the submission (command, source directory, snapshot limits) and creates its run, Queued, in the
/// experiment `experiment_id`; returns the run as JSON. Nothing is started.
#[pyfunction]
pub fn submit_create(
    py: Python<'_>,
    client: &NativeClient,
    experiment_id: &str,
    spec: &str,
) -> PyResult<String> {
    let sub = submission(spec).py()?;
    let tracker: &dyn Tracker = &client.client;
    let run = py
        .detach(|| {
            let prepared = lifecycle::prepare_in(&sub, experiment_id)?;
            lifecycle::create_run(tracker, &LocalProcess, &sub, &prepared)
        })
        .map_err(runner_err)?;
    serde_json::to_string(&run).map_err(Error::storage).py()
}

/// The supervisor's work: drives the existing run `run_id` from Preparing to its outcome (snapshot,
/// properties, the job in its own process group, live output, timeout, cancel); `on_started()` is called
/// once the job has started (or could not be). Returns the exit code the submission stands for. SIGINT and
/// SIGTERM to this process cancel the run.
#[pyfunction]
pub fn submit_supervise(
    py: Python<'_>,
    client: &NativeClient,
    run_id: &str,
    experiment_id: &str,
    spec: &str,
    on_started: Py<PyAny>,
) -> PyResult<i32> {
    let sub = submission(spec).py()?;
    let id: RunId = run_id.parse().py()?;
    // A client of its own: output is sent within milliseconds, not at the SDK's metric pace.
    let own = Arc::new(Client::new(tracker::client_config(client.client.uri())));
    let tracker: Arc<dyn Tracker> = Arc::new(own.clone());
    signals::install(false);
    let finished = py
        .detach(|| {
            let prepared = lifecycle::prepare_in(&sub, experiment_id)?;
            let mut started = || {
                Python::attach(|py| {
                    if let Err(e) = on_started.call0(py) {
                        e.print(py);
                    }
                })
            };
            lifecycle::execute_created(tracker, &LocalProcess, &sub, prepared, &id, &mut started)
        })
        .map_err(runner_err);
    let _ = py.detach(|| own.close(Duration::from_secs(30)));
    Ok(finished?.exit_code)
}

/// Follows the run's pushed event stream from its first event until it ends (resuming after the last event
/// seen when the connection drops), calling `on_output(stream, text)` with each piece of output as the job
/// printed it (time stamps removed); returns the finished run as JSON.
#[pyfunction]
pub fn wait_for_run(
    py: Python<'_>,
    client: &NativeClient,
    run_id: &str,
    on_output: Py<PyAny>,
) -> PyResult<String> {
    let id: RunId = run_id.parse().py()?;
    let run = py
        .detach(|| {
            wait::wait_for_run(&client.client, &id, &mut |stream, text| {
                let plain = flightlog_runner::capture::strip_stamps(text);
                Python::attach(|py| {
                    if let Err(e) = on_output.call1(py, (stream, plain)) {
                        e.print(py);
                    }
                })
            })
        })
        .py()?;
    serde_json::to_string(&run).map_err(Error::storage).py()
}

/// Cancels the run: a submitted active run is asked to stop (its supervisor stops the whole process group and
/// records Canceled, waited for up to `within_seconds`); any other run is marked Canceled. Returns the run
/// as JSON.
#[pyfunction]
pub fn cancel_run(
    py: Python<'_>,
    client: &NativeClient,
    run_id: &str,
    within_seconds: f64,
) -> PyResult<String> {
    let id: RunId = run_id.parse().py()?;
    let within = seconds("within_seconds", within_seconds).py()?;
    let run = py
        .detach(|| wait::cancel_run(&client.client, &id, within))
        .py()?;
    serde_json::to_string(&run).map_err(Error::storage).py()
}

/// The files `start_logging(snapshot_directory=...)` uploads, as (name under `snapshot/`, path): the same
/// list and limits as a submitted run's snapshot (`flightlog_runner::snapshot`), checked before the run exists.
#[pyfunction]
pub fn snapshot_files(py: Python<'_>, directory: &str) -> PyResult<Vec<(String, String)>> {
    let dir = PathBuf::from(directory);
    let snap = py.detach(|| snapshot::scan(&dir)).map_err(runner_err)?;
    snap.check(&dir, snapshot::SnapshotLimits::default())
        .map_err(runner_err)?;
    Ok(snap
        .files
        .into_iter()
        .map(|f| (f.rel, f.path.display().to_string()))
        .collect())
}

/// Adds the script-run functions to `flightlog._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(submit_create, m)?)?;
    m.add_function(wrap_pyfunction!(submit_supervise, m)?)?;
    m.add_function(wrap_pyfunction!(wait_for_run, m)?)?;
    m.add_function(wrap_pyfunction!(cancel_run, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot_files, m)?)?;
    Ok(())
}
