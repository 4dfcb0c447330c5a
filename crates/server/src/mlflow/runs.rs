//! MLflow runs: create, get, update (incl. resume), delete, restore, search, and every logging call.

use super::artifact_roots::ArtifactRoots;
use super::batch_body::{self, Columns};
use super::convert::{
    self, checked_pair, clamp_infinite, latest_scalar, millis, one_or_many, opt_enum, opt_i64,
    parse_status, run_info_json, run_json, truncate_value, validate_key, KeyValue, RunView,
    MAX_PARAM_VALUE, MAX_TAG_VALUE, NOTE_TAG, PARENT_TAG, RUN_NAME_TAG,
};
use super::error::{MlError, MlResult};
use super::experiments::{experiment_id, max_results, view_type, MAX_RESULTS};
use super::search::{self, Kind, Row};
use super::{blocking, empty, Req};
use super::{inputs, models};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flightlog_model::{
    Batch, Error, Lifecycle, NewRun, Run, RunId, RunKeys, RunPatch, RunQuery, RunStatus,
    ScalarWrite, WallTime, F64,
};
use flightlog_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Document kinds holding what MLflow records about a run that flightlog has no field for.
pub const INPUTS_DOC: &str = "mlflow.run_inputs";
pub const OUTPUTS_DOC: &str = "mlflow.run_outputs";
/// log-batch limits (validation.py).
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
const MAX_BATCH_ENTITIES: usize = 1000;
const MAX_BATCH_BYTES: usize = 1_000_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/create", post(create))
        .route("/runs/get", get(get_one))
        .route("/runs/update", post(update))
        .route("/runs/delete", post(delete))
        .route("/runs/restore", post(restore))
        .route("/runs/search", post(search_runs).get(search_runs))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/delete-tag", post(delete_tag))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-inputs", post(inputs::log_inputs))
        .route("/runs/outputs", post(inputs::log_outputs))
        .route("/runs/log-model", post(log_model))
}

/// The run id of a request: `run_id`, else the legacy `run_uuid`.
pub fn run_id(id: Option<&str>, uuid: Option<&str>) -> MlResult<RunId> {
    let raw = id
        .filter(|s| !s.is_empty())
        .or(uuid.filter(|s| !s.is_empty()))
        .ok_or_else(|| MlError::missing("run_id"))?;
    raw.parse()
        .map_err(|_| MlError::not_found(format!("Run with id={raw} not found")))
}

/// The run, or MLflow's 404 wording.
pub fn find(store: &dyn Store, id: &RunId) -> MlResult<Run> {
    store.get_run(id).map_err(|e| match e {
        Error::NotFound { .. } => MlError::not_found(format!("Run with id={id} not found")),
        e => e.into(),
    })
}

/// Writes need an active run, as in MLflow.
pub(super) fn active(run: &Run) -> MlResult<()> {
    if run.lifecycle == Lifecycle::Deleted {
        return Err(MlError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is deleted.",
            run.id
        )));
    }
    Ok(())
}

/// A run's MLflow JSON with its inputs and outputs documents.
pub fn full_run_json(store: &dyn Store, run: &Run) -> MlResult<Value> {
    let inputs = store.get_document(INPUTS_DOC, run.id.as_str())?;
    let outputs = store.get_document(OUTPUTS_DOC, run.id.as_str())?;
    let artifact_uri = ArtifactRoots::new(store).run_uri(run);
    Ok(run_json(run, artifact_uri, inputs, outputs))
}

#[derive(Deserialize, Default)]
struct CreateReq {
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    run_name: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(State(st): State<AppState>, Req(r): Req<CreateReq>) -> MlResult<Json<Value>> {
    let exp = match r.experiment_id.as_deref() {
        None | Some("") => flightlog_model::ExperimentId::DEFAULT,
        raw => experiment_id(raw)?,
    };
    let mut tags = BTreeMap::new();
    for kv in &r.tags {
        let (k, v) = checked_pair("tag", kv)?;
        tags.insert(k, truncate_value(&v, MAX_TAG_VALUE));
    }
    let tag_name = tags.remove(RUN_NAME_TAG);
    let name = r.run_name.filter(|n| !n.is_empty());
    if let (Some(n), Some(t)) = (&name, &tag_name) {
        if n != t {
            return Err(MlError::invalid(format!(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different \
                 values (run_name='{n}', mlflow.runName='{t}')."
            )));
        }
    }
    let name = name.or(tag_name);
    let description = tags.remove(NOTE_TAG);
    let user = r
        .user_id
        .filter(|u| !u.is_empty())
        .or_else(|| tags.get("mlflow.user").cloned())
        .unwrap_or_default();
    let run = blocking(move || {
        let parent = tags
            .get(PARENT_TAG)
            .and_then(|p| p.parse::<RunId>().ok())
            .filter(|p| st.store.get_run(p).is_ok());
        if parent.is_some() {
            tags.remove(PARENT_TAG);
        }
        let new = NewRun {
            experiment_id: exp,
            display_name: name,
            description,
            parent_id: parent,
            status: Some(RunStatus::Running),
            start_time: r
                .start_time
                .map(|t| convert::run_time("start_time", t))
                .transpose()?,
            tags,
            user,
            ..Default::default()
        };
        let run = st.store.create_run(new).map_err(|e| match e {
            Error::NotFound { .. } => {
                MlError::not_found(format!("No Experiment with id={exp} exists"))
            }
            Error::Deleted { .. } => MlError::invalid(format!(
                "The experiment {exp} must be in the 'active' state. Current state is deleted."
            )),
            e => e.into(),
        })?;
        full_run_json(st.store.as_ref(), &run)
    })
    .await?;
    Ok(Json(json!({ "run": run })))
}

#[derive(Deserialize, Default)]
struct RunReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
}

async fn get_one(State(st): State<AppState>, Req(r): Req<RunReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let run = blocking(move || {
        let run = find(st.store.as_ref(), &id)?;
        full_run_json(st.store.as_ref(), &run)
    })
    .await?;
    Ok(Json(json!({ "run": run })))
}

#[derive(Deserialize, Default)]
struct UpdateReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "opt_enum")]
    status: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    end_time: Option<i64>,
    #[serde(default)]
    run_name: Option<String>,
}

/// Status and name changes. RUNNING on a finished run is MLflow's resume (`start_run(run_id=...)`): flightlog
/// re-opens the run explicitly ([`RunPatch::reopen`]) and drops the old end time the client echoes back.
async fn update(State(st): State<AppState>, Req(r): Req<UpdateReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let status = r.status.as_deref().map(parse_status).transpose()?;
    let end_time = r
        .end_time
        .map(|t| convert::run_time("end_time", t))
        .transpose()?;
    let info = blocking(move || {
        let run = find(st.store.as_ref(), &id)?;
        active(&run)?;
        let patch = update_patch(&run, status, end_time, r.run_name);
        let run = st.store.update_run(&id, patch)?;
        Ok(run_info_json(
            &run,
            ArtifactRoots::new(st.store.as_ref()).run_uri(&run),
        ))
    })
    .await?;
    Ok(Json(json!({ "run_info": info })))
}

fn update_patch(
    run: &Run,
    status: Option<RunStatus>,
    end: Option<WallTime>,
    name: Option<String>,
) -> RunPatch {
    // MLflow lets an ended run take any status (RUNNING again, or FAILED after FINISHED); flightlog's way out of
    // an ended state is an explicit reopen, which the new status then follows.
    // (Not for SCHEDULED, which no started run can go back to: the refusal then names the run's own status.)
    let reopen = run.status.is_terminal()
        && status.is_some_and(|s| s != run.status && s != RunStatus::Queued);
    // An end time belongs to an ended run: it is kept when the run is ending or has ended (MLflow also takes
    // `{"end_time": t}` alone, to correct a finished run's), and dropped for a run that goes on. A run moved
    // from one ended status to another keeps its end time unless given a new one, as on MLflow.
    let end_time = match status.unwrap_or(run.status).is_terminal() {
        false => None,
        true if reopen => end.or(run.end_time),
        true => end,
    };
    RunPatch {
        status,
        reopen,
        end_time,
        display_name: name.filter(|n| !n.is_empty()),
        ..Default::default()
    }
}

async fn set_lifecycle(st: AppState, r: RunReq, lifecycle: Lifecycle) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    blocking(move || {
        // Deleting a deleted run (or restoring an active one) changes nothing and is not an error.
        if find(st.store.as_ref(), &id)?.lifecycle == lifecycle {
            return Ok(());
        }
        let patch = RunPatch {
            lifecycle: Some(lifecycle),
            ..Default::default()
        };
        st.store.update_run(&id, patch)?;
        Ok(())
    })
    .await?;
    Ok(empty())
}

async fn delete(State(st): State<AppState>, Req(r): Req<RunReq>) -> MlResult<Json<Value>> {
    set_lifecycle(st, r, Lifecycle::Deleted).await
}

async fn restore(State(st): State<AppState>, Req(r): Req<RunReq>) -> MlResult<Json<Value>> {
    set_lifecycle(st, r, Lifecycle::Active).await
}

// --- logging ---------------------------------------------------------------------------------------------

/// A checked metric point: (key, value with ±Inf clamped, timestamp ms, step).
type Point<'a> = (&'a str, f64, i64, i64);

/// Checked points of a batch; each distinct key is validated once (a batch repeats few keys many times).
fn checked_metrics<'a>(metrics: &'a [BatchMetric<'a>]) -> MlResult<Vec<Point<'a>>> {
    let mut valid: Vec<&str> = Vec::new();
    metrics
        .iter()
        .map(|m| {
            let key = m.key.as_deref().ok_or_else(|| MlError::missing("key"))?;
            if !valid.contains(&key) {
                validate_key("metric", key)?;
                if valid.len() < 64 {
                    valid.push(key);
                }
            }
            if m.dataset_name.is_some() != m.dataset_digest.is_some() {
                return Err(MlError::invalid(
                    "Both dataset_name and dataset_digest must be provided if one is provided",
                ));
            }
            let value = m.value.ok_or_else(|| MlError::missing("value"))?.0;
            let ts = m.timestamp.ok_or_else(|| MlError::missing("timestamp"))?;
            let ts = convert::metric_timestamp(ts)?;
            Ok((key, clamp_infinite(value), ts, m.step.unwrap_or(0)))
        })
        .collect()
}

/// Metric points as a flightlog batch, one scalar series per key, points in request order.
fn metric_batch(points: &[Point]) -> Batch {
    let mut columns = Columns::default();
    for &(key, value, ts, step) in points {
        columns.push(key, value, ts, step);
    }
    scalar_batch(columns.finish())
}

/// Scalar writes as a batch whose points are stored once however often they are sent, as MLflow stores them.
/// That also makes a request the client retries after a 5xx harmless, with no batch id: its points are all
/// stored already.
fn scalar_batch(scalars: Vec<ScalarWrite>) -> Batch {
    Batch {
        scalars,
        drop_repeated_points: true,
        ..Default::default()
    }
}

/// A log-metric body: the run and one metric in log-batch's form, checked by the same code.
#[derive(Deserialize, Default)]
struct LogMetricReq<'a> {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(flatten, borrow)]
    metric: BatchMetric<'a>,
}

async fn log_metric(State(st): State<AppState>, body: Bytes) -> MlResult<Json<Value>> {
    let r: LogMetricReq = parse(&body)?;
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let metrics = std::slice::from_ref(&r.metric);
    let point = checked_metrics(metrics)?;
    let for_models = model_metrics(&id, metrics, &point);
    let writes = Writes {
        batch: Some(metric_batch(&point)),
        for_models,
        ..Default::default()
    };
    writes.store(&st, id).await?;
    Ok(empty())
}

/// What one log-metric or log-batch request stores.
#[derive(Default)]
struct Writes {
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// The metric points, if any.
    batch: Option<Batch>,
    /// The points that also belong to logged models (see [`model_metrics`]).
    for_models: Vec<(String, Value)>,
}

impl Writes {
    /// Stores everything, checking first that every model named exists. Points alone (a training loop's every
    /// step) go straight to the store's writer and are awaited without a blocking-pool thread; anything else
    /// needs reads or several writes, done on the pool.
    async fn store(self, st: &AppState, id: RunId) -> MlResult<()> {
        if self.params.is_empty() && self.tags.is_empty() && self.for_models.is_empty() {
            if let Some(batch) = self.batch {
                return crate::extract::write_batch(st.store.as_ref(), &id, batch)
                    .await
                    .map(|_| ())
                    .map_err(|e| metric_write_error(&id, e));
            }
        }
        let store = st.store.clone();
        blocking(move || self.write(store.as_ref(), &id)).await
    }

    /// [`Writes::store`]'s general path, on the blocking pool: params, tags and points in one commit, so a
    /// crash never keeps a step's params without its metrics.
    fn write(self, store: &dyn Store, id: &RunId) -> MlResult<()> {
        models::check_exist(store, &self.for_models)?;
        let patch = if self.params.is_empty() && self.tags.is_empty() {
            None
        } else {
            params_tags_patch(store, id, self.params, self.tags)?
        };
        match (patch, self.batch) {
            (Some(patch), Some(b)) => {
                (store.update_run_and_write_batch(id, patch, b))
                    .map_err(|e| metric_write_error(id, e))?;
            }
            (Some(patch), None) => {
                store.update_run(id, patch)?;
            }
            (None, Some(b)) => write_metrics(store, id, b)?,
            (None, None) => find(store, id).and_then(|run| active(&run))?,
        }
        models::add_metrics(store, self.for_models)
    }
}

fn write_metrics(store: &dyn Store, id: &RunId, batch: Batch) -> MlResult<()> {
    store
        .write_batch(id, batch)
        .map_err(|e| metric_write_error(id, e))?;
    Ok(())
}

/// A metric write's store error as MLflow words it.
fn metric_write_error(id: &RunId, e: Error) -> MlError {
    match e {
        Error::NotFound { .. } => MlError::not_found(format!("Run with id={id} not found")),
        Error::Deleted { .. } => MlError::invalid(format!(
            "The run {id} must be in the 'active' state. Current state is deleted."
        )),
        e => e.into(),
    }
}

/// A JSON body parsed with MLflow's error code (for handlers that also need the raw bytes); the value may
/// borrow strings from the body.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> MlResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    crate::extract::parse_json(body).map_err(|e| MlError::invalid(e.message()))
}

#[derive(Deserialize, Default)]
struct KeyValueReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

async fn log_param(State(st): State<AppState>, Req(r): Req<KeyValueReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let kv = KeyValue {
        key: r.key,
        value: r.value,
    };
    let (k, v) = checked_pair("param", &kv)?;
    let params = BTreeMap::from([(k, truncate_value(&v, MAX_PARAM_VALUE))]);
    blocking(move || write_params_tags(st.store.as_ref(), &id, params, BTreeMap::new())).await?;
    Ok(empty())
}

async fn set_tag(State(st): State<AppState>, Req(r): Req<KeyValueReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let kv = KeyValue {
        key: r.key,
        value: r.value,
    };
    let (k, v) = checked_pair("tag", &kv)?;
    let tags = BTreeMap::from([(k, truncate_value(&v, MAX_TAG_VALUE))]);
    blocking(move || write_params_tags(st.store.as_ref(), &id, BTreeMap::new(), tags)).await?;
    Ok(empty())
}

/// Params (write-once, with MLflow's message for a changed value) and tags in one atomic patch; the
/// `mlflow.runName` tag renames the run.
fn write_params_tags(
    store: &dyn Store,
    id: &RunId,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
) -> MlResult<()> {
    if let Some(patch) = params_tags_patch(store, id, params, tags)? {
        store.update_run(id, patch)?;
    }
    Ok(())
}

/// The change that logs `params` and `tags` to the run as MLflow does (a param re-logged with another value
/// is refused; the name and note tags set the run's name and description), or `None` when it holds them all.
fn params_tags_patch(
    store: &dyn Store,
    id: &RunId,
    params: BTreeMap<String, String>,
    mut tags: BTreeMap<String, String>,
) -> MlResult<Option<RunPatch>> {
    let run = find(store, id)?;
    active(&run)?;
    for (k, v) in &params {
        if let Some(old) = run.params.get(k).filter(|old| *old != v) {
            return Err(MlError::invalid(format!(
                "Changing param values is not allowed. Param with key='{k}' was already logged with \
                 value='{old}' for run ID='{id}'. Attempted logging new value '{v}'."
            )));
        }
    }
    let name = tags.remove(RUN_NAME_TAG).filter(|n| !n.is_empty());
    let description = tags.remove(NOTE_TAG).filter(|d| *d != run.description);
    let params: BTreeMap<_, _> = params
        .into_iter()
        .filter(|(k, _)| !run.params.contains_key(k))
        .collect();
    tags.retain(|k, v| run.tags.get(k) != Some(v));
    let renamed = name.as_ref().is_some_and(|n| *n != run.display_name);
    if params.is_empty() && tags.is_empty() && !renamed && description.is_none() {
        return Ok(None);
    }
    Ok(Some(RunPatch {
        display_name: name,
        description,
        set_tags: tags,
        add_params: params,
        ..Default::default()
    }))
}

async fn delete_tag(State(st): State<AppState>, Req(r): Req<KeyValueReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let key = MlError::required(r.key, "key")?;
    blocking(move || {
        let run = find(st.store.as_ref(), &id)?;
        active(&run)?;
        if key == NOTE_TAG && !run.description.is_empty() {
            let patch = RunPatch {
                description: Some(String::new()),
                ..Default::default()
            };
            return Ok(st.store.update_run(&id, patch)?);
        }
        if key == RUN_NAME_TAG {
            // MLflow drops the tag and keeps the name; a flightlog run's name is its tag, and stays.
            return Ok(run);
        }
        if !run.tags.contains_key(&key) {
            return Err(MlError::not_found(format!(
                "No tag with name: {key} in run with id {id}"
            )));
        }
        let patch = RunPatch {
            remove_tags: vec![key],
            ..Default::default()
        };
        Ok(st.store.update_run(&id, patch)?)
    })
    .await?;
    Ok(empty())
}

#[derive(Deserialize, Default)]
struct BatchReq<'a> {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default, borrow)]
    metrics: Vec<BatchMetric<'a>>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn log_batch(State(st): State<AppState>, body: Bytes) -> MlResult<Json<Value>> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(MlError::invalid(format!(
            "Batched logging API requests must be at most {MAX_BATCH_BYTES} bytes, got a request of {} bytes",
            body.len()
        )));
    }
    if let Some(plain) = batch_body::plain_metrics(&body, MAX_BATCH_METRICS) {
        let id = run_id(Some(plain.run_id), None)?;
        let writes = Writes {
            batch: Some(scalar_batch(plain.scalars)),
            ..Default::default()
        };
        writes.store(&st, id).await?;
        return Ok(empty());
    }
    let r: BatchReq = parse(&body)?;
    let id = run_id(r.run_id.as_deref(), None)?;
    check_batch_limits(&r)?;
    let points = checked_metrics(&r.metrics)?;
    let params = batch_params(&r.params)?;
    let mut tags = BTreeMap::new();
    for kv in &r.tags {
        let (k, v) = checked_pair("tag", kv)?;
        tags.insert(k, truncate_value(&v, MAX_TAG_VALUE));
    }
    let writes = Writes {
        params,
        tags,
        batch: (!points.is_empty()).then(|| metric_batch(&points)),
        for_models: model_metrics(&id, &r.metrics, &points),
    };
    writes.store(&st, id).await?;
    Ok(empty())
}

/// A log-batch metric; its key borrows from the request body (a batch holds up to 1,000 of them).
#[derive(Deserialize, Default)]
struct BatchMetric<'a> {
    #[serde(default, borrow, deserialize_with = "convert::opt_cow_str")]
    key: Option<Cow<'a, str>>,
    #[serde(default)]
    value: Option<F64>,
    #[serde(default, deserialize_with = "opt_i64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    step: Option<i64>,
    /// MLflow 3: the logged model the point also belongs to (the client sets it after `log_model`).
    #[serde(default, borrow, deserialize_with = "convert::opt_cow_str")]
    model_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "convert::opt_cow_str")]
    dataset_name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "convert::opt_cow_str")]
    dataset_digest: Option<Cow<'a, str>>,
}

/// The points that name a logged model, as that model's metrics show them (`data.metrics`), by model id.
fn model_metrics(run: &RunId, metrics: &[BatchMetric], points: &[Point]) -> Vec<(String, Value)> {
    metrics
        .iter()
        .zip(points)
        .filter_map(|(m, &(key, value, timestamp, step))| {
            let model = m.model_id.as_deref().filter(|id| !id.is_empty())?;
            let mut point = json!({
                "key": key, "value": convert::double(value), "timestamp": timestamp, "step": step,
                "model_id": model, "run_id": run.as_str(),
            });
            for (field, v) in [
                ("dataset_name", &m.dataset_name),
                ("dataset_digest", &m.dataset_digest),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    point[field] = json!(v);
                }
            }
            Some((model.to_string(), point))
        })
        .collect()
}

fn check_batch_limits(r: &BatchReq) -> MlResult<()> {
    let limits = [
        ("metrics", r.metrics.len(), MAX_BATCH_METRICS),
        ("params", r.params.len(), MAX_BATCH_PARAMS),
        ("tags", r.tags.len(), MAX_BATCH_TAGS),
    ];
    for (what, n, max) in limits {
        if n > max {
            return Err(MlError::invalid(format!(
                "A batch logging request can contain at most {max} {what}. Got {n} {what}. \
                 Please split up {what} across multiple requests and try again."
            )));
        }
    }
    let total = r.metrics.len() + r.params.len() + r.tags.len();
    if total > MAX_BATCH_ENTITIES {
        return Err(MlError::invalid(format!(
            "A batch logging request can contain at most {MAX_BATCH_ENTITIES} total metrics, params \
             and tags. Got {total} in total."
        )));
    }
    Ok(())
}

/// Batch params: valid keys, each key once.
fn batch_params(kvs: &[KeyValue]) -> MlResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut dupes = Vec::new();
    for kv in kvs {
        let (k, v) = checked_pair("param", kv)?;
        if out
            .insert(k.clone(), truncate_value(&v, MAX_PARAM_VALUE))
            .is_some()
        {
            dupes.push(k);
        }
    }
    if !dupes.is_empty() {
        return Err(MlError::invalid(format!(
            "Duplicate parameter keys have been submitted: {dupes:?}. Please ensure the request \
             contains only one param value per param key."
        )));
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
struct LogModelReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    model_json: Option<String>,
}

/// The legacy log-model call appends the model's JSON to the `mlflow.log-model.history` tag, as MLflow does.
async fn log_model(State(st): State<AppState>, Req(r): Req<LogModelReq>) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), None)?;
    let model: Value = serde_json::from_str(r.model_json.as_deref().unwrap_or(""))
        .map_err(|e| MlError::invalid(format!("Invalid model_json: {e}")))?;
    mandatory_model_fields(&model)?;
    blocking(move || {
        let run = find(st.store.as_ref(), &id)?;
        active(&run)?;
        const TAG: &str = "mlflow.log-model.history";
        let mut history: Vec<Value> = run
            .tags
            .get(TAG)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        history.push(model);
        let text = serde_json::to_string(&history).map_err(Error::storage)?;
        let patch = RunPatch {
            set_tags: BTreeMap::from([(TAG.to_string(), text)]),
            ..Default::default()
        };
        Ok(st.store.update_run(&id, patch)?)
    })
    .await?;
    Ok(empty())
}

/// A logged model's JSON has the fields readers of the history tag (the UI's model list) rely on, as MLflow's
/// server requires.
fn mandatory_model_fields(model: &Value) -> MlResult<()> {
    let Value::Object(fields) = model else {
        return Err(MlError::invalid(
            "Invalid model_json: a model is a JSON object (an MLmodel file's fields)",
        ));
    };
    let missing: Vec<String> = ["artifact_path", "flavors", "run_id", "utc_time_created"]
        .into_iter()
        .filter(|f| !fields.contains_key(*f))
        .map(|f| format!("'{f}'"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MlError::invalid(format!(
            "Model json is missing mandatory fields: {{{}}}",
            missing.join(", ")
        )))
    }
}

// --- search ----------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct SearchReq {
    #[serde(default, deserialize_with = "one_or_many")]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default, deserialize_with = "opt_enum")]
    run_view_type: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "one_or_many")]
    order_by: Vec<String>,
    #[serde(default)]
    page_token: Option<String>,
}

async fn search_runs(State(st): State<AppState>, Req(r): Req<SearchReq>) -> MlResult<Response> {
    let search = RunSearch::parse(r)?;
    let body = blocking(move || search.execute(st.store.as_ref())).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A runs/search response, written straight to bytes.
#[derive(Serialize)]
struct SearchPage<'a> {
    runs: Vec<RunView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// A checked runs/search request.
struct RunSearch {
    limit: usize,
    lifecycles: &'static [Lifecycle],
    conditions: Vec<search::Condition>,
    order: Vec<search::OrderBy>,
    experiments: Vec<flightlog_model::ExperimentId>,
    token: Option<String>,
}

impl RunSearch {
    /// Everything that can be wrong with the request is found here, before the store is read.
    fn parse(r: SearchReq) -> MlResult<Self> {
        Ok(RunSearch {
            limit: max_results(r.max_results, 1000, MAX_RESULTS)?,
            lifecycles: view_type(r.run_view_type.as_deref()),
            conditions: search::parse_filter(&search::RUNS, r.filter.as_deref().unwrap_or(""))?,
            order: r
                .order_by
                .iter()
                .map(|o| search::parse_order_by(&search::RUNS, o))
                .collect::<MlResult<_>>()?,
            experiments: r
                .experiment_ids
                .iter()
                .map(|e| experiment_id(Some(e)))
                .collect::<MlResult<_>>()?,
            token: r.page_token,
        })
    }

    /// Filters, sorts (ties: newest start first, then run id) and pages the runs of the experiments; the
    /// response's JSON.
    fn execute(&self, store: &dyn Store) -> MlResult<Vec<u8>> {
        if self.experiments.is_empty() {
            // MLflow's server searches the experiments named, so none finds nothing (the store would read
            // none as "all").
            return Ok(b"{}".to_vec());
        }
        // Only what the filter and order name is read of every run; the page's runs are then read in full.
        let found = find_runs(
            store,
            self.experiments.clone(),
            self.lifecycles,
            &self.conditions,
            &self.order,
            false,
        )?;
        let found_inputs = found.inputs.is_some();
        let (lean, next) = search::page(found.runs, self.limit, self.token.as_deref())?;
        let ids: Vec<RunId> = lean.into_iter().map(|r| r.id).collect();
        let mut page = store.get_runs(&ids)?;
        store.fill_metrics(&mut page)?;
        let mut outputs: HashMap<String, Value> = HashMap::new();
        let mut inputs = found.inputs.unwrap_or_default();
        if !page.is_empty() {
            outputs.extend(store.list_documents(OUTPUTS_DOC)?);
            if !found_inputs {
                inputs.extend(store.list_documents(INPUTS_DOC)?);
            }
        }
        let roots = ArtifactRoots::new(store);
        let runs = page
            .iter()
            .map(|run| {
                let id = run.id.as_str();
                RunView::of(
                    run,
                    roots.run_uri(run),
                    inputs.remove(id),
                    outputs.remove(id),
                )
            })
            .collect();
        let body = SearchPage {
            runs,
            next_page_token: next,
        };
        serde_json::to_vec(&body).map_err(|e| MlError::from(Error::storage(e)))
    }
}

/// The dataset-inputs documents by run id.
type Inputs = HashMap<String, Value>;

/// What [`find_runs`] found.
pub(crate) struct Found {
    /// The matching runs, sorted.
    pub runs: Vec<Run>,
    /// The dataset-inputs documents, when a filter read them.
    pub inputs: Option<Inputs>,
}

/// The runs of the experiments in `lifecycles` that pass every condition, sorted by `order` (ties: newest
/// start first, then run id). Shared by runs/search and the native runs table (`GET /api/v1/runs/table`),
/// so both read one grammar the same way. Each run's filter/sort row holds only the values the conditions
/// and the order name; with no conditions and the default order no row is built at all.
pub(crate) fn find_runs(
    store: &dyn Store,
    experiments: Vec<flightlog_model::ExperimentId>,
    lifecycles: &[Lifecycle],
    conditions: &[search::Condition],
    order: &[search::OrderBy],
    with_metrics: bool,
) -> MlResult<Found> {
    let with_deleted = lifecycles.contains(&Lifecycle::Deleted);
    let ties = [
        search::attr_order(Kind::NumberAttr, "start_time", false),
        search::attr_order(Kind::TextAttr, "run_id", true),
    ];
    let idents: Vec<&search::Ident> = conditions
        .iter()
        .map(|c| &c.ident)
        .chain(order.iter().map(|o| &o.ident))
        .collect();
    let reads = |kind: Kind| idents.iter().any(|i| i.kind == kind);
    // Without metrics the caller re-reads its page in full, so only what the filter and order name is read
    // (metrics included, in the same query).
    let only_keys = (!with_metrics).then(|| RunKeys {
        params: keys_of(&idents, Kind::Param),
        tags: keys_of(&idents, Kind::Tag),
        metrics: keys_of(&idents, Kind::Metric),
    });
    let mut runs = all_runs(
        store,
        RunQuery {
            experiment_ids: experiments,
            include_deleted: with_deleted,
            with_metrics,
            params: param_equalities(conditions),
            only_keys,
            ..Default::default()
        },
    )?;
    runs.retain(|run| lifecycles.contains(&run.lifecycle));
    let inputs: Option<Inputs> = if reads(Kind::Dataset) {
        Some(store.list_documents(INPUTS_DOC)?.into_iter().collect())
    } else {
        None
    };
    if conditions.is_empty() && order.is_empty() {
        // The default order, straight on the runs: newest start first, then run id.
        runs.sort_by(|a, b| {
            start_millis(b)
                .cmp(&start_millis(a))
                .then_with(|| a.id.as_str().cmp(b.id.as_str()))
        });
        return Ok(Found { runs, inputs });
    }
    let mut idents = idents;
    idents.extend(ties.iter().map(|t| &t.ident));
    let roots = ArtifactRoots::new(store);
    let artifact_uri = |run: &Run| roots.run_uri(run);
    let mut items: Vec<(Row, Run)> = runs
        .into_iter()
        .map(|run| {
            let docs = inputs.as_ref().and_then(|i| i.get(run.id.as_str()));
            (row(&run, docs, &idents, &artifact_uri), run)
        })
        .filter(|(row, _)| search::matches_all(row, conditions))
        .collect();
    search::sort(&mut items, order, &ties);
    Ok(Found {
        runs: items.into_iter().map(|(_, run)| run).collect(),
        inputs,
    })
}

/// The keys of the identifiers of one kind, each once.
fn keys_of(idents: &[&search::Ident], kind: Kind) -> Vec<String> {
    let mut keys: Vec<String> = idents
        .iter()
        .filter(|i| i.kind == kind)
        .map(|i| i.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The `params.k = 'v'` conditions, which the store can check as it reads the runs (the filter checks them
/// again: MLflow's filters are conjunctions, so leaving runs out early never changes the result).
fn param_equalities(conditions: &[search::Condition]) -> BTreeMap<String, Option<String>> {
    conditions
        .iter()
        .filter(|c| c.ident.kind == Kind::Param && c.op == search::Op::Eq)
        .filter_map(|c| match &c.value {
            search::Literal::Text(v) => Some((c.ident.key.clone(), Some(v.clone()))),
            _ => None,
        })
        .collect()
}

fn start_millis(run: &Run) -> i64 {
    millis(run.start_time.unwrap_or(run.created_time))
}

/// Every run `query` finds, read page after page.
fn all_runs(store: &dyn Store, query: RunQuery) -> MlResult<Vec<Run>> {
    Ok(flightlog_model::Page::collect_all(|page_token| {
        store.list_runs(&RunQuery {
            limit: Some(MAX_RESULTS as u32),
            page_token,
            ..query.clone()
        })
    })?)
}

/// What a filter or sort sees of a run: the values `idents` name, nothing else.
fn row(
    run: &Run,
    inputs: Option<&Value>,
    idents: &[&search::Ident],
    artifact_uri: &dyn Fn(&Run) -> String,
) -> Row {
    let mut row = Row::default();
    let mut datasets = false;
    for ident in idents {
        let key = ident.key.as_str();
        match ident.kind {
            Kind::Metric => {
                if row.metrics.contains_key(key) {
                    continue;
                }
                if let Some((v, _, _)) = run
                    .metrics
                    .iter()
                    .rev()
                    .filter(|s| s.name == key)
                    .find_map(latest_scalar)
                {
                    row.metrics.insert(key.to_string(), v);
                }
            }
            Kind::Param => {
                if let Some(v) = run.params.get(key) {
                    row.params.insert(key.to_string(), v.clone());
                }
            }
            Kind::Tag => {
                if let Some(v) = convert::run_tag(run, key) {
                    row.tags.insert(key.to_string(), v.to_string());
                }
            }
            Kind::TextAttr => {
                let value = match key {
                    "run_id" => ("run_id", run.id.to_string()),
                    "run_name" => ("run_name", run.display_name.clone()),
                    "status" => ("status", convert::status_name(run.status).to_string()),
                    "user_id" => ("user_id", run.user.clone()),
                    "artifact_uri" => ("artifact_uri", artifact_uri(run)),
                    "lifecycle_stage" => ("lifecycle_stage", run.lifecycle.as_str().to_string()),
                    _ => continue,
                };
                row.text.insert(value.0, value.1);
            }
            Kind::NumberAttr => match key {
                "start_time" => {
                    row.numbers.insert("start_time", start_millis(run) as f64);
                }
                "end_time" => {
                    if let Some(end) = run.end_time {
                        row.numbers.insert("end_time", millis(end) as f64);
                    }
                }
                _ => {}
            },
            Kind::Dataset => datasets = true,
        }
    }
    if !datasets {
        return row;
    }
    for d in inputs
        .and_then(|i| i["dataset_inputs"].as_array())
        .into_iter()
        .flatten()
    {
        let context = d["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["key"] == "mlflow.data.context")
            .and_then(|t| t["value"].as_str())
            .map(str::to_string);
        let field = |f: &str| Some(d["dataset"][f].as_str().unwrap_or("").to_string());
        row.datasets.push([field("name"), field("digest"), context]);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_group_by_key_in_order() {
        let pts = [
            ("b", 1.0, 1000, 0),
            ("a", 2.0, 2000, 1),
            ("b", 3.0, 3000, 2),
        ];
        let batch = metric_batch(&pts);
        assert_eq!(batch.scalars.len(), 2);
        assert_eq!(batch.scalars[0].name, "b");
        assert_eq!(batch.scalars[0].steps, Some(vec![Some(0), Some(2)]));
        assert_eq!(
            batch.scalars[0].times.as_ref().unwrap()[1],
            WallTime(3_000_000)
        );
    }

    /// What the general path stores for a log-batch body, if it accepts it.
    fn general_path(body: &str) -> Option<Vec<ScalarWrite>> {
        let r: BatchReq = parse(body.as_bytes()).ok()?;
        check_batch_limits(&r).ok()?;
        let points = checked_metrics(&r.metrics).ok()?;
        Some(metric_batch(&points).scalars)
    }

    /// A number token as clients write them: integers, shortest decimals, exponents, signs, extreme values.
    fn number(rng: &mut u64, integer: bool) -> String {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let r = *rng;
        if integer {
            return match r % 4 {
                0 => (r as i64).to_string(),
                1 => ((r >> 20) as i64 - (1 << 42)).to_string(),
                2 => "-0".into(),
                _ => (r % 1000).to_string(),
            };
        }
        let v = f64::from_bits(r);
        match r % 6 {
            _ if !v.is_finite() => "1e308".into(),
            0 => format!("{v}"),
            1 => format!("{v:e}"),
            2 => format!("{v:E}").replacen("E", "E+", 1).replace("+-", "-"),
            3 => format!("{}", (r % 100_000) as f64 / 7.0),
            4 => format!("{}", r >> 11),
            _ => format!("{:.3e}", (r % 1000) as f64 * 1e-300),
        }
    }

    /// A timestamp MLflow accepts and flightlog stores exactly, in one of [`number`]'s integer spellings.
    fn timestamp(rng: &mut u64) -> String {
        let t = number(rng, true);
        match t.parse::<i64>() {
            Ok(v) if !(0..=convert::MAX_MILLIS).contains(&v) => {
                (v.unsigned_abs() % convert::MAX_MILLIS as u64).to_string()
            }
            _ => t,
        }
    }

    #[test]
    fn the_fast_path_stores_exactly_what_the_general_path_does() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            let spaces = ["", " ", "\n  ", "\t"][round % 4];
            let points: Vec<String> = (0..1 + round % 40)
                .map(|i| {
                    let key = ["loss", "acc", "val/loss", "lr", "m é"][(i + round) % 5];
                    let (v, ts, step) = (number(&mut rng, false), timestamp(&mut rng), number(&mut rng, true));
                    let step = if i % 7 == 3 { String::new() } else { format!(",{spaces}\"step\":{spaces}{step}") };
                    format!("{{\"key\":{spaces}\"{key}\",\"value\": {v},{spaces}\"timestamp\":{ts}{step}}}")
                })
                .collect();
            let body = format!(
                "{spaces}{{\"run_id\":\"r\",{spaces}\"metrics\":[{}]{spaces}}}",
                points.join(&format!(",{spaces}"))
            );
            let fast = batch_body::plain_metrics(body.as_bytes(), MAX_BATCH_METRICS)
                .unwrap_or_else(|| panic!("not taken: {body}"));
            assert_eq!(Some(fast.scalars), general_path(&body), "{body}");
        }
    }

    #[test]
    fn the_fast_path_takes_nothing_the_general_path_refuses() {
        let bodies = [
            r#"{"run_id":"r","metrics":[{"key":"","value":1,"timestamp":1}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a b?","value":1,"timestamp":1}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":-1}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":9223372036854776}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":-}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":1e}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":1}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":1,"timestamp":1}]]"#,
        ];
        for body in bodies {
            assert!(
                general_path(body).is_none(),
                "the general path takes {body}"
            );
            assert!(
                batch_body::plain_metrics(body.as_bytes(), MAX_BATCH_METRICS).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn resume_reopens_only_finished_runs() {
        let mut run = convert_test_run();
        run.status = RunStatus::Completed;
        let p = update_patch(
            &run,
            Some(RunStatus::Running),
            Some(WallTime::from_millis(5)),
            None,
        );
        assert!(p.reopen);
        assert_eq!(p.end_time, None);
        run.status = RunStatus::Running;
        let p = update_patch(
            &run,
            Some(RunStatus::Completed),
            Some(WallTime::from_millis(5)),
            Some("n".into()),
        );
        assert!(!p.reopen);
        assert_eq!(p.end_time, Some(WallTime(5000)));
        assert_eq!(p.display_name.as_deref(), Some("n"));
    }

    #[test]
    fn rows_hold_only_what_is_named_and_match_the_full_tags() {
        let mut run = convert_test_run();
        run.description = "note".into();
        run.parent_id = Some(RunId::new());
        run.tags.insert("team".into(), "x".into());
        run.params.insert("p".into(), "1".into());
        let full = convert::run_tags(&run);
        for key in [RUN_NAME_TAG, NOTE_TAG, PARENT_TAG, "team", "missing"] {
            assert_eq!(convert::run_tag(&run, key), full.get(key).copied(), "{key}");
        }
        // The name and description fields win over stored tags of their keys; a stored parent tag stays.
        let mut stale = run.clone();
        for key in [RUN_NAME_TAG, NOTE_TAG, PARENT_TAG] {
            stale.tags.insert(key.into(), "stored".into());
        }
        let full = convert::run_tags(&stale);
        for (key, want) in [
            (RUN_NAME_TAG, stale.display_name.as_str()),
            (NOTE_TAG, "note"),
            (PARENT_TAG, "stored"),
        ] {
            assert_eq!(convert::run_tag(&stale, key), Some(want), "{key}");
            assert_eq!(full.get(key).copied(), Some(want), "{key}");
        }
        let ident = |kind, key: &str| search::Ident {
            kind,
            key: key.into(),
        };
        let named = [
            ident(Kind::Param, "p"),
            ident(Kind::NumberAttr, "start_time"),
        ];
        let r = row(&run, None, &named.iter().collect::<Vec<_>>(), &|_| {
            unreachable!("not named")
        });
        assert_eq!(r.params.len(), 1);
        assert!(r.tags.is_empty() && r.metrics.is_empty() && r.text.is_empty());
        assert_eq!(
            r.numbers.get("start_time"),
            Some(&(start_millis(&run) as f64))
        );
    }

    fn convert_test_run() -> Run {
        serde_json::from_value(json!({
            "id": RunId::new(), "experiment_id": "0", "display_name": "r", "status": "Running",
            "lifecycle": "active", "created_time": 1
        }))
        .unwrap()
    }

    #[test]
    fn batch_limits_and_duplicate_params() {
        let kv = |k: &str| KeyValue {
            key: Some(k.into()),
            value: Some("v".into()),
        };
        let e = batch_params(&[kv("a"), kv("a")]).unwrap_err();
        assert!(
            e.message.contains("Duplicate parameter keys"),
            "{}",
            e.message
        );
        let r = BatchReq {
            params: (0..101).map(|i| kv(&format!("p{i}"))).collect(),
            ..Default::default()
        };
        assert!(check_batch_limits(&r)
            .unwrap_err()
            .message
            .contains("at most 100 params"));
    }
}
