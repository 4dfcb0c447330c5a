//! `flightlog.tensorboard`'s native half: exports runs as TensorBoard event files with the Rust exporter
//! (`flightlog_tensorboard::export`, the same code as `flightlog export tensorboard`), GIL released.

use crate::ops::Ops;
use crate::{NativeClient, OrPy};
use flightlog_model::*;
use flightlog_tensorboard::export::{self as tb, ExportError, ExportSource};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Names the temporary files artifacts are downloaded to.
static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// The SDK's destination (server or local store) as the exporter's source of runs.
struct OpsSource<'a>(&'a dyn Ops);

impl ExportSource for OpsSource<'_> {
    fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        self.0.list_runs(query.clone())
    }
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        self.0.list_metrics(run)
    }
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries> {
        self.0.read_scalars(run, name)
    }
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>> {
        self.0.read_records(run, name)
    }
    /// Through a temporary file: `Ops` downloads to files (images are the only artifacts exported).
    fn artifact_bytes(&self, run: &RunId, path: &str) -> Result<Vec<u8>> {
        let n = DOWNLOADS.fetch_add(1, Ordering::Relaxed);
        let tmp =
            std::env::temp_dir().join(format!("flightlog-tb-{}-{n}.download", std::process::id()));
        let got = self.0.get_artifact_file(run, path, &tmp).and_then(|_| {
            std::fs::read(&tmp).map_err(|e| Error::storage(format!("{}: {e}", tmp.display())))
        });
        let _ = std::fs::remove_file(&tmp);
        got
    }
}

/// Exports runs (ids) or an experiment's top-level runs into `logdir`, replacing an earlier export there;
/// returns the per-run report as JSON (`[{"run_id", "name", "dir", "file", "scalar_points", ...}]`).
#[pyfunction]
#[pyo3(signature = (client, logdir, run_ids, experiment_id=None, recursive=true))]
fn export_tensorboard(
    py: Python<'_>,
    client: &NativeClient,
    logdir: &str,
    run_ids: Vec<String>,
    experiment_id: Option<String>,
    recursive: bool,
) -> PyResult<String> {
    let ops = client.ops.clone();
    let logdir = Path::new(logdir).to_path_buf();
    let done = py.detach(move || -> Result<std::result::Result<String, String>> {
        let src = OpsSource(ops.as_ref());
        let tops = match experiment_id {
            Some(e) => tb::experiment_runs(&src, e.parse()?)?,
            None => run_ids
                .iter()
                .map(|r| ops.get_run(&r.parse()?))
                .collect::<Result<Vec<Run>>>()?,
        };
        match tb::export(&src, &logdir, tops, recursive) {
            Ok(reports) => Ok(Ok(serde_json::to_string(&reports).unwrap_or_default())),
            Err(ExportError::Source(e)) => Err(e),
            Err(ExportError::Io(e)) => Ok(Err(format!("{}: {e}", logdir.display()))),
        }
    });
    done.py()?.map_err(PyOSError::new_err)
}

/// Adds this module's functions to `flightlog._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(export_tensorboard, m)?)
}
