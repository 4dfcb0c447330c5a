//! A run's inputs and outputs (`runs/log-inputs`, `runs/outputs`): dataset and model inputs, model outputs,
//! kept as one document per run, with MLflow's identity rules for datasets.

use super::error::{MlError, MlResult};
use super::runs::{active, find, run_id, INPUTS_DOC, OUTPUTS_DOC};
use super::{blocking, empty, Req};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use flightlog_model::{fnv1a128, ExperimentId, Run, RunId};
use flightlog_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Mutex;

/// An experiment's datasets, one document each (id: the experiment and a hash of name and digest), so that
/// large schemas of some datasets never keep others out.
const DATASET_DOC: &str = "mlflow.experiment_dataset";

/// Most dataset inputs in one request (the mlflow client sends at most this many).
const MAX_DATASETS_PER_REQUEST: usize = 1000;

/// MLflow's limits on a dataset input, in characters: the dataset's fields, then its tags' key and value.
const DATASET_LIMITS: [(&str, usize); 5] = [
    ("name", 500),
    ("digest", 36),
    ("source", 65_535),
    ("schema", 1_048_575),
    ("profile", 16_777_215),
];
const INPUT_TAG_LIMITS: [(&str, usize); 2] = [("key", 255), ("value", 500)];

/// Serializes the read-modify-writes of run and experiment input documents, so concurrent requests all land.
static DOCUMENT_WRITES: Mutex<()> = Mutex::new(());

/// A dataset as MLflow's protobuf has it: every field a string (absent ones stored as "" where MLflow's
/// server reads them so), unknown fields dropped.
#[derive(Deserialize, Serialize, Clone, Default)]
struct Dataset {
    #[serde(default)]
    name: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    source_type: String,
    #[serde(default)]
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
}

#[derive(Deserialize, Serialize, Clone)]
struct InputTag {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize, Serialize, Clone)]
struct DatasetInput {
    #[serde(default)]
    tags: Vec<InputTag>,
    dataset: Dataset,
}

/// A model input or output: the model and, for outputs, the step.
#[derive(Deserialize, Serialize, Clone, PartialEq)]
struct ModelRef {
    #[serde(default)]
    model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<i64>,
}

#[derive(Deserialize, Default)]
pub(super) struct InputsReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    datasets: Vec<DatasetInput>,
    #[serde(default)]
    models: Vec<ModelRef>,
}

/// Dataset inputs as MLflow's server keeps them: a dataset is one per experiment by (name, digest), the first
/// logged keeping its source, schema and profile; a run has one input per dataset, the first logged keeping
/// its tags (its context). Model inputs are kept once each.
pub(super) async fn log_inputs(
    State(st): State<AppState>,
    Req(r): Req<InputsReq>,
) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), None)?;
    if r.datasets.len() > MAX_DATASETS_PER_REQUEST {
        return Err(MlError::invalid(format!(
            "A log-inputs request can contain at most {MAX_DATASETS_PER_REQUEST} datasets. Got {}.",
            r.datasets.len()
        )));
    }
    for input in &r.datasets {
        check_dataset_input(input)?;
    }
    blocking(move || {
        let store = st.store.as_ref();
        with_active_run(store, &id, |run| {
            let datasets = registered(store, run.experiment_id, r.datasets)?;
            append_to_run_document(
                store,
                &id,
                INPUTS_DOC,
                [
                    ("dataset_inputs", values(datasets)?, dataset_key),
                    ("model_inputs", values(r.models)?, Value::to_string),
                ],
            )
        })
    })
    .await?;
    Ok(empty())
}

fn values<T: Serialize>(items: Vec<T>) -> MlResult<Vec<Value>> {
    items.iter().map(to_value).collect()
}

fn to_value<T: Serialize>(item: &T) -> MlResult<Value> {
    Ok(serde_json::to_value(item).map_err(flightlog_model::Error::storage)?)
}

/// A dataset input within MLflow's limits (lengths in characters).
fn check_dataset_input(input: &DatasetInput) -> MlResult<()> {
    let dataset = &input.dataset;
    let fields = [
        Some(&dataset.name),
        Some(&dataset.digest),
        Some(&dataset.source),
        dataset.schema.as_ref(),
        dataset.profile.as_ref(),
    ];
    for (value, (field, limit)) in fields.into_iter().zip(DATASET_LIMITS) {
        within_limit(value, field, limit)?;
    }
    for tag in &input.tags {
        let [(key, key_limit), (value, value_limit)] = INPUT_TAG_LIMITS;
        within_limit(Some(&tag.key), key, key_limit)?;
        within_limit(Some(&tag.value), value, value_limit)?;
    }
    Ok(())
}

fn within_limit(value: Option<&String>, field: &str, limit: usize) -> MlResult<()> {
    if value.is_some_and(|v| v.chars().count() > limit) {
        return Err(MlError::invalid(format!(
            "'{field}' exceeds the maximum length of {limit} characters"
        )));
    }
    Ok(())
}

/// What identifies a dataset within an experiment, and so an input within a run: its name and digest.
fn identity(name: &str, digest: &str) -> String {
    format!("{name}\u{0}{digest}")
}

/// [`identity`] of a stored dataset input (run documents written by earlier versions hold inputs as sent).
fn dataset_key(input: &Value) -> String {
    let field = |f: &str| input["dataset"][f].as_str().unwrap_or_default();
    identity(field("name"), field("digest"))
}

/// The experiment's document of a dataset: the experiment id and a 128-bit hash of the dataset's identity
/// (document ids are short plain names; the document itself holds the name and digest, checked on read).
fn dataset_doc_id(exp: ExperimentId, d: &Dataset) -> String {
    format!(
        "{exp}-{:032x}",
        fnv1a128(identity(&d.name, &d.digest).as_bytes())
    )
}

/// The inputs with each dataset as the experiment first recorded it; datasets it has not seen are recorded.
fn registered(
    store: &dyn Store,
    exp: ExperimentId,
    mut inputs: Vec<DatasetInput>,
) -> MlResult<Vec<DatasetInput>> {
    for input in &mut inputs {
        let dataset = &mut input.dataset;
        let doc = dataset_doc_id(exp, dataset);
        let first = store
            .get_document(DATASET_DOC, &doc)?
            .and_then(|v| serde_json::from_value::<Dataset>(v).ok())
            .filter(|s| s.name == dataset.name && s.digest == dataset.digest);
        match first {
            Some(first) => *dataset = first,
            None => store.put_document(DATASET_DOC, &doc, &to_value(&*dataset)?)?,
        }
    }
    Ok(inputs)
}

#[derive(Deserialize, Default)]
pub(super) struct OutputsReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    models: Vec<ModelRef>,
}

pub(super) async fn log_outputs(
    State(st): State<AppState>,
    Req(r): Req<OutputsReq>,
) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), None)?;
    blocking(move || {
        let store = st.store.as_ref();
        with_active_run(store, &id, |_| {
            let models = values(r.models)?;
            append_to_run_document(
                store,
                &id,
                OUTPUTS_DOC,
                [("model_outputs", models, Value::to_string)],
            )
        })
    })
    .await?;
    Ok(empty())
}

/// Runs `write` on the run once it is found active, one document write at a time (see [`DOCUMENT_WRITES`]).
fn with_active_run(
    store: &dyn Store,
    id: &RunId,
    write: impl FnOnce(&Run) -> MlResult<()>,
) -> MlResult<()> {
    let _one_at_a_time = DOCUMENT_WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let run = find(store, id)?;
    active(&run)?;
    write(&run)
}

/// One list of a run document: its field, the entries to add, and what makes two entries the same one.
type Additions<'a> = (&'a str, Vec<Value>, fn(&Value) -> String);

/// Adds entries to the lists of a run's `kind` document (one per run), skipping ones already there.
fn append_to_run_document<const N: usize>(
    store: &dyn Store,
    id: &RunId,
    kind: &str,
    lists: [Additions; N],
) -> MlResult<()> {
    let mut doc = store
        .get_document(kind, id.as_str())?
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (field, items, identity) in lists {
        append_unique(&mut doc, field, items, identity);
    }
    store
        .put_document(kind, id.as_str(), &doc)
        .map_err(|e| match e {
            flightlog_model::Error::TooLarge { size, limit, .. } => MlError::invalid(format!(
                "The run's {} would take {size} bytes with these; flightlog keeps at most {limit} bytes \
                 of them per run.",
                if kind == INPUTS_DOC { "inputs (datasets with their schemas and profiles)" } else { "outputs" }
            )),
            e => e.into(),
        })
}

/// Appends the items not already in `doc[field]` (by `identity`, looked up in a set: a request may carry a
/// thousand datasets).
fn append_unique(doc: &mut Value, field: &str, items: Vec<Value>, identity: fn(&Value) -> String) {
    if items.is_empty() {
        return;
    }
    if !doc[field].is_array() {
        doc[field] = json!([]);
    }
    if let Some(list) = doc[field].as_array_mut() {
        let mut had: HashSet<String> = list.iter().map(identity).collect();
        for item in items {
            if had.insert(identity(&item)) {
                list.push(item);
            }
        }
    }
}
