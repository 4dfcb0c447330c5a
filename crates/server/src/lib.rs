//! The flightlog HTTP server: the native JSON API of `docs/api.md`, live event streams (SSE), health and
//! OpenAPI, all over a [`Store`].

mod artifacts;
mod downsample_cache;
mod error;
mod events;
mod experiments;
mod extract;
mod guard;
mod health;
mod listen;
mod logs;
mod metrics;
mod mlflow;
mod openapi;
mod portal;
mod runs;
mod runs_table;
mod series_stream;
mod tb_ingest;

pub use error::ApiError;
pub use guard::AccessPolicy;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flightlog_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::trace::TraceLayer;

/// Largest JSON request body (a batch of a few million points fits).
pub const DEFAULT_JSON_BODY_BYTES: usize = flightlog_model::validate::MAX_REQUEST_JSON_BYTES;
// An image is one body on the JSON routes: the client checks it against MAX_IMAGE_BYTES, not against this.
const _: () = assert!(DEFAULT_JSON_BODY_BYTES >= flightlog_model::validate::MAX_IMAGE_BYTES);
/// Largest artifact upload by default (`flightlog server --max-artifact-size` sets it): uploads stream to disk,
/// and model checkpoints are often several GiB.
pub const DEFAULT_ARTIFACT_BODY_BYTES: usize = 16 << 30;

/// Where to listen and how big an upload may be.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Largest artifact PUT body; JSON endpoints stay at [`DEFAULT_JSON_BODY_BYTES`] (or this, if smaller).
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers before its connection is closed.
    pub header_read_timeout: std::time::Duration,
    /// Host headers and origins accepted beyond the defaults (see [`AccessPolicy`]).
    pub access: AccessPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 5000,
            max_body_bytes: DEFAULT_ARTIFACT_BODY_BYTES,
            header_read_timeout: listen::HEADER_READ_TIMEOUT,
            access: AccessPolicy::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    /// Largest artifact upload, enforced while streaming (the body never sits in memory whole).
    pub artifact_limit: usize,
    /// Cancelled on shutdown so that endless event streams end and graceful shutdown can finish.
    pub shutdown: CancellationToken,
    /// Recent downsampled chart reads (the portal reopens the same charts).
    pub downsampled: Arc<downsample_cache::DownsampleCache>,
}

/// The API with default limits, as served on 127.0.0.1; event streams end only when their clients leave.
pub fn router(store: Arc<dyn Store>) -> Router {
    build_router(
        store,
        DEFAULT_JSON_BODY_BYTES,
        DEFAULT_ARTIFACT_BODY_BYTES,
        CancellationToken::new(),
        AccessPolicy::default().listening_on("127.0.0.1"),
    )
}

fn build_router(
    store: Arc<dyn Store>,
    json_limit: usize,
    artifact_limit: usize,
    shutdown: CancellationToken,
    access: AccessPolicy,
) -> Router {
    let access = Arc::new(access);
    let state = AppState {
        store,
        artifact_limit,
        shutdown,
        downsampled: Default::default(),
    };
    let api = Router::new()
        .merge(experiments::routes())
        .merge(runs::routes())
        .merge(runs_table::routes())
        .merge(metrics::routes())
        .merge(logs::routes())
        .merge(events::routes())
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| refuse_declared_over::<ApiError>(json_limit, req, next),
        ))
        // Artifact uploads stream past the buffered-body limit; their own limit is counted while streaming.
        .merge(artifacts::routes().layer(DefaultBodyLimit::disable()));
    Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .nest("/api/v1", api)
        .merge(mlflow::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| guard::guard(access.clone(), req, next),
        ))
        .layer(
            CompressionLayer::new()
                .quality(CompressionLevel::Fastest)
                .compress_when(compress_json),
        )
        .layer(TraceLayer::new_for_http())
}

/// Binds, calls `on_ready` with the bound address, and serves until `shutdown` resolves; requests in flight
/// then finish and open event streams are closed.
pub async fn serve(
    config: ServerConfig,
    store: Arc<dyn Store>,
    on_ready: impl FnOnce(SocketAddr) + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let json_limit = DEFAULT_JSON_BODY_BYTES.min(config.max_body_bytes);
    let legacy = store.clone();
    let moved =
        tokio::task::spawn_blocking(move || mlflow::move_legacy_model_files(legacy.as_ref()));
    if let Ok(Err(e)) = moved.await {
        tracing::warn!("could not move logged models' files out of their runs: {e}");
    }
    tokio::spawn(tb_ingest::run(store.clone(), token.clone()));
    let access = config.access.listening_on(&config.host);
    let app = build_router(
        store,
        json_limit,
        config.max_body_bytes,
        token.clone(),
        access,
    );
    on_ready(addr);
    let signal = async move {
        shutdown.await;
        token.cancel();
    };
    listen::serve(listener, app, config.header_read_timeout, signal).await
}

/// The portal answers GETs outside the API namespaces; anything else unmatched is the API's JSON 404.
async fn not_found(req: Request) -> Response {
    if portal::is_portal_request(req.method(), req.uri().path()) {
        return portal::serve(&req);
    }
    ApiError::http(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

/// 405, in the MLflow error shape on MLflow's paths (its clients read only that one).
async fn method_not_allowed(req: Request) -> Response {
    let path = req.uri().path();
    let message = format!("method {} is not allowed on {path}", req.method());
    if mlflow::is_mlflow_path(path) {
        return mlflow::MlError::new("METHOD_NOT_ALLOWED", message).into_response();
    }
    ApiError::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        message,
    )
    .into_response()
}

/// Turns any error response that is not JSON yet (a rejection made inside axum, e.g. a path that is not
/// valid UTF-8) into the API's JSON error body, so clients only ever parse one error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = Response::from_parts(
        parts,
        Body::from(error::error_body(error::code_for_status(status), &text)),
    );
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out.into_response()
}

/// The body size a request declares in its Content-Length header, if it gives a valid one.
pub(crate) fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Answers 413 at once (in the error shape `E` of the API) to a request whose Content-Length is over `limit`,
/// instead of reading a body it would refuse anyway, or waiting for one that never comes.
pub(crate) async fn refuse_declared_over<E: From<ApiError> + IntoResponse>(
    limit: usize,
    mut req: Request,
    next: Next,
) -> Response {
    // Told to the body reader, whose refusal of a longer body sent without a length names the limit too.
    req.extensions_mut().insert(extract::BodyLimit(limit));
    match declared_length(req.headers()).filter(|n| *n > limit as u64) {
        Some(size) => E::from(ApiError::Model(flightlog_model::Error::TooLarge {
            what: "the request body".into(),
            size,
            limit: limit as u64,
        }))
        .into_response(),
        None => next.run(req).await,
    }
}

/// Gzip only JSON worth compressing: never event streams (they must flush each event), binary series or
/// artifact downloads (those keep their Content-Length).
fn compress_json(
    _status: StatusCode,
    _version: axum::http::Version,
    headers: &axum::http::HeaderMap,
    ext: &axum::http::Extensions,
) -> bool {
    if ext.get::<artifacts::NoCompress>().is_some() {
        return false;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < 1024);
    json && !small
}
