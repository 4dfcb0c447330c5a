//! Metrics: the batch ingest hot path, image uploads, metric listings and series reads (JSON or binary).

use crate::downsample_cache::Key;
use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, body_bytes, json_bytes, parse_json, run_id, write_batch, Query};
use crate::series_stream::{self, Format, STREAM_POINTS};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flightlog_model::{
    scalar_wire, Batch, BatchAck, ImageWrite, MetricKind, ReadRange, Record, RunId, ScalarSeries,
    SeriesInfo, WallTime, F64,
};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}/batch", post(batch))
        .route("/runs/{id}/images", post(image))
        .route("/runs/{id}/metrics", get(list))
        .route("/runs/{id}/metrics/{*name}", get(read))
}

/// A body this small is parsed on the async worker (well under a millisecond); a bigger one (an import's
/// 65,536 points) is parsed on the blocking pool so that it cannot stall the workers. Either way the batch is
/// then handed straight to the store's writer and awaited without parking a thread.
const INLINE_PARSE_BYTES: usize = 256 * 1024;

/// Appends a batch. A body of type [`scalar_wire::MEDIA_TYPE`] is a scalar-only batch in binary columns
/// (imports send those).
async fn batch(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<BatchAck>> {
    let id = run_id(&id)?;
    let binary = is_binary_batch(req.headers());
    let bytes = if binary {
        body_bytes(req, &()).await?
    } else {
        json_bytes(req, &()).await?
    };
    let started = std::time::Instant::now();
    let size = bytes.len();
    let batch = if size <= INLINE_PARSE_BYTES {
        decode_batch(&bytes, binary)?
    } else {
        blocking(move || decode_batch(&bytes, binary)).await?
    };
    let parsed = started.elapsed();
    let ack = write_batch(st.store.as_ref(), &id, batch).await?;
    tracing::debug!(size, points = ack.points, ?parsed, stored = ?(started.elapsed() - parsed), "batch");
    Ok(Json(ack))
}

fn decode_batch(bytes: &[u8], binary: bool) -> ApiResult<Batch> {
    if binary {
        Ok(scalar_wire::decode(bytes)?)
    } else {
        parse_json(bytes)
    }
}

fn is_binary_batch(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(scalar_wire::MEDIA_TYPE))
}

/// The image bytes are the body; what they are comes from the query and the Content-Type.
async fn image(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Json<Record>> {
    let id = run_id(&id)?;
    let q = Query::parse(raw);
    let meta = ImageWrite {
        name: q
            .get("name")
            .ok_or_else(|| ApiError::invalid("name", "the query parameter is required"))?
            .to_string(),
        description: q.get("description").map(str::to_string),
        step: q.parsed("step")?,
        time: q.parsed::<i64>("time")?.map(WallTime),
        media_type: media_type(&headers)?,
        batch_id: q.get("batch_id").map(str::to_string),
    };
    let bytes = body_bytes(req, &()).await?;
    Ok(Json(
        blocking(move || Ok(st.store.write_image(&id, meta, &bytes)?)).await?,
    ))
}

fn media_type(headers: &HeaderMap) -> ApiResult<String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() {
        return Err(ApiError::invalid(
            "Content-Type",
            "give the image's media type, e.g. image/png",
        ));
    }
    Ok(essence)
}

async fn list(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = run_id(&id)?;
    let items = blocking(move || Ok(st.store.list_metrics(&id)?)).await?;
    Ok(Json(json!({ "items": items })))
}

/// What `GET …/metrics/{name}` asked for.
struct ReadQuery {
    range: ReadRange,
    buckets: Option<u32>,
    binary: bool,
}

impl ReadQuery {
    fn format(&self) -> Format {
        if self.binary {
            Format::Binary
        } else {
            Format::Json
        }
    }
}

fn read_query(q: &Query) -> ApiResult<ReadQuery> {
    let binary = match q.get("format") {
        None | Some("json") => false,
        Some("binary") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("'{other}' is not a format (json or binary)"),
            ))
        }
    };
    let buckets: Option<u32> = q.parsed("buckets")?;
    if buckets == Some(0) {
        return Err(ApiError::invalid("buckets", "must be at least 1"));
    }
    let range = ReadRange {
        start_index: q.parsed("start_index")?.unwrap_or(0),
        limit: q.parsed("limit")?,
        min_step: q.parsed("min_step")?,
        max_step: q.parsed("max_step")?,
    };
    Ok(ReadQuery {
        range,
        buckets,
        binary,
    })
}

async fn read(
    State(st): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let id = run_id(&id)?;
    let rq = read_query(&Query::parse(raw))?;
    blocking(move || {
        let store = &st.store;
        let info = store.metric_info(&id, &name)?;
        if info.kind != MetricKind::Scalar {
            if rq.binary || rq.buckets.is_some() {
                let field = if rq.binary { "format" } else { "buckets" };
                return Err(ApiError::invalid(
                    field,
                    format!("metric '{name}' is a {} metric; only scalars", info.kind),
                ));
            }
            let records = store.read_records(&id, &name, &rq.range)?;
            return Ok(Json(json!({ "info": info, "records": records })).into_response());
        }
        let started = std::time::Instant::now();
        let count = info.count;
        if let Some(n) = huge_read(&rq, count) {
            let start = rq.range.start_index;
            return Ok(counted(
                lazy_read(&st, id, name, info, start, n, rq.format()),
                count,
            ));
        }
        let series = match rq.buckets {
            Some(b) => {
                let key = Key::new(&id, &name, info.count, &rq.range, b);
                match st.downsampled.get(&key) {
                    Some(hit) => hit,
                    None => {
                        let fresh = Arc::new(store.read_downsampled(&id, &name, &rq.range, b)?);
                        st.downsampled.put(key, fresh.clone());
                        fresh
                    }
                }
            }
            None => Arc::new(store.read_scalars(&id, &name, &rq.range)?),
        };
        let read = started.elapsed();
        let resp = if series.len() > STREAM_POINTS {
            // Step bounds left a huge read to stream from memory.
            let n = series.len();
            let chunks = Arc::new(move |from, to| Ok(series.slice(from, to)));
            series_stream::response(info, n, rq.format(), chunks)
        } else if rq.binary {
            binary_response(&series)
        } else {
            parts_response(scalar_json_parts(&info, &series))
        };
        tracing::debug!(?read, encoded = ?(started.elapsed() - read), "scalar read");
        Ok(counted(resp, count))
    })
    .await
}

/// The number of points of a read to stream from the store a chunk at a time: an index range (no step
/// bounds, no downsampling) of more than [`STREAM_POINTS`]. `None` for any other read.
fn huge_read(rq: &ReadQuery, count: u64) -> Option<usize> {
    let r = &rq.range;
    if rq.buckets.is_some() || r.min_step.is_some() || r.max_step.is_some() {
        return None;
    }
    let left = count.saturating_sub(r.start_index);
    let n = usize::try_from(r.limit.map_or(left, |l| l.min(left))).ok()?;
    (n > STREAM_POINTS).then_some(n)
}

/// Streams points `start..start + n` of a series, each chunk read from the store as the body is written.
/// Points are only ever appended, so every column reads the same points.
fn lazy_read(
    st: &AppState,
    id: RunId,
    name: String,
    info: SeriesInfo,
    start: u64,
    n: usize,
    format: Format,
) -> Response {
    let store = st.store.clone();
    let read = move |from: usize, to: usize| {
        let range = ReadRange {
            start_index: start + from as u64,
            limit: Some((to - from) as u64),
            ..Default::default()
        };
        store.read_scalars(&id, &name, &range)
    };
    series_stream::response(info, n, format, Arc::new(read))
}

/// A JSON body sent as the pieces it was written in, with its exact length.
fn parts_response(parts: Vec<Vec<u8>>) -> Response {
    let len: usize = parts.iter().map(Vec::len).sum();
    let chunks = parts
        .into_iter()
        .map(|p| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(p)));
    let mut resp = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// u64 LE count, then the steps, times and values columns, each n little-endian 8-byte words.
pub fn scalar_binary(s: &ScalarSeries) -> Vec<u8> {
    // Equal by contract; if a store bug made them differ, the shortest keeps the layout consistent.
    let n = s.steps.len().min(s.times.len()).min(s.values.len());
    let mut out = Vec::with_capacity(8 + 24 * n);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    s.steps
        .iter()
        .take(n)
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    s.times
        .iter()
        .take(n)
        .for_each(|v| out.extend_from_slice(&v.0.to_le_bytes()));
    s.values
        .iter()
        .take(n)
        .for_each(|v| out.extend_from_slice(&v.0.to_bits().to_le_bytes()));
    out
}

/// The header saying how many points the series held when it was read.
pub const SERIES_COUNT: &str = "x-series-count";

/// Adds [`SERIES_COUNT`]: a downsampled answer carries bucket extremes, not how long the series is, and a live
/// chart appends the points logged after it by index from there.
fn counted(mut resp: Response, count: u64) -> Response {
    resp.headers_mut()
        .insert(SERIES_COUNT, HeaderValue::from(count));
    resp
}

fn binary_response(s: &ScalarSeries) -> Response {
    let mut resp = Response::new(Body::from(scalar_binary(s)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// The whole body in one buffer (tests compare it with serde's output).
#[cfg(test)]
fn scalar_json(info: &SeriesInfo, s: &ScalarSeries) -> Vec<u8> {
    scalar_json_parts(info, s).concat()
}

/// Below this many points one thread writes the whole body; above it, the integer columns and the float
/// column are written on two threads at once (a million points: about half the time).
const PARALLEL_POINTS: usize = 100_000;

/// `{"info":…,"steps":[…],"times":[…],"values":[…]}` written by hand (serde's generic path per value costs
/// several times more), in pieces that are sent as they are, without a final copy.
pub fn scalar_json_parts(info: &SeriesInfo, s: &ScalarSeries) -> Vec<Vec<u8>> {
    let mut head = Vec::with_capacity(256 + s.len() * 26);
    head.extend_from_slice(b"{\"info\":");
    if serde_json::to_writer(&mut head, info).is_err() {
        head.extend_from_slice(b"null");
    }
    if s.len() < PARALLEL_POINTS {
        write_int_columns(&mut head, s);
        write_value_column(&mut head, s);
        head.push(b'}');
        return vec![head];
    }
    let values = std::thread::scope(|scope| {
        let values = scope.spawn(|| {
            let mut out = Vec::with_capacity(s.len() * 24 + 16);
            write_value_column(&mut out, s);
            out.push(b'}');
            out
        });
        write_int_columns(&mut head, s);
        values.join()
    });
    match values {
        Ok(values) => vec![head, values],
        // Only a bug could panic there; answer from one thread rather than fail the request.
        Err(_) => scalar_json_parts_single(info, s),
    }
}

fn scalar_json_parts_single(info: &SeriesInfo, s: &ScalarSeries) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + s.len() * 48);
    out.extend_from_slice(b"{\"info\":");
    if serde_json::to_writer(&mut out, info).is_err() {
        out.extend_from_slice(b"null");
    }
    write_scalar_columns(&mut out, s);
    out.push(b'}');
    vec![out]
}

/// Appends `,"steps":[…],"times":[…],"values":[…]` (shared with the event stream's points events).
pub fn write_scalar_columns(out: &mut Vec<u8>, s: &ScalarSeries) {
    write_int_columns(out, s);
    write_value_column(out, s);
}

fn write_int_columns(out: &mut Vec<u8>, s: &ScalarSeries) {
    out.extend_from_slice(b",\"steps\":[");
    write_int_items(out, s.steps.iter().copied(), 0);
    out.extend_from_slice(b"],\"times\":[");
    write_int_items(out, s.times.iter().map(|t| t.0), 0);
    out.push(b']');
}

fn write_value_column(out: &mut Vec<u8>, s: &ScalarSeries) {
    out.extend_from_slice(b",\"values\":[");
    write_value_items(out, &s.values, 0);
    out.push(b']');
}

/// Appends integers as JSON array items; `at` is the index of the first in its array (a comma precedes every
/// item but the array's first), so an array can be written in pieces.
pub(crate) fn write_int_items(out: &mut Vec<u8>, values: impl Iterator<Item = i64>, at: usize) {
    let mut ib = itoa::Buffer::new();
    for (i, v) in values.enumerate() {
        if at + i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(ib.format(v).as_bytes());
    }
}

/// [`write_int_items`] for values, in `F64`'s JSON form.
pub(crate) fn write_value_items(out: &mut Vec<u8>, values: &[F64], at: usize) {
    let mut fb = ryu::Buffer::new();
    for (i, v) in values.iter().enumerate() {
        if at + i > 0 {
            out.push(b',');
        }
        write_f64(out, &mut fb, v.0);
    }
}

/// Same text as `F64`'s serde form: ryu for finite values, the three strings otherwise.
fn write_f64(out: &mut Vec<u8>, fb: &mut ryu::Buffer, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(fb.format_finite(v).as_bytes());
    } else if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::F64;

    fn info() -> SeriesInfo {
        serde_json::from_value(json!({"name":"loss","kind":"scalar","count":3})).unwrap()
    }

    #[test]
    fn hand_written_json_matches_serde() {
        let s = ScalarSeries {
            steps: vec![0, 1, -5],
            times: vec![WallTime(1), WallTime(2), WallTime(3)],
            values: vec![F64(0.1), F64(f64::NAN), F64(f64::NEG_INFINITY)],
        };
        let fast: Value = serde_json::from_slice(&scalar_json(&info(), &s)).unwrap();
        let big = ScalarSeries {
            steps: (0..200_000).collect(),
            times: (0..200_000).map(WallTime).collect(),
            values: (0..200_000).map(|i| F64(i as f64 / 7.0)).collect(),
        };
        let whole = scalar_json_parts(&info(), &big).concat();
        assert_eq!(whole, scalar_json_parts_single(&info(), &big).concat());
        let parts: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(parts["values"].as_array().unwrap().len(), 200_000);
        assert_eq!(parts["times"][199_999], 199_999);
        let slow = json!({"info": info(), "steps": s.steps, "times": s.times, "values": s.values});
        assert_eq!(fast, slow);
        assert_eq!(fast["values"], json!([0.1, "NaN", "-Infinity"]));
    }

    #[test]
    fn binary_layout() {
        let s = ScalarSeries {
            steps: vec![7],
            times: vec![WallTime(9)],
            values: vec![F64(1.5)],
        };
        let b = scalar_binary(&s);
        assert_eq!(b.len(), 32);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1);
        assert_eq!(f64::from_le_bytes(b[24..32].try_into().unwrap()), 1.5);
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use flightlog_model::F64;

    #[test]
    #[ignore]
    fn scalar_json_speed() {
        let n = 1_000_000;
        let s = ScalarSeries {
            steps: (0..n as i64).collect(),
            times: (0..n as i64)
                .map(|i| WallTime(1_700_000_000_000_000 + i))
                .collect(),
            values: (0..n).map(|i| F64((i as f64 * 0.37).sin())).collect(),
        };
        let info: SeriesInfo =
            serde_json::from_value(json!({"name":"loss","kind":"scalar","count":n})).unwrap();
        let (mut par, mut single) = (f64::MAX, f64::MAX);
        for _ in 0..10 {
            let t = std::time::Instant::now();
            let out = scalar_json_parts(&info, &s);
            par = par.min(t.elapsed().as_secs_f64() * 1e3);
            assert!(out.iter().map(Vec::len).sum::<usize>() > 40_000_000);
            let t = std::time::Instant::now();
            let _ = scalar_json_parts_single(&info, &s);
            single = single.min(t.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!(
            "1M points to JSON, best of 10: two threads {par:.1} ms, one thread {single:.1} ms"
        );
        let body = scalar_json(&info, &s);
        let t = std::time::Instant::now();
        let v: Value = serde_json::from_slice(&body).unwrap();
        eprintln!(
            "a client parsing it into serde_json::Value: {:?}",
            t.elapsed()
        );
        assert_eq!(v["values"].as_array().map(Vec::len), Some(n));
    }
}
