//! Experiments: create, list, get (by id or name), update.

use crate::error::ApiResult;
use crate::extract::{blocking, experiment_id, JsonBody, Query};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{Experiment, ExperimentPatch, ExperimentQuery, NewExperiment, Page};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/experiments", get(list).post(create))
        .route("/experiments/by-name/{*name}", get(by_name))
        .route("/experiments/{id}", get(get_one).patch(update))
}

async fn create(
    State(st): State<AppState>,
    JsonBody(new): JsonBody<NewExperiment>,
) -> ApiResult<(StatusCode, Json<Experiment>)> {
    let exp = blocking(move || Ok(st.store.create_experiment(new)?)).await?;
    Ok((StatusCode::CREATED, Json(exp)))
}

async fn list(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<Experiment>>> {
    let q = Query::parse(raw);
    let query = ExperimentQuery {
        name_contains: q.get("name_contains").map(str::to_string),
        include_deleted: q.flag("include_deleted")?,
        limit: q.parsed("limit")?,
        page_token: q.get("page_token").map(str::to_string),
    };
    Ok(Json(
        blocking(move || Ok(st.store.list_experiments(&query)?)).await?,
    ))
}

async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Experiment>> {
    let id = experiment_id(&id)?;
    Ok(Json(
        blocking(move || Ok(st.store.get_experiment(id)?)).await?,
    ))
}

/// Names may hold '/', so the name is a wildcard; axum has already percent-decoded it.
async fn by_name(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Experiment>> {
    Ok(Json(
        blocking(move || Ok(st.store.get_experiment_by_name(&name)?)).await?,
    ))
}

async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<ExperimentPatch>,
) -> ApiResult<Json<Experiment>> {
    let id = experiment_id(&id)?;
    Ok(Json(
        blocking(move || Ok(st.store.update_experiment(id, patch)?)).await?,
    ))
}
