//! Experiments: create, read, list (with run counts and last activity), rename, tag, delete and restore.

use super::events::emit;
use super::writer::WriteCtx;
use super::{paging, sql_err, Inner};
use flightlog_model::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeMap;

const SELECT: &str =
    "SELECT e.id, e.name, e.created_time, e.last_update_time, e.lifecycle, e.tags, \
    e.artifact_location, \
    (SELECT count(*) FROM runs r WHERE r.experiment_id = e.id AND r.lifecycle = 'active'), \
    (SELECT max(r.last_update_time) FROM runs r WHERE r.experiment_id = e.id) \
    FROM experiments e";

pub fn create(inner: &Inner, mut new: NewExperiment) -> Result<Experiment> {
    validate::title("name", &new.name)?;
    validate_tags(&new.tags)?;
    new.artifact_location = new
        .artifact_location
        .as_deref()
        .map(validate::artifact_location)
        .transpose()?;
    inner.write(move |ctx| {
        if find_id(&ctx.conn, &new.name)?.is_some() {
            return Err(Error::AlreadyExists { entity: Entity::Experiment, id: new.name });
        }
        let now = WallTime::now().0;
        ctx.conn
            .execute(
                "INSERT INTO experiments (name, created_time, last_update_time, lifecycle, tags, artifact_location) \
                 VALUES (?1, ?2, ?2, 'active', ?3, ?4)",
                params![new.name, now, json(&new.tags)?, new.artifact_location],
            )
            .map_err(sql_err("creating an experiment"))?;
        let id = ExperimentId(ctx.conn.last_insert_rowid());
        emit(ctx, id, None, &EventBody::ExperimentCreated { name: new.name })?;
        get(&ctx.conn, id)
    })
}

pub fn get(conn: &Connection, id: ExperimentId) -> Result<Experiment> {
    conn.query_row(&format!("{SELECT} WHERE e.id = ?1"), [id.0], from_row)
        .optional()
        .map_err(sql_err("reading an experiment"))?
        .ok_or_else(|| Error::not_found(Entity::Experiment, id))?
}

pub fn get_by_name(conn: &Connection, name: &str) -> Result<Experiment> {
    let id = find_id(conn, name)?.ok_or_else(|| Error::not_found(Entity::Experiment, name))?;
    get(conn, id)
}

fn find_id(conn: &Connection, name: &str) -> Result<Option<ExperimentId>> {
    conn.query_row("SELECT id FROM experiments WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map(|id| id.map(ExperimentId))
    .map_err(sql_err("finding an experiment"))
}

/// Newest first (ties by id, newest first). The name filter is applied while scanning, so pages stay full.
pub fn list(conn: &Connection, q: &ExperimentQuery) -> Result<Page<Experiment>> {
    let limit = paging::limit(q.limit);
    let after = q.page_token.as_deref().map(paging::decode).transpose()?;
    let (t, id) = match &after {
        Some((t, id)) => (
            *t,
            id.parse::<i64>()
                .map_err(|_| Error::invalid("page_token", "is not a page token"))?,
        ),
        None => (i64::MAX, i64::MAX),
    };
    let needle = q.name_contains.as_deref().map(str::to_lowercase);
    let sql = format!(
        "{SELECT} WHERE (e.created_time < ?1 OR (e.created_time = ?1 AND e.id < ?2)) AND (?3 OR e.lifecycle = 'active') \
         ORDER BY e.created_time DESC, e.id DESC"
    );
    let mut st = conn
        .prepare_cached(&sql)
        .map_err(sql_err("listing experiments"))?;
    let mut rows = st
        .query(params![t, id, q.include_deleted])
        .map_err(sql_err("listing experiments"))?;
    let mut items = Vec::new();
    let mut more = false;
    while let Some(row) = rows.next().map_err(sql_err("listing experiments"))? {
        let e = from_row(row).map_err(sql_err("listing experiments"))??;
        if needle
            .as_ref()
            .is_some_and(|n| !e.name.to_lowercase().contains(n.as_str()))
        {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(e);
    }
    let next_page_token = more
        .then(|| {
            items
                .last()
                .map(|e: &Experiment| paging::encode(e.created_time.0, &e.id.to_string()))
        })
        .flatten();
    Ok(Page {
        items,
        next_page_token,
    })
}

pub fn update(inner: &Inner, id: ExperimentId, patch: ExperimentPatch) -> Result<Experiment> {
    if let Some(name) = &patch.name {
        validate::title("name", name)?;
    }
    validate_tags(&patch.set_tags)?;
    if id == ExperimentId::DEFAULT && patch.lifecycle == Some(Lifecycle::Deleted) {
        return Err(Error::invalid(
            "lifecycle",
            "the Default experiment '0' cannot be deleted: it is where runs without an experiment go",
        ));
    }
    for k in &patch.remove_tags {
        validate::name("tag key", k)?;
    }
    inner.write(move |ctx| {
        let mut e = get(&ctx.conn, id)?;
        // A rename counts as an update even to the name it had, as on MLflow's server.
        let named = patch.name.is_some();
        let renamed = patch.name.filter(|n| *n != e.name);
        let moved = patch.lifecycle.filter(|l| *l != e.lifecycle);
        let edits = renamed.is_some() || !patch.set_tags.is_empty() || !patch.remove_tags.is_empty();
        if edits && e.lifecycle == Lifecycle::Deleted && moved.is_none() {
            // As MLflow's server: a deleted experiment takes no renames or tag changes until it is restored
            // (a patch that restores it may carry them).
            return Err(Error::Deleted { entity: Entity::Experiment, id: id.to_string() });
        }
        if let Some(name) = &renamed {
            if find_id(&ctx.conn, name)?.is_some_and(|other| other != id) {
                return Err(Error::AlreadyExists { entity: Entity::Experiment, id: name.clone() });
            }
        }
        let renamed_or_moved = named || moved.is_some();
        if let Some(name) = renamed {
            e.name = name;
        }
        if let Some(l) = moved {
            e.lifecycle = l;
            set_runs_lifecycle(ctx, id, l)?;
        }
        e.tags.extend(patch.set_tags);
        for k in &patch.remove_tags {
            e.tags.remove(k);
        }
        // As on MLflow's server, tags alone do not count as an update of the experiment (its "last modified").
        let updated = if renamed_or_moved { WallTime::now() } else { e.last_update_time };
        ctx.conn
            .execute(
                "UPDATE experiments SET name = ?2, lifecycle = ?3, tags = ?4, last_update_time = ?5 WHERE id = ?1",
                params![id.0, e.name, e.lifecycle.as_str(), json(&e.tags)?, updated.0],
            )
            .map_err(sql_err("updating an experiment"))?;
        emit(ctx, id, None, &EventBody::ExperimentUpdated { name: e.name.clone(), lifecycle: e.lifecycle })?;
        get(&ctx.conn, id)
    })
}

/// Gives every run of the experiment its new lifecycle, as MLflow's server does: deleting an experiment deletes
/// its runs (so they leave searches of active runs and take no more writes), and restoring it restores them
/// all. Each run changed gets a `run_updated` event.
fn set_runs_lifecycle(ctx: &mut WriteCtx, id: ExperimentId, to: Lifecycle) -> Result<()> {
    let changed: Vec<(String, String)> = ctx
        .conn
        .prepare_cached(
            "UPDATE runs SET lifecycle = ?2, last_update_time = ?3 WHERE experiment_id = ?1 AND lifecycle != ?2 \
             RETURNING id, status",
        )
        .and_then(|mut st| {
            st.query_map(params![id.0, to.as_str(), WallTime::now().0], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(sql_err("updating an experiment's runs"))?;
    for (run, status) in changed {
        let run: RunId = run.parse()?;
        let status = status
            .parse()
            .map_err(|_| Error::storage(format!("run {run}: unknown status {status}")))?;
        emit(
            ctx,
            id,
            Some(&run),
            &EventBody::RunUpdated {
                status,
                status_changed: false,
            },
        )?;
    }
    Ok(())
}

/// Tag keys are names, values bounded.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in tags {
        validate::name("tag key", k)?;
        validate::value("tag value", v)?;
    }
    Ok(())
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::storage)
}

pub fn parse_lifecycle(s: &str) -> Lifecycle {
    if s == "deleted" {
        Lifecycle::Deleted
    } else {
        Lifecycle::Active
    }
}

/// Parses a stored JSON column; corrupt JSON is a storage error.
pub fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::storage(format!("corrupt JSON column: {e}")))
}

fn from_row(r: &Row) -> rusqlite::Result<Result<Experiment>> {
    let tags: String = r.get(5)?;
    let e = Experiment {
        id: ExperimentId(r.get(0)?),
        name: r.get(1)?,
        created_time: WallTime(r.get(2)?),
        last_update_time: WallTime(r.get(3)?),
        lifecycle: parse_lifecycle(&r.get::<_, String>(4)?),
        tags: BTreeMap::new(),
        artifact_location: r.get(6)?,
        run_count: r.get::<_, i64>(7)? as u64,
        last_activity: r.get::<_, Option<i64>>(8)?.map(WallTime),
    };
    Ok(from_json(&tags).map(|tags| Experiment { tags, ..e }))
}
