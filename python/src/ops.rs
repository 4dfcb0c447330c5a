//! The control plane (experiments, runs, reads, artifacts, images) over either destination: a tracking server
//! through the client crate, or the embedded store in a local data folder. Both sides speak the model's types,
//! so the Python layer cannot tell them apart.

use flightlog_client::{Client, ClientConfig, Sink};
use flightlog_model::*;
use flightlog_store::embedded::EmbeddedStore;
use flightlog_store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub trait Ops: Send + Sync + 'static {
    fn get_or_create_experiment(&self, name: &str) -> Result<Experiment>;
    fn get_experiment(&self, id: ExperimentId) -> Result<Experiment>;
    fn list_experiments(&self) -> Result<Vec<Experiment>>;
    fn create_run(&self, new: NewRun) -> Result<Run>;
    fn get_run(&self, id: &RunId) -> Result<Run>;
    /// Every page.
    fn list_runs(&self, query: RunQuery) -> Result<Vec<Run>>;
    fn update_run(&self, id: &RunId, patch: RunPatch) -> Result<Run>;
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>>;
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries>;
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>>;
    fn list_artifacts(
        &self,
        run: &RunId,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>>;
    fn put_artifact_file(&self, run: &RunId, path: &str, file: &Path) -> Result<ArtifactInfo>;
    fn put_artifact_bytes(&self, run: &RunId, path: &str, bytes: &[u8]) -> Result<ArtifactInfo>;
    /// Downloads to `dest`; returns the bytes written.
    fn get_artifact_file(&self, run: &RunId, path: &str, dest: &Path) -> Result<u64>;
    fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>>;
    fn read_log(&self, run: &RunId, stream: &str, offset: u64, max_bytes: u64) -> Result<LogSlice>;
}

fn all_pages<T>(
    mut query: RunQuery,
    mut page: impl FnMut(&RunQuery) -> Result<Page<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    loop {
        let p = page(&query)?;
        out.extend(p.items);
        match p.next_page_token {
            Some(t) => query.page_token = Some(t),
            None => return Ok(out),
        }
    }
}

// --- a tracking server ------------------------------------------------------------------------------------

pub struct HttpOps(pub Arc<Client>);

impl Ops for HttpOps {
    fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        validate::title("name", name)?;
        self.0.get_or_create_experiment(name)
    }
    fn get_experiment(&self, id: ExperimentId) -> Result<Experiment> {
        self.0.get_experiment(id)
    }
    fn list_experiments(&self) -> Result<Vec<Experiment>> {
        self.0.list_all_experiments(&ExperimentQuery::default())
    }
    fn create_run(&self, new: NewRun) -> Result<Run> {
        self.0.create_run(&new)
    }
    fn get_run(&self, id: &RunId) -> Result<Run> {
        self.0.get_run(id)
    }
    fn list_runs(&self, query: RunQuery) -> Result<Vec<Run>> {
        all_pages(query, |q| self.0.list_runs(q))
    }
    fn update_run(&self, id: &RunId, patch: RunPatch) -> Result<Run> {
        self.0.update_run(id, &patch)
    }
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        self.0.list_metrics(run)
    }
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries> {
        self.0.read_scalars_binary(run, name, &ReadRange::default())
    }
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>> {
        self.0.read_records(run, name, &ReadRange::default())
    }
    fn list_artifacts(
        &self,
        run: &RunId,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>> {
        self.0.list_artifacts(run, prefix, recursive)
    }
    fn put_artifact_file(&self, run: &RunId, path: &str, file: &Path) -> Result<ArtifactInfo> {
        self.0.put_artifact(run, path, file)
    }
    fn put_artifact_bytes(&self, run: &RunId, path: &str, bytes: &[u8]) -> Result<ArtifactInfo> {
        self.0.put_artifact_bytes(run, path, bytes)
    }
    fn get_artifact_file(&self, run: &RunId, path: &str, dest: &Path) -> Result<u64> {
        self.0.download_artifact(run, path, dest)
    }
    fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>> {
        self.0.list_logs(run)
    }
    fn read_log(&self, run: &RunId, stream: &str, offset: u64, max_bytes: u64) -> Result<LogSlice> {
        self.0.read_log(run, stream, offset, Some(max_bytes))
    }
}

// --- local mode: the embedded store -----------------------------------------------------------------------

pub struct LocalOps {
    pub store: Arc<dyn Store>,
    pub dir: PathBuf,
}

impl LocalOps {
    pub fn open(dir: &Path) -> Result<LocalOps> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create the data folder {}: {e}",
                dir.display()
            ))
        })?;
        let store = EmbeddedStore::open(dir)?;
        Ok(LocalOps {
            store: Arc::new(store),
            dir: dir.to_path_buf(),
        })
    }

    /// The batching sender, delivering into this store (its journal, used only if the store fails or memory
    /// fills up, lives in the data folder's `spool/`).
    pub fn data_client(&self) -> Result<Client> {
        let config = ClientConfig {
            uri: "http://127.0.0.1:0".into(),
            spool_dir: self.dir.join("spool"),
            replay_on_start: false,
            ..Default::default()
        };
        let name = format!("file://{}", self.dir.display());
        Ok(Client::with_sink(
            config,
            Arc::new(StoreSink {
                store: self.store.clone(),
                name,
            }),
        ))
    }
}

/// The client's data plane writing straight into the store.
struct StoreSink {
    store: Arc<dyn Store>,
    name: String,
}

impl Sink for StoreSink {
    fn destination(&self) -> &str {
        &self.name
    }
    fn create_run(&self, new: &NewRun) -> Result<()> {
        self.store.create_run(new.clone()).map(|_| ())
    }
    fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck> {
        self.store.write_batch(run, batch.clone())
    }
    fn update_run(&self, run: &RunId, patch: &RunPatch) -> Result<()> {
        self.store.update_run(run, patch.clone()).map(|_| ())
    }
    fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        self.store.write_image(run, meta.clone(), bytes).map(|_| ())
    }
}

impl Ops for LocalOps {
    fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        match self.store.get_experiment_by_name(name) {
            Err(Error::NotFound { .. }) => {}
            other => return other,
        }
        match self.store.create_experiment(NewExperiment {
            name: name.to_string(),
            ..Default::default()
        }) {
            Err(Error::AlreadyExists { .. }) => self.store.get_experiment_by_name(name),
            other => other,
        }
    }
    fn get_experiment(&self, id: ExperimentId) -> Result<Experiment> {
        self.store.get_experiment(id)
    }
    fn list_experiments(&self) -> Result<Vec<Experiment>> {
        let mut q = ExperimentQuery::default();
        let mut out = Vec::new();
        loop {
            let p = self.store.list_experiments(&q)?;
            out.extend(p.items);
            match p.next_page_token {
                Some(t) => q.page_token = Some(t),
                None => return Ok(out),
            }
        }
    }
    fn create_run(&self, new: NewRun) -> Result<Run> {
        self.store.create_run(new)
    }
    fn get_run(&self, id: &RunId) -> Result<Run> {
        self.store.get_run(id)
    }
    fn list_runs(&self, query: RunQuery) -> Result<Vec<Run>> {
        all_pages(query, |q| self.store.list_runs(q))
    }
    fn update_run(&self, id: &RunId, patch: RunPatch) -> Result<Run> {
        self.store.update_run(id, patch)
    }
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        self.store.list_metrics(run)
    }
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries> {
        self.store.read_scalars(run, name, &ReadRange::default())
    }
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>> {
        self.store.read_records(run, name, &ReadRange::default())
    }
    fn list_artifacts(
        &self,
        run: &RunId,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>> {
        let prefix = prefix.filter(|p| !p.is_empty() && *p != "/" && *p != ".");
        self.store.list_artifacts(run, prefix, recursive)
    }
    fn put_artifact_file(&self, run: &RunId, path: &str, file: &Path) -> Result<ArtifactInfo> {
        let mut f = std::fs::File::open(file).map_err(|e| {
            Error::invalid("file", format!("cannot open '{}': {e}", file.display()))
        })?;
        self.store.put_artifact(run, path, &mut f)
    }
    fn put_artifact_bytes(&self, run: &RunId, path: &str, bytes: &[u8]) -> Result<ArtifactInfo> {
        let mut r = bytes;
        self.store.put_artifact(run, path, &mut r)
    }
    fn get_artifact_file(&self, run: &RunId, path: &str, dest: &Path) -> Result<u64> {
        let (_info, mut reader) = self.store.open_artifact(run, path)?;
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "download".into());
        let tmp = dir.join(format!(".{name}.{}.part", RunId::new()));
        let io = |e: std::io::Error| {
            Error::invalid("output", format!("cannot write '{}': {e}", dest.display()))
        };
        let result = (|| -> std::io::Result<u64> {
            let mut out = std::fs::File::create(&tmp)?;
            let n = std::io::copy(&mut reader, &mut out)?;
            out.flush()?;
            out.sync_all()?;
            std::fs::rename(&tmp, dest)?;
            Ok(n)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
    fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>> {
        self.store.list_logs(run)
    }
    fn read_log(&self, run: &RunId, stream: &str, offset: u64, max_bytes: u64) -> Result<LogSlice> {
        self.store.read_log(run, stream, offset, max_bytes)
    }
}
