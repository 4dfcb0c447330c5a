//! Log streams: append raw bytes, read slices by offset, list a run's streams.

use crate::error::ApiResult;
use crate::extract::{blocking, body_bytes, run_id, Query};
use crate::AppState;
use axum::extract::{Path, RawQuery, Request, State};
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::LogSlice;
use serde_json::{json, Value};

/// A read returns at most this much unless asked for more.
const DEFAULT_READ_BYTES: u64 = 1024 * 1024;
/// And never more than this, whatever is asked.
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}/logs", get(list))
        .route("/runs/{id}/logs/{stream}", get(read).post(append))
}

async fn list(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = run_id(&id)?;
    let items = blocking(move || Ok(st.store.list_logs(&id)?)).await?;
    Ok(Json(json!({ "items": items })))
}

/// The body is appended as is (any content type): log text is bytes, decoded only when read.
///
/// With `?batch_id=ID` the append is idempotent: it is stored as a batch holding only this text (the body
/// must then be UTF-8), deduplicated on `ID` like `POST /runs/{id}/batch`, and the answer is the batch's
/// acknowledgement. This is how the client's sender delivers queued log text without JSON-encoding it.
async fn append(
    State(st): State<AppState>,
    Path((id, stream)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> ApiResult<Json<Value>> {
    let id = run_id(&id)?;
    let batch_id = Query::parse(raw).parsed::<String>("batch_id")?;
    let bytes = body_bytes(req, &()).await?;
    let Some(batch_id) = batch_id else {
        let length = blocking(move || Ok(st.store.append_log(&id, &stream, &bytes)?)).await?;
        return Ok(Json(json!({ "length": length })));
    };
    let ack = blocking(move || {
        // Taking the body's buffer is free when nothing else holds it; the check is one pass over it.
        let data = String::from_utf8(Vec::from(bytes)).map_err(|e| {
            flightlog_model::Error::invalid(
                "body",
                format!("log text sent with a batch_id must be UTF-8: {e}"),
            )
        })?;
        let batch = flightlog_model::Batch {
            batch_id: Some(batch_id),
            logs: vec![flightlog_model::LogAppend { stream, data }],
            ..Default::default()
        };
        Ok(st.store.write_batch(&id, batch)?)
    })
    .await?;
    Ok(Json(json!(ack)))
}

/// `max_bytes` above the cap is clamped rather than refused: the reader just gets a shorter slice and
/// continues from `next_offset`.
async fn read(
    State(st): State<AppState>,
    Path((id, stream)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<LogSlice>> {
    let id = run_id(&id)?;
    let q = Query::parse(raw);
    let offset: u64 = q.parsed("offset")?.unwrap_or(0);
    let max_bytes: u64 = q
        .parsed::<u64>("max_bytes")?
        .unwrap_or(DEFAULT_READ_BYTES)
        .min(MAX_READ_BYTES);
    Ok(Json(
        blocking(move || Ok(st.store.read_log(&id, &stream, offset, max_bytes)?)).await?,
    ))
}
