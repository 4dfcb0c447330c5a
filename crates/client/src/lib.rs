//! The flightlog Rust client, shared by the CLI and the Python SDK: blocking control-plane calls (experiments,
//! runs, reads, artifacts) and a non-blocking data plane (`log_*`) whose points are batched per run by a
//! background thread, retried with backoff, and spooled to an on-disk journal while the server is unreachable,
//! so that no point is lost or stored twice (every batch carries a `batch_id` the server deduplicates on).
//!
//! No async runtime: plain threads and a blocking keep-alive HTTP agent, so it can be embedded anywhere.

mod acc;
pub mod backend;
mod crashlog;
mod http;
pub mod journal;
mod queue;
pub mod replay;

pub use backend::Sink;
pub use http::normalize_uri;
pub use journal::JournalEntry;
pub use queue::Stats;
pub use replay::{replay_spool, ReplayReport};

use flightlog_model::*;
use http::{encode_path, encode_segment, Http};
use queue::Shared;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default server.
pub const DEFAULT_URI: &str = "http://127.0.0.1:5000";

/// [`Client::deliver`] gives up on a server that failed this many sends in a row.
pub const GIVE_UP_AFTER_FAILURES: u32 = 2;
/// How long each wait of [`Client::deliver`] lasts before it looks at the failure count again.
const DELIVER_STEP: Duration = Duration::from_millis(250);

/// How a [`Client`] talks to the server and buffers data.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server URL, e.g. `http://127.0.0.1:5000`.
    pub uri: String,
    /// Where the journal of unsent data lives: `$FLIGHTLOG_SPOOL`, else `~/.cache/flightlog/spool`.
    pub spool_dir: PathBuf,
    /// How often pending points are sent.
    pub flush_interval: Duration,
    /// Points per batch request at most; reaching it also triggers a send.
    pub max_batch_points: usize,
    /// Points held in memory at most; past this, pending data goes to the journal.
    pub max_memory_points: usize,
    /// How long to wait for an answer to one request.
    pub request_timeout: Duration,
    /// Replay journals left by earlier processes (for this server) in the background when the client starts.
    pub replay_on_start: bool,
    /// Size of the crash log, the memory-mapped file in `spool_dir` that keeps what log calls queued through
    /// a kill -9 (0: none; see `crashlog`). Allocated on disk when the client first logs, removed when it
    /// closes. `$FLIGHTLOG_CRASH_LOG_MB`, else 16 MiB.
    pub crash_log_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            uri: DEFAULT_URI.to_string(),
            spool_dir: default_spool_dir(),
            flush_interval: Duration::from_millis(100),
            max_batch_points: 50_000,
            max_memory_points: 2_000_000,
            request_timeout: Duration::from_secs(30),
            replay_on_start: true,
            crash_log_bytes: default_crash_log_bytes(),
        }
    }
}

impl ClientConfig {
    pub fn new(uri: impl Into<String>) -> Self {
        ClientConfig {
            uri: uri.into(),
            ..Default::default()
        }
    }
}

/// `$FLIGHTLOG_CRASH_LOG_MB` MiB (0: no crash log), else 16 MiB.
fn default_crash_log_bytes() -> usize {
    std::env::var("FLIGHTLOG_CRASH_LOG_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(16 << 20, |mb| mb.saturating_mul(1 << 20))
}

/// `$FLIGHTLOG_SPOOL`, else `$XDG_CACHE_HOME/flightlog/spool`, else `~/.cache/flightlog/spool`.
pub fn default_spool_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLIGHTLOG_SPOOL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("flightlog").join("spool");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("flightlog").join("spool")
}

/// What `flush` achieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlushReport {
    /// Everything enqueued before the call was acknowledged (or rejected) by the server.
    pub complete: bool,
    /// Points still in memory.
    pub pending_points: u64,
    /// Entries (batches, run changes) still in memory.
    pub pending_entries: u64,
    /// Entries waiting in the on-disk journal.
    pub spooled_entries: u64,
    /// The last send error, if any.
    pub last_error: Option<String>,
    /// Entries the server refused since the client started (invalid data: retrying cannot help).
    pub rejected_entries: u64,
}

/// Counters for reporting network trouble without raising.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    pub uri: String,
    pub enqueued_points: u64,
    pub sent_points: u64,
    pub sent_batches: u64,
    pub duplicate_batches: u64,
    pub pending_points: u64,
    pub pending_entries: u64,
    /// Entries now waiting in the journal.
    pub spooled_entries: u64,
    /// Entries ever written to the journal by this client.
    pub spooled_total: u64,
    pub rejected_entries: u64,
    pub rejected_points: u64,
    pub send_failures: u64,
    pub consecutive_failures: u32,
    /// The last transport failure while the server cannot be reached (cleared once a send succeeds), or the
    /// last rejection.
    pub last_error: Option<String>,
    /// The last time the server refused logged data (that data is not stored; a retry would not help).
    pub last_rejection: Option<String>,
}

/// Which points of a scalar series to read.
#[derive(Clone, Debug, Default)]
pub struct ScalarQuery {
    pub range: ReadRange,
    /// Downsample to at most `2 * buckets` points (each bucket keeps its min and max).
    pub buckets: Option<u32>,
}

#[derive(Deserialize)]
struct ItemsOf<T> {
    items: Vec<T>,
}

#[derive(Deserialize)]
struct ScalarAnswer {
    #[allow(dead_code)]
    info: Option<SeriesInfo>,
    steps: Vec<i64>,
    times: Vec<WallTime>,
    values: Vec<F64>,
}

#[derive(Deserialize)]
struct RecordsAnswer {
    #[allow(dead_code)]
    info: Option<SeriesInfo>,
    records: Vec<Record>,
}

/// A connection to a flightlog server. Cheap to share across threads (`&Client` is enough to log).
pub struct Client {
    shared: Arc<Shared>,
    sender: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The process that started the sender. A forked child inherits the client's memory but not its sender
    /// thread: there the queue and its condition variable belong to the parent and must not be touched.
    owner_pid: u32,
}

impl Client {
    /// Starts the background sender (and, with `replay_on_start`, a replay of old journals for this server).
    /// Does not contact the server: a client can log while the server is down.
    pub fn new(config: ClientConfig) -> Client {
        let http = Http::new(&config.uri, config.request_timeout);
        let shared = Arc::new(Shared::new(http, config));
        let s = shared.clone();
        let handle = start_sender(s);
        shared.start_replay();
        Client {
            shared,
            sender: std::sync::Mutex::new(Some(handle)),
            owner_pid: std::process::id(),
        }
    }

    /// A client whose data plane delivers into `sink` (e.g. a store in this process) instead of a server:
    /// the same batching, ordering, retries, memory bound and journal. Control-plane calls still go to
    /// `config.uri`; journals are not replayed on start (the sender replays its own).
    pub fn with_sink(mut config: ClientConfig, sink: Arc<dyn Sink>) -> Client {
        config.replay_on_start = false;
        let http = Http::new(&config.uri, config.request_timeout);
        let mut shared = Shared::new(http, config);
        shared.sink = Some(sink);
        let shared = Arc::new(shared);
        let s = shared.clone();
        let handle = start_sender(s);
        Client {
            shared,
            sender: std::sync::Mutex::new(Some(handle)),
            owner_pid: std::process::id(),
        }
    }

    /// A client for `uri` with default settings.
    pub fn connect(uri: &str) -> Client {
        Client::new(ClientConfig::new(uri))
    }

    pub fn uri(&self) -> &str {
        self.shared.http.base()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    // --- health ------------------------------------------------------------------------------------------

    /// `GET /health`: the server's version, or a `Transport` error.
    pub fn health(&self) -> Result<serde_json::Value> {
        self.shared.http.get_json("/health", &[], Entity::Run)
    }

    // --- experiments -----------------------------------------------------------------------------------

    pub fn create_experiment(&self, new: &NewExperiment) -> Result<Experiment> {
        self.shared
            .http
            .send_json("POST", "/api/v1/experiments", new, Entity::Experiment)
    }

    pub fn get_experiment(&self, id: ExperimentId) -> Result<Experiment> {
        self.shared.http.get_json(
            &format!("/api/v1/experiments/{id}"),
            &[],
            Entity::Experiment,
        )
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        self.shared.http.get_json(
            &format!("/api/v1/experiments/by-name/{}", encode_segment(name)),
            &[],
            Entity::Experiment,
        )
    }

    /// The experiment of that name, created if it does not exist (a concurrent creator wins harmlessly).
    pub fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        match self.get_experiment_by_name(name) {
            Err(Error::NotFound { .. }) => {}
            other => return other,
        }
        match self.create_experiment(&NewExperiment {
            name: name.to_string(),
            ..Default::default()
        }) {
            Err(Error::AlreadyExists { .. }) => self.get_experiment_by_name(name),
            other => other,
        }
    }

    pub fn list_experiments(&self, query: &ExperimentQuery) -> Result<Page<Experiment>> {
        let mut q = Vec::new();
        if let Some(n) = &query.name_contains {
            q.push(("name_contains", n.clone()));
        }
        if query.include_deleted {
            q.push(("include_deleted", "true".to_string()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(t) = &query.page_token {
            q.push(("page_token", t.clone()));
        }
        self.shared
            .http
            .get_json("/api/v1/experiments", &q, Entity::Experiment)
    }

    /// Every experiment, following page tokens.
    pub fn list_all_experiments(&self, query: &ExperimentQuery) -> Result<Vec<Experiment>> {
        Page::collect_all(|page_token| {
            self.list_experiments(&ExperimentQuery {
                page_token,
                ..query.clone()
            })
        })
    }

    pub fn update_experiment(
        &self,
        id: ExperimentId,
        patch: &ExperimentPatch,
    ) -> Result<Experiment> {
        self.shared.http.send_json(
            "PATCH",
            &format!("/api/v1/experiments/{id}"),
            patch,
            Entity::Experiment,
        )
    }

    // --- runs ----------------------------------------------------------------------------------------

    /// Creates a run now (synchronously). With `new.id` set, a repeat returns the existing run.
    pub fn create_run(&self, new: &NewRun) -> Result<Run> {
        self.shared
            .http
            .send_json("POST", "/api/v1/runs", new, Entity::Run)
    }

    /// [`Client::create_run`], also saying whether this call created the run (false: a run with the given id
    /// existed), so an importer knows there is nothing of an earlier attempt to read back.
    pub fn create_run_reporting(&self, new: &NewRun) -> Result<(Run, bool)> {
        self.shared
            .http
            .create_json("/api/v1/runs", new, Entity::Run)
    }

    /// Queues the creation of a run (an id is chosen if `new.id` is None) and returns its id at once; the
    /// creation is delivered in order with the run's data, through the journal if the server is down.
    pub fn create_run_async(&self, mut new: NewRun) -> Result<RunId> {
        if let Some(n) = &new.display_name {
            validate::title("display_name", n)?;
        }
        let id = new.id.get_or_insert_with(RunId::new).clone();
        self.shared.enqueue_entry(JournalEntry::CreateRun(new))?;
        Ok(id)
    }

    pub fn get_run(&self, id: &RunId) -> Result<Run> {
        self.shared
            .http
            .get_json(&format!("/api/v1/runs/{id}"), &[], Entity::Run)
    }

    pub fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>> {
        let mut q: Vec<(&str, String)> = Vec::new();
        for e in &query.experiment_ids {
            q.push(("experiment_id", e.to_string()));
        }
        for s in &query.statuses {
            q.push(("status", s.to_string()));
        }
        if let Some(p) = &query.parent_id {
            q.push(("parent_id", p.to_string()));
        }
        if query.top_level_only {
            q.push(("top_level_only", "true".into()));
        }
        for (k, v) in &query.tags {
            q.push((
                "tag",
                match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                },
            ));
        }
        for (k, v) in &query.properties {
            q.push((
                "property",
                match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                },
            ));
        }
        if query.include_deleted {
            q.push(("include_deleted", "true".into()));
        }
        if query.with_metrics {
            q.push(("with_metrics", "true".into()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(t) = &query.page_token {
            q.push(("page_token", t.clone()));
        }
        self.shared.http.get_json("/api/v1/runs", &q, Entity::Run)
    }

    /// Changes a run now (synchronously).
    pub fn update_run(&self, id: &RunId, patch: &RunPatch) -> Result<Run> {
        self.shared
            .http
            .send_json("PATCH", &format!("/api/v1/runs/{id}"), patch, Entity::Run)
    }

    /// Queues a run change after everything logged so far; it survives a server outage (journal) and is
    /// idempotent when replayed. Use it for the final status and for tags.
    pub fn update_run_async(&self, id: &RunId, patch: RunPatch) -> Result<()> {
        for (k, v) in &patch.set_tags {
            validate::name("tag", k)?;
            validate::value("tag", v)?;
        }
        self.shared.enqueue_entry(JournalEntry::UpdateRun {
            run: id.clone(),
            patch,
        })?;
        Ok(())
    }

    // --- metrics: writing (non-blocking) ------------------------------------------------------------

    /// Queues one scalar point; returns at once. `time` None: now. `step` None: the series' next step.
    #[inline]
    pub fn log_scalar(
        &self,
        run: &RunId,
        name: &str,
        step: Option<i64>,
        value: f64,
        time: Option<WallTime>,
    ) -> Result<()> {
        let time = match time {
            Some(t) => t,
            None => WallTime::now(),
        };
        self.shared.log_scalar(run, name, step, value, time)
    }

    /// Sets the description of scalar series `name`, sent with its next points (call it before the first
    /// point: a series keeps the description of its first write).
    pub fn describe_scalar(&self, run: &RunId, name: &str, description: &str) -> Result<()> {
        self.shared.describe_scalar(run, name, description)
    }

    /// Queues a non-scalar write (text, list, row, table, json, histogram); missing times are filled with now.
    pub fn log(&self, run: &RunId, write: MetricWrite) -> Result<()> {
        let write = check_and_stamp(write)?;
        self.shared.log_metric(run, write)
    }

    /// Queues text for one of the run's log streams (stdout, stderr, python...).
    pub fn log_text_to_stream(&self, run: &RunId, stream: &str, text: &str) -> Result<()> {
        validate::stream_name(stream)?;
        if text.len() > validate::MAX_LOG_APPEND_BYTES {
            return Err(Error::TooLarge {
                what: "log text".into(),
                size: text.len() as u64,
                limit: validate::MAX_LOG_APPEND_BYTES as u64,
            });
        }
        if text.is_empty() {
            return Ok(());
        }
        self.shared.log_text(run, stream, text)
    }

    /// Queues an image (stored as an artifact under `images/` and a point of `meta.name`), delivered in order
    /// with the run's other data and journaled like it while the server is away; returns at once. `meta.time`
    /// None: now.
    pub fn log_image(&self, run: &RunId, mut meta: ImageWrite, bytes: Vec<u8>) -> Result<()> {
        validate::name("metric", &meta.name)?;
        if let Some(d) = &meta.description {
            validate::description("description", d)?;
        }
        validate::image_size(bytes.len())?;
        meta.time.get_or_insert_with(WallTime::now);
        // Sent again after a crash (the crash log, a journal) or a timeout, it is stored once.
        meta.batch_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().simple().to_string());
        self.shared.enqueue_entry(JournalEntry::Image {
            run: run.clone(),
            meta,
            data: bytes,
        })?;
        Ok(())
    }

    /// Writes an image now (synchronously): stored as an artifact under `images/` and a point of `meta.name`.
    pub fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<Record> {
        validate::name("metric", &meta.name)?;
        let q = backend::image_query(meta);
        self.shared
            .http
            .try_send_bytes(
                "POST",
                &format!("/api/v1/runs/{run}/images"),
                &q,
                bytes,
                &meta.media_type,
                Entity::Metric,
            )
            .map_err(http::SendError::into_error)
    }

    /// Appends to a log stream now (synchronously); returns the stream's new length.
    pub fn append_log(&self, run: &RunId, stream: &str, data: &[u8]) -> Result<u64> {
        validate::stream_name(stream)?;
        #[derive(Deserialize)]
        struct Len {
            length: u64,
        }
        let r: Len = self
            .shared
            .http
            .try_send_bytes(
                "POST",
                &format!("/api/v1/runs/{run}/logs/{stream}"),
                &[],
                data,
                "application/octet-stream",
                Entity::LogStream,
            )
            .map_err(http::SendError::into_error)?;
        Ok(r.length)
    }

    // --- metrics: reading -----------------------------------------------------------------------------

    pub fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        let r: ItemsOf<SeriesInfo> =
            self.shared
                .http
                .get_json(&format!("/api/v1/runs/{run}/metrics"), &[], Entity::Run)?;
        Ok(r.items)
    }

    fn range_query(range: &ReadRange) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if range.start_index > 0 {
            q.push(("start_index", range.start_index.to_string()));
        }
        if let Some(l) = range.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(s) = range.min_step {
            q.push(("min_step", s.to_string()));
        }
        if let Some(s) = range.max_step {
            q.push(("max_step", s.to_string()));
        }
        q
    }

    /// Scalar points in logging order (JSON form).
    pub fn read_scalars(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<ScalarSeries> {
        let a: ScalarAnswer = self.shared.http.get_json(
            &format!("/api/v1/runs/{run}/metrics/{}", encode_path(name)),
            &Self::range_query(range),
            Entity::Metric,
        )?;
        Ok(ScalarSeries {
            steps: a.steps,
            times: a.times,
            values: a.values,
        })
    }

    /// Scalar points in logging order, read in the binary form (faster for big series; NaN payloads exact).
    pub fn read_scalars_binary(
        &self,
        run: &RunId,
        name: &str,
        range: &ReadRange,
    ) -> Result<ScalarSeries> {
        let mut q = Self::range_query(range);
        q.push(("format", "binary".into()));
        let resp = self.shared.http.get_raw(
            &format!("/api/v1/runs/{run}/metrics/{}", encode_path(name)),
            &q,
            Entity::Metric,
        )?;
        let bytes = resp
            .into_body()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| Error::Transport(format!("reading the server's answer failed: {e}")))?;
        decode_binary_scalars(&bytes)
    }

    /// At most `2 * buckets` points within the range's steps (each bucket keeps its min and max).
    pub fn read_downsampled(
        &self,
        run: &RunId,
        name: &str,
        range: &ReadRange,
        buckets: u32,
    ) -> Result<ScalarSeries> {
        let mut q = Self::range_query(range);
        q.push(("buckets", buckets.to_string()));
        let a: ScalarAnswer = self.shared.http.get_json(
            &format!("/api/v1/runs/{run}/metrics/{}", encode_path(name)),
            &q,
            Entity::Metric,
        )?;
        Ok(ScalarSeries {
            steps: a.steps,
            times: a.times,
            values: a.values,
        })
    }

    /// Records of a non-scalar metric.
    pub fn read_records(&self, run: &RunId, name: &str, range: &ReadRange) -> Result<Vec<Record>> {
        let a: RecordsAnswer = self.shared.http.get_json(
            &format!("/api/v1/runs/{run}/metrics/{}", encode_path(name)),
            &Self::range_query(range),
            Entity::Metric,
        )?;
        Ok(a.records)
    }

    /// A metric's points as the server sends them: `{"info", "steps","times","values"}` or `{"info","records"}`.
    pub fn read_metric_raw(
        &self,
        run: &RunId,
        name: &str,
        range: &ReadRange,
    ) -> Result<serde_json::Value> {
        self.shared.http.get_json(
            &format!("/api/v1/runs/{run}/metrics/{}", encode_path(name)),
            &Self::range_query(range),
            Entity::Metric,
        )
    }

    // --- logs --------------------------------------------------------------------------------------------

    pub fn list_logs(&self, run: &RunId) -> Result<Vec<LogStreamInfo>> {
        let r: ItemsOf<LogStreamInfo> =
            self.shared
                .http
                .get_json(&format!("/api/v1/runs/{run}/logs"), &[], Entity::Run)?;
        Ok(r.items)
    }

    pub fn read_log(
        &self,
        run: &RunId,
        stream: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<LogSlice> {
        validate::stream_name(stream)?;
        let mut q = vec![("offset", offset.to_string())];
        if let Some(m) = max_bytes {
            q.push(("max_bytes", m.to_string()));
        }
        self.shared.http.get_json(
            &format!("/api/v1/runs/{run}/logs/{stream}"),
            &q,
            Entity::LogStream,
        )
    }

    /// Opens the run's live event stream (Server-Sent Events, `text/event-stream` lines), after event `after`.
    pub fn run_events(
        &self,
        run: &RunId,
        after: Option<u64>,
    ) -> Result<Box<dyn std::io::BufRead + Send>> {
        self.events(&format!("/api/v1/runs/{run}/events"), after, Entity::Run)
    }

    /// Opens the experiment's live event stream, after event `after`: run-level events of its runs and points
    /// announced without their data (a light way to follow a run's status: no log text, no points).
    pub fn experiment_events(
        &self,
        experiment: ExperimentId,
        after: Option<u64>,
    ) -> Result<Box<dyn std::io::BufRead + Send>> {
        self.events(
            &format!("/api/v1/experiments/{experiment}/events"),
            after,
            Entity::Experiment,
        )
    }

    fn events(
        &self,
        path: &str,
        after: Option<u64>,
        entity: Entity,
    ) -> Result<Box<dyn std::io::BufRead + Send>> {
        let q: Vec<(&str, String)> = after
            .map(|a| vec![("after", a.to_string())])
            .unwrap_or_default();
        let resp = self.shared.http.get_raw(path, &q, entity)?;
        Ok(Box::new(std::io::BufReader::new(
            resp.into_body().into_reader(),
        )))
    }

    // --- artifacts ---------------------------------------------------------------------------------------

    /// Uploads a local file, streamed (never read into memory whole).
    pub fn put_artifact(&self, run: &RunId, path: &str, file: &Path) -> Result<ArtifactInfo> {
        self.put_artifact_with_progress(run, path, file, &mut |_| {})
    }

    /// Like [`Self::put_artifact`], calling `progress(bytes_sent_so_far)` as the upload goes.
    pub fn put_artifact_with_progress(
        &self,
        run: &RunId,
        path: &str,
        file: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ArtifactInfo> {
        let path = validate::artifact_path(path)?;
        let f = std::fs::File::open(file).map_err(|e| {
            Error::invalid("file", format!("cannot open '{}': {e}", file.display()))
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = ProgressReader {
            inner: f,
            done: 0,
            progress,
        };
        self.shared.http.put_reader(
            &format!("/api/v1/runs/{run}/artifacts/{}", encode_path(&path)),
            &mut reader,
            len,
            Entity::Artifact,
        )
    }

    /// Uploads bytes held in memory.
    pub fn put_artifact_bytes(
        &self,
        run: &RunId,
        path: &str,
        bytes: &[u8],
    ) -> Result<ArtifactInfo> {
        let path = validate::artifact_path(path)?;
        let mut r = bytes;
        self.shared.http.put_reader(
            &format!("/api/v1/runs/{run}/artifacts/{}", encode_path(&path)),
            &mut r,
            bytes.len() as u64,
            Entity::Artifact,
        )
    }

    pub fn list_artifacts(
        &self,
        run: &RunId,
        prefix: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<ArtifactInfo>> {
        let mut q = Vec::new();
        if let Some(p) = prefix.filter(|p| !p.is_empty() && *p != "/" && *p != ".") {
            q.push(("prefix", validate::artifact_path(p)?));
        }
        if recursive {
            q.push(("recursive", "true".to_string()));
        }
        let r: ItemsOf<ArtifactInfo> =
            self.shared
                .http
                .get_json(&format!("/api/v1/runs/{run}/artifacts"), &q, Entity::Run)?;
        Ok(r.items)
    }

    /// Sends `batch` now and waits for the server's ack, for callers that choose the `batch_id` themselves (an
    /// import derives it from file offsets, so importing again adds nothing) and need the answer before going on.
    /// Ordinary logging goes through the non-blocking queue instead. A scalar-only batch travels in the binary
    /// column form ([`flightlog_model::scalar_wire`]): no number formatting here nor parsing on the server.
    pub fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck> {
        let path = format!("/api/v1/runs/{run}/batch");
        match flightlog_model::scalar_wire::encode(batch) {
            Some(bytes) => self
                .shared
                .http
                .try_send_bytes(
                    "POST",
                    &path,
                    &[],
                    &bytes,
                    flightlog_model::scalar_wire::MEDIA_TYPE,
                    Entity::Run,
                )
                .map_err(http::SendError::into_error),
            None => self
                .shared
                .http
                .send_json("POST", &path, batch, Entity::Run),
        }
    }

    /// A small artifact's bytes, in memory; [`Self::download_artifact`] streams large files to disk.
    pub fn read_artifact(&self, run: &RunId, path: &str) -> Result<Vec<u8>> {
        let path = validate::artifact_path(path)?;
        let resp = self.shared.http.get_raw(
            &format!("/api/v1/runs/{run}/artifacts/{}", encode_path(&path)),
            &[],
            Entity::Artifact,
        )?;
        resp.into_body()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| Error::Transport(format!("reading artifact '{path}': {e}")))
    }

    /// Downloads a file to `dest`, streamed into a temp file beside it and renamed into place when complete.
    pub fn download_artifact(&self, run: &RunId, path: &str, dest: &Path) -> Result<u64> {
        self.download_artifact_with_progress(run, path, dest, &mut |_, _| {})
    }

    /// Like [`Self::download_artifact`], calling `progress(bytes_so_far, total)` as it goes.
    pub fn download_artifact_with_progress(
        &self,
        run: &RunId,
        path: &str,
        dest: &Path,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64> {
        let path = validate::artifact_path(path)?;
        let resp = self.shared.http.get_raw(
            &format!("/api/v1/runs/{run}/artifacts/{}", encode_path(&path)),
            &[],
            Entity::Artifact,
        )?;
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = resp.into_body().into_reader();
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::invalid("output", format!("cannot create '{}': {e}", dir.display()))
        })?;
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "download".into());
        let tmp = dir.join(format!(
            ".{file_name}.{}.part",
            uuid::Uuid::new_v4().simple()
        ));
        // Reading the body is the network's part, writing the file the local disk's: a full disk is the
        // output's problem (Invalid), not a server that cannot be reached (Transport).
        let local = |e: std::io::Error| {
            Error::invalid("output", format!("cannot write '{}': {e}", dest.display()))
        };
        let result = (|| -> Result<u64> {
            let mut out = std::fs::File::create(&tmp).map_err(local)?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut done = 0u64;
            loop {
                let n = body
                    .read(&mut buf)
                    .map_err(|e| Error::Transport(format!("download of '{path}' failed: {e}")))?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut out, &buf[..n]).map_err(local)?;
                done += n as u64;
                progress(done, total);
            }
            out.sync_all().map_err(local)?;
            Ok(done)
        })();
        match result {
            Ok(n) => {
                if let Some(t) = total {
                    if t != n {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(Error::Transport(format!(
                            "download of '{path}' ended early: {n} of {t} bytes"
                        )));
                    }
                }
                std::fs::rename(&tmp, dest).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    Error::invalid("output", format!("cannot write '{}': {e}", dest.display()))
                })?;
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    pub fn delete_artifact(&self, run: &RunId, path: &str) -> Result<()> {
        let path = validate::artifact_path(path)?;
        self.shared.http.delete(
            &format!("/api/v1/runs/{run}/artifacts/{}", encode_path(&path)),
            Entity::Artifact,
        )
    }

    // --- delivery ------------------------------------------------------------------------------------------

    /// Blocks until everything enqueued before the call is acknowledged by the server, or `timeout` passes.
    /// Never fails because of the network: the report says what is still pending or spooled.
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport> {
        let target = self.shared.flush_target();
        let complete = self.shared.wait_done(target, Instant::now() + timeout);
        let (pending_points, pending_entries, spooled_entries) = self.shared.pending();
        let stats = self.shared.stats();
        Ok(FlushReport {
            complete,
            pending_points: if complete { 0 } else { pending_points },
            pending_entries: if complete { 0 } else { pending_entries },
            spooled_entries: if complete { 0 } else { spooled_entries },
            last_error: stats.last_error,
            rejected_entries: stats.rejected_entries,
        })
    }

    /// Flushes like [`Client::flush`], but stops waiting once the server has failed [`GIVE_UP_AFTER_FAILURES`]
    /// times in a row: at exit (or on SIGTERM) a server that is down is not waited for, since what is unsent
    /// is journaled and replayed later. True when everything was delivered.
    pub fn deliver(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.flush(left.min(DELIVER_STEP)).is_ok_and(|r| r.complete) {
                return true;
            }
            if Instant::now() >= deadline
                || self.shared.stats().consecutive_failures >= GIVE_UP_AFTER_FAILURES
            {
                return false;
            }
        }
    }

    /// The sender thread's handle, if not yet taken (by `close` or drop).
    fn take_sender(&self) -> Option<JoinHandle<()>> {
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Flushes (up to `timeout`), then stops the sender; anything still unsent goes to the journal for a later
    /// `flightlog sync` (or the next client's start). Logging after `close` is an error.
    pub fn close(&self, timeout: Duration) -> Result<FlushReport> {
        let report = self.flush(timeout)?;
        self.shared.close_and_spill();
        if let Some(h) = self.take_sender() {
            let _ = h.join();
        }
        let (_, _, spooled) = self.shared.pending();
        Ok(FlushReport {
            spooled_entries: spooled,
            ..report
        })
    }

    /// Counters: enqueued, sent, pending, spooled, last error.
    pub fn status(&self) -> ClientStatus {
        let s = self.shared.stats();
        let (pending_points, pending_entries, spooled_entries) = self.shared.pending();
        ClientStatus {
            uri: self.shared.destination().to_string(),
            enqueued_points: s.enqueued_points,
            sent_points: s.sent_points,
            sent_batches: s.sent_batches,
            duplicate_batches: s.duplicate_batches,
            pending_points,
            pending_entries,
            spooled_entries,
            spooled_total: s.spooled_entries,
            rejected_entries: s.rejected_entries,
            rejected_points: s.rejected_points,
            send_failures: s.send_failures,
            consecutive_failures: s.consecutive_failures,
            last_error: s.last_error,
            last_rejection: s.last_rejection,
        }
    }

    /// Sends every journal in `spool_dir` (only those written for `uri_filter`, if given); see [`replay_spool`].
    pub fn replay_spool(spool_dir: &Path, uri_filter: Option<&str>) -> Result<ReplayReport> {
        replay_spool(spool_dir, uri_filter)
    }
}

/// Starts the thread that sends what `shared` queues, and its watchdog (which journals what is pending while
/// a send hangs; it ends with the sender, on shutdown).
fn start_sender(shared: Arc<Shared>) -> JoinHandle<()> {
    let watched = shared.clone();
    if let Err(e) =
        flightlog_model::background::spawn("flightlog-watchdog", move || watched.run_watchdog())
    {
        tracing::warn!(
            "no watchdog for slow sends (a hung server keeps data in memory longer): {e}"
        );
    }
    flightlog_model::background::spawn("flightlog-sender", move || shared.run_sender())
        .expect("spawn the flightlog sender thread")
}

impl Drop for Client {
    /// Unsent data is written to the journal (fsynced); the sender stops after its current request.
    /// In a forked child (another pid) nothing is done: the parent sends and journals its own data, and waking
    /// the parent's waiters from the child would follow pointers to threads that do not exist here.
    fn drop(&mut self) {
        if std::process::id() != self.owner_pid {
            let sender = self.sender.get_mut();
            std::mem::forget(
                sender
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
            return;
        }
        self.shared.close_and_spill();
        let _ = self.take_sender();
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

/// An error unless a column (`field`) has one entry per item.
/// Checks what can be checked without the server (the store's own rules, so a write the server would refuse
/// raises at the log call instead of blocking the run's delivery behind it) and fills missing times with now.
fn check_and_stamp(mut write: MetricWrite) -> Result<MetricWrite> {
    validate::metric_write(&write)?;
    validate::write_size(&write)?;
    let now = WallTime::now();
    match &mut write {
        MetricWrite::Text { times, values, .. } => {
            times.get_or_insert_with(|| vec![now; values.len()]);
        }
        MetricWrite::Row { times, rows, .. } => {
            times.get_or_insert_with(|| vec![now; rows.len()]);
        }
        MetricWrite::List { time, .. }
        | MetricWrite::Table { time, .. }
        | MetricWrite::Json { time, .. }
        | MetricWrite::Histogram { time, .. } => {
            time.get_or_insert(now);
        }
    }
    Ok(write)
}

/// Decodes the `format=binary` scalar answer: u64 LE n, n i64 steps, n i64 times, n f64 values.
pub fn decode_binary_scalars(bytes: &[u8]) -> Result<ScalarSeries> {
    let bad = |why: &str| Error::Transport(format!("bad binary scalar answer: {why}"));
    if bytes.len() < 8 {
        return Err(bad("shorter than 8 bytes"));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    if bytes.len() != 8 + n.checked_mul(24).ok_or_else(|| bad("count overflows"))? {
        return Err(bad(&format!("{} bytes for {n} points", bytes.len())));
    }
    let word = |i: usize| -> [u8; 8] { bytes[8 + i * 8..16 + i * 8].try_into().unwrap() };
    let steps = (0..n).map(|i| i64::from_le_bytes(word(i))).collect();
    let times = (0..n)
        .map(|i| WallTime(i64::from_le_bytes(word(n + i))))
        .collect();
    let values = (0..n)
        .map(|i| F64(f64::from_le_bytes(word(2 * n + i))))
        .collect();
    Ok(ScalarSeries {
        steps,
        times,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_scalars_decode() {
        let mut b = 2u64.to_le_bytes().to_vec();
        for s in [3i64, 4] {
            b.extend_from_slice(&s.to_le_bytes());
        }
        for t in [10i64, 11] {
            b.extend_from_slice(&t.to_le_bytes());
        }
        let nan = f64::from_bits(0x7ff8_0000_0000_0042);
        for v in [1.5f64, nan] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let s = decode_binary_scalars(&b).unwrap();
        assert_eq!(s.steps, vec![3, 4]);
        assert_eq!(s.times, vec![WallTime(10), WallTime(11)]);
        assert_eq!(s.values[1].0.to_bits(), nan.to_bits());
        assert!(decode_binary_scalars(&b[..20]).is_err());
    }

    /// A client whose server is never there (port 1), journaling into `spool`.
    fn client_of_a_dead_server(spool: &Path) -> Client {
        Client::new(ClientConfig {
            uri: "http://127.0.0.1:1".into(),
            spool_dir: spool.to_path_buf(),
            replay_on_start: false,
            ..Default::default()
        })
    }

    #[test]
    fn deliver_gives_up_on_a_server_that_keeps_failing_long_before_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let client = client_of_a_dead_server(dir.path());
        assert!(client.deliver(Duration::ZERO), "nothing logged: delivered");
        client
            .log_scalar(&RunId::new(), "loss", Some(0), 1.0, None)
            .unwrap();
        let t = Instant::now();
        assert!(!client.deliver(Duration::from_secs(60)));
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gave up after {:?}",
            t.elapsed()
        );
        assert!(client.status().consecutive_failures >= GIVE_UP_AFTER_FAILURES);
    }

    #[test]
    fn logging_validates_and_never_blocks_without_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let client = client_of_a_dead_server(dir.path());
        let run = RunId::new();
        assert!(matches!(
            client.log_scalar(&run, "", None, 1.0, None),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(client.log_text_to_stream(&run, "a/b", "x").is_err());
        let t = Instant::now();
        for i in 0..100_000 {
            client
                .log_scalar(&run, "loss", Some(i), i as f64, None)
                .unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "logging took {:?}",
            t.elapsed()
        );
        let report = client.flush(Duration::from_millis(300)).unwrap();
        assert!(!report.complete);
        drop(client);
        // Everything went to the journal.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "journal"))
            .collect();
        assert_eq!(files.len(), 1);
        let contents =
            journal::read_journal(&mut std::fs::File::open(files[0].path()).unwrap()).unwrap();
        let points: usize = contents.records.iter().map(|r| r.entry.points()).sum();
        assert_eq!(points, 100_000);
        let mut seqs: Vec<u64> = contents.records.iter().map(|r| r.seq).collect();
        let sorted = {
            let mut s = seqs.clone();
            s.sort();
            s
        };
        assert_eq!(seqs, sorted, "journal order is seq order");
        seqs.dedup();
        assert_eq!(seqs.len(), contents.records.len());
    }
}
