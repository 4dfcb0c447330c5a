//! Metric series: validating and appending batches (all kinds), series summaries, and reads by index or step
//! range, including min/max downsampling that never hides a spike.

mod downsample;

use super::blocks::{self, Scalars, ScalarsExt, BLOCK_POINTS};
use super::events::emit_points;
use super::writer::WriteCtx;
use super::{column_count, logs, qualified, repeats, runs, sql_err, Inner};
use crate::BatchDone;
use flightlog_model::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};
use std::collections::HashMap;

const SERIES_COLUMNS: &str =
    "name, kind, description, count, first_time, last_time, last_step, last_value, min, max, schema, columns, \
     top_step, top_time, top_value";

/// A series as the writer needs it.
pub struct Series {
    pub id: i64,
    pub count: u64,
    pub last_step: Option<i64>,
    min: Option<f64>,
    max: Option<f64>,
    columns: Vec<String>,
    top: Option<TopPoint>,
}

/// What one write added to a series, for its summary row and its `Points` event.
pub struct Appended {
    pub n: u64,
    pub first_time: i64,
    pub last_time: i64,
    pub last_step: i64,
    pub last_value: Value,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub schema: Option<String>,
    pub new_columns: Vec<String>,
    /// The series' top point after the write where it is not its last point (scalars only; stored as NULL
    /// otherwise, which is the usual case of steps logged in order and costs no room).
    pub top: Option<TopPoint>,
}

// --- writes ----------------------------------------------------------------------------------------------

pub fn write_batch(inner: &Inner, run: &RunId, batch: Batch) -> Result<BatchAck> {
    validate_batch(&batch)?;
    let run = run.clone();
    inner.write(move |ctx| apply_batch(ctx, &run, batch))
}

/// [`write_batch`] that answers `done` from the writer thread instead of waiting.
pub fn write_batch_then(inner: &Inner, run: &RunId, batch: Batch, done: BatchDone) {
    if let Err(e) = validate_batch(&batch) {
        return done(Err(e));
    }
    let run = run.clone();
    inner
        .writer
        .submit(move |ctx| apply_batch(ctx, &run, batch), done)
}

/// Every rule that needs no stored state, checked before anything is stored.
pub fn validate_batch(b: &Batch) -> Result<()> {
    if let Some(id) = &b.batch_id {
        validate::name("batch_id", id)?;
    }
    for s in &b.scalars {
        validate::scalar_write(s)?;
    }
    for m in &b.metrics {
        validate::metric_write(m)?;
    }
    for l in &b.logs {
        logs::validate_append(&l.stream, l.data.len())?;
    }
    Ok(())
}

/// Applies a validated batch inside the writer's transaction (the savepoint makes it all-or-nothing).
pub fn apply_batch(ctx: &mut WriteCtx, run: &RunId, batch: Batch) -> Result<BatchAck> {
    let points = batch.point_count() as u64;
    if let Some(id) = &batch.batch_id {
        if let Some(points) = stored_batch(&ctx.conn, run, id)? {
            return Ok(BatchAck {
                batch_id: batch.batch_id,
                points,
                duplicate: true,
            });
        }
    }
    let exp = runs::open_for_write(&ctx.conn, run)?;
    let now = WallTime::now().0;
    for s in batch.scalars {
        write_scalars(ctx, exp, run, s, now, batch.drop_repeated_points)?;
    }
    for m in batch.metrics {
        write_records(ctx, exp, run, m, now)?;
    }
    for l in batch.logs {
        logs::append_in(ctx, exp, run, &l.stream, l.data.as_bytes())?;
    }
    if let Some(id) = &batch.batch_id {
        record_batch(&ctx.conn, run, id, points)?;
    }
    Ok(BatchAck {
        batch_id: batch.batch_id,
        points,
        duplicate: false,
    })
}

/// How many points the write with batch id `id` stored in the run, if one did (batches and images share ids).
pub fn stored_batch(conn: &Connection, run: &RunId, id: &str) -> Result<Option<u64>> {
    // Cached statements: this and `record_batch` run for every batch.
    conn.prepare_cached("SELECT points FROM batches WHERE run_id = ?1 AND batch_id = ?2")
        .and_then(|mut st| {
            st.query_row(params![run.as_str(), id], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|p| p.map(|p| p as u64))
        .map_err(sql_err("reading a batch"))
}

/// Remembers that the write with batch id `id` stored `points` points, so a retry stores nothing.
pub fn record_batch(conn: &Connection, run: &RunId, id: &str, points: u64) -> Result<()> {
    conn.prepare_cached("INSERT INTO batches (run_id, batch_id, points) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![run.as_str(), id, points as i64]))
        .map_err(sql_err("recording a batch"))?;
    Ok(())
}

fn write_scalars(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    w: ScalarWrite,
    now: i64,
    drop_repeated_points: bool,
) -> Result<()> {
    let series = open_series(
        &ctx.conn,
        run,
        &w.name,
        MetricKind::Scalar,
        w.description.as_deref(),
    )?;
    let n = w.values.len();
    let mut pts = Scalars {
        steps: resolve_steps(w.steps, n, series.last_step),
        times: w.times.unwrap_or_else(|| vec![WallTime(now); n]),
        values: w.values,
    };
    if drop_repeated_points && n > 0 {
        pts = repeats::without_repeats(&ctx.conn, series.id, series.count, pts)?;
    }
    let n = pts.len();
    if n == 0 {
        return Ok(());
    }
    blocks::append_scalars(&ctx.conn, &mut ctx.tails, series.id, series.count, &pts)?;
    let finite = || pts.values.iter().map(|v| v.0).filter(|v| !v.is_nan());
    let appended = Appended {
        n: n as u64,
        first_time: pts.times[0].0,
        last_time: pts.times[n - 1].0,
        last_step: pts.steps[n - 1],
        last_value: to_json(&pts.values[n - 1])?,
        min: finite().reduce(f64::min),
        max: finite().reduce(f64::max),
        schema: None,
        new_columns: Vec::new(),
        top: top_after(series.top, &pts).filter(|t| *t != point_at(&pts, n - 1)),
    };
    finish_append(
        ctx,
        exp,
        run,
        &w.name,
        MetricKind::Scalar,
        &series,
        appended,
    )
}

/// Point `i` of `pts` as a top point.
fn point_at(pts: &Scalars, i: usize) -> TopPoint {
    TopPoint {
        step: pts.steps[i],
        time: pts.times[i],
        value: pts.values[i],
    }
}

/// The series' top point once `pts` are appended to a series whose top was `top`.
fn top_after(top: Option<TopPoint>, pts: &Scalars) -> Option<TopPoint> {
    let new = (0..pts.len()).map(|i| point_at(pts, i));
    top.into_iter().chain(new).reduce(TopPoint::max)
}

/// Steps for `n` new points: given ones as they are, missing ones the next integer after the previous step.
fn resolve_steps(steps: Option<Vec<Option<i64>>>, n: usize, last: Option<i64>) -> Vec<i64> {
    let mut next = last.map_or(0, |s| s.saturating_add(1));
    let steps = steps.unwrap_or_else(|| vec![None; n]);
    steps
        .into_iter()
        .map(|s| {
            let step = s.unwrap_or(next);
            next = step.saturating_add(1);
            step
        })
        .collect()
}

/// Turns a non-scalar write into records and appends them.
fn write_records(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    m: MetricWrite,
    now: i64,
) -> Result<()> {
    let kind = m.kind();
    let name = m.name().to_string();
    let series = open_series(&ctx.conn, run, &name, kind, m.description())?;
    let (records, schema, columns) = to_records(m, &series, now)?;
    append_records(
        ctx, exp, run, &name, kind, &series, records, schema, columns,
    )
}

/// Appends records to a series and updates its summary; shared by batches and images.
#[allow(clippy::too_many_arguments)]
pub fn append_records(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    name: &str,
    kind: MetricKind,
    series: &Series,
    records: Vec<Record>,
    schema: Option<String>,
    columns: Vec<String>,
) -> Result<()> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let appended = Appended {
        n: records.len() as u64,
        first_time: first.time.0,
        last_time: last.time.0,
        last_step: last.step,
        last_value: if kind == MetricKind::Text {
            last.value.clone()
        } else {
            Value::Null
        },
        min: None,
        max: None,
        schema,
        new_columns: columns
            .into_iter()
            .filter(|c| !series.columns.contains(c))
            .collect(),
        top: None,
    };
    blocks::append_records(&ctx.conn, &mut ctx.tails, series.id, series.count, &records)?;
    finish_append(ctx, exp, run, name, kind, series, appended)
}

type Converted = (Vec<Record>, Option<String>, Vec<String>);

/// The records a write adds (indexes from the series' count), its json schema, and the columns it names in
/// first-seen order.
fn to_records(m: MetricWrite, series: &Series, now: i64) -> Result<Converted> {
    let mut next_index = series.count;
    let mut next_step = series.last_step.map_or(0, |s| s.saturating_add(1));
    let mut record = |step: Option<i64>, time: Option<WallTime>, value: Value| {
        let step = step.unwrap_or(next_step);
        next_step = step.saturating_add(1);
        next_index += 1;
        Record {
            index: next_index - 1,
            step,
            time: time.unwrap_or(WallTime(now)),
            value,
        }
    };
    let out = match m {
        MetricWrite::Text {
            steps,
            times,
            values,
            ..
        } => {
            let n = values.len();
            let steps = steps.unwrap_or_else(|| vec![None; n]);
            let times: Vec<Option<WallTime>> =
                times.map_or_else(|| vec![None; n], |t| t.into_iter().map(Some).collect());
            let recs = values
                .into_iter()
                .zip(steps)
                .zip(times)
                .map(|((v, s), t)| record(s, t, Value::String(v)))
                .collect();
            (recs, None, Vec::new())
        }
        MetricWrite::List {
            values, step, time, ..
        } => (
            vec![record(step, time, to_json(&values)?)],
            None,
            Vec::new(),
        ),
        MetricWrite::Row { rows, times, .. } => {
            let mut columns: Vec<String> = Vec::new();
            let times: Vec<Option<WallTime>> = times.map_or_else(
                || vec![None; rows.len()],
                |t| t.into_iter().map(Some).collect(),
            );
            let mut recs = Vec::with_capacity(rows.len());
            for (row, t) in rows.into_iter().zip(times) {
                for c in row.keys() {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
                recs.push(record(None, t, to_json(&row)?));
            }
            (recs, None, columns)
        }
        MetricWrite::Table { columns, time, .. } => {
            let names = columns.keys().cloned().collect();
            (vec![record(None, time, to_json(&columns)?)], None, names)
        }
        MetricWrite::Json {
            schema,
            value,
            step,
            time,
            ..
        } => (
            vec![record(
                step,
                time,
                json!({"schema": schema, "value": value}),
            )],
            Some(schema),
            Vec::new(),
        ),
        MetricWrite::Histogram {
            limits,
            counts,
            lower,
            step,
            time,
            ..
        } => {
            let mut value = json!({"limits": to_json(&limits)?, "counts": to_json(&counts)?});
            if let Some(lower) = lower {
                value["lower"] = to_json(&lower)?;
            }
            (vec![record(step, time, value)], None, Vec::new())
        }
    };
    Ok(out)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(Error::storage)
}

/// The series `name` of `run`, created if new; `Conflict` if it exists with another kind.
pub fn open_series(
    conn: &Connection,
    run: &RunId,
    name: &str,
    kind: MetricKind,
    description: Option<&str>,
) -> Result<Series> {
    let found = conn
        .prepare_cached(
            "SELECT id, kind, count, last_step, min, max, columns, top_step, top_time, top_value, \
                         last_time, last_value FROM series WHERE run_id = ?1 AND name = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![run.as_str(), name], |r| {
                let top = top_at(r, 7).map(|top| top.or_else(|| last_as_top(r)));
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get::<_, String>(6)?,
                    top,
                ))
            })
            .optional()
        })
        .map_err(sql_err("reading a series"))?;
    let Some((id, stored, count, last_step, min, max, columns, top)) = found else {
        conn.prepare_cached(
            "INSERT INTO series (run_id, name, kind, description) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                run.as_str(),
                name,
                kind.as_str(),
                description.unwrap_or("")
            ])
        })
        .map_err(sql_err("creating a series"))?;
        let id = conn.last_insert_rowid();
        return Ok(Series {
            id,
            count: 0,
            last_step: None,
            min: None,
            max: None,
            columns: Vec::new(),
            top: None,
        });
    };
    let stored = parse_kind(&stored)?;
    if stored != kind {
        return Err(Error::conflict(format!(
            "metric '{name}' is a {stored} series; it cannot take a {kind} value (use another name)"
        )));
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        conn.prepare_cached(
            "UPDATE series SET description = ?2 WHERE id = ?1 AND description <> ?2",
        )
        .and_then(|mut st| st.execute(params![id, d]))
        .map_err(sql_err("updating a series"))?;
    }
    let columns = serde_json::from_str(&columns).map_err(Error::storage)?;
    Ok(Series {
        id,
        count: count as u64,
        last_step,
        min,
        max,
        columns,
        top: top?,
    })
}

/// The last point of a scalar series read by [`open_series`] (columns 3, 10 and 11), which is its top point
/// where none is stored; None for a series without points or of another kind.
fn last_as_top(r: &Row) -> Option<TopPoint> {
    let step = r.get::<_, Option<i64>>(3).ok()??;
    let time = r.get::<_, Option<i64>>(10).ok()??;
    let value = r.get_ref(11).ok()?.as_str().ok()?;
    Some(TopPoint {
        step,
        time: WallTime(time),
        value: serde_json::from_str(value).ok()?,
    })
}

fn parse_kind(s: &str) -> Result<MetricKind> {
    MetricKind::parse(s)
        .ok_or_else(|| Error::storage(format!("unknown metric kind '{s}' in the database")))
}

/// Updates the series summary and announces the new points.
fn finish_append(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    name: &str,
    kind: MetricKind,
    s: &Series,
    a: Appended,
) -> Result<()> {
    let min = [s.min, a.min].into_iter().flatten().reduce(f64::min);
    let max = [s.max, a.max].into_iter().flatten().reduce(f64::max);
    let columns = if a.new_columns.is_empty() {
        None
    } else {
        let mut all = s.columns.clone();
        all.extend(a.new_columns);
        Some(serde_json::to_string(&all).map_err(Error::storage)?)
    };
    let last_value = a.last_value.to_string();
    let top_value = a
        .top
        .map(|t| to_json(&t.value))
        .transpose()?
        .map(|v| v.to_string());
    ctx.conn
        .prepare_cached(
            "UPDATE series SET count = ?2, first_time = coalesce(first_time, ?3), last_time = ?4, last_step = ?5, \
             last_value = ?6, min = ?7, max = ?8, schema = coalesce(?9, schema), columns = coalesce(?10, columns), \
             top_step = ?11, top_time = ?12, top_value = ?13 WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![s.id, (s.count + a.n) as i64, a.first_time, a.last_time, a.last_step, last_value, min, max, a.schema, columns,
                a.top.map(|t| t.step), a.top.map(|t| t.time.0), top_value])
        })
        .map_err(sql_err("updating a series"))?;
    let body = |points: std::ops::Range<u64>, replaced| EventBody::Points {
        name: name.to_string(),
        kind,
        from_index: points.start,
        count: points.end - points.start,
        last_step: Some(a.last_step),
        last_value: a.last_value,
        replaced,
    };
    emit_points(ctx, exp, run, s.id, s.count..s.count + a.n, body)?;
    Ok(())
}

// --- summaries -------------------------------------------------------------------------------------------

/// A series summary from a row of [`SERIES_COLUMNS`], borrowing the text columns: listings read thousands.
fn info_from_row(r: &Row) -> rusqlite::Result<Result<SeriesInfo>> {
    info_at(r, 0)
}

/// [`info_from_row`] for the [`SERIES_COLUMNS`] that start at column `at`.
fn info_at(r: &Row, at: usize) -> rusqlite::Result<Result<SeriesInfo>> {
    let text = |i: usize| r.get_ref(at + i).and_then(|v| Ok(v.as_str()?));
    let (kind, last_value, columns) = (text(1)?, text(7)?, text(11)?);
    let info = SeriesInfo {
        name: r.get(at)?,
        kind: MetricKind::Scalar,
        description: r.get(at + 2)?,
        count: r.get::<_, i64>(at + 3)? as u64,
        first_time: r.get::<_, Option<i64>>(at + 4)?.map(WallTime),
        last_time: r.get::<_, Option<i64>>(at + 5)?.map(WallTime),
        last_step: r.get(at + 6)?,
        last_value: Value::Null,
        min: r.get::<_, Option<f64>>(at + 8)?.map(F64),
        max: r.get::<_, Option<f64>>(at + 9)?.map(F64),
        schema: r.get(at + 10)?,
        columns: Vec::new(),
        top: None,
    };
    Ok((|| {
        Ok(SeriesInfo {
            kind: parse_kind(kind)?,
            last_value: serde_json::from_str(last_value).map_err(Error::storage)?,
            columns: if columns == "[]" {
                Vec::new()
            } else {
                serde_json::from_str(columns).map_err(Error::storage)?
            },
            top: top_at(r, at + 12)?,
            ..info
        })
    })())
}

/// The top point stored in columns `at..at + 3` (top_step, top_time, top_value); None where there is none,
/// which means the series' last point is its top.
fn top_at(r: &Row, at: usize) -> Result<Option<TopPoint>> {
    let read = || -> rusqlite::Result<_> {
        Ok((
            r.get::<_, Option<i64>>(at)?,
            r.get::<_, Option<i64>>(at + 1)?,
            r.get::<_, Option<String>>(at + 2)?,
        ))
    };
    let (Some(step), Some(time), Some(value)) = read().map_err(sql_err("reading a series"))? else {
        return Ok(None);
    };
    let value = serde_json::from_str(&value).map_err(Error::storage)?;
    Ok(Some(TopPoint {
        step,
        time: WallTime(time),
        value,
    }))
}

/// How many columns [`SERIES_COLUMNS`] names.
pub const SERIES_COLUMN_COUNT: usize = column_count(SERIES_COLUMNS);

/// [`SERIES_COLUMNS`] of the series joined as `alias`, for a query that reads a run with some of its series.
pub fn series_columns_of(alias: &str) -> String {
    qualified(SERIES_COLUMNS, alias)
}

/// The series whose [`SERIES_COLUMNS`] start at column `at` of a row that LEFT JOINed it; None when the run
/// has no such series (the joined columns are NULL).
pub fn joined_info(r: &Row, at: usize) -> Result<Option<SeriesInfo>> {
    let err = sql_err("reading a metric");
    if r.get_ref(at).map_err(&err)? == rusqlite::types::ValueRef::Null {
        return Ok(None);
    }
    info_at(r, at).map_err(&err)?.map(Some)
}

/// Every metric of a run, by name; `NotFound` for an unknown run.
pub fn list(conn: &Connection, run: &RunId) -> Result<Vec<SeriesInfo>> {
    runs::exists(conn, run)?;
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {SERIES_COLUMNS} FROM series WHERE run_id = ?1 ORDER BY name"
        ))
        .map_err(sql_err("listing metrics"))?;
    let rows = st
        .query_map([run.as_str()], info_from_row)
        .map_err(sql_err("listing metrics"))?;
    rows.map(|r| r.map_err(sql_err("listing metrics"))?)
        .collect()
}

pub fn info(conn: &Connection, run: &RunId, name: &str) -> Result<SeriesInfo> {
    Ok(find_series(conn, run, name)?.1)
}

/// Fills `metrics` of every run with one query. The rows come in index order rather than sorted by SQL (a
/// temporary B-tree over every series of a listing cost more than the lookups themselves); each run's few
/// series are sorted by name here.
pub fn fill_metrics(conn: &Connection, runs: &mut [Run]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let ids = serde_json::to_string(&ids).map_err(Error::storage)?;
    let position: HashMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {SERIES_COLUMNS}, run_id FROM series WHERE run_id IN (SELECT value FROM json_each(?1))"
        ))
        .map_err(sql_err("listing metrics"))?;
    let mut rows = st.query([ids]).map_err(sql_err("listing metrics"))?;
    let mut by_run: Vec<Vec<SeriesInfo>> = vec![Vec::new(); runs.len()];
    while let Some(row) = rows.next().map_err(sql_err("listing metrics"))? {
        let run = row
            .get_ref(SERIES_COLUMN_COUNT)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(sql_err("listing metrics"))?;
        if let Some(&i) = position.get(run) {
            let info = info_from_row(row).map_err(sql_err("listing metrics"))??;
            by_run[i].push(info);
        }
    }
    for (run, mut metrics) in runs.iter_mut().zip(by_run) {
        metrics.sort_by(|a, b| a.name.cmp(&b.name));
        run.metrics = metrics;
    }
    Ok(())
}

/// The series id and summary; `NotFound` naming the run or the metric.
fn find_series(conn: &Connection, run: &RunId, name: &str) -> Result<(i64, SeriesInfo)> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {SERIES_COLUMNS}, id FROM series WHERE run_id = ?1 AND name = ?2"
        ))
        .and_then(|mut st| {
            st.query_row(params![run.as_str(), name], |r| {
                Ok((r.get::<_, i64>(SERIES_COLUMN_COUNT)?, info_from_row(r)?))
            })
            .optional()
        })
        .map_err(sql_err("reading a series"))?;
    match found {
        Some((id, info)) => Ok((id, info?)),
        None => {
            runs::exists(conn, run)?;
            Err(Error::not_found(Entity::Metric, name))
        }
    }
}

// --- reads -----------------------------------------------------------------------------------------------

fn require_scalar(info: &SeriesInfo) -> Result<()> {
    if info.kind == MetricKind::Scalar {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "metric '{}' is a {} series, not a scalar one; read its records",
                info.name, info.kind
            ),
        ))
    }
}

/// Decodes only the blocks in range.
pub fn read_scalars(
    inner: &Inner,
    run: &RunId,
    name: &str,
    range: &ReadRange,
) -> Result<ScalarSeries> {
    inner.read(|conn| {
        let (id, info) = find_series(conn, run, name)?;
        require_scalar(&info)?;
        load_scalars(conn, id, info.count, range)
    })
}

/// Downsamples a step range (or the whole series) in one pass over its blocks; index ranges, which the portal
/// never asks for, are read whole and downsampled in memory.
pub fn read_downsampled(
    inner: &Inner,
    run: &RunId,
    name: &str,
    range: &ReadRange,
    buckets: u32,
) -> Result<ScalarSeries> {
    if buckets == 0 {
        return Err(Error::invalid("buckets", "must be at least 1"));
    }
    inner.read(|conn| {
        let (id, info) = find_series(conn, run, name)?;
        require_scalar(&info)?;
        if range.start_index == 0 && range.limit.is_none() {
            return downsample::scan(conn, id, info.count, range, buckets as usize);
        }
        let points = load_scalars(conn, id, info.count, range)?;
        Ok(downsample::downsample(&points, buckets as usize))
    })
}

/// Called per block with (first_index, encoding, data); returns whether to go on.
type BlockVisitor<'a> = &'a mut dyn FnMut(u64, i64, &[u8]) -> Result<bool>;

/// Visits the blocks that may hold points of `range`, in index order.
fn range_blocks(conn: &Connection, series: i64, range: &ReadRange, f: BlockVisitor) -> Result<()> {
    let lowest = range
        .start_index
        .saturating_sub(BLOCK_POINTS as u64 - 1)
        .min(i64::MAX as u64) as i64;
    let mut st = conn
        .prepare_cached(
            "SELECT first_index, encoding, data FROM blocks WHERE series_id = ?1 AND first_index >= ?2 \
             AND first_index + count > ?3 AND max_step >= ?4 AND min_step <= ?5 ORDER BY first_index",
        )
        .map_err(sql_err("reading metric blocks"))?;
    let start = range.start_index.min(i64::MAX as u64) as i64;
    let (lo, hi) = (
        range.min_step.unwrap_or(i64::MIN),
        range.max_step.unwrap_or(i64::MAX),
    );
    let mut rows = st
        .query(params![series, lowest, start, lo, hi])
        .map_err(sql_err("reading metric blocks"))?;
    while let Some(row) = rows.next().map_err(sql_err("reading metric blocks"))? {
        let first: i64 = row.get(0).map_err(sql_err("reading metric blocks"))?;
        let enc: i64 = row.get(1).map_err(sql_err("reading metric blocks"))?;
        let data = row
            .get_ref(2)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(sql_err("reading metric blocks"))?;
        if !f(first as u64, enc, data)? {
            break;
        }
    }
    Ok(())
}

/// Decodes only the blocks overlapping `range` and keeps the points in it. Blocks wholly inside a plain index
/// range are decoded straight into the result; others go through a per-block buffer and a filter.
fn load_scalars(conn: &Connection, series: i64, count: u64, range: &ReadRange) -> Result<Scalars> {
    let limit = range.limit.unwrap_or(u64::MAX);
    let expected = count
        .saturating_sub(range.start_index)
        .min(limit)
        .min(1 << 26) as usize;
    let mut out = Scalars::with_capacity(expected + BLOCK_POINTS);
    let mut buf = Scalars::with_capacity(BLOCK_POINTS);
    let by_step = range.min_step.is_some() || range.max_step.is_some();
    range_blocks(conn, series, range, &mut |first, enc, data| {
        if !by_step && first >= range.start_index {
            blocks::decode_scalars(enc, data, &mut out)?;
        } else {
            buf.clear();
            blocks::decode_scalars(enc, data, &mut buf)?;
            filter_into(&buf, first, range, limit, &mut out);
        }
        Ok((out.len() as u64) < limit)
    })?;
    truncate(&mut out, limit);
    Ok(out)
}

fn truncate(p: &mut Scalars, limit: u64) {
    let n = p.len().min(limit.min(usize::MAX as u64) as usize);
    p.steps.truncate(n);
    p.times.truncate(n);
    p.values.truncate(n);
}

/// Appends the points of `block` (whose first point has index `first`) that fall in `range`, up to `limit`.
fn filter_into(block: &Scalars, first: u64, range: &ReadRange, limit: u64, out: &mut Scalars) {
    let skip = range
        .start_index
        .saturating_sub(first)
        .min(block.len() as u64) as usize;
    let room = limit.saturating_sub(out.len() as u64);
    if range.min_step.is_none() && range.max_step.is_none() {
        let end = block
            .len()
            .min(skip.saturating_add(room.min(usize::MAX as u64) as usize));
        out.extend_from(block, skip..end);
        return;
    }
    let (lo, hi) = (
        range.min_step.unwrap_or(i64::MIN),
        range.max_step.unwrap_or(i64::MAX),
    );
    for i in skip..block.len() {
        if out.len() as u64 >= limit {
            break;
        }
        let s = block.steps[i];
        if s >= lo && s <= hi {
            out.push(s, block.times[i], block.values[i]);
        }
    }
}

/// Records of a non-scalar series in `range`, decoding only the blocks that may hold them.
pub fn read_records(
    conn: &Connection,
    run: &RunId,
    name: &str,
    range: &ReadRange,
) -> Result<Vec<Record>> {
    let (id, info) = find_series(conn, run, name)?;
    if info.kind == MetricKind::Scalar {
        return Err(Error::invalid(
            "name",
            format!("metric '{name}' is a scalar series; read it as scalars"),
        ));
    }
    let limit = range.limit.unwrap_or(u64::MAX);
    let (lo, hi) = (
        range.min_step.unwrap_or(i64::MIN),
        range.max_step.unwrap_or(i64::MAX),
    );
    let mut out = Vec::new();
    range_blocks(conn, id, range, &mut |_, enc, data| {
        for r in blocks::decode_records(enc, data)? {
            if (out.len() as u64) < limit
                && r.index >= range.start_index
                && r.step >= lo
                && r.step <= hi
            {
                out.push(r);
            }
        }
        Ok((out.len() as u64) < limit)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_steps_continue_after_the_last() {
        assert_eq!(resolve_steps(None, 3, None), vec![0, 1, 2]);
        assert_eq!(
            resolve_steps(Some(vec![Some(10), None, Some(5), None]), 4, Some(3)),
            vec![10, 11, 5, 6]
        );
        assert_eq!(resolve_steps(None, 2, Some(7)), vec![8, 9]);
    }
}
