//! MLflow metric reads: get-history (paged, opaque tokens) and get-history-bulk-interval (downsampled).

use super::convert::{double, one_or_many, opt_i64};
use super::error::{MlError, MlResult};
use super::runs::{find, run_id};
use super::search;
use super::{blocking, Req};
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{Error, ReadRange, RunId, ScalarSeries};
use flightlog_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most runs one bulk-interval request may name, and its point bounds (MLflow's).
const MAX_BULK_RUNS: usize = 100;
const MAX_BULK_RESULTS: i64 = 2500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics/get-history", get(history))
        .route("/metrics/get-history-bulk-interval", get(bulk_interval))
}

#[derive(Deserialize, Default)]
struct HistoryReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(default)]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    #[serde(default)]
    page_token: Option<String>,
}

/// One point as (timestamp ms, step, value).
type Point = (i64, i64, f64);

fn points(s: ScalarSeries) -> Vec<Point> {
    s.times
        .iter()
        .zip(&s.steps)
        .zip(&s.values)
        .map(|((t, step), v)| (t.millis(), *step, v.0))
        .collect()
}

/// A scalar series' points; an unknown or non-scalar metric has none (MLflow answers an empty history).
fn read(
    store: &dyn Store,
    run: &RunId,
    key: &str,
    range: &ReadRange,
    buckets: Option<u32>,
) -> MlResult<Vec<Point>> {
    let series = match buckets {
        Some(b) => store.read_downsampled(run, key, range, b),
        None => store.read_scalars(run, key, range),
    };
    match series {
        Ok(s) => Ok(points(s)),
        Err(Error::NotFound { .. } | Error::InvalidArgument { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The whole history ordered by timestamp, step, value (MLflow's order), paged when asked.
async fn history(State(st): State<AppState>, Req(r): Req<HistoryReq>) -> MlResult<Response> {
    let id = run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let key = r
        .metric_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| MlError::missing("metric_key"))?;
    let limit = match r.max_results {
        None => usize::MAX,
        Some(n) if n >= 1 => n as usize,
        Some(n) => {
            return Err(MlError::invalid(format!(
                "Invalid value {n} for parameter 'max_results': it must be at least 1"
            )))
        }
    };
    // Like MLflow's server, an unknown run has an empty history rather than a 404.
    let body = blocking(move || {
        let mut pts = read(st.store.as_ref(), &id, &key, &ReadRange::default(), None)?;
        if !pts.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)) {
            pts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        }
        let (page, next) = search::page(pts, limit, r.page_token.as_deref())?;
        Ok(history_json(&key, &page, next.as_deref()))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The get-history body, written directly: a page holds up to 25,000 points and building a JSON value per
/// point costs several times more than the store read.
fn history_json(key: &str, page: &[Point], next: Option<&str>) -> String {
    let key = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(32 + page.len() * (key.len() + 64));
    out.push_str("{\"metrics\":[");
    let (mut ints, mut floats) = (itoa::Buffer::new(), ryu::Buffer::new());
    for (i, (ts, step, v)) in page.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        out.push_str(&key);
        out.push_str(",\"value\":");
        match flightlog_model::non_finite_name(*v) {
            Some(name) => {
                out.push('"');
                out.push_str(name);
                out.push('"');
            }
            None => out.push_str(floats.format_finite(*v)),
        }
        out.push_str(",\"timestamp\":");
        out.push_str(ints.format(*ts));
        out.push_str(",\"step\":");
        out.push_str(ints.format(*step));
        out.push('}');
    }
    out.push(']');
    if let Some(t) = next {
        out.push_str(",\"next_page_token\":\"");
        out.push_str(t);
        out.push('"');
    }
    out.push('}');
    out
}

#[derive(Deserialize, Default)]
struct BulkReq {
    #[serde(default, deserialize_with = "one_or_many")]
    run_ids: Vec<String>,
    #[serde(default)]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    start_step: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    end_step: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
}

/// Up to `max_results` points per run within the step range, from the downsampled blocks (each bucket keeps
/// its min and max, so spikes survive).
async fn bulk_interval(State(st): State<AppState>, Req(r): Req<BulkReq>) -> MlResult<Json<Value>> {
    if r.run_ids.is_empty() {
        return Err(MlError::missing("run_ids"));
    }
    if r.run_ids.len() > MAX_BULK_RUNS {
        return Err(MlError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. Received {} run_ids.",
            r.run_ids.len()
        )));
    }
    let key = r
        .metric_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| MlError::missing("metric_key"))?;
    let max = r.max_results.unwrap_or(MAX_BULK_RESULTS);
    if !(1..=MAX_BULK_RESULTS).contains(&max) {
        return Err(MlError::invalid(format!(
            "max_results must be between 1 and {MAX_BULK_RESULTS}, got {max}"
        )));
    }
    if let (Some(a), Some(b)) = (r.start_step, r.end_step) {
        if a > b {
            return Err(MlError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={a} and end_step={b}."
            )));
        }
    }
    let ids = r
        .run_ids
        .iter()
        .map(|i| run_id(Some(i), None))
        .collect::<MlResult<Vec<_>>>()?;
    let range = ReadRange {
        min_step: r.start_step,
        max_step: r.end_step,
        ..Default::default()
    };
    let buckets = ((max / 2).max(1)) as u32;
    let out = blocking(move || {
        let mut metrics = Vec::new();
        for id in &ids {
            find(st.store.as_ref(), id)?;
            let mut pts = read(st.store.as_ref(), id, &key, &range, Some(buckets))?;
            pts.sort_by_key(|p| (p.1, p.0));
            pts.truncate(max as usize);
            metrics.extend(pts.iter().map(|(ts, step, v)| {
                json!({ "key": key, "value": double(*v), "timestamp": ts, "step": step, "run_id": id.as_str() })
            }));
        }
        Ok(json!({ "metrics": metrics }))
    })
    .await?;
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_json_matches_the_value_form() {
        let page = [(1, 0, 0.5), (2, 1, f64::NAN), (3, 2, 1e-7), (4, 3, -2.0)];
        let text = history_json("a\"b", &page, Some("7a"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["metrics"][0],
            json!({"key": "a\"b", "value": 0.5, "timestamp": 1, "step": 0})
        );
        assert_eq!(v["metrics"][1]["value"], "NaN");
        assert_eq!(v["metrics"][2]["value"], 1e-7);
        assert_eq!(v["metrics"][3]["value"], -2.0);
        assert_eq!(v["next_page_token"], "7a");
        let empty: Value = serde_json::from_str(&history_json("k", &[], None)).unwrap();
        assert_eq!(empty, json!({"metrics": []}));
    }
}
