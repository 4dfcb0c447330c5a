//! Runs: create (idempotent with a client id), list with filters, get, update (status, tags, properties...).

use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, experiment_id, parse_param, run_id, JsonBody, Query};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{NewRun, Page, Run, RunId, RunPatch, RunQuery, RunStatus};
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs", get(list).post(create))
        .route("/runs/{id}", get(get_one).patch(update))
}

/// 201 for a new run; 200 with the stored run when a create with the same client id is replayed.
async fn create(
    State(st): State<AppState>,
    JsonBody(new): JsonBody<NewRun>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    blocking(move || {
        let (run, created) = st.store.create_run_once(new)?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(run)))
    })
    .await
}

async fn list(State(st): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<Run>>> {
    let query = run_query(&Query::parse(raw))?;
    Ok(Json(
        blocking(move || Ok(st.store.list_runs(&query)?)).await?,
    ))
}

/// The run filters of `GET /runs`; repeated keys (`status`, `experiment_id`, `tag`, `property`) add up.
fn run_query(q: &Query) -> ApiResult<RunQuery> {
    Ok(RunQuery {
        experiment_ids: q
            .all("experiment_id")
            .map(experiment_id)
            .collect::<ApiResult<_>>()?,
        statuses: q
            .all("status")
            .map(|s| parse_param::<RunStatus>("status", s))
            .collect::<ApiResult<_>>()?,
        parent_id: q
            .get("parent_id")
            .map(|s| s.parse::<RunId>().map_err(|e| e.for_field("parent_id")))
            .transpose()?,
        top_level_only: q.flag("top_level_only")?,
        tags: key_values(q, "tag")?,
        properties: key_values(q, "property")?,
        include_deleted: q.flag("include_deleted")?,
        with_metrics: q.flag("with_metrics")?,
        limit: q.parsed("limit")?,
        page_token: q.get("page_token").map(str::to_string),
        ..Default::default()
    })
}

/// Each key filter is one more term of the store's query, and the store's expression depth is bounded
/// (past about 1,000 terms a query fails as a storage error, which clients retry); more than this many is
/// the request's mistake.
const MAX_KEY_FILTERS: usize = 100;

/// `tag=key` (the key must be present) or `tag=key=value` (it must have that value), at most
/// [`MAX_KEY_FILTERS`] of them.
fn key_values(q: &Query, param: &str) -> ApiResult<BTreeMap<String, Option<String>>> {
    let given = q.all(param).count();
    if given > MAX_KEY_FILTERS {
        return Err(ApiError::invalid(
            param,
            format!(
                "{given} {param} filters; at most {MAX_KEY_FILTERS} are accepted, narrow the query or \
                 filter the runs it returns"
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for v in q.all(param) {
        let (k, val) = match v.split_once('=') {
            Some((k, val)) => (k, Some(val.to_string())),
            None => (v, None),
        };
        if k.is_empty() {
            return Err(ApiError::invalid(
                param,
                format!("'{v}' has no key; use {param}=key or {param}=key=value"),
            ));
        }
        out.insert(k.to_string(), val);
    }
    Ok(out)
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Run>> {
    let id = run_id(&id)?;
    Ok(Json(blocking(move || Ok(st.store.get_run(&id)?)).await?))
}

async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<RunPatch>,
) -> ApiResult<Json<Run>> {
    let id = run_id(&id)?;
    Ok(Json(
        blocking(move || Ok(st.store.update_run(&id, patch)?)).await?,
    ))
}
