//! MLflow metric reads: get-history (paged, opaque tokens) and get-history-bulk-interval (sampled for charts).

use super::convert::{double, one_or_many, opt_i64};
use super::error::{MlError, MlResult};
use super::runs::run_id;
use super::search;
use super::{blocking, Req};
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{mlflow_stored_value, Error, ReadRange, RunId, ScalarSeries};
use flightlog_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;

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

/// A scalar series; an unknown or non-scalar metric has no points (MLflow answers an empty history).
fn read_series(
    store: &dyn Store,
    run: &RunId,
    key: &str,
    range: &ReadRange,
    buckets: Option<u32>,
) -> MlResult<ScalarSeries> {
    let series = match buckets {
        Some(b) => store.read_downsampled(run, key, range, b),
        None => store.read_scalars(run, key, range),
    };
    match series {
        Ok(s) => Ok(s),
        Err(Error::NotFound { .. } | Error::InvalidArgument { .. }) => Ok(ScalarSeries::default()),
        Err(e) => Err(e.into()),
    }
}

/// The whole history ordered by timestamp, step, value (MLflow's order), paged when asked. Each page reads
/// the series' columns once and writes only its own points: no per-point tuples, no copy of the other pages.
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
    let token = r
        .page_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(HistoryToken::decode)
        .transpose()?
        .unwrap_or_default();
    // Like MLflow's server, an unknown run has an empty history rather than a 404.
    let body = blocking(move || {
        let store = st.store.as_ref();
        if let Some(count) = token.sorted_count {
            // The series was in MLflow's order with `count` points when the first page was read; if it still
            // has that many, nothing was appended since and this page is just the stored points it covers.
            if count_of(store, &id, &key)? == Some(count) {
                let range = ReadRange {
                    start_index: token.offset as u64,
                    limit: Some(limit as u64),
                    ..Default::default()
                };
                let page = read_series(store, &id, &key, &range, None)?;
                let end = token.offset.saturating_add(page.len());
                let next = (end < count as usize).then(|| HistoryToken::sorted(end, count));
                return Ok(history_json(&key, &page, 0..page.len(), next.as_deref()));
            }
        }
        let series = read_series(store, &id, &key, &ReadRange::default(), None)?;
        let order = mlflow_order(&series);
        let total = series.len();
        let start = token.offset;
        let end = start.saturating_add(limit).min(total);
        let page = start.min(end)..end;
        Ok(match order {
            None => {
                let next = (end < total).then(|| HistoryToken::sorted(end, total as u64));
                history_json(&key, &series, page, next.as_deref())
            }
            Some(order) => {
                let next = (end < total).then(|| search::encode_token(end));
                history_json_by(&key, &series, &order[page], next.as_deref())
            }
        })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A get-history position: the offset into the ordered points and, when the series was already in MLflow's
/// order, its point count then (so later pages can read just their range). Tokens of a series that needed
/// sorting are the plain offset tokens of every other MLflow listing.
#[derive(Default)]
struct HistoryToken {
    offset: usize,
    sorted_count: Option<u64>,
}

impl HistoryToken {
    fn sorted(offset: usize, count: u64) -> String {
        search::encode_token_text(&format!("{offset}/{count}"))
    }

    fn decode(token: &str) -> MlResult<HistoryToken> {
        let text = search::decode_token_text(token)?;
        let bad = || MlError::invalid(format!("Invalid page token '{token}'"));
        let (offset, count) = match text.split_once('/') {
            Some((o, c)) => (o, Some(c.parse().map_err(|_| bad())?)),
            None => (text.as_str(), None),
        };
        Ok(HistoryToken {
            offset: offset.parse().map_err(|_| bad())?,
            sorted_count: count,
        })
    }
}

/// The point count of a scalar series; `None` if there is no such scalar series.
fn count_of(store: &dyn Store, run: &RunId, key: &str) -> MlResult<Option<u64>> {
    match store.metric_info(run, key) {
        Ok(info) if info.kind == flightlog_model::MetricKind::Scalar => Ok(Some(info.count)),
        Ok(_) | Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `None` when the points are already in MLflow's order (timestamp ms, step, value), as logged series nearly
/// always are; else the indexes in that order. Values compare as MLflow stores them ([`compare_stored`]); points
/// equal by that order keep the order they were logged in.
fn mlflow_order(s: &ScalarSeries) -> Option<Vec<u32>> {
    let key = |i: usize| (s.times[i].millis(), s.steps[i]);
    let cmp = |a: usize, b: usize| {
        key(a)
            .cmp(&key(b))
            .then(compare_stored(s.values[a].0, s.values[b].0))
    };
    if (1..s.len()).all(|i| cmp(i - 1, i).is_le()) {
        return None;
    }
    let mut order: Vec<u32> = (0..s.len() as u32).collect();
    order.sort_by(|&a, &b| cmp(a as usize, b as usize));
    Some(order)
}

/// Two values in MLflow's order ([`mlflow_stored_value`]; 0 and -0 are equal, as in SQL).
fn compare_stored(a: f64, b: f64) -> Ordering {
    mlflow_stored_value(a)
        .partial_cmp(&mlflow_stored_value(b))
        .unwrap_or(Ordering::Equal)
}

fn history_json(
    key: &str,
    s: &ScalarSeries,
    page: std::ops::Range<usize>,
    next: Option<&str>,
) -> String {
    write_history(key, s, page.len(), page, next)
}

fn history_json_by(key: &str, s: &ScalarSeries, order: &[u32], next: Option<&str>) -> String {
    write_history(key, s, order.len(), order.iter().map(|&i| i as usize), next)
}

/// The get-history body, written directly: a page holds up to 25,000 points and building a JSON value per
/// point costs several times more than the store read.
fn write_history(
    key: &str,
    s: &ScalarSeries,
    n: usize,
    indexes: impl Iterator<Item = usize>,
    next: Option<&str>,
) -> String {
    let key = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into());
    // Room for the longest point (20-digit step and timestamp, 24-character value), so the body is never
    // copied while it grows.
    let mut out = String::with_capacity(48 + n * (key.len() + 112));
    out.push_str("{\"metrics\":[");
    let (mut ints, mut floats) = (itoa::Buffer::new(), ryu::Buffer::new());
    for (k, i) in indexes.enumerate() {
        if k > 0 {
            out.push(',');
        }
        let v = s.values[i].0;
        out.push_str("{\"key\":");
        out.push_str(&key);
        out.push_str(",\"value\":");
        match flightlog_model::non_finite_name(v) {
            Some(name) => {
                out.push('"');
                out.push_str(name);
                out.push('"');
            }
            None => out.push_str(floats.format_finite(v)),
        }
        out.push_str(",\"timestamp\":");
        out.push_str(ints.format(s.times[i].millis()));
        out.push_str(",\"step\":");
        out.push_str(ints.format(s.steps[i]));
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

/// Up to `max_results` points per run within the step range, sampled as MLflow's server samples them (see
/// [`sample`]), which its UI's charts expect: the first point of each of `max_results` equal runs of points
/// and always the last point. A series longer than [`EXACT_SAMPLE_LIMIT`] is sampled the same way from its
/// downsampled blocks (each bucket's min and max) instead of from every point.
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
    match (r.start_step, r.end_step) {
        (Some(a), Some(b)) if a > b => {
            return Err(MlError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={a} and end_step={b}."
            )))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(MlError::invalid(
                "If either start step or end step are specified, both must be specified.",
            ))
        }
        _ => {}
    }
    // An id that is no run id names no run, and is skipped as a missing run is (below), as MLflow does.
    let ids: Vec<_> = r
        .run_ids
        .iter()
        .filter_map(|i| run_id(Some(i), None).ok())
        .collect();
    let range = ReadRange {
        min_step: r.start_step,
        max_step: r.end_step,
        ..Default::default()
    };
    let out = blocking(move || {
        let mut metrics = Vec::new();
        for id in &ids {
            // A run without the metric has nothing to read; nor has a run that does not exist (MLflow's
            // server skips it too, so one deleted run does not fail a chart of many).
            let Some(count) = count_of(st.store.as_ref(), id, &key)? else {
                continue;
            };
            let buckets = (count > EXACT_SAMPLE_LIMIT).then_some(max as u32);
            let pts = points(read_series(st.store.as_ref(), id, &key, &range, buckets)?);
            metrics.extend(sample(pts, max as usize).iter().map(|(ts, step, v)| {
                json!({ "key": key, "value": double(*v), "timestamp": ts, "step": step, "run_id": id.as_str() })
            }));
        }
        Ok(json!({ "metrics": metrics }))
    })
    .await?;
    Ok(Json(out))
}

/// Series up to this many points are sampled from every point (as MLflow does); longer ones from their
/// downsampled blocks, so that a chart of many long runs reads a bounded number of points per run.
const EXACT_SAMPLE_LIMIT: u64 = 1_000_000;

/// MLflow's sampling for charts (`_sample_rows_with_window_functions`): the points in (step, timestamp,
/// value) order, a NaN as 0 after the equal number, cut into `max` runs as SQL's NTILE cuts them (the first
/// `n % max` one point longer), the first point of each run, and the last point of all (in place of the last
/// sampled one when there are `max` already). With `max` 1, that is the last point alone.
fn sample(mut pts: Vec<Point>, max: usize) -> Vec<Point> {
    let order = |a: &Point, b: &Point| {
        (a.1, a.0)
            .cmp(&(b.1, b.0))
            .then(compare_stored(a.2, b.2))
            .then(a.2.is_nan().cmp(&b.2.is_nan()))
    };
    pts.sort_by(order);
    let (n, max) = (pts.len(), max.max(1));
    let Some(&last) = pts.last() else {
        return pts;
    };
    if n <= max {
        return pts;
    }
    let (size, longer) = (n / max, n % max);
    let mut kept: Vec<Point> = (0..max).map(|b| pts[b * size + b.min(longer)]).collect();
    if let Some(end) = kept.last_mut().filter(|p| order(p, &last).is_ne()) {
        *end = last;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{WallTime, F64};

    #[test]
    fn charts_are_sampled_as_mlflow_samples_them() {
        let steps = |pts: &[Point]| pts.iter().map(|p| p.1).collect::<Vec<_>>();
        let periodic: Vec<Point> = (0..1000).rev().map(|i| (i, i, (i % 7) as f64)).collect();
        assert_eq!(
            steps(&sample(periodic.clone(), 10)),
            vec![0, 100, 200, 300, 400, 500, 600, 700, 800, 999],
            "in step order whatever the stored order; the last point always"
        );
        assert_eq!(steps(&sample(periodic.clone(), 1)), vec![999]);
        assert_eq!(sample(periodic[..5].to_vec(), 10).len(), 5);
        // 10 points into 4 runs: NTILE makes runs of 3, 3, 2, 2.
        let ten: Vec<Point> = (0..10).map(|i| (i, i, 0.0)).collect();
        assert_eq!(steps(&sample(ten, 4)), vec![0, 3, 6, 9]);
        let one_step: Vec<Point> = (0..1000).map(|i| (5, 0, i as f64)).collect();
        let got = sample(one_step, 10);
        assert_eq!(got.len(), 10, "points at one step are not one bucket");
        assert_eq!((got[0].2, got[9].2), (0.0, 999.0));
        let nan = sample(vec![(1, 0, 0.0), (1, 0, f64::NAN), (1, 0, -1.0)], 1);
        assert!(nan[0].2.is_nan(), "a NaN sorts as 0, after an equal 0");
    }

    fn series(pts: &[(i64, i64, f64)]) -> ScalarSeries {
        ScalarSeries {
            times: pts.iter().map(|p| WallTime::from_millis(p.0)).collect(),
            steps: pts.iter().map(|p| p.1).collect(),
            values: pts.iter().map(|p| F64(p.2)).collect(),
        }
    }

    #[test]
    fn history_json_matches_the_value_form() {
        let s = series(&[(1, 0, 0.5), (2, 1, f64::NAN), (3, 2, 1e-7), (4, 3, -2.0)]);
        let text = history_json("a\"b", &s, 0..4, Some("7a"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["metrics"][0],
            json!({"key": "a\"b", "value": 0.5, "timestamp": 1, "step": 0})
        );
        assert_eq!(v["metrics"][1]["value"], "NaN");
        assert_eq!(v["metrics"][2]["value"], 1e-7);
        assert_eq!(v["metrics"][3]["value"], -2.0);
        assert_eq!(v["next_page_token"], "7a");
        let empty: Value = serde_json::from_str(&history_json("k", &s, 4..4, None)).unwrap();
        assert_eq!(empty, json!({"metrics": []}));
    }

    #[test]
    fn history_tokens_round_trip_and_reject_garbage() {
        let t = HistoryToken::decode(&HistoryToken::sorted(25000, 100000)).unwrap();
        assert_eq!((t.offset, t.sorted_count), (25000, Some(100000)));
        let t = HistoryToken::decode(&search::encode_token(7)).unwrap();
        assert_eq!((t.offset, t.sorted_count), (7, None));
        for bad in [
            "zz",
            "abc",
            &search::encode_token_text("1/x"),
            &search::encode_token_text("/"),
        ] {
            assert!(HistoryToken::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_order_is_timestamp_step_value() {
        let sorted = series(&[(1, 0, 0.5), (1, 1, 0.1), (2, 0, 0.2), (2, 0, 0.3)]);
        assert_eq!(mlflow_order(&sorted), None);
        let s = series(&[(5, 0, 1.0), (1, 2, 0.0), (1, 1, 9.0), (5, 0, 0.5)]);
        let order = mlflow_order(&s).unwrap();
        assert_eq!(order, vec![2, 1, 3, 0]);
        let v: Value = serde_json::from_str(&history_json_by("k", &s, &order[1..3], None)).unwrap();
        assert_eq!(v["metrics"][0]["step"], 2);
        assert_eq!(v["metrics"][1]["value"], 0.5);
    }
}
