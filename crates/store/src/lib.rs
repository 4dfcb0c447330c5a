//! Where run history is kept. [`Store`] is the one seam between the APIs and storage: the server, the SDK's
//! local mode and the CLI talk to it only through this trait, so a PostgreSQL + object-storage implementation
//! can follow without touching them. [`embedded`] is the default: SQLite (WAL) for metadata and compressed
//! metric blocks, plain files for artifacts, all under one data directory.
//!
//! The trait is synchronous: the embedded store funnels writes through one writer thread that commits many
//! callers' work per transaction (group commit), and async callers reach it through `spawn_blocking`.

pub mod embedded;

use flightlog_model::*;
use std::io::Read;

/// A byte source for artifact uploads and downloads, streamed rather than held in memory.
pub type ByteReader = Box<dyn Read + Send>;
/// Where [`Store::write_batch_then`] sends a batch's outcome.
pub type BatchDone = Box<dyn FnOnce(Result<BatchAck>) + Send>;

/// What the caller of a write whose outcome never came back is told (the writer failed; its log says why).
pub fn write_not_applied() -> Error {
    Error::storage("the write was not applied: the writer failed (see the server log)")
}

/// Whose files a call reads or writes: a run's artifacts (writes checked against the run's state and announced
/// to its readers as events), or a logged model's files, which may have no run (MLflow 3 logs models outside
/// runs) and are no run's artifacts, so they are kept apart, without events. Both follow the same path rules
/// and durability. A model's existence is for the API layer that keeps it to check; its id is one plain name
/// (letters, digits, `-`, `_`), never a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOwner {
    Run(RunId),
    Model(String),
}

/// A file being received ([`Store::begin_file`]). Dropped unfinished (the sender failed or went away), it
/// leaves nothing behind.
pub trait FileUpload: Send {
    /// Appends the next bytes of the file.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Syncs the file and puts it in place (replacing any file at its path); returns the stored file's info.
    fn finish(self: Box<Self>) -> Result<ArtifactInfo>;
}

/// Bytes of an upload gathered before each write to its temp file: large writes rather than one system call
/// per received chunk, and little memory per upload in flight.
pub const UPLOAD_PIECE: usize = 256 << 10;

/// Reads from `data` until `buf` is full or the data ends; the count read, or None at the end.
fn fill(data: &mut dyn Read, buf: &mut [u8]) -> Result<Option<usize>> {
    let mut n = 0;
    while n < buf.len() {
        match data.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::storage(format!("receiving the upload: {e}"))),
        }
    }
    Ok((n > 0).then_some(n))
}

/// Everything flightlog stores. Every method validates its input (names, lengths, ids, paths) itself, so no
/// caller can store something that breaks the rules; a rejected call changes nothing. Every write that
/// returns `Ok` is durable (survives kill -9 of the process) and has been announced to subscribers.
pub trait Store: Send + Sync + 'static {
    // --- experiments -----------------------------------------------------------------------------------
    /// Creates an experiment; `AlreadyExists` if the name is taken (also by a deleted one).
    fn create_experiment(&self, new: NewExperiment) -> Result<Experiment>;
    fn get_experiment(&self, id: ExperimentId) -> Result<Experiment>;
    fn get_experiment_by_name(&self, name: &str) -> Result<Experiment>;
    /// Newest first; fills `run_count` and `last_activity`.
    fn list_experiments(&self, query: &ExperimentQuery) -> Result<Page<Experiment>>;
    fn update_experiment(&self, id: ExperimentId, patch: ExperimentPatch) -> Result<Experiment>;

    // --- runs ------------------------------------------------------------------------------------------
    /// Creates a run. With `new.id` set and a run of that id already in the same experiment, returns it
    /// unchanged (idempotent replay); in another experiment → `AlreadyExists`. The parent must exist.
    fn create_run(&self, new: NewRun) -> Result<Run> {
        self.create_run_once(new).map(|(run, _)| run)
    }
    /// [`Store::create_run`], saying whether this call made the run (false: a replay found it), decided in
    /// the write itself, so of racing replays exactly one is told it made the run.
    fn create_run_once(&self, new: NewRun) -> Result<(Run, bool)>;
    /// The run with `metrics` filled (latest value of every metric).
    fn get_run(&self, id: &RunId) -> Result<Run>;
    /// Newest first.
    fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>>;
    /// The runs of `ids`, without metrics, in the order given; ids of no run are left out.
    fn get_runs(&self, ids: &[RunId]) -> Result<Vec<Run>>;
    /// Applies the patch atomically (see [`RunPatch`]); writes to a deleted run → `Deleted` unless the patch
    /// restores it.
    fn update_run(&self, id: &RunId, patch: RunPatch) -> Result<Run>;

    // --- metrics ---------------------------------------------------------------------------------------
    /// Appends a batch to one run, atomically: every entry is validated first (names, kinds, equal column
    /// lengths, a metric logged as another kind than before → `Conflict`), then all are stored in one commit.
    /// A `batch_id` seen before for this run returns the first ack with `duplicate: true`.
    fn write_batch(&self, run: &RunId, batch: Batch) -> Result<BatchAck>;
    /// [`Store::write_batch`] for async callers: returns at once and calls `done` with the outcome once the
    /// batch is committed, so no thread is parked waiting (on a busy machine each extra thread hand-off of a
    /// request costs a scheduling delay). `done` may run on another thread, or be dropped uncalled if the
    /// store fails: wait on a channel it owns.
    fn write_batch_then(&self, run: &RunId, batch: Batch, done: BatchDone);
    /// Changes the run (params, tags, name...) and appends the batch in one commit: both or neither, as
    /// MLflow's log-batch logs a step's params, tags and metrics at once. Validated as [`Store::update_run`]
    /// and [`Store::write_batch`] validate, before anything is stored.
    fn update_run_and_write_batch(
        &self,
        run: &RunId,
        patch: RunPatch,
        batch: Batch,
    ) -> Result<BatchAck>;
    /// Stores an image (PNG/JPEG/GIF/SVG, checked by its bytes) as an artifact under `images/` and records it
    /// as a point of image metric `meta.name`.
    fn write_image(&self, run: &RunId, meta: ImageWrite, bytes: &[u8]) -> Result<Record>;
    /// Every metric of the run with its summary.
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>>;
    /// Sets `metrics` of every run (all of its series) in one read.
    fn fill_metrics(&self, runs: &mut [Run]) -> Result<()>;
    fn metric_info(&self, run: &RunId, name: &str) -> Result<SeriesInfo>;
    /// Scalar points in logging order. `NotFound` for an unknown name; `InvalidArgument` if not a scalar.
    fn read_scalars(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<ScalarSeries>;
    /// About `2 * buckets` points of a scalar series within `range`'s steps: the series is cut into
    /// `buckets` equal step intervals and each keeps its min and max point (and first NaN; in step order), so
    /// spikes never vanish. Where buckets average 512 points or more, their edges snap to the store's
    /// 256-point segments, so the overview is read from segment summaries. A series with no more than
    /// `2 * buckets` points comes back whole.
    fn read_downsampled(
        &self,
        run: &RunId,
        name: &str,
        range: &ReadRange,
        buckets: u32,
    ) -> Result<ScalarSeries>;
    /// Records of a non-scalar metric (see [`Record`]) in logging order.
    fn read_records(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<Vec<Record>>;

    // --- logs ------------------------------------------------------------------------------------------
    /// Appends bytes to a log stream (created on first append); returns the stream's new length.
    fn append_log(&self, run: &RunId, stream: &str, data: &[u8]) -> Result<u64>;
    /// Up to `max_bytes` from `offset` (an offset past the end gives an empty slice at the end).
    fn read_log(&self, run: &RunId, stream: &str, offset: u64, max_bytes: u64) -> Result<LogSlice>;
    fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>>;

    // --- artifacts -------------------------------------------------------------------------------------
    /// Begins receiving the owner's file `path`: its bytes go to a temp file as they are written, and
    /// [`FileUpload::finish`] syncs it and renames it into place, so a reader never sees half a file. The
    /// caller pushes bytes as they arrive, so a slow sender holds no thread while it sends nothing.
    fn begin_file(&self, owner: &FileOwner, path: &str) -> Result<Box<dyn FileUpload>>;
    /// Streams `data` into the owner's file `path` ([`Store::begin_file`] fed from a reader). Returns the stored
    /// file's info.
    fn put_file(&self, owner: &FileOwner, path: &str, data: &mut dyn Read) -> Result<ArtifactInfo> {
        let mut upload = self.begin_file(owner, path)?;
        let mut buf = vec![0u8; UPLOAD_PIECE];
        while let Some(n) = fill(data, &mut buf)? {
            upload.write(&buf[..n])?;
        }
        upload.finish()
    }
    /// Opens a stored file for streaming; `NotFound` for a missing file or a folder.
    fn open_file(&self, owner: &FileOwner, path: &str) -> Result<(ArtifactInfo, ByteReader)>;
    /// Files and folders under `prefix` (None: the root). Not recursive: one level, folders marked `is_dir`;
    /// recursive: every file below, no folders.
    fn list_files(
        &self,
        owner: &FileOwner,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>>;
    /// Deletes a file or a folder with everything in it.
    fn delete_file(&self, owner: &FileOwner, path: &str) -> Result<()>;
    /// Deletes all of a model's files, its folder included (nothing, if it has none).
    fn delete_model_files(&self, model: &str) -> Result<()>;

    /// [`Store::put_file`] into a run's artifacts.
    fn put_artifact(&self, run: &RunId, path: &str, data: &mut dyn Read) -> Result<ArtifactInfo> {
        self.put_file(&FileOwner::Run(run.clone()), path, data)
    }
    /// [`Store::open_file`] of a run's artifact.
    fn open_artifact(&self, run: &RunId, path: &str) -> Result<(ArtifactInfo, ByteReader)> {
        self.open_file(&FileOwner::Run(run.clone()), path)
    }
    /// [`Store::list_files`] of a run's artifacts.
    fn list_artifacts(
        &self,
        run: &RunId,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>> {
        self.list_files(&FileOwner::Run(run.clone()), prefix, recursive)
    }
    /// [`Store::delete_file`] of a run's artifact.
    fn delete_artifact(&self, run: &RunId, path: &str) -> Result<()> {
        self.delete_file(&FileOwner::Run(run.clone()), path)
    }

    // --- events ----------------------------------------------------------------------------------------
    /// Events with `seq > after` matching the filter, oldest first, at most `limit`.
    fn events_since(&self, filter: &EventFilter, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The seq of the newest committed event; changes every commit (watch it to wake stream readers).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The seq of the newest committed `artifact_written` event or run end ([`EventBody::is_run_end`]):
    /// followers of uploaded files and of runs' ends (the TensorBoard ingester, which ends a run's `logs/`
    /// child runs with it) wake for those only, not for every metric commit.
    fn subscribe_uploads_and_run_ends(&self) -> tokio::sync::watch::Receiver<u64>;

    // --- documents -------------------------------------------------------------------------------------
    /// Stores (replacing) a small JSON document under (kind, id): records that API layers need but flightlog
    /// has no type for, such as MLflow logged models and dataset inputs. Kinds are namespaced by the layer
    /// (`mlflow.logged_model`).
    fn put_document(&self, kind: &str, id: &str, body: &serde_json::Value) -> Result<()>;
    /// The document, or `None` if there is none.
    fn get_document(&self, kind: &str, id: &str) -> Result<Option<serde_json::Value>>;
    /// Every document of a kind, ordered by id.
    fn list_documents(&self, kind: &str) -> Result<Vec<(String, serde_json::Value)>>;
    /// Deletes a document (and its items); `false` if there was none.
    fn delete_document(&self, kind: &str, id: &str) -> Result<bool>;
    /// Appends items to a list kept beside a document (the document need not exist), each distinct item once:
    /// for lists that grow, which rewriting the whole document on every append would make quadratic.
    fn append_document_items(
        &self,
        kind: &str,
        id: &str,
        items: &[serde_json::Value],
    ) -> Result<()>;
    /// The items appended to a document's list, oldest first.
    fn document_items(&self, kind: &str, id: &str) -> Result<Vec<serde_json::Value>>;
}
