//! MLflow 3 logged models: create, get, finalize, tags, params, search, delete.

use super::artifact_roots::experiment_root;
use super::convert::{checked_pair, opt_enum, opt_i64, KeyValue};
use super::error::{MlError, MlResult};
use super::experiments::{self, max_results};
use super::search::{self, Kind, Row};
use super::{blocking, empty, Req};
use crate::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use flightlog_model::{Error, ExperimentId, Lifecycle, RunId, WallTime};
use flightlog_store::{FileOwner, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Logged models are documents of this kind; their files live in the source run's artifact storage under
/// `models/<id>/`.
pub const MODEL_DOC: &str = "mlflow.logged_model";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/logged-models", post(create))
        .route("/logged-models/search", post(search_models))
        .route(
            "/logged-models/{id}",
            get(get_one).patch(finalize).delete(remove),
        )
        .route("/logged-models/{id}/tags", patch(set_tags))
        .route("/logged-models/{id}/tags/{key}", delete(delete_tag))
        .route("/logged-models/{id}/params", post(log_params))
}

/// MLflow's 404 for a model that is not there.
pub fn missing(id: &str) -> MlError {
    MlError::not_found(format!("Logged model with ID '{id}' not found."))
}

/// The stored model, or MLflow's 404.
fn load(store: &dyn Store, id: &str) -> MlResult<Value> {
    store
        .get_document(MODEL_DOC, id)?
        .ok_or_else(|| missing(id))
}

/// The model as MLflow shows it: with its metric points, kept as the items of its document (a list that
/// grows point by point, so it is not rewritten with the document each time).
fn with_metrics(store: &dyn Store, id: &str, mut model: Value) -> MlResult<Value> {
    model["data"]["metrics"] = Value::Array(store.document_items(MODEL_DOC, id)?);
    Ok(model)
}

/// Records that a model's legacy files were copied to its own storage, so that no later start copies them
/// again: its run may keep its copy (a deleted run takes no writes), and the model's files may since have
/// changed or been deleted.
const FILES_MOVED_DOC: &str = "mlflow.logged_model_files_moved";

/// Records a move that finished for every model: later starts have nothing to look at (models logged since
/// keep their files in their own storage from the first).
const MOVE_DONE_DOC: (&str, &str) = ("mlflow.migrations", "model_files_out_of_runs");

/// Moves the files of models logged by earlier versions, which kept them in their source run's artifacts under
/// `models/<id>/`, to the models' own storage. Each model's files are copied, marked copied, then removed from
/// the run: a crash midway leaves the run's copy to be copied again at the next start, never a model without
/// its files. A model that cannot be moved is reported and skipped (the others still move) and tried again at
/// the next start; once all have moved, later starts skip the pass. Reports what it did in the log; returns how
/// many models' files it copied.
pub fn move_legacy_files(store: &dyn Store) -> Result<usize, flightlog_model::Error> {
    let (kind, done) = MOVE_DONE_DOC;
    if store.get_document(kind, done)?.is_some() {
        return Ok(0);
    }
    let (mut moved, mut failed) = (0, false);
    for (id, model) in store.list_documents(MODEL_DOC)? {
        let Some(run) = model["info"]["source_run_id"]
            .as_str()
            .and_then(|r| r.parse::<RunId>().ok())
        else {
            continue;
        };
        match move_one(store, &id, &run) {
            Ok(copied) => moved += usize::from(copied),
            Err(e) => {
                failed = true;
                tracing::warn!("model {id}: its files stay in run {run} for now: {e}");
            }
        }
    }
    if moved > 0 {
        tracing::info!("moved the files of {moved} logged models out of their runs");
    }
    if !failed {
        store.put_document(kind, done, &json!({}))?;
    }
    Ok(moved)
}

/// One model's move; whether its files were copied now.
fn move_one(store: &dyn Store, id: &str, run: &RunId) -> Result<bool, flightlog_model::Error> {
    let folder = format!("models/{id}");
    let prefix = format!("{folder}/");
    // A file at exactly `models/<id>` is the run's own, not a model folder.
    let files: Vec<_> = match store.list_artifacts(run, Some(&folder), true) {
        Ok(files) => files
            .into_iter()
            .filter(|f| f.path.starts_with(&prefix))
            .collect(),
        Err(_) => return Ok(false),
    };
    if files.is_empty() {
        return Ok(false);
    }
    let copy = store.get_document(FILES_MOVED_DOC, id)?.is_none();
    if copy {
        let owner = FileOwner::Model(id.to_string());
        for f in &files {
            let (_, mut reader) = store.open_artifact(run, &f.path)?;
            store.put_file(&owner, &f.path[prefix.len()..], &mut reader)?;
        }
        store.put_document(FILES_MOVED_DOC, id, &json!({ "from_run": run.as_str() }))?;
    }
    if let Err(e) = store.delete_artifact(run, &folder) {
        tracing::debug!("model {id}: the copy in run {run} stays: {e}");
    }
    Ok(copy)
}

/// The experiment a model was logged in.
pub fn experiment_of(store: &dyn Store, id: &str) -> MlResult<ExperimentId> {
    let model = load(store, id)?;
    let stored = model["info"]["experiment_id"].as_str().unwrap_or_default();
    stored.parse().map_err(|_| {
        Error::storage(format!("logged model {id} has experiment id '{stored}'")).into()
    })
}

/// A model name as MLflow takes it: it becomes part of `runs:/<run>/<name>` URIs, so no `/`, `:`, `.`, `%`
/// or quotes.
fn checked_name(name: String) -> MlResult<String> {
    const BAD: [char; 6] = ['/', ':', '.', '%', '"', '\''];
    if name.contains(BAD) {
        return Err(MlError::invalid(format!(
            "Invalid model name ('{name}') provided. Model name must be a non-empty string and cannot \
             contain the following characters: ('/', ':', '.', '%', '\"', \"'\")"
        )));
    }
    Ok(name)
}

#[derive(Deserialize, Default)]
struct CreateReq {
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    source_run_id: Option<String>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

fn pairs(what: &str, kvs: &[KeyValue]) -> MlResult<Vec<Value>> {
    kvs.iter()
        .map(|kv| checked_pair(what, kv).map(|(k, v)| json!({ "key": k, "value": v })))
        .collect()
}

async fn create(State(st): State<AppState>, Req(r): Req<CreateReq>) -> MlResult<Json<Value>> {
    let exp = experiments::experiment_id(r.experiment_id.as_deref())?;
    let params = pairs("param", &r.params)?;
    let tags = pairs("tag", &r.tags)?;
    let model = blocking(move || {
        let e = experiments::find(st.store.as_ref(), exp)?;
        if e.lifecycle == Lifecycle::Deleted {
            return Err(MlError::invalid(format!(
                "The experiment {exp} must be in the 'active' state. Current state is deleted."
            )));
        }
        if let Some(run) = r.source_run_id.as_deref().filter(|s| !s.is_empty()) {
            let id = super::runs::run_id(Some(run), None)?;
            super::runs::find(st.store.as_ref(), &id)?;
        }
        let id = format!("m-{}", RunId::new());
        let now = WallTime::now().millis();
        let name = r
            .name
            .filter(|n| !n.is_empty())
            .map(checked_name)
            .transpose()?
            .unwrap_or_else(|| format!("model-{}", &id[2..10]));
        let model = json!({
            "info": {
                "model_id": id,
                "experiment_id": exp.to_string(),
                "name": name,
                "artifact_uri": format!("{}/models/{id}/artifacts", experiment_root(&e)),
                "creation_timestamp_ms": now,
                "last_updated_timestamp_ms": now,
                "model_type": r.model_type.unwrap_or_default(),
                "status": "LOGGED_MODEL_PENDING",
                "tags": tags,
                // A model logged outside a run has "" for its source run, as on MLflow's server, where
                // `source_run_id = ''` finds it.
                "source_run_id": r.source_run_id.unwrap_or_default(),
            },
            "data": { "params": params, "metrics": [] },
        });
        st.store.put_document(MODEL_DOC, &id, &model)?;
        Ok(model)
    })
    .await?;
    Ok(Json(json!({ "model": model })))
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> MlResult<Json<Value>> {
    let model =
        blocking(move || with_metrics(st.store.as_ref(), &id, load(st.store.as_ref(), &id)?))
            .await?;
    Ok(Json(json!({ "model": model })))
}

/// Serializes the read-modify-writes of model documents, so two requests changing one model both land.
static MODEL_WRITES: Mutex<()> = Mutex::new(());

/// Read-modify-write of one model document.
async fn modify(
    st: AppState,
    id: String,
    f: impl FnOnce(&mut Value) -> MlResult<()> + Send + 'static,
) -> MlResult<Value> {
    blocking(move || with_metrics(st.store.as_ref(), &id, change(st.store.as_ref(), &id, f)?)).await
}

fn change(
    store: &dyn Store,
    id: &str,
    f: impl FnOnce(&mut Value) -> MlResult<()>,
) -> MlResult<Value> {
    // A panic elsewhere while holding it leaves nothing half-written here: documents are written whole.
    let _one_at_a_time = MODEL_WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let mut model = load(store, id)?;
    f(&mut model)?;
    model["info"]["last_updated_timestamp_ms"] = json!(WallTime::now().millis());
    store.put_document(MODEL_DOC, id, &model)?;
    Ok(model)
}

/// Every model the points name exists, or MLflow's 400 (its server fails the insert on the foreign key):
/// checked before anything of the request is stored.
pub fn check_exist(store: &dyn Store, points: &[(String, Value)]) -> MlResult<()> {
    let mut checked: Vec<&str> = Vec::new();
    for (id, _) in points {
        if !checked.contains(&id.as_str()) {
            if store.get_document(MODEL_DOC, id)?.is_none() {
                return Err(MlError::new(
                    "BAD_REQUEST",
                    format!(
                        "Logged model with ID '{id}' not found: metrics cannot be logged to it."
                    ),
                ));
            }
            checked.push(id);
        }
    }
    Ok(())
}

/// Adds metric points to their models' `data.metrics` (the items of the model's document); a point already
/// there (a retried request) is not added again.
pub fn add_metrics(store: &dyn Store, points: Vec<(String, Value)>) -> MlResult<()> {
    let mut by_model: Vec<(String, Vec<Value>)> = Vec::new();
    for (id, point) in points {
        match by_model.iter_mut().find(|(m, _)| *m == id) {
            Some((_, list)) => list.push(point),
            None => by_model.push((id, vec![point])),
        }
    }
    for (id, new) in by_model {
        store.append_document_items(MODEL_DOC, &id, &new)?;
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct FinalizeReq {
    #[serde(default, deserialize_with = "opt_enum")]
    status: Option<String>,
}

async fn finalize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Req(r): Req<FinalizeReq>,
) -> MlResult<Json<Value>> {
    let given = r.status.ok_or_else(|| MlError::missing("status"))?;
    // By name, or by its number in MLflow's protobuf enum.
    let status = match given.as_str() {
        "LOGGED_MODEL_STATUS_UNSPECIFIED" | "0" => "LOGGED_MODEL_STATUS_UNSPECIFIED",
        "LOGGED_MODEL_PENDING" | "1" => "LOGGED_MODEL_PENDING",
        "LOGGED_MODEL_READY" | "2" => "LOGGED_MODEL_READY",
        "LOGGED_MODEL_UPLOAD_FAILED" | "3" => "LOGGED_MODEL_UPLOAD_FAILED",
        _ => {
            return Err(MlError::invalid(format!(
                "Invalid logged model status '{given}'"
            )))
        }
    };
    let model = modify(st, id, move |m| {
        m["info"]["status"] = json!(status);
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "model": model })))
}

/// Sets `entries` into the key/value list at `m[section][field]`, replacing values of existing keys.
fn upsert(list: &mut Value, entries: Vec<Value>) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(items) = list.as_array_mut() {
        for e in entries {
            match items.iter_mut().find(|i| i["key"] == e["key"]) {
                Some(i) => *i = e,
                None => items.push(e),
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct ListReq {
    #[serde(default)]
    tags: Vec<KeyValue>,
    #[serde(default)]
    params: Vec<KeyValue>,
}

async fn set_tags(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Req(r): Req<ListReq>,
) -> MlResult<Json<Value>> {
    let tags = pairs("tag", &r.tags)?;
    modify(st, id, move |m| {
        upsert(&mut m["info"]["tags"], tags);
        Ok(())
    })
    .await?;
    Ok(empty())
}

async fn log_params(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Req(r): Req<ListReq>,
) -> MlResult<Json<Value>> {
    let params = pairs("param", &r.params)?;
    modify(st, id.clone(), move |m| {
        let logged = m["data"]["params"].as_array().cloned().unwrap_or_default();
        for p in &params {
            // Params are write-once, as a run's are: the same value again is nothing, another is a 400.
            let earlier = logged.iter().chain(&params).find(|e| e["key"] == p["key"]);
            if let Some(e) = earlier.filter(|e| e["value"] != p["value"]) {
                return Err(MlError::invalid(format!(
                    "Changing param values is not allowed. Param with key={} was already logged with \
                     value={} for logged model ID '{id}'. Attempted logging new value {}.",
                    p["key"], e["value"], p["value"]
                )));
            }
        }
        upsert(&mut m["data"]["params"], params);
        Ok(())
    })
    .await?;
    Ok(empty())
}

async fn delete_tag(
    State(st): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> MlResult<Json<Value>> {
    modify(st, id.clone(), move |m| {
        let tags = m["info"]["tags"].as_array_mut();
        match tags.filter(|t| t.iter().any(|t| t["key"] == key.as_str())) {
            Some(tags) => tags.retain(|t| t["key"] != key.as_str()),
            None => {
                return Err(MlError::not_found(format!(
                    "No tag with key '{key}' found for logged model with ID '{id}'."
                )))
            }
        }
        Ok(())
    })
    .await?;
    Ok(empty())
}

/// Deletes the model and its files: once the model is gone no path reaches them, and they would only hold disk.
async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> MlResult<Json<Value>> {
    blocking(move || {
        let store = st.store.as_ref();
        if !store.delete_document(MODEL_DOC, &id)? {
            return Err(missing(&id));
        }
        Ok(store.delete_model_files(&id)?)
    })
    .await?;
    Ok(empty())
}

#[derive(Deserialize, Default)]
struct OrderReq {
    #[serde(default)]
    field_name: Option<String>,
    #[serde(default)]
    ascending: Option<bool>,
    #[serde(default, flatten)]
    dataset: DatasetFilter,
}

/// Points logged on one dataset: its name, and its digest when given.
#[derive(Deserialize, Default, Clone)]
struct DatasetFilter {
    #[serde(default)]
    dataset_name: Option<String>,
    #[serde(default)]
    dataset_digest: Option<String>,
}

impl DatasetFilter {
    fn is_set(&self) -> bool {
        self.dataset_name.is_some() || self.dataset_digest.is_some()
    }

    fn holds(&self, point: &Value) -> bool {
        let is = |field: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| point[field].as_str() == Some(w))
        };
        is("dataset_name", &self.dataset_name) && is("dataset_digest", &self.dataset_digest)
    }
}

/// Whether a point is on one of the datasets (any point, when none are named).
fn on_datasets(point: &Value, datasets: &[DatasetFilter]) -> bool {
    datasets.is_empty() || datasets.iter().any(|d| d.holds(point))
}

#[derive(Deserialize, Default)]
struct SearchReq {
    #[serde(default)]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    #[serde(default)]
    order_by: Vec<OrderReq>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    datasets: Vec<DatasetFilter>,
}

async fn search_models(
    State(st): State<AppState>,
    Req(r): Req<SearchReq>,
) -> MlResult<Json<Value>> {
    let limit = max_results(r.max_results, 100, experiments::MAX_RESULTS)?;
    let conds = search::parse_filter(&search::LOGGED_MODELS, r.filter.as_deref().unwrap_or(""))?;
    let datasets = r.datasets;
    if datasets
        .iter()
        .any(|d| d.dataset_name.as_deref().is_none_or(str::is_empty))
    {
        return Err(MlError::invalid(
            "`dataset_name` in the `datasets` clause must be specified.",
        ));
    }
    let mut order = Vec::new();
    let mut order_datasets = Vec::new();
    for (i, o) in r.order_by.iter().enumerate() {
        let field = o
            .field_name
            .as_deref()
            .ok_or_else(|| MlError::missing("order_by.field_name"))?;
        let mut clause = search::parse_order_by(&search::LOGGED_MODELS, field)?;
        clause.ascending = o.ascending.unwrap_or(true);
        if clause.ident.kind == Kind::Metric && o.dataset.is_set() {
            // Sorted on the latest point on that dataset, which the row carries under a key of its own.
            order_datasets.push((ordering_key(i), clause.ident.key.clone(), o.dataset.clone()));
            clause.ident.key = ordering_key(i);
        }
        order.push(clause);
    }
    let exps = r.experiment_ids;
    let in_scope = move |m: &Value| {
        exps.is_empty()
            || exps
                .iter()
                .any(|e| m["info"]["experiment_id"] == e.as_str())
    };
    let models = blocking(move || {
        let store = st.store.as_ref();
        store
            .list_documents(MODEL_DOC)?
            .into_iter()
            .filter(|(_, m)| in_scope(m))
            .map(|(id, m)| with_metrics(store, &id, m))
            .collect::<MlResult<Vec<Value>>>()
    })
    .await?;
    let mut items: Vec<(Row, Value)> = models
        .into_iter()
        .filter(|m| {
            datasets.is_empty()
                || has_metric_filter(&conds)
                || points(m, &datasets).next().is_some()
        })
        .map(|m| (row(&m, &order_datasets), m))
        .filter(|(row, m)| matches_all(row, m, &conds, &datasets))
        .collect();
    let ties = [
        search::attr_order(Kind::NumberAttr, "creation_timestamp", false),
        search::attr_order(Kind::TextAttr, "model_id", true),
    ];
    search::sort(&mut items, &order, &ties);
    let (page, next) = search::page(items, limit, r.page_token.as_deref())?;
    let models: Vec<Value> = page.into_iter().map(|(_, m)| m).collect();
    let mut out = json!({ "models": models });
    if let Some(t) = next {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

/// The row key under which the `i`th order clause's dataset-restricted metric is kept (no metric key has NUL).
fn ordering_key(i: usize) -> String {
    format!("\u{0}order{i}")
}

fn has_metric_filter(conds: &[search::Condition]) -> bool {
    conds.iter().any(|c| c.ident.kind == Kind::Metric)
}

/// As MLflow's server: a metric condition holds when any of the model's points of that metric (on one of the
/// requested datasets, if any) meets it; the rest are checked on the row. Without a metric condition, naming
/// datasets keeps the models with a point on one of them.
fn matches_all(
    row: &Row,
    model: &Value,
    conds: &[search::Condition],
    datasets: &[DatasetFilter],
) -> bool {
    conds.iter().all(|c| match c.ident.kind {
        Kind::Metric => points(model, datasets)
            .filter(|(key, _, _)| *key == c.ident.key)
            .any(|(_, value, _)| search::number_matches(c.op, Some(value), &c.value)),
        _ => search::matches(row, c),
    })
}

/// The model's metric points on the datasets (all of them when none are named).
fn points<'a>(
    model: &'a Value,
    datasets: &'a [DatasetFilter],
) -> impl Iterator<Item = (&'a str, f64, (i64, i64))> + 'a {
    metric_points(model, move |p| on_datasets(p, datasets))
}

/// The model's metric points that `keep` accepts: (key, value, (timestamp, step)).
fn metric_points<'a>(
    model: &'a Value,
    keep: impl Fn(&Value) -> bool + 'a,
) -> impl Iterator<Item = (&'a str, f64, (i64, i64))> + 'a {
    model["data"]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |p| keep(p))
        .filter_map(|p| {
            let value = match &p["value"] {
                Value::String(s) => flightlog_model::parse_non_finite(s)?,
                v => v.as_f64()?,
            };
            let at = (
                p["timestamp"].as_i64().unwrap_or(0),
                p["step"].as_i64().unwrap_or(0),
            );
            Some((p["key"].as_str()?, value, at))
        })
}

/// The model's fields as a search row; `order_datasets` are the metrics that order clauses restrict to a
/// dataset: (the row key they sort on, the metric, the dataset).
fn row(m: &Value, order_datasets: &[(String, String, DatasetFilter)]) -> Row {
    let info = &m["info"];
    let mut row = Row::default();
    for f in ["name", "model_id", "model_type", "status", "source_run_id"] {
        // Models stored before the field was always written read as MLflow's: "" for none.
        let v = info[f].as_str().unwrap_or_default();
        row.text.insert(f, v.to_string());
    }
    for (f, src) in [
        ("creation_timestamp", "creation_timestamp_ms"),
        ("last_updated_timestamp", "last_updated_timestamp_ms"),
    ] {
        if let Some(v) = info[src].as_f64() {
            row.numbers.insert(f, v);
        }
    }
    let kvs = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                Some((
                    kv["key"].as_str()?.to_string(),
                    kv["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    row.tags = kvs(&info["tags"]);
    row.params = kvs(&m["data"]["params"]);
    row.metrics = latest_values(metric_points(m, |_| true));
    for (row_key, metric, dataset) in order_datasets {
        let on_dataset = metric_points(m, |p| dataset.holds(p)).filter(|(k, _, _)| k == metric);
        if let Some(v) = latest_values(on_dataset).remove(metric.as_str()) {
            row.metrics.insert(row_key.clone(), v);
        }
    }
    row
}

/// Each metric's latest value (by timestamp, then step): what models sort on, as on MLflow's server.
fn latest_values<'a>(
    points: impl Iterator<Item = (&'a str, f64, (i64, i64))>,
) -> BTreeMap<String, f64> {
    let mut latest: BTreeMap<&str, (f64, (i64, i64))> = BTreeMap::new();
    for (key, value, at) in points {
        if latest.get(key).is_none_or(|(_, seen)| at >= *seen) {
            latest.insert(key, (value, at));
        }
    }
    latest
        .into_iter()
        .map(|(k, (v, _))| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::NewRun;
    use flightlog_store::embedded::EmbeddedStore;

    fn read(reader: flightlog_store::ByteReader) -> String {
        let mut text = String::new();
        let mut reader = reader;
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
        text
    }

    /// A model logged in `run`, as its document records it; returns its id.
    fn model_of(store: &EmbeddedStore, run: &RunId) -> String {
        let id = format!("m-{}", RunId::new());
        let doc =
            json!({"info": {"model_id": id, "experiment_id": "0", "source_run_id": run.as_str()}});
        store.put_document(MODEL_DOC, &id, &doc).unwrap();
        id
    }

    #[test]
    fn files_kept_in_runs_by_earlier_versions_move_to_the_models_own_storage() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let run = store.create_run(NewRun::default()).unwrap().id;
        let id = model_of(&store, &run);
        for (path, text) in [("MLmodel", "flavors"), ("python_model/model.pkl", "pickle")] {
            let legacy = format!("models/{id}/{path}");
            store
                .put_artifact(&run, &legacy, &mut text.as_bytes())
                .unwrap();
        }
        store
            .put_artifact(&run, "models/mine.txt", &mut &b"kept"[..])
            .unwrap();

        // The model's storage already holds as many files, others: the legacy ones are still copied.
        let model = FileOwner::Model(id.clone());
        store.put_file(&model, "a", &mut &b"1"[..]).unwrap();
        store.put_file(&model, "b", &mut &b"2"[..]).unwrap();
        // Another model whose "folder" in the run is a plain file, the run's own: left alone, no panic.
        let other = model_of(&store, &run);
        store
            .put_artifact(&run, &format!("models/{other}"), &mut &b"a file"[..])
            .unwrap();

        assert_eq!(move_legacy_files(&store).unwrap(), 1);
        let (_, reader) = store.open_file(&model, "python_model/model.pkl").unwrap();
        assert_eq!(read(reader), "pickle");
        assert_eq!(store.list_files(&model, None, true).unwrap().len(), 4);
        let left: Vec<_> = store.list_artifacts(&run, None, true).unwrap();
        let mut left: Vec<_> = left.iter().map(|f| f.path.clone()).collect();
        left.sort();
        assert_eq!(
            left,
            [format!("models/{other}"), "models/mine.txt".to_string()]
        );
        // A second start finds nothing more to move.
        assert_eq!(move_legacy_files(&store).unwrap(), 0);
        assert_eq!(store.list_files(&model, None, true).unwrap().len(), 4);
    }

    #[test]
    fn a_deleted_runs_copy_is_moved_once_and_files_deleted_since_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let run = store.create_run(NewRun::default()).unwrap().id;
        let id = model_of(&store, &run);
        store
            .put_artifact(&run, &format!("models/{id}/MLmodel"), &mut &b"flavors"[..])
            .unwrap();
        let deleted = flightlog_model::RunPatch {
            lifecycle: Some(Lifecycle::Deleted),
            ..Default::default()
        };
        store.update_run(&run, deleted).unwrap();

        assert_eq!(move_legacy_files(&store).unwrap(), 1);
        let model = FileOwner::Model(id.clone());
        store.delete_file(&model, "MLmodel").unwrap();
        // The deleted run keeps its copy, but a later pass (after one that failed elsewhere, which leaves the
        // move not done) does not bring the file back.
        let (kind, done) = MOVE_DONE_DOC;
        assert!(
            store.delete_document(kind, done).unwrap(),
            "a complete pass is marked done"
        );
        assert_eq!(move_legacy_files(&store).unwrap(), 0);
        assert!(store.list_files(&model, None, true).unwrap().is_empty());
    }
}
