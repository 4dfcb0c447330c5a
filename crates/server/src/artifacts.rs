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
use flightlog_store::FileOwner;
use futures::StreamExt;
use serde_json::{json, Value};
use std::io::{self, Read};
use std::sync::Arc;
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

async fn upload(
    State(st): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ArtifactInfo>> {
    let id = run_id(&id)?;
    validate::artifact_path(&path)?;
    Ok(Json(
        store_upload(st, FileOwner::Run(id), path, &headers, body).await?,
    ))
}

/// Streams an upload into the owner's file `path` from a blocking task (one of the [`UPLOAD_SLOTS`]); the
/// bytes are counted on the way so an upload over the limit fails (and the store discards its temp file)
/// without ever being held in memory. Both APIs' uploads come here.
pub(crate) async fn store_upload(
    st: AppState,
    owner: FileOwner,
    path: String,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<ArtifactInfo> {
    let limit = st.artifact_limit as u64;
    if let Some(size) = crate::declared_length(headers).filter(|n| *n > limit) {
        return Err(too_large(size, limit));
    }
    let fault = Arc::new(std::sync::Mutex::new(None));
    let reader = SyncIoBridge::new(StreamReader::new(counted(body, limit, fault.clone())));
    let slot = UPLOAD_SLOTS.acquire().await.ok();
    blocking(move || {
        let _slot = slot;
        let mut reader = reader;
        let stored = st.store.put_file(&owner, &path, &mut reader);
        // A failure of the body (the client's side) is the client's error, whatever the store made of it.
        match (stored, fault.lock().ok().and_then(|mut f| f.take())) {
            (Err(_), Some(BodyFault::TooLarge)) => Err(too_large(limit + 1, limit)),
            (Err(_), Some(BodyFault::Broken(why))) => Err(ApiError::invalid(
                "body",
                format!("{why}; nothing was stored, send the file again"),
            )),
            (r, _) => Ok(r?),
        }
    })
    .await
}

/// Why an upload's body could not be read to its end: faults of the client or its connection, answered as
/// such (not as the storage errors they surface as inside the store).
enum BodyFault {
    TooLarge,
    Broken(String),
}

/// The body's data as an `io` stream that fails once more than `limit` bytes have come, once the client has
/// sent nothing for [`UPLOAD_STALL`] (an upload is read on a blocking thread, which a silent client would
/// otherwise hold for as long as its connection stays open), or when the connection breaks; `fault` then
/// says which.
fn counted(
    body: Body,
    limit: u64,
    fault: Arc<std::sync::Mutex<Option<BodyFault>>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let data = body.into_data_stream();
    Box::pin(futures::stream::unfold(
        (data, 0u64, false),
        move |(mut data, seen, failed)| {
            let fault = fault.clone();
            async move {
                if failed {
                    return None;
                }
                let next = match tokio::time::timeout(UPLOAD_STALL, data.next()).await {
                    Err(_) => Err(BodyFault::Broken(format!(
                        "the upload stalled: no data came for {} s",
                        UPLOAD_STALL.as_secs()
                    ))),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Err(BodyFault::Broken(format!(
                        "the upload's body could not be read to its end ({e}): the client stopped sending \
                         or sent a malformed body"
                    ))),
                    Ok(Some(Ok(c))) if seen + c.len() as u64 > limit => Err(BodyFault::TooLarge),
                    Ok(Some(Ok(c))) => Ok(c),
                };
                let item = next.map_err(|why| {
                    if let Ok(mut f) = fault.lock() {
                        *f = Some(why);
                    }
                    io::Error::other("the upload's body failed")
                });
                let seen = seen + item.as_ref().map_or(0, |c| c.len() as u64);
                let failed = item.is_err();
                Some((item, (data, seen, failed)))
            }
        },
    ))
}

/// How long an upload may send nothing before it fails.
const UPLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Uploads being read at once (each on a blocking thread); more wait for a slot without holding a thread, so
/// uploads can never take the threads every other request's store calls need: half of tokio's 512. A slot is
/// held for the whole upload, so this many slow clients (checkpoints over a slow link) make others wait (64 slow
/// uploads held up every other upload in a test of round F). (Never closed: acquiring only fails on a closed
/// semaphore.)
static UPLOAD_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

fn too_large(size: u64, limit: u64) -> ApiError {
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
    Ok(file_response(ct, info.size, reader))
}

/// A stored file as an answer: its type guessed from its name, its length, no compression, and sandboxed. A
/// file is served from the portal's origin, so an uploaded HTML or SVG page opened from its link would run
/// as a page of the portal; `Content-Security-Policy: sandbox` gives it an origin of its own and no scripts.
/// (The portal's previews fetch text and show images, which the policy does not touch.)
pub(crate) fn file_response(
    ct: &'static str,
    size: Option<u64>,
    reader: Box<dyn Read + Send>,
) -> Response {
    let mut resp = Response::new(file_body(reader));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    if let Some(size) = size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    resp.extensions_mut().insert(NoCompress);
    resp
}

/// A response body read from `reader` a chunk at a time, each read on the blocking pool only when the
/// connection asks for the next chunk. A client that stops reading then holds no thread: a reader thread that
/// waited on it did, and a few hundred such clients used up the pool every store call runs on.
pub(crate) fn file_body(reader: Box<dyn Read + Send>) -> Body {
    let chunks = futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let read = tokio::task::spawn_blocking(move || {
            let chunk = read_chunk(&mut reader);
            (reader, chunk)
        });
        match read.await {
            Ok((_, Ok(None))) => None,
            Ok((reader, Ok(Some(chunk)))) => Some((Ok(chunk), Some(reader))),
            Ok((_, Err(e))) => Some((Err(e), None)),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    });
    Body::from_stream(chunks)
}

/// The next chunk of `reader`; `None` at its end.
fn read_chunk(reader: &mut dyn Read) -> io::Result<Option<Bytes>> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(Bytes::from(buf)));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
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
