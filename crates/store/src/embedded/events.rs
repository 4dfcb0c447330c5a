//! The event log: one row per committed change, written in the change's own transaction, so `seq` order is
//! commit order and a stream reader that resumes from a seq misses nothing. Appends are the exception that
//! keeps the log small: each one replaces its series' newest points event (or its log stream's newest
//! `log_appended` event) with one covering both ranges (see [`emit_points`]).

use super::sql_err;
use super::writer::WriteCtx;
use flightlog_model::*;
use rusqlite::{params, Connection};
use std::ops::Range;

/// Records an event in the current transaction and remembers its seq for the post-commit wake-up.
pub fn emit(
    ctx: &mut WriteCtx,
    experiment_id: ExperimentId,
    run_id: Option<&RunId>,
    body: &EventBody,
) -> Result<u64> {
    let json = serde_json::to_string(body).map_err(Error::storage)?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO events (time, experiment_id, run_id, body) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                WallTime::now().0,
                experiment_id.0,
                run_id.map(RunId::as_str),
                json
            ])
        })
        .map_err(sql_err("recording an event"))?;
    let seq = ctx.conn.last_insert_rowid() as u64;
    ctx.last_seq = ctx.last_seq.max(seq);
    if announced_to_followers(body) {
        ctx.last_followed_seq = ctx.last_followed_seq.max(seq);
    }
    Ok(seq)
}

/// Whether an event wakes followers of uploads and run ends ([`crate::Store::subscribe_uploads_and_run_ends`]):
/// an uploaded file, or a run's end ([`EventBody::is_run_end`]).
fn announced_to_followers(body: &EventBody) -> bool {
    matches!(body, EventBody::ArtifactWritten { .. }) || body.is_run_end()
}

/// Most points one merged points event announces. A reader that resumes from before a merged event reads its
/// whole range again (streams skip what they sent on the same connection), so this bounds what it re-reads.
const MERGE_POINTS: u64 = 1000;
/// Most bytes one merged `log_appended` event announces (the same bound, for a log stream).
const MERGE_LOG_BYTES: u64 = 64 * 1024;
/// Series (and log streams) whose newest event the writer remembers (see [`super::job_cache::JobCache`]).
pub const REMEMBERED_SERIES: usize = 4096;

/// Where a series' (or log stream's) newest event is and the range it covers: point indexes, or bytes.
pub struct LastEvent {
    seq: u64,
    range: Range<u64>,
}

/// A log stream, as the writer's cache of newest append events knows it.
pub type StreamKey = (RunId, String);

/// Records the points event of an append to series `series_id` of the points `appended`, made by `body` from
/// the range it announces and the event it replaced. It replaces the series' newest points event when this
/// append continues it: logging one point per call (MLflow's `log_metric` in a training loop) would otherwise
/// cost an event row and two index entries per point, ~240 bytes against ~9 for the point itself. The
/// replacement has a new seq, so it reaches every reader that had not read the old one, and covers the old
/// range too, so nothing is missed.
pub fn emit_points(
    ctx: &mut WriteCtx,
    experiment_id: ExperimentId,
    run_id: &RunId,
    series_id: i64,
    appended: Range<u64>,
    body: impl FnOnce(Range<u64>, Option<Replaced>) -> EventBody,
) -> Result<u64> {
    let last = ctx.points.take(&series_id);
    let (range, replaced) = merge(ctx, last, appended, MERGE_POINTS)?;
    let seq = emit(
        ctx,
        experiment_id,
        Some(run_id),
        &body(range.clone(), replaced),
    )?;
    ctx.points.put(series_id, LastEvent { seq, range });
    Ok(seq)
}

/// Records the `log_appended` event of bytes `appended` of a run's log stream, replacing the stream's newest
/// one as [`emit_points`] does for points: a job's output is sent every few milliseconds, and an event row per
/// send cost more than the output itself.
pub fn emit_log_append(
    ctx: &mut WriteCtx,
    experiment_id: ExperimentId,
    run_id: &RunId,
    stream: &str,
    appended: Range<u64>,
) -> Result<u64> {
    let key: StreamKey = (run_id.clone(), stream.to_string());
    let last = ctx.log_appends.take(&key);
    let (range, replaced) = merge(ctx, last, appended, MERGE_LOG_BYTES)?;
    let body = EventBody::LogAppended {
        stream: stream.to_string(),
        offset: range.start,
        length: range.end - range.start,
        replaced,
    };
    let seq = emit(ctx, experiment_id, Some(run_id), &body)?;
    ctx.log_appends.put(key, LastEvent { seq, range });
    Ok(seq)
}

/// The range the event of an append of `appended` announces, and the event it replaces: `last` (deleted here)
/// when the append continues it and the two together stay within `max`.
fn merge(
    ctx: &WriteCtx,
    last: Option<LastEvent>,
    appended: Range<u64>,
    max: u64,
) -> Result<(Range<u64>, Option<Replaced>)> {
    if let Some(last) = last {
        let merged = last.range.start..appended.end;
        if last.range.end == appended.start
            && merged.end - merged.start <= max
            && delete(ctx, last.seq)?
        {
            let replaced = Replaced {
                seq: last.seq,
                end: last.range.end,
            };
            return Ok((merged, Some(replaced)));
        }
    }
    Ok((appended, None))
}

/// Deletes event `seq`; `false` if it was not there (another process's writer may have replaced it).
fn delete(ctx: &WriteCtx, seq: u64) -> Result<bool> {
    ctx.conn
        .prepare_cached("DELETE FROM events WHERE seq = ?1")
        .and_then(|mut st| st.execute([seq as i64]))
        .map(|n| n == 1)
        .map_err(sql_err("replacing an event"))
}

/// Events after `after` matching `filter`, oldest first.
pub fn since(
    conn: &Connection,
    filter: &EventFilter,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let limit = limit.min(1_000_000) as i64;
    let after = after.min(i64::MAX as u64) as i64;
    // One statement per filter shape, so SQLite can use the (run_id, seq) / (experiment_id, seq) indexes.
    let mut sql =
        String::from("SELECT seq, time, experiment_id, run_id, body FROM events WHERE seq > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![after.into()];
    if let Some(run) = &filter.run_id {
        args.push(run.as_str().to_string().into());
        sql.push_str(&format!(" AND run_id = ?{}", args.len()));
    }
    if let Some(exp) = filter.experiment_id {
        args.push(exp.0.into());
        sql.push_str(&format!(" AND experiment_id = ?{}", args.len()));
    }
    if !filter.types.is_empty() {
        let marks: Vec<String> = filter
            .types
            .iter()
            .map(|t| {
                args.push(t.clone().into());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(
            " AND json_extract(body, '$.type') IN ({})",
            marks.join(", ")
        ));
    }
    args.push(limit.into());
    // `+ 0`: SQLite plans with the value of a bare `LIMIT ?`, so binding one expires the cached statement and
    // every call would parse it again.
    sql.push_str(&format!(" ORDER BY seq LIMIT ?{} + 0", args.len()));
    let mut st = conn
        .prepare_cached(&sql)
        .map_err(sql_err("reading events"))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(sql_err("reading events"))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, time, exp, run, body) = row.map_err(sql_err("reading events"))?;
        out.push(Event {
            seq: seq as u64,
            time: WallTime(time),
            experiment_id: ExperimentId(exp),
            run_id: run.map(|r| r.parse()).transpose()?,
            body: serde_json::from_str(&body)
                .map_err(|e| Error::storage(format!("corrupt event {seq}: {e}")))?,
        });
    }
    Ok(out)
}
