//! `flightlog._native`: the Python SDK's native core. Thin PyO3 wrappers over the Rust client crate: logging
//! calls enqueue into the client's batching sender (no I/O, no GIL needed afterwards), and every call that
//! waits (HTTP requests, store reads, flush) releases the GIL. The Python layer (`python/flightlog/`) holds the
//! API surface; this module holds nothing but plumbing.

mod ops;
mod sigterm;
mod submit;
mod tensorboard;

use flightlog_client::{Client, ClientConfig};
use flightlog_model::*;
use ops::{LocalOps, Ops};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A flightlog error as the matching `flightlog.errors` exception (a `ValueError` subclass for caller errors,
/// `LookupError` for unknown ids, `ConnectionError` for transport trouble).
fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("flightlog.errors")
            .and_then(|m| m.getattr("from_code"))
            .and_then(|f| f.call1((e.code(), e.to_string())));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        }
    })
}

trait OrPy<T> {
    fn py(self) -> PyResult<T>;
}
impl<T> OrPy<T> for Result<T> {
    #[inline]
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

fn parse_run(id: &str) -> PyResult<RunId> {
    id.parse::<RunId>().py()
}

// --- the client ------------------------------------------------------------------------------------------

/// One destination (a tracking server, or a local data folder) with its background sender and journal.
#[pyclass(frozen, module = "flightlog._native")]
struct NativeClient {
    ops: Arc<dyn Ops>,
    client: Arc<Client>,
}

fn arg<'a>(a: &'a serde_json::Value, key: &str) -> Result<&'a serde_json::Value> {
    a.get(key).ok_or_else(|| Error::invalid(key, "missing"))
}
fn str_arg<'a>(a: &'a serde_json::Value, key: &str) -> Result<&'a str> {
    arg(a, key)?
        .as_str()
        .ok_or_else(|| Error::invalid(key, "must be a string"))
}
fn run_arg(a: &serde_json::Value) -> Result<RunId> {
    str_arg(a, "run").or_else(|_| str_arg(a, "id"))?.parse()
}
fn from_arg<T: serde::de::DeserializeOwned>(a: &serde_json::Value, key: &str) -> Result<T> {
    serde_json::from_value(arg(a, key)?.clone()).map_err(|e| Error::invalid(key, e.to_string()))
}
fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Storage(format!("cannot encode the answer: {e}")))
}

impl NativeClient {
    fn dispatch(&self, op: &str, a: &serde_json::Value) -> Result<serde_json::Value> {
        let ops = &*self.ops;
        match op {
            "get_or_create_experiment" => json(ops.get_or_create_experiment(str_arg(a, "name")?)?),
            "get_experiment" => json(ops.get_experiment(str_arg(a, "id")?.parse()?)?),
            "list_experiments" => json(ops.list_experiments()?),
            "create_run" => json(ops.create_run(from_arg(a, "new")?)?),
            "get_run" => json(ops.get_run(&run_arg(a)?)?),
            "list_runs" => json(ops.list_runs(from_arg(a, "query")?)?),
            "update_run" => json(ops.update_run(&run_arg(a)?, from_arg(a, "patch")?)?),
            "list_metrics" => json(ops.list_metrics(&run_arg(a)?)?),
            "read_records" => json(ops.read_records(&run_arg(a)?, str_arg(a, "name")?)?),
            "list_artifacts" => {
                let prefix = a.get("prefix").and_then(|p| p.as_str());
                let recursive = a
                    .get("recursive")
                    .and_then(|r| r.as_bool())
                    .unwrap_or(false);
                json(ops.list_artifacts(&run_arg(a)?, prefix, recursive)?)
            }
            "list_logs" => json(ops.list_logs(&run_arg(a)?)?),
            "read_log" => {
                let offset = a.get("offset").and_then(|o| o.as_u64()).unwrap_or(0);
                let max = a
                    .get("max_bytes")
                    .and_then(|o| o.as_u64())
                    .unwrap_or(1 << 20);
                json(ops.read_log(&run_arg(a)?, str_arg(a, "stream")?, offset, max)?)
            }
            other => Err(Error::invalid("op", format!("unknown operation '{other}'"))),
        }
    }
}

#[pymethods]
impl NativeClient {
    /// `uri` for a tracking server (`http://host:port`), or `data_dir` for local mode (the embedded store).
    #[new]
    #[pyo3(signature = (uri, data_dir))]
    fn new(py: Python<'_>, uri: Option<String>, data_dir: Option<String>) -> PyResult<Self> {
        let (ops, client): (Arc<dyn Ops>, Arc<Client>) = match (uri, data_dir) {
            (Some(uri), _) => {
                let client = Arc::new(Client::new(ClientConfig::new(uri)));
                (Arc::new(ops::HttpOps(client.clone())), client)
            }
            (None, Some(dir)) => {
                let local = py.detach(|| LocalOps::open(Path::new(&dir))).py()?;
                let client = Arc::new(local.data_client().py()?);
                (Arc::new(local), client)
            }
            (None, None) => {
                return Err(PyTypeError::new_err(
                    "NativeClient needs a uri or a data_dir",
                ))
            }
        };
        sigterm::track(&client);
        Ok(NativeClient { ops, client })
    }

    /// A control-plane request: `args` is a JSON object, the answer is JSON. Releases the GIL while it runs.
    fn call(&self, py: Python<'_>, op: &str, args: &str) -> PyResult<String> {
        let op = op.to_string();
        let args = args.to_string();
        py.detach(|| {
            let a: serde_json::Value =
                serde_json::from_str(&args).map_err(|e| Error::invalid("args", e.to_string()))?;
            let v = self.dispatch(&op, &a)?;
            serde_json::to_string(&v).map_err(|e| Error::Storage(e.to_string()))
        })
        .py()
    }

    /// Queues a run change (JSON RunPatch) after everything logged so far: delivered in order, journaled while
    /// the server is away. For the final status when the server cannot be reached.
    fn update_run_async(&self, run_id: &str, patch: &str) -> PyResult<()> {
        let run = parse_run(run_id)?;
        let patch: RunPatch = serde_json::from_str(patch)
            .map_err(|e| to_py(Error::invalid("patch", e.to_string())))?;
        self.client.update_run_async(&run, patch).py()
    }

    /// Queues a run's creation (JSON NewRun) after everything queued so far and returns its id: delivered in
    /// order with the run's data, journaled while the server is away. For a run started during an outage.
    fn create_run_async(&self, new: &str) -> PyResult<String> {
        let new: NewRun =
            serde_json::from_str(new).map_err(|e| to_py(Error::invalid("new", e.to_string())))?;
        Ok(self.client.create_run_async(new).py()?.to_string())
    }

    /// Marks a run this process started: SIGTERM ends it Canceled (see `sigterm`), unless it ended first.
    fn own_run(&self, run_id: &str) -> PyResult<()> {
        sigterm::own(&self.client, parse_run(run_id)?);
        Ok(())
    }

    /// The run has ended (or is ending) here: SIGTERM leaves it alone.
    fn disown_run(&self, run_id: &str) -> PyResult<()> {
        sigterm::disown(&parse_run(run_id)?);
        Ok(())
    }

    /// A logging handle for one run.
    fn run(&self, run_id: &str) -> PyResult<NativeRun> {
        Ok(NativeRun {
            id: parse_run(run_id)?,
            client: self.client.clone(),
            kinds: Mutex::new(HashMap::new()),
            names: Mutex::new(Vec::new()),
        })
    }

    /// Steps, times (µs) and values of a scalar series, in logging order (NaN payloads exact).
    fn read_scalars(
        &self,
        py: Python<'_>,
        run_id: &str,
        name: &str,
    ) -> PyResult<(Vec<i64>, Vec<i64>, Vec<f64>)> {
        let run = parse_run(run_id)?;
        let name = name.to_string();
        let s = py.detach(|| self.ops.read_scalars(&run, &name)).py()?;
        Ok((
            s.steps,
            s.times.into_iter().map(|t| t.0).collect(),
            s.values.into_iter().map(|v| v.0).collect(),
        ))
    }

    /// Uploads the local file `file` as artifact `path` (streamed); returns the ArtifactInfo as JSON.
    fn put_artifact_file(
        &self,
        py: Python<'_>,
        run_id: &str,
        path: &str,
        file: &str,
    ) -> PyResult<String> {
        let run = parse_run(run_id)?;
        let (path, file) = (path.to_string(), file.to_string());
        let info = py
            .detach(|| self.ops.put_artifact_file(&run, &path, Path::new(&file)))
            .py()?;
        Ok(serde_json::to_string(&info).unwrap_or_default())
    }

    /// Uploads `data` as artifact `path`; returns the ArtifactInfo as JSON.
    fn put_artifact_bytes(
        &self,
        py: Python<'_>,
        run_id: &str,
        path: &str,
        data: Vec<u8>,
    ) -> PyResult<String> {
        let run = parse_run(run_id)?;
        let path = path.to_string();
        let info = py
            .detach(|| self.ops.put_artifact_bytes(&run, &path, &data))
            .py()?;
        Ok(serde_json::to_string(&info).unwrap_or_default())
    }

    /// Downloads artifact `path` to the local file `file` (written whole, then renamed into place).
    fn get_artifact_file(
        &self,
        py: Python<'_>,
        run_id: &str,
        path: &str,
        file: &str,
    ) -> PyResult<u64> {
        let run = parse_run(run_id)?;
        let (path, file) = (path.to_string(), file.to_string());
        py.detach(|| self.ops.get_artifact_file(&run, &path, Path::new(&file)))
            .py()
    }

    /// Waits (GIL released) until everything enqueued so far is stored; False if the timeout passed first.
    fn flush(&self, py: Python<'_>, timeout_seconds: f64) -> PyResult<bool> {
        let timeout = wait_limit(timeout_seconds).py()?;
        py.detach(|| Ok(self.client.flush(timeout)?.complete)).py()
    }

    /// Flushes (GIL released) until everything is delivered, the timeout passes, or the server has failed
    /// twice in a row (what is unsent stays queued and journaled); True when everything was delivered.
    fn deliver(&self, py: Python<'_>, timeout_seconds: f64) -> PyResult<bool> {
        let timeout = wait_limit(timeout_seconds).py()?;
        Ok(py.detach(|| self.client.deliver(timeout)))
    }

    /// The delivery state as JSON: points enqueued/sent/pending, entries spooled to disk, rejections, last
    /// error (None while all is well: cleared once the server answers again) and last rejection (data the
    /// server refused, which is not stored).
    fn delivery(&self) -> String {
        let s = self.client.status();
        serde_json::json!({
            "destination": s.uri,
            "enqueued_points": s.enqueued_points,
            "sent_points": s.sent_points,
            "sent_batches": s.sent_batches,
            "duplicate_batches": s.duplicate_batches,
            "pending_points": s.pending_points,
            "pending_entries": s.pending_entries,
            "spooled_entries": s.spooled_entries,
            "spooled_total": s.spooled_total,
            "rejected_entries": s.rejected_entries,
            "rejected_points": s.rejected_points,
            "send_failures": s.send_failures,
            "consecutive_failures": s.consecutive_failures,
            "last_error": s.last_error,
            "last_rejection": s.last_rejection,
        })
        .to_string()
    }

    /// Flushes (up to the timeout) and stops the sender: whatever is still unsent is in the journal, sent by
    /// the next client for this destination (or `flightlog sync`).
    fn close(&self, py: Python<'_>, timeout_seconds: f64) -> PyResult<bool> {
        let timeout = wait_limit(timeout_seconds).py()?;
        py.detach(|| Ok(self.client.close(timeout)?.complete)).py()
    }
}

/// A wait given in seconds: negative is no wait and anything past 30 years is forever, but NaN is an error
/// (it would be a panic in `Duration`, which Python cannot catch as an ordinary exception).
fn wait_limit(seconds: f64) -> Result<Duration> {
    if seconds.is_nan() {
        return Err(Error::invalid(
            "timeout_seconds",
            "is NaN; pass a number of seconds",
        ));
    }
    Ok(Duration::from_secs_f64(seconds.clamp(0.0, 1e9)))
}

// --- the run handle: the hot path ----------------------------------------------------------------------------

/// Non-blocking logging into one run. Every method validates what it can, enqueues, and returns.
#[pyclass(frozen, module = "flightlog._native")]
struct NativeRun {
    id: RunId,
    client: Arc<Client>,
    /// The kind of every metric name used so far, so logging a name as another kind fails at once (the server
    /// would reject the whole batch later).
    kinds: Mutex<HashMap<String, MetricKind>>,
    /// The hot path's shortcut: scalar names recently logged, keyed by the identity of the Python str object
    /// (a loop passes the same object every time). Holding a reference keeps the identity from being reused.
    /// A hit skips UTF-8 extraction (a copy under the stable ABI of Python 3.9), validation and the kind check.
    names: Mutex<Vec<(Py<PyString>, String)>>,
}

const NAME_CACHE: usize = 32;

/// `m` locked, usable after a panic elsewhere. std's mutex: parking_lot's process-wide table of parked threads
/// would be inherited, stale, by a forked child (see the client's queue).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NativeRun {
    #[inline]
    fn check_kind(&self, name: &str, kind: MetricKind) -> PyResult<()> {
        let mut kinds = locked(&self.kinds);
        match kinds.get(name) {
            Some(k) if *k == kind => Ok(()),
            Some(k) => Err(to_py(Error::conflict(format!(
                "metric '{name}' was logged as {k}; it cannot also be logged as {kind} (use another name)"
            )))),
            None => {
                validate::name("metric", name).py()?;
                kinds.insert(name.to_string(), kind);
                Ok(())
            }
        }
    }

    fn described(description: Option<String>) -> Option<String> {
        description.filter(|d| !d.is_empty())
    }
}

fn cell(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Cell> {
    if v.is_none() {
        Ok(Cell::Null)
    } else if let Ok(b) = v.downcast::<PyBool>() {
        Ok(Cell::Bool(b.is_true()))
    } else if let Ok(f) = v.downcast::<PyFloat>() {
        Ok(Cell::Number(F64(f.value())))
    } else if v.is_instance_of::<PyInt>() {
        Ok(Cell::Number(F64(v.extract::<f64>()?)))
    } else if let Ok(s) = v.downcast::<PyString>() {
        Ok(Cell::Text(s.to_cow()?.into_owned()))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a number, str, bool or None, not {}",
            v.get_type().name()?
        )))
    }
}

#[pymethods]
impl NativeRun {
    /// The run's id.
    #[getter]
    fn id(&self) -> String {
        self.id.to_string()
    }

    /// Records the kinds of metrics already stored for the run (`{name: kind}`).
    fn seed_kinds(&self, kinds: HashMap<String, String>) {
        let mut map = locked(&self.kinds);
        for (name, kind) in kinds {
            if let Some(k) = MetricKind::parse(&kind) {
                map.entry(name).or_insert(k);
            }
        }
    }

    /// Queues one scalar point (time: now; step None: the series' next step).
    #[pyo3(signature = (name, value, step=None, description=None))]
    #[inline]
    fn log_scalar(
        &self,
        name: &Bound<'_, PyString>,
        value: f64,
        step: Option<i64>,
        description: Option<String>,
    ) -> PyResult<()> {
        let mut names = locked(&self.names);
        if let Some(d) = description.as_deref().filter(|d| !d.is_empty()) {
            let text = name.to_cow()?;
            self.check_kind(&text, MetricKind::Scalar)?;
            self.client.describe_scalar(&self.id, &text, d).py()?;
        }
        if let Some((_, cached)) = names.iter().find(|(obj, _)| obj.as_ptr() == name.as_ptr()) {
            return self
                .client
                .log_scalar(&self.id, cached, step, value, None)
                .py();
        }
        let text = name.to_cow()?.into_owned();
        self.check_kind(&text, MetricKind::Scalar)?;
        self.client
            .log_scalar(&self.id, &text, step, value, None)
            .py()?;
        if names.len() >= NAME_CACHE {
            names.remove(0);
        }
        names.push((name.clone().unbind(), text));
        Ok(())
    }

    /// Queues one text point.
    #[pyo3(signature = (name, value, step=None, description=None))]
    fn log_text(
        &self,
        name: &str,
        value: String,
        step: Option<i64>,
        description: Option<String>,
    ) -> PyResult<()> {
        self.check_kind(name, MetricKind::Text)?;
        let write = MetricWrite::Text {
            name: name.to_string(),
            description: Self::described(description),
            steps: step.map(|s| vec![Some(s)]),
            times: None,
            values: vec![value],
        };
        self.client.log(&self.id, write).py()
    }

    /// Queues a whole list of numbers as one record.
    #[pyo3(signature = (name, values, step=None, description=None))]
    fn log_list(
        &self,
        name: &str,
        values: Vec<f64>,
        step: Option<i64>,
        description: Option<String>,
    ) -> PyResult<()> {
        self.check_kind(name, MetricKind::List)?;
        let write = MetricWrite::List {
            name: name.to_string(),
            description: Self::described(description),
            values: values.into_iter().map(F64).collect(),
            step,
            time: None,
        };
        self.client.log(&self.id, write).py()
    }

    /// Queues one row (`{column: cell}`) of a table that grows row by row.
    #[pyo3(signature = (name, row, description=None))]
    fn log_row(
        &self,
        name: &str,
        row: &Bound<'_, PyDict>,
        description: Option<String>,
    ) -> PyResult<()> {
        let mut cells = BTreeMap::new();
        for (k, v) in row.iter() {
            let key: String = k.extract()?;
            validate::name("column", &key).py()?;
            let c = cell(&v, &format!("column '{key}'"))?;
            cells.insert(key, c);
        }
        self.check_kind(name, MetricKind::Row)?;
        let write = MetricWrite::Row {
            name: name.to_string(),
            description: Self::described(description),
            rows: vec![cells],
            times: None,
        };
        self.client.log(&self.id, write).py()
    }

    /// Queues a table given as equal-length columns (`{column: [cells]}`).
    #[pyo3(signature = (name, columns, description=None))]
    fn log_table(
        &self,
        name: &str,
        columns: &Bound<'_, PyDict>,
        description: Option<String>,
    ) -> PyResult<()> {
        let mut cols = BTreeMap::new();
        for (k, v) in columns.iter() {
            let key: String = k.extract()?;
            validate::name("column", &key).py()?;
            let what = format!("column '{key}'");
            let list = v
                .downcast::<PyList>()
                .map_err(|_| PyTypeError::new_err(format!("{what} must be a list")))?;
            let mut cells = Vec::with_capacity(list.len());
            for item in list.iter() {
                cells.push(cell(&item, &what)?);
            }
            cols.insert(key, cells);
        }
        self.check_kind(name, MetricKind::Table)?;
        let write = MetricWrite::Table {
            name: name.to_string(),
            description: Self::described(description),
            columns: cols,
            time: None,
        };
        self.client.log(&self.id, write).py()
    }

    /// Queues a JSON value with a schema name (confusion_matrix, accuracy_table...).
    #[pyo3(signature = (name, schema, value_json, step=None, description=None))]
    fn log_json(
        &self,
        name: &str,
        schema: &str,
        value_json: &str,
        step: Option<i64>,
        description: Option<String>,
    ) -> PyResult<()> {
        let value: serde_json::Value = serde_json::from_str(value_json)
            .map_err(|e| to_py(Error::invalid("value", e.to_string())))?;
        self.check_kind(name, MetricKind::Json)?;
        let write = MetricWrite::Json {
            name: name.to_string(),
            description: Self::described(description),
            schema: schema.to_string(),
            value,
            step,
            time: None,
        };
        self.client.log(&self.id, write).py()
    }

    /// Queues an image (PNG/JPEG/GIF/SVG bytes), delivered in order with the run's data (journaled too).
    #[pyo3(signature = (name, data, media_type, step=None, description=None))]
    fn log_image(
        &self,
        name: &str,
        data: &Bound<'_, PyBytes>,
        media_type: &str,
        step: Option<i64>,
        description: Option<String>,
    ) -> PyResult<()> {
        self.check_kind(name, MetricKind::Image)?;
        let meta = ImageWrite {
            name: name.to_string(),
            description: Self::described(description),
            step,
            time: Some(WallTime::now()),
            media_type: media_type.to_string(),
            batch_id: None,
        };
        self.client
            .log_image(&self.id, meta, data.as_bytes().to_vec())
            .py()
    }

    /// Queues text for one of the run's log streams (`python`, `stdout`...).
    fn append_log(&self, stream: &str, text: &str) -> PyResult<()> {
        self.client.log_text_to_stream(&self.id, stream, text).py()
    }
}

/// `os.register_at_fork(before=...)`: waits until no SQLite call of this process is in progress, so a forked
/// child inherits only idle connections and can open the same data folder (see the store's fork gate). Keeps
/// the GIL: no thread inside the gate needs it.
#[pyfunction]
fn prepare_fork() {
    flightlog_store::embedded::fork_gate::prepare_fork();
}

/// `os.register_at_fork(after_in_parent=..., after_in_child=...)`: lets SQLite calls go on.
#[pyfunction]
fn after_fork() {
    flightlog_store::embedded::fork_gate::after_fork();
}

/// The native core of the flightlog SDK.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeRun>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(prepare_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(sigterm::flush_on_sigterm, m)?)?;
    m.add_function(wrap_pyfunction!(sigterm::forget_sigterm_in_child, m)?)?;
    submit::register(m)?;
    tensorboard::register(m)?;
    Ok(())
}
