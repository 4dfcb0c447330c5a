//! Artifacts: streamed uploads and downloads of a run's files, listings, deletes.

use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, run_id, Query};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{validate, ArtifactInfo, Error};
use futures::StreamExt;
use serde_json::{json, Value};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Download chunk size: big enough for throughput, small enough that a slow client holds little memory.
const CHUNK: usize = 256 * 1024;

/// Marks a response the compression layer must leave alone (downloads keep their exact Content-Length).
#[derive(Clone, Copy)]
pub struct NoCompress;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}/artifacts", get(list))
        .route(
            "/runs/{id}/artifacts/{*path}",
            get(download).put(upload).delete(remove),
        )
}

async fn list(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let id = run_id(&id)?;
    let q = Query::parse(raw);
    let prefix = q
        .get("prefix")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let recursive = q.flag("recursive")?;
    let items =
        blocking(move || Ok(st.store.list_artifacts(&id, prefix.as_deref(), recursive)?)).await?;
    Ok(Json(json!({ "items": items })))
}

/// Streams the body into the store from a blocking task; the bytes are counted on the way so an upload over
/// the limit fails (and the store discards its temp file) without ever being held in memory.
async fn upload(
    State(st): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ArtifactInfo>> {
    let id = run_id(&id)?;
    validate::artifact_path(&path)?;
    let limit = st.artifact_limit as u64;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(size) = declared.filter(|n: &u64| *n > limit) {
        return Err(too_large(size, limit));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let reader = SyncIoBridge::new(StreamReader::new(counted(body, limit, exceeded.clone())));
    let info = blocking(move || {
        let mut reader = reader;
        match st.store.put_artifact(&id, &path, &mut reader) {
            Err(_) if exceeded.load(Ordering::SeqCst) => Err(too_large(limit + 1, limit)),
            r => Ok(r?),
        }
    })
    .await?;
    Ok(Json(info))
}

/// The body's data as an `io` stream that fails once more than `limit` bytes have come.
pub(crate) fn counted(
    body: Body,
    limit: u64,
    exceeded: Arc<AtomicBool>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let mut seen = 0u64;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            exceeded.store(true, Ordering::SeqCst);
            return Err(io::Error::other(format!(
                "upload larger than {limit} bytes"
            )));
        }
        Ok(chunk)
    })
}

pub(crate) fn too_large(size: u64, limit: u64) -> ApiError {
    ApiError::Model(Error::TooLarge {
        what: "artifact upload".into(),
        size,
        limit,
    })
}

/// Streams the file from a blocking reader through a small channel, so memory stays flat for any size.
async fn download(
    State(st): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = run_id(&id)?;
    let ct = content_type(&path);
    let (info, reader) = blocking(move || Ok(st.store.open_artifact(&id, &path)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || pump(reader, tx));
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Some(size) = info.size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    resp.extensions_mut().insert(NoCompress);
    Ok(resp)
}

/// Reads chunks until the end, the first error, or the client going away (the channel closes).
pub(crate) fn pump(
    mut reader: Box<dyn Read + Send>,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

async fn remove(
    State(st): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let id = run_id(&id)?;
    blocking(move || Ok(st.store.delete_artifact(&id, &path)?)).await?;
    Ok(Json(json!({})))
}

/// The media type for a file name's extension; unknown ones are plain bytes.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "out" | "err" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "py" => "text/x-python; charset=utf-8",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn guesses_types() {
        assert_eq!(super::content_type("a/b/model.PNG"), "image/png");
        assert_eq!(
            super::content_type("weights.pt"),
            "application/octet-stream"
        );
        assert_eq!(super::content_type("noext"), "application/octet-stream");
    }
}
