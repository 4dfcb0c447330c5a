//! `GET /api/v1/runs/table`: the portal's runs table in one response — every matching run of an experiment
//! with its params and latest scalar values, filtered and sorted with MLflow's runs/search grammar.

use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, experiment_id, Query};
use crate::mlflow::{self, MlError};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flightlog_model::{Lifecycle, MetricKind, Run, RunStatus, WallTime};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub fn routes() -> Router<AppState> {
    Router::new().route("/runs/table", get(table))
}

/// One row: what the table shows, nothing more (no tags, properties or series metadata), so that 10,000
/// runs stay a few megabytes of JSON.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: &'a str,
    status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a str>,
    user: &'a str,
    created_time: WallTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<WallTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<WallTime>,
    params: &'a BTreeMap<String, String>,
    /// Latest value of each scalar metric (numbers; NaN/±Inf as their strings).
    metrics: BTreeMap<&'a str, &'a Value>,
}

#[derive(Serialize)]
struct Table<'a> {
    /// Runs matching the filter (all are returned).
    total: usize,
    /// Union of the param keys and scalar metric names of the matching runs, sorted: the choosable columns.
    param_keys: BTreeSet<&'a str>,
    metric_keys: BTreeSet<&'a str>,
    runs: Vec<Row<'a>>,
}

/// A rejected filter or order_by names the parameter and keeps the grammar's message, which points at the
/// offending token and its position.
fn invalid(param: &str) -> impl Fn(MlError) -> ApiError + '_ {
    move |e| ApiError::invalid(param, e.message)
}

async fn table(State(st): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw);
    let experiments = q
        .all("experiment_id")
        .map(experiment_id)
        .collect::<ApiResult<Vec<_>>>()?;
    if experiments.is_empty() {
        return Err(ApiError::invalid(
            "experiment_id",
            "the query parameter is required (repeat it for several experiments)",
        ));
    }
    let mut conditions = mlflow::parse_filter(&mlflow::RUN_GRAMMAR, q.get("filter").unwrap_or(""))
        .map_err(invalid("filter"))?;
    accept_flightlog_status_names(&mut conditions);
    let order = q
        .all("order_by")
        .filter(|o| !o.trim().is_empty())
        .map(|o| mlflow::parse_order_by(&mlflow::RUN_GRAMMAR, o).map_err(invalid("order_by")))
        .collect::<ApiResult<Vec<_>>>()?;
    let lifecycles: &[Lifecycle] = if q.flag("include_deleted")? {
        &[Lifecycle::Active, Lifecycle::Deleted]
    } else {
        &[Lifecycle::Active]
    };
    blocking(move || {
        let found = mlflow::find_runs(
            st.store.as_ref(),
            experiments,
            lifecycles,
            &conditions,
            &order,
            true,
        )
        .map_err(|e| ApiError::http(e.status(), e.code, e.message))?;
        let runs: Vec<&Run> = found.runs.iter().collect();
        // Written straight to bytes: 10,000 rows are megabytes of JSON, not worth a `Value` tree first.
        let body = serde_json::to_vec(&build(&runs)).map_err(|e| {
            ApiError::http(StatusCode::INTERNAL_SERVER_ERROR, "STORAGE", e.to_string())
        })?;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    })
    .await
}

/// The portal shows flightlog's status names (`Completed`, `Failed`, `Queued` …), so a status condition of
/// the table may use them as well as MLflow's: in `=` and `!=` (the comparators MLflow's grammar allows on
/// status besides LIKE) a flightlog name, in any case, is replaced by the MLflow name it maps to
/// (`Completed` → `FINISHED`, `Canceled` → `KILLED`; `Queued`, `Preparing` and `NotStarted` → `SCHEDULED`;
/// `Finalizing` and `CancelRequested` → `RUNNING`) before filtering. MLflow's names pass unchanged; MLflow's
/// own runs/search does not do this.
fn accept_flightlog_status_names(conditions: &mut [mlflow::Condition]) {
    for c in conditions.iter_mut().filter(|c| is_status_equality(c)) {
        if let mlflow::Literal::Text(name) = &mut c.value {
            to_mlflow_status_name(name);
        }
    }
}

fn is_status_equality(c: &mlflow::Condition) -> bool {
    c.ident.kind == mlflow::SearchKind::TextAttr
        && c.ident.key == "status"
        && matches!(c.op, mlflow::Op::Eq | mlflow::Op::Ne)
}

fn to_mlflow_status_name(name: &mut String) {
    if let Some(status) = RunStatus::ALL
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name))
    {
        *name = mlflow::status_name(status).to_string();
    }
}

fn build<'a>(runs: &[&'a Run]) -> Table<'a> {
    let mut table = Table {
        total: runs.len(),
        param_keys: BTreeSet::new(),
        metric_keys: BTreeSet::new(),
        runs: Vec::with_capacity(runs.len()),
    };
    for run in runs {
        let metrics: BTreeMap<&str, &Value> = run
            .metrics
            .iter()
            .filter(|s| s.kind == MetricKind::Scalar && !s.last_value.is_null())
            .map(|s| (s.name.as_str(), &s.last_value))
            .collect();
        table
            .param_keys
            .extend(run.params.keys().map(String::as_str));
        table.metric_keys.extend(metrics.keys().copied());
        table.runs.push(Row {
            id: run.id.as_str(),
            name: &run.display_name,
            status: run.status,
            parent_id: run.parent_id.as_ref().map(|p| p.as_str()),
            user: &run.user,
            created_time: run.created_time,
            start_time: run.start_time,
            end_time: run.end_time,
            params: &run.params,
            metrics,
        });
    }
    table
}
