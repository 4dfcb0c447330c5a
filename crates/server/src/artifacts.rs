//! Artifacts: streamed uploads and downloads of a run's files, listings, deletes.

use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, body_chunks, run_id, BodyChunks, BodyFault, Query, BUDGET_WAIT};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use bytes::BytesMut;
use flightlog_model::{validate, ArtifactInfo, Error};
use flightlog_store::{FileOwner, UPLOAD_PIECE};
use futures::StreamExt;
use serde_json::{json, Value};
use std::io::{self, Read};
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// Streams an upload into the owner's file `path`: the body is read here, on the runtime, and each
/// [`UPLOAD_PIECE`] gathered is written to the store's temp file on a blocking thread. A client that sends
/// slowly or not at all thus holds no thread, only its piece's memory. The bytes are counted on the way, so an
/// upload over the limit fails (and the store discards its temp file) without ever being held in memory. Both
/// APIs' uploads come here.
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
    let _slot = upload_slot(&UPLOAD_SLOTS).await?;
    let store = st.store.clone();
    let mut upload = blocking(move || Ok(store.begin_file(&owner, &path)?)).await?;
    let mut pieces = Pieces::new(body, limit);
    while let Some(piece) = pieces.next().await? {
        upload = blocking(move || {
            upload.write(&piece)?;
            Ok(upload)
        })
        .await?;
    }
    blocking(move || Ok(upload.finish()?)).await
}

/// An upload's body in pieces of [`UPLOAD_PIECE`] bytes (the last one shorter), failing once more than
/// `limit` bytes have come or the body fails ([`body_chunks`]).
struct Pieces {
    chunks: BodyChunks,
    seen: u64,
    limit: u64,
}

impl Pieces {
    fn new(body: Body, limit: u64) -> Pieces {
        Pieces {
            chunks: body_chunks(body),
            seen: 0,
            limit,
        }
    }

    async fn next(&mut self) -> ApiResult<Option<Bytes>> {
        let mut piece = BytesMut::new();
        while piece.len() < UPLOAD_PIECE {
            let Some(chunk) = self.chunks.next().await else {
                break;
            };
            let chunk = chunk.map_err(|fault| fault.answer("the file"))?;
            self.seen += chunk.len() as u64;
            if self.seen > self.limit {
                return Err(too_large(self.seen, self.limit));
            }
            if piece.is_empty() && chunk.len() >= UPLOAD_PIECE {
                return Ok(Some(chunk));
            }
            piece.extend_from_slice(&chunk);
        }
        Ok((!piece.is_empty()).then(|| piece.freeze()))
    }
}

/// Uploads received at once; more wait for a slot. An upload holds no thread while it waits for its client
/// (only its temp file's descriptor and at most one [`UPLOAD_PIECE`] of memory), so this bounds open files
/// and memory, not threads: 1,024 uploads in flight hold at most 256 MiB. (Never closed: acquiring only fails
/// on a closed semaphore.)
static UPLOAD_SLOTS: Semaphore = Semaphore::const_new(UPLOAD_SLOT_COUNT);
pub(crate) const UPLOAD_SLOT_COUNT: usize = 1024;

/// A slot among `slots` for one upload. It waits as a JSON body waits for memory, then is refused with a 503
/// its client retries: slow clients holding every slot would otherwise leave each later upload unanswered for
/// as long as they hold out.
async fn upload_slot(slots: &'static Semaphore) -> ApiResult<SemaphorePermit<'static>> {
    match tokio::time::timeout(BUDGET_WAIT, slots.acquire()).await {
        Ok(Ok(slot)) => Ok(slot),
        Ok(Err(_)) | Err(_) => Err(BodyFault::UploadsBusy.answer("the file")),
    }
}

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
    use super::*;

    /// With every slot held, an upload waits [`BUDGET_WAIT`] (the clock is paused, so at once) and is refused
    /// with a 503 that says why; once a slot is free, the next one gets it.
    #[tokio::test(start_paused = true)]
    async fn an_upload_that_finds_no_slot_is_refused_as_busy() {
        static SLOTS: Semaphore = Semaphore::const_new(1);
        let held = upload_slot(&SLOTS).await.expect("a free slot");
        let refused = upload_slot(&SLOTS).await.expect_err("no slot left");
        assert_eq!(
            refused.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            refused.message(),
            "the server is receiving as many uploads as it may (1024) and none finished for 30 s; nothing \
             was stored, send the file again"
        );
        drop(held);
        assert!(upload_slot(&SLOTS).await.is_ok());
    }

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
