//! A run's inputs and outputs (`runs/log-inputs`, `runs/outputs`): dataset and model inputs, model outputs,
//! kept as one document per run, with MLflow's identity rules for datasets.

use super::error::{MlError, MlResult};
use super::runs::{active, find, run_id, INPUTS_DOC, OUTPUTS_DOC};
use super::{blocking, empty, Req};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use flightlog_model::{ExperimentId, RunId};
use flightlog_store::Store;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Mutex;

/// The datasets of each experiment (one document per experiment), keyed by name and digest.
const DATASETS_DOC: &str = "mlflow.experiment_datasets";

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

#[derive(Deserialize, Default)]
pub(super) struct InputsReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    datasets: Vec<Value>,
    #[serde(default)]
    models: Vec<Value>,
}

/// Dataset inputs as MLflow's server keeps them: a dataset is one per experiment by (name, digest), the first
/// logged keeping its source, schema and profile; a run has one input per dataset, the first logged keeping
/// its tags (its context). Model inputs are kept once each.
pub(super) async fn log_inputs(
    State(st): State<AppState>,
    Req(r): Req<InputsReq>,
) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), None)?;
    let datasets = r
        .datasets
        .into_iter()
        .map(dataset_input)
        .collect::<MlResult<Vec<_>>>()?;
    blocking(move || {
        let store = st.store.as_ref();
        let _one_at_a_time = DOCUMENT_WRITES.lock().unwrap_or_else(|e| e.into_inner());
        let run = find(store, &id)?;
        active(&run)?;
        let datasets = registered(store, run.experiment_id, datasets)?;
        append_to_run_document(
            store,
            &id,
            INPUTS_DOC,
            [
                ("dataset_inputs", datasets, same_dataset),
                ("model_inputs", r.models, Value::eq),
            ],
        )
    })
    .await?;
    Ok(empty())
}

/// A dataset input checked against MLflow's limits, its missing name, digest and source fields stored as ""
/// (MLflow's server reads them from protobuf, where an absent string is "", and answers them so).
fn dataset_input(mut input: Value) -> MlResult<Value> {
    let dataset = &mut input["dataset"];
    if !dataset.is_object() {
        return Err(MlError::invalid("A dataset input needs a 'dataset' object"));
    }
    for field in ["name", "digest", "source_type", "source"] {
        if dataset[field].is_null() {
            dataset[field] = json!("");
        }
    }
    within_limits(dataset, &DATASET_LIMITS)?;
    if let Some(tags) = input["tags"].as_array() {
        for tag in tags {
            within_limits(tag, &INPUT_TAG_LIMITS)?;
        }
    }
    Ok(input)
}

fn within_limits(entity: &Value, limits: &[(&str, usize)]) -> MlResult<()> {
    for &(field, limit) in limits {
        if entity[field]
            .as_str()
            .is_some_and(|v| v.chars().count() > limit)
        {
            return Err(MlError::invalid(format!(
                "'{field}' exceeds the maximum length of {limit} characters"
            )));
        }
    }
    Ok(())
}

/// What identifies a dataset within an experiment.
fn dataset_key(input: &Value) -> String {
    let field = |f: &str| input["dataset"][f].as_str().unwrap_or_default().to_string();
    format!("{}\u{0}{}", field("name"), field("digest"))
}

fn same_dataset(a: &Value, b: &Value) -> bool {
    dataset_key(a) == dataset_key(b)
}

/// The inputs with each dataset as the experiment first recorded it; datasets it has not seen are recorded.
fn registered(store: &dyn Store, exp: ExperimentId, inputs: Vec<Value>) -> MlResult<Vec<Value>> {
    if inputs.is_empty() {
        return Ok(inputs);
    }
    let doc_id = exp.to_string();
    let mut known = match store.get_document(DATASETS_DOC, &doc_id)? {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let before = known.len();
    let inputs = inputs
        .into_iter()
        .map(|mut input| {
            let first = known
                .entry(dataset_key(&input))
                .or_insert_with(|| input["dataset"].clone());
            input["dataset"] = first.clone();
            input
        })
        .collect();
    if known.len() != before {
        store.put_document(DATASETS_DOC, &doc_id, &Value::Object(known))?;
    }
    Ok(inputs)
}

#[derive(Deserialize, Default)]
pub(super) struct OutputsReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    models: Vec<Value>,
}

pub(super) async fn log_outputs(
    State(st): State<AppState>,
    Req(r): Req<OutputsReq>,
) -> MlResult<Json<Value>> {
    let id = run_id(r.run_id.as_deref(), None)?;
    blocking(move || {
        let store = st.store.as_ref();
        let _one_at_a_time = DOCUMENT_WRITES.lock().unwrap_or_else(|e| e.into_inner());
        active(&find(store, &id)?)?;
        append_to_run_document(
            store,
            &id,
            OUTPUTS_DOC,
            [("model_outputs", r.models, Value::eq)],
        )
    })
    .await?;
    Ok(empty())
}

/// One list of a run document: its field, the entries to add, and when an entry is one already there.
type Additions<'a> = (&'a str, Vec<Value>, fn(&Value, &Value) -> bool);

/// Adds entries to the lists of a run's `kind` document (one per run), skipping ones already there.
fn append_to_run_document<const N: usize>(
    store: &dyn Store,
    id: &RunId,
    kind: &str,
    lists: [Additions; N],
) -> MlResult<()> {
    let mut doc = store
        .get_document(kind, id.as_str())?
        .unwrap_or_else(|| json!({}));
    for (field, items, same) in lists {
        append_unique(&mut doc, field, items, same);
    }
    Ok(store.put_document(kind, id.as_str(), &doc)?)
}

fn append_unique(
    doc: &mut Value,
    field: &str,
    items: Vec<Value>,
    same: fn(&Value, &Value) -> bool,
) {
    if items.is_empty() {
        return;
    }
    if !doc[field].is_array() {
        doc[field] = json!([]);
    }
    if let Some(list) = doc[field].as_array_mut() {
        for item in items {
            if !list.iter().any(|had| same(had, &item)) {
                list.push(item);
            }
        }
    }
}
