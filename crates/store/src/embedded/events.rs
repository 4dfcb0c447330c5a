//! The event log: one row per committed change, written in the change's own transaction, so `seq` order is
//! commit order and a stream reader that resumes from a seq misses nothing. A series' points events are the
//! exception that keeps the log small: each append replaces the series' newest points event with one covering
//! both ranges (see [`emit_points`]).

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
    if matches!(body, EventBody::ArtifactWritten { .. }) {
        ctx.last_artifact_seq = ctx.last_artifact_seq.max(seq);
    }
    Ok(seq)
}

/// Most points one merged points event announces. A reader that resumes from before a merged event reads its
/// whole range again (streams skip what they sent on the same connection), so this bounds what it re-reads.
const MERGE_POINTS: u64 = 1000;
/// Series whose newest points event the writer remembers (see [`super::job_cache::JobCache`]).
pub const REMEMBERED_SERIES: usize = 4096;

/// Where a series' newest points event is and the points it covers.
pub struct LastPoints {
    seq: u64,
    range: Range<u64>,
}

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
    let (mut range, mut replaced) = (appended, None);
    if let Some(last) = ctx.points.take(series_id) {
        let merged = last.range.start..range.end;
        if last.range.end == range.start
            && merged.end - merged.start <= MERGE_POINTS
            && delete(ctx, last.seq)?
        {
            replaced = Some(Replaced {
                seq: last.seq,
                end: last.range.end,
            });
            range = merged;
        }
    }
    let seq = emit(
        ctx,
        experiment_id,
        Some(run_id),
        &body(range.clone(), replaced),
    )?;
    ctx.points.put(series_id, LastPoints { seq, range });
    Ok(seq)
}

/// Deletes event `seq`; `false` if it was not there (another process's writer may have replaced it).
fn delete(ctx: &WriteCtx, seq: u64) -> Result<bool> {
    ctx.conn
        .prepare_cached("DELETE FROM events WHERE seq = ?1")
        .and_then(|mut st| st.execute([seq as i64]))
        .map(|n| n == 1)
        .map_err(sql_err("replacing a points event"))
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
