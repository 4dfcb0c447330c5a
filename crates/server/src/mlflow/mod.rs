//! The MLflow tracking REST API (`/api/2.0/mlflow/...`, `/ajax-api/2.0/...`): an MLflow run is a flightlog run.

mod artifact_roots;
mod artifacts;
mod batch_body;
mod convert;
mod error;
mod experiments;
mod inputs;
mod metrics;
mod models;
mod runs;
mod search;

pub(crate) use convert::status_name;
pub(crate) use models::move_legacy_files as move_legacy_model_files;
pub(crate) use runs::find_runs;
pub(crate) use search::{parse_filter, parse_order_by, RUNS as RUN_GRAMMAR};
pub(crate) use search::{Condition, Kind as SearchKind, Literal, Op};

use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, OriginalUri, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::routing::{any, get};
use axum::{Json, Router};
pub(crate) use error::MlError;
use error::MlResult;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// The MLflow version whose REST contract this implements; `/version` reports it so clients enable the
/// matching features.
pub const MLFLOW_VERSION: &str = "3.17.2";

pub fn routes() -> Router<AppState> {
    let api = Router::new()
        .merge(experiments::routes())
        .merge(runs::routes())
        .merge(metrics::routes())
        .merge(models::routes())
        .merge(artifacts::api_routes())
        .route("/{*rest}", any(endpoint_not_found))
        .layer(DefaultBodyLimit::max(crate::DEFAULT_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn(|req: Request, next: Next| {
            crate::refuse_declared_over::<MlError>(crate::DEFAULT_JSON_BODY_BYTES, req, next)
        }));
    Router::new()
        .nest("/api/2.0/mlflow", api.clone())
        .nest("/ajax-api/2.0/mlflow", api)
        .merge(artifacts::routes().layer(DefaultBodyLimit::disable()))
        .route("/api/3.0/mlflow/server-info", get(server_info))
        .route("/version", get(version))
}

async fn endpoint_not_found(OriginalUri(uri): OriginalUri, req: Request) -> MlError {
    MlError::new(
        "ENDPOINT_NOT_FOUND",
        format!("No API endpoint found for {} {}", req.method(), uri.path()),
    )
}

/// Whether `path` is one of the MLflow API's (whose clients expect its error shape).
pub fn is_mlflow_path(path: &str) -> bool {
    ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow", "/api/3.0/mlflow"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// What the client probes before artifact transfers: plain proxied uploads and downloads, no multipart.
async fn server_info() -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": { "gateway": false },
    }))
}

async fn version() -> &'static str {
    MLFLOW_VERSION
}

/// An MLflow request: GET fields come from the query string (repeated keys become lists), every other method
/// (and a GET without a query string) from the JSON body (an empty body reads as `{}`). Parse failures are
/// 400 INVALID_PARAMETER_VALUE naming the field.
pub struct Req<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Req<T> {
    type Rejection = MlError;

    async fn from_request(req: Request, state: &S) -> MlResult<Self> {
        let query = req.uri().query().map(str::to_string);
        // As MLflow's server: a GET with a query string reads its fields from it, any other request (a GET
        // without one included) from its JSON body, which may open with a byte-order mark.
        let bytes =
            if req.method() == Method::GET && query.as_deref().is_some_and(|q| !q.is_empty()) {
                Bytes::new()
            } else {
                let bytes = crate::extract::body_bytes(req, state).await?;
                if bytes.starts_with(b"\xEF\xBB\xBF") {
                    bytes.slice(3..)
                } else {
                    bytes
                }
            };
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from(serde_json::to_vec(&query_json(query.as_deref())).unwrap_or_default())
        } else {
            bytes
        };
        crate::extract::parse_json(&bytes)
            .map(Req)
            .map_err(|e| MlError::invalid(e.message()))
    }
}

/// A query string as a JSON object: a key given once is a string, a repeated key a list of strings.
fn query_json(raw: Option<&str>) -> Value {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned() {
        match out.get_mut(&k) {
            None => {
                out.insert(k, Value::String(v));
            }
            Some(Value::Array(a)) => a.push(Value::String(v)),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, Value::String(v)]);
            }
        }
    }
    Value::Object(out)
}

/// Runs store work on the blocking pool (the store is synchronous).
pub async fn blocking<T, F>(f: F) -> MlResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> MlResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(MlError::new(
            "INTERNAL_ERROR",
            format!("internal task failed: {e}"),
        ))
    })
}

/// The `{}` every write endpoint answers.
pub fn empty() -> Json<Value> {
    Json(json!({}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_become_json() {
        let v = super::query_json(Some("run_ids=a&run_ids=b&metric_key=loss&n=1"));
        assert_eq!(v["run_ids"], serde_json::json!(["a", "b"]));
        assert_eq!(v["metric_key"], "loss");
    }
}
