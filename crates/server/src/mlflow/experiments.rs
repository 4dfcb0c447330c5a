//! MLflow experiments: create, get, get-by-name, search, update, delete, restore, tags.

use super::convert::{
    experiment_json, millis, one_or_many, opt_enum, opt_i64, validate_key, KeyValue,
    MAX_EXPERIMENT_NAME, MAX_EXPERIMENT_TAG_VALUE,
};
use super::error::{MlError, MlResult};
use super::search::{self, Kind, Row};
use super::{blocking, empty, Req};
use crate::AppState;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use flightlog_model::{
    Experiment, ExperimentId, ExperimentPatch, ExperimentQuery, Lifecycle, NewExperiment,
};
use flightlog_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Largest `max_results` MLflow accepts on searches.
pub const MAX_RESULTS: i64 = 50_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/experiments/create", post(create))
        .route("/experiments/get", get(get_one))
        .route("/experiments/get-by-name", get(get_by_name))
        .route(
            "/experiments/search",
            get(search_experiments).post(search_experiments),
        )
        .route("/experiments/list", get(search_experiments))
        .route("/experiments/update", post(update))
        .route("/experiments/delete", post(delete))
        .route("/experiments/restore", post(restore))
        .route("/experiments/set-experiment-tag", post(set_tag))
        .route("/experiments/delete-experiment-tag", post(delete_tag))
}

#[derive(Deserialize, Default)]
struct CreateReq {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(State(st): State<AppState>, Req(r): Req<CreateReq>) -> MlResult<Json<Value>> {
    let name = r
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MlError::missing("name"))?;
    if name.chars().count() > MAX_EXPERIMENT_NAME {
        return Err(MlError::invalid(format!(
            "Experiment name '{name}' exceeds the maximum length of {MAX_EXPERIMENT_NAME} characters"
        )));
    }
    let tags = experiment_tags(&r.tags)?;
    let new = NewExperiment {
        name: name.clone(),
        tags,
        artifact_location: r.artifact_location.filter(|l| !l.is_empty()),
    };
    let e = blocking(move || {
        st.store.create_experiment(new).map_err(|e| match e {
            flightlog_model::Error::AlreadyExists { .. } => MlError::new(
                "RESOURCE_ALREADY_EXISTS",
                format!("Experiment '{name}' already exists."),
            ),
            e => e.into(),
        })
    })
    .await?;
    Ok(Json(json!({ "experiment_id": e.id.to_string() })))
}

fn experiment_tags(tags: &[KeyValue]) -> MlResult<BTreeMap<String, String>> {
    tags.iter()
        .map(|kv| {
            let (k, v) = super::convert::checked_pair("tag", kv)?;
            check_tag_value(&k, &v)?;
            Ok((k, v))
        })
        .collect()
}

fn check_tag_value(key: &str, value: &str) -> MlResult<()> {
    let len = value.chars().count();
    if len > MAX_EXPERIMENT_TAG_VALUE {
        return Err(MlError::invalid(format!(
            "Tag '{key}' had value length {len}, which exceeded length limit of {MAX_EXPERIMENT_TAG_VALUE}"
        )));
    }
    Ok(())
}

/// The experiment id of a request: required, an integer in a string.
pub fn experiment_id(raw: Option<&str>) -> MlResult<ExperimentId> {
    let raw = raw
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MlError::missing("experiment_id"))?;
    let raw = raw.trim();
    raw.parse().map_err(|_| match raw.parse::<i64>() {
        // An integer that is no experiment's id (a negative one) names none, as on MLflow.
        Ok(n) => MlError::not_found(format!("No Experiment with id={n} exists")),
        Err(_) => MlError::invalid(format!(
            "Invalid experiment ID '{raw}': it must be an integer"
        )),
    })
}

/// The experiment, or MLflow's 404 wording.
pub fn find(store: &dyn Store, id: ExperimentId) -> MlResult<Experiment> {
    store.get_experiment(id).map_err(|e| match e {
        flightlog_model::Error::NotFound { .. } => {
            MlError::not_found(format!("No Experiment with id={id} exists"))
        }
        e => e.into(),
    })
}

#[derive(Deserialize, Default)]
struct IdReq {
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

async fn get_one(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    let e = blocking(move || find(st.store.as_ref(), id)).await?;
    Ok(Json(json!({ "experiment": experiment_json(&e) })))
}

#[derive(Deserialize, Default)]
struct ByNameReq {
    #[serde(default)]
    experiment_name: Option<String>,
}

async fn get_by_name(State(st): State<AppState>, Req(r): Req<ByNameReq>) -> MlResult<Json<Value>> {
    let name = MlError::required(r.experiment_name, "experiment_name")?;
    let e = blocking(move || {
        st.store.get_experiment_by_name(&name).map_err(|e| match e {
            flightlog_model::Error::NotFound { .. } => {
                MlError::not_found(format!("Could not find experiment with name '{name}'"))
            }
            e => e.into(),
        })
    })
    .await?;
    Ok(Json(json!({ "experiment": experiment_json(&e) })))
}

#[derive(Deserialize, Default)]
struct SearchReq {
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "opt_enum")]
    view_type: Option<String>,
}

/// Which lifecycles a `view_type` / `run_view_type` selects.
pub fn view_type(v: Option<&str>) -> &'static [Lifecycle] {
    // A name MLflow's enum lacks (`BOGUS`, `all`) reads as ACTIVE_ONLY there, as an unset one does.
    match v {
        Some("DELETED_ONLY" | "2") => &[Lifecycle::Deleted],
        Some("ALL" | "3") => &[Lifecycle::Active, Lifecycle::Deleted],
        _ => &[Lifecycle::Active],
    }
}

/// `max_results` with MLflow's default (1000) and bounds.
pub fn max_results(v: Option<i64>, default: i64, max: i64) -> MlResult<usize> {
    let n = v.unwrap_or(default);
    if n < 1 || n > max {
        return Err(MlError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be between 1 and {max}"
        )));
    }
    Ok(n as usize)
}

async fn search_experiments(
    State(st): State<AppState>,
    Req(r): Req<SearchReq>,
) -> MlResult<Json<Value>> {
    let limit = max_results(r.max_results, 1000, MAX_RESULTS)?;
    let lifecycles = view_type(r.view_type.as_deref());
    let conds = search::parse_filter(&search::EXPERIMENTS, r.filter.as_deref().unwrap_or(""))?;
    let order: Vec<_> = r
        .order_by
        .iter()
        .map(|o| search::parse_order_by(&search::EXPERIMENTS, o))
        .collect::<MlResult<_>>()?;
    let all = blocking(move || all_experiments(st.store.as_ref())).await?;
    let mut items: Vec<(Row, Experiment)> = all
        .into_iter()
        .filter(|e| lifecycles.contains(&e.lifecycle))
        .map(|e| (row(&e), e))
        .filter(|(row, _)| search::matches_all(row, &conds))
        .collect();
    let ties = if order.is_empty() {
        vec![
            search::attr_order(Kind::NumberAttr, "creation_time", false),
            search::attr_order(Kind::NumberAttr, "experiment_id", true),
        ]
    } else {
        vec![search::attr_order(Kind::NumberAttr, "experiment_id", true)]
    };
    search::sort(&mut items, &order, &ties);
    let (page, next) = search::page(items, limit, r.page_token.as_deref())?;
    let experiments: Vec<Value> = page.iter().map(|(_, e)| experiment_json(e)).collect();
    let mut out = json!({ "experiments": experiments });
    if let Some(t) = next {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

fn all_experiments(store: &dyn Store) -> MlResult<Vec<Experiment>> {
    Ok(flightlog_model::Page::collect_all(|page_token| {
        store.list_experiments(&ExperimentQuery {
            include_deleted: true,
            limit: Some(MAX_RESULTS as u32),
            page_token,
            ..Default::default()
        })
    })?)
}

fn row(e: &Experiment) -> Row {
    let mut row = Row {
        tags: e.tags.clone(),
        ..Default::default()
    };
    row.text.insert("name", e.name.clone());
    row.numbers
        .insert("creation_time", millis(e.created_time) as f64);
    row.numbers
        .insert("last_update_time", millis(e.last_update_time) as f64);
    row.numbers.insert("experiment_id", e.id.0 as f64);
    row
}

async fn patch(st: AppState, id: ExperimentId, patch: ExperimentPatch) -> MlResult<Json<Value>> {
    blocking(move || {
        find(st.store.as_ref(), id)?;
        Ok(st.store.update_experiment(id, patch)?)
    })
    .await?;
    Ok(empty())
}

/// Moves an experiment (and, in the store, its runs) from lifecycle `from` to `to`. As on MLflow's server, one
/// not in `from` (deleting a deleted experiment, restoring an active one) is not found.
async fn move_to(
    st: AppState,
    id: ExperimentId,
    from: Lifecycle,
    to: Lifecycle,
) -> MlResult<Json<Value>> {
    blocking(move || {
        if find(st.store.as_ref(), id)?.lifecycle != from {
            return Err(MlError::not_found(format!(
                "No Experiment with id={id} exists"
            )));
        }
        let patch = ExperimentPatch {
            lifecycle: Some(to),
            ..Default::default()
        };
        Ok(st.store.update_experiment(id, patch)?)
    })
    .await?;
    Ok(empty())
}

async fn update(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    let name = r
        .new_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MlError::missing("new_name"))?;
    patch(
        st,
        id,
        ExperimentPatch {
            name: Some(name),
            ..Default::default()
        },
    )
    .await
}

async fn delete(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    move_to(st, id, Lifecycle::Active, Lifecycle::Deleted).await
}

async fn restore(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    move_to(st, id, Lifecycle::Deleted, Lifecycle::Active).await
}

async fn set_tag(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    let key = r.key.ok_or_else(|| MlError::missing("key"))?;
    validate_key("tag", &key)?;
    let value = r.value.unwrap_or_default();
    check_tag_value(&key, &value)?;
    let set_tags = BTreeMap::from([(key, value)]);
    blocking(move || {
        let patch = ExperimentPatch {
            set_tags,
            ..Default::default()
        };
        Ok(st.store.update_experiment(id, patch)?)
    })
    .await?;
    Ok(empty())
}

async fn delete_tag(State(st): State<AppState>, Req(r): Req<IdReq>) -> MlResult<Json<Value>> {
    let id = experiment_id(r.experiment_id.as_deref())?;
    let key = MlError::required(r.key, "key")?;
    blocking(move || {
        let e = find(st.store.as_ref(), id)?;
        // A deleted experiment's refusal (the store's) comes before a missing tag's, as on MLflow.
        if !e.tags.contains_key(&key) && e.lifecycle == Lifecycle::Active {
            return Err(MlError::not_found(format!(
                "No tag with name: {key} in experiment with id {id}"
            )));
        }
        let p = ExperimentPatch {
            remove_tags: vec![key],
            ..Default::default()
        };
        Ok(st.store.update_experiment(id, p)?)
    })
    .await?;
    Ok(empty())
}
