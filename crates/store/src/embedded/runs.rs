//! Runs: creation (idempotent with a client-chosen id), the checked status machine, write-once properties and
//! params, soft deletion, and fast filtered listings.

use super::events::emit;
use super::experiments::{from_json, json, parse_lifecycle, validate_tags};
use super::writer::WriteCtx;
use super::{column_count, metrics, names, paging, qualified, sql_err, Inner};
use flightlog_model::*;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{BTreeMap, HashMap};

const COLUMNS: &str =
    "id, experiment_id, display_name, description, parent_id, status, lifecycle, created_time, \
    start_time, end_time, error, tags, properties, params, user, host, command";

/// The run, and whether this call made it (false: a replay of its create found it).
pub fn create(inner: &Inner, new: NewRun) -> Result<(Run, bool)> {
    validate_new(&new)?;
    inner.write(move |ctx| {
        if let Some(id) = &new.id {
            if let Some(existing) = find(&ctx.conn, id)? {
                return if existing.experiment_id == new.experiment_id {
                    with_metrics(&ctx.conn, existing).map(|run| (run, false))
                } else {
                    Err(Error::AlreadyExists {
                        entity: Entity::Run,
                        id: id.to_string(),
                    })
                };
            }
        }
        insert(ctx, new).map(|run| (run, true))
    })
}

fn validate_new(new: &NewRun) -> Result<()> {
    if let Some(n) = &new.display_name {
        validate::title("display_name", n)?;
    }
    if let Some(d) = &new.description {
        validate::description("description", d)?;
    }
    validate_tags(&new.tags)?;
    validate_map("property", &new.properties)?;
    validate_map("param", &new.params)?;
    validate::value("user", &new.user)?;
    validate::value("host", &new.host)?;
    if let Some(c) = &new.command {
        validate::description("command", c)?;
    }
    Ok(())
}

fn validate_map(what: &str, map: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in map {
        validate::name(&format!("{what} key"), k)?;
        validate::value(&format!("{what} value"), v)?;
    }
    Ok(())
}

/// A parent that does not exist is the request's mistake in `parent_id` (a 400 naming it), not a missing
/// resource at the path: "run 'X' not found" would read as if the run being created were missing.
fn missing_parent(parent: &RunId, own: Option<&RunId>) -> Error {
    let why = if own == Some(parent) {
        "a run cannot be its own parent"
    } else {
        "a parent must be an existing run"
    };
    Error::invalid("parent_id", format!("no run '{parent}' exists; {why}"))
}

/// Inserts a new run after checking its experiment and parent.
fn insert(ctx: &mut WriteCtx, new: NewRun) -> Result<Run> {
    let lifecycle: Option<String> = ctx
        .conn
        .query_row(
            "SELECT lifecycle FROM experiments WHERE id = ?1",
            [new.experiment_id.0],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("reading an experiment"))?;
    match lifecycle.as_deref() {
        None => return Err(Error::not_found(Entity::Experiment, new.experiment_id)),
        Some("deleted") => {
            return Err(Error::Deleted {
                entity: Entity::Experiment,
                id: new.experiment_id.to_string(),
            })
        }
        Some(_) => {}
    }
    if let Some(p) = &new.parent_id {
        if find(&ctx.conn, p)?.is_none() {
            return Err(missing_parent(p, new.id.as_ref()));
        }
    }
    let now = WallTime::now();
    let status = new.status.unwrap_or(RunStatus::Running);
    let run = Run {
        id: new.id.unwrap_or_default(),
        experiment_id: new.experiment_id,
        display_name: new.display_name.unwrap_or_else(names::generate),
        description: new.description.unwrap_or_default(),
        parent_id: new.parent_id,
        status,
        lifecycle: Lifecycle::Active,
        created_time: now,
        start_time: new
            .start_time
            .or((status == RunStatus::Running).then_some(now)),
        end_time: status.is_terminal().then_some(now),
        error: None,
        tags: new.tags,
        properties: new.properties,
        params: new.params,
        user: new.user,
        host: new.host,
        command: new.command,
        metrics: Vec::new(),
    };
    ctx.conn
        .execute(
            &format!("INSERT INTO runs ({COLUMNS}, last_update_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?8)"),
            rusqlite::params_from_iter(row_values(&run)?),
        )
        .map_err(sql_err("creating a run"))?;
    let body = EventBody::RunCreated {
        display_name: run.display_name.clone(),
        status,
        parent_id: run.parent_id.clone(),
    };
    emit(ctx, run.experiment_id, Some(&run.id), &body)?;
    Ok(run)
}

/// The run's columns in [`COLUMNS`] order.
fn row_values(r: &Run) -> Result<Vec<Value>> {
    let opt = |t: Option<WallTime>| t.map_or(Value::Null, |t| Value::Integer(t.0));
    Ok(vec![
        Value::Text(r.id.to_string()),
        Value::Integer(r.experiment_id.0),
        Value::Text(r.display_name.clone()),
        Value::Text(r.description.clone()),
        r.parent_id
            .as_ref()
            .map_or(Value::Null, |p| Value::Text(p.to_string())),
        Value::Text(r.status.as_str().into()),
        Value::Text(r.lifecycle.as_str().into()),
        Value::Integer(r.created_time.0),
        opt(r.start_time),
        opt(r.end_time),
        r.error
            .as_ref()
            .map_or(Ok(Value::Null), |e| json(e).map(Value::Text))?,
        Value::Text(json(&r.tags)?),
        Value::Text(json(&r.properties)?),
        Value::Text(json(&r.params)?),
        Value::Text(r.user.clone()),
        Value::Text(r.host.clone()),
        r.command.clone().map_or(Value::Null, Value::Text),
    ])
}

/// A run from a row of [`COLUMNS`], borrowing the text columns rather than copying them: listings map
/// thousands of rows, so this is their hot path.
fn from_row(r: &Row) -> Result<Run> {
    from_row_keeping(r, None)
}

/// [`from_row`], keeping only the params and tags `keys` names (and no properties) when given: the other
/// entries of the JSON columns are skipped over, never copied.
fn from_row_keeping(r: &Row, keys: Option<&RunKeys>) -> Result<Run> {
    let err = sql_err("reading a run");
    let text = |i: usize| r.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(&err);
    let opt_text = |i: usize| {
        r.get_ref(i)
            .and_then(|v| Ok(v.as_str_or_null()?))
            .map_err(&err)
    };
    let int = |i: usize| r.get::<_, i64>(i).map_err(&err);
    let opt_time = |i: usize| {
        r.get::<_, Option<i64>>(i)
            .map(|t| t.map(WallTime))
            .map_err(&err)
    };
    Ok(Run {
        id: text(0)?.parse()?,
        experiment_id: ExperimentId(int(1)?),
        display_name: text(2)?.to_string(),
        description: text(3)?.to_string(),
        parent_id: opt_text(4)?.map(str::parse).transpose()?,
        status: parse_status(text(5)?)?,
        lifecycle: parse_lifecycle(text(6)?),
        created_time: WallTime(int(7)?),
        start_time: opt_time(8)?,
        end_time: opt_time(9)?,
        error: opt_text(10)?.map(from_json).transpose()?,
        tags: string_map_keeping(text(11)?, keys.map(|k| k.tags.as_slice()))?,
        properties: string_map_keeping(text(12)?, keys.map(|_| [].as_slice()))?,
        params: string_map_keeping(text(13)?, keys.map(|k| k.params.as_slice()))?,
        user: text(14)?.to_string(),
        host: text(15)?.to_string(),
        command: opt_text(16)?.map(str::to_string),
        metrics: Vec::new(),
    })
}

/// A stored status name (exact, so no allocation), falling back to the lenient parser.
fn parse_status(s: &str) -> Result<RunStatus> {
    RunStatus::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .map_or_else(|| s.parse(), Ok)
}

/// A JSON object of strings; most runs have none, so `{}` skips the parser.
fn string_map(s: &str) -> Result<BTreeMap<String, String>> {
    if s == "{}" {
        Ok(BTreeMap::new())
    } else {
        from_json(s)
    }
}

/// [`string_map`], or only the entries whose key is in `keep` when given.
fn string_map_keeping(s: &str, keep: Option<&[String]>) -> Result<BTreeMap<String, String>> {
    match keep {
        None => string_map(s),
        Some([]) => Ok(BTreeMap::new()),
        Some(keys) => serde::de::DeserializeSeed::deserialize(
            KeptEntries(keys),
            &mut serde_json::Deserializer::from_str(s),
        )
        .map_err(|e| Error::storage(format!("corrupt JSON column: {e}"))),
    }
}

/// Deserializes a JSON object of strings into the entries whose key it names.
struct KeptEntries<'k>(&'k [String]);

impl<'de> serde::de::DeserializeSeed<'de> for KeptEntries<'_> {
    type Value = BTreeMap<String, String>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeptEntries<'_> {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut kept = BTreeMap::new();
        while let Some(key) = map.next_key::<KeyText<'de>>()? {
            if self.0.iter().any(|k| *k == key.0) {
                kept.insert(key.0.into_owned(), map.next_value::<String>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

/// An object key, borrowed from the column when it has no escapes.
struct KeyText<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(KeyText(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(KeyText(v.to_owned().into()))
            }
        }
        d.deserialize_str(Text)
    }
}

/// The run without metrics, if it exists.
pub fn find(conn: &Connection, id: &RunId) -> Result<Option<Run>> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"))
        .map_err(sql_err("reading a run"))?;
    let mut rows = st.query([id.as_str()]).map_err(sql_err("reading a run"))?;
    rows.next()
        .map_err(sql_err("reading a run"))?
        .map(from_row)
        .transpose()
}

/// The runs of `ids` without metrics, in the order given; an id of no run is left out. One query, so a
/// search reads the full runs of its page at once.
pub fn get_many(conn: &Connection, ids: &[RunId]) -> Result<Vec<Run>> {
    let err = sql_err("reading runs");
    let list: Vec<&str> = ids.iter().map(RunId::as_str).collect();
    let list = serde_json::to_string(&list).map_err(Error::storage)?;
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM runs WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .map_err(&err)?;
    let mut rows = st.query([list]).map_err(&err)?;
    let mut found: HashMap<RunId, Run> = HashMap::with_capacity(ids.len());
    while let Some(row) = rows.next().map_err(&err)? {
        let run = from_row(row)?;
        found.insert(run.id.clone(), run);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// The run without metrics; `NotFound` if unknown.
pub fn get(conn: &Connection, id: &RunId) -> Result<Run> {
    find(conn, id)?.ok_or_else(|| Error::not_found(Entity::Run, id))
}

pub fn get_with_metrics(conn: &Connection, id: &RunId) -> Result<Run> {
    with_metrics(conn, get(conn, id)?)
}

fn with_metrics(conn: &Connection, mut run: Run) -> Result<Run> {
    run.metrics = metrics::list(conn, &run.id)?;
    Ok(run)
}

/// Checks that `id` exists and is not deleted before a write to it, marks its activity, and returns its
/// experiment (for events).
pub fn open_for_write(conn: &Connection, id: &RunId) -> Result<ExperimentId> {
    let exp = writable(conn, id)?;
    conn.prepare_cached("UPDATE runs SET last_update_time = ?2 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id.as_str(), WallTime::now().0]))
        .map_err(sql_err("marking run activity"))?;
    Ok(exp)
}

/// The run's experiment if the run exists and is not deleted; `NotFound` / `Deleted` otherwise.
pub fn writable(conn: &Connection, id: &RunId) -> Result<ExperimentId> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT experiment_id, lifecycle FROM runs WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql_err("reading a run"))?;
    let (exp, lifecycle) = row.ok_or_else(|| Error::not_found(Entity::Run, id))?;
    if lifecycle == "deleted" {
        return Err(Error::Deleted {
            entity: Entity::Run,
            id: id.to_string(),
        });
    }
    Ok(ExperimentId(exp))
}

/// Checks that a run exists (deleted or not): `NotFound` otherwise.
pub fn exists(conn: &Connection, id: &RunId) -> Result<()> {
    let found = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
        .and_then(|mut st| st.exists([id.as_str()]))
        .map_err(sql_err("reading a run"))?;
    if found {
        Ok(())
    } else {
        Err(Error::not_found(Entity::Run, id))
    }
}

pub fn update(inner: &Inner, id: &RunId, patch: RunPatch) -> Result<Run> {
    validate_patch(&patch)?;
    let id = id.clone();
    inner.write(move |ctx| update_in(ctx, &id, patch))
}

/// Applies a validated patch inside the writer's transaction.
pub fn update_in(ctx: &mut WriteCtx, id: &RunId, patch: RunPatch) -> Result<Run> {
    let old = get(&ctx.conn, id)?;
    if old.lifecycle == Lifecycle::Deleted && patch.lifecycle != Some(Lifecycle::Active) {
        return Err(Error::Deleted {
            entity: Entity::Run,
            id: id.to_string(),
        });
    }
    let new = apply_patch(&old, patch)?;
    if new != old {
        let mut values = row_values(&new)?;
        values.push(Value::Integer(WallTime::now().0));
        ctx.conn
            .execute(
                &format!("REPLACE INTO runs ({COLUMNS}, last_update_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                rusqlite::params_from_iter(values),
            )
            .map_err(sql_err("updating a run"))?;
        let body = EventBody::RunUpdated {
            status: new.status,
            status_changed: new.status != old.status,
        };
        emit(ctx, new.experiment_id, Some(id), &body)?;
    }
    with_metrics(&ctx.conn, new)
}

pub fn validate_patch(p: &RunPatch) -> Result<()> {
    if let Some(n) = &p.display_name {
        validate::title("display_name", n)?;
    }
    if let Some(d) = &p.description {
        validate::description("description", d)?;
    }
    if let Some(e) = &p.error {
        validate::description("error.message", &e.message)?;
        validate::description("error.details", e.details.as_deref().unwrap_or(""))?;
        validate::value("error.code", e.code.as_deref().unwrap_or(""))?;
    }
    validate_tags(&p.set_tags)?;
    for k in &p.remove_tags {
        validate::name("tag key", k)?;
    }
    validate_map("property", &p.add_properties)?;
    validate_map("param", &p.add_params)
}

/// The run after `patch`, or the first rule it breaks (then nothing is applied).
fn apply_patch(old: &Run, p: RunPatch) -> Result<Run> {
    let mut run = old.clone();
    let now = WallTime::now();
    if p.reopen && old.status.is_terminal() {
        run.status = RunStatus::Running;
        run.end_time = None;
    }
    if let Some(status) = p.status {
        let from = run.status;
        run.status = from.transition(status)?;
        if status != from {
            if status == RunStatus::Running && run.start_time.is_none() {
                run.start_time = Some(now);
            }
            if status.is_terminal() && p.end_time.is_none() {
                run.end_time = Some(now);
            }
        }
    }
    if p.end_time.is_some() && !run.status.is_terminal() {
        return Err(Error::invalid(
            "end_time",
            format!(
                "the run is {} and an end time is for a run that has ended: send it with a status of \
                 Completed, Failed or Canceled, or to a run that has one",
                run.status.as_str()
            ),
        ));
    }
    run.start_time = p.start_time.or(run.start_time);
    run.end_time = p.end_time.or(run.end_time);
    if let Some(n) = p.display_name {
        run.display_name = n;
    }
    if let Some(d) = p.description {
        run.description = d;
    }
    if p.error.is_some() {
        run.error = p.error;
    }
    run.tags.extend(p.set_tags);
    for k in &p.remove_tags {
        run.tags.remove(k);
    }
    add_once(
        &mut run.properties,
        p.add_properties,
        "property",
        "properties",
    )?;
    add_once(&mut run.params, p.add_params, "param", "params")?;
    if let Some(l) = p.lifecycle {
        run.lifecycle = l;
    }
    Ok(run)
}

/// Adds write-once entries: an existing key with the same value is a no-op, another value a `Conflict`.
fn add_once(
    map: &mut BTreeMap<String, String>,
    add: BTreeMap<String, String>,
    what: &str,
    plural: &str,
) -> Result<()> {
    for (k, v) in add {
        match map.get(&k) {
            Some(old) if *old != v => {
                return Err(Error::conflict(format!(
                    "{what} '{k}' is already '{old}' and cannot be changed to '{v}' ({plural} are write-once)"
                )))
            }
            Some(_) => {}
            None => {
                map.insert(k, v);
            }
        }
    }
    Ok(())
}

/// How many columns [`COLUMNS`] names.
const COLUMN_COUNT: usize = column_count(COLUMNS);

/// `SELECT` of the run's [`COLUMNS`] and, for each of `metrics`, that series of the run (joined, so a search
/// reads what it filters on in the same pass over the runs); `bind` gives a metric name's parameter.
fn select_with_series(metrics: &[String], bind: &mut dyn FnMut(&str) -> String) -> String {
    let mut select = format!("SELECT {}", qualified(COLUMNS, "r"));
    let mut joins = String::new();
    for (i, name) in metrics.iter().enumerate() {
        select.push_str(&format!(
            ", {}",
            metrics::series_columns_of(&format!("m{i}"))
        ));
        joins.push_str(&format!(
            " LEFT JOIN series m{i} ON m{i}.run_id = r.id AND m{i}.name = {}",
            bind(name)
        ));
    }
    format!("{select} FROM runs r{joins}")
}

/// The SQLite JSON path of the member `key` of an object (`$."key"`); `None` for a key that a quoted path
/// label cannot hold (a double quote, a backslash or a control character: SQLite rejects the path), which is
/// then looked up with `json_each`.
fn json_path(key: &str) -> Option<String> {
    (!key.contains(['"', '\\']) && !key.contains(char::is_control)).then(|| format!("$.\"{key}\""))
}

/// Newest first, filtered in SQL; `with_metrics` fills every run's metrics with one more query.
pub fn list(conn: &Connection, q: &RunQuery) -> Result<Page<Run>> {
    let limit = paging::limit(q.limit);
    let mut args: Vec<Value> = Vec::new();
    let arg = |v: Value, args: &mut Vec<Value>| {
        args.push(v);
        format!("?{}", args.len())
    };
    let joined = q
        .only_keys
        .as_ref()
        .map_or(&[][..], |k| k.metrics.as_slice());
    let mut sql = select_with_series(joined, &mut |name| arg(Value::Text(name.into()), &mut args));
    sql.push_str(" WHERE 1 = 1");
    if !q.experiment_ids.is_empty() {
        let ids: Vec<String> = q
            .experiment_ids
            .iter()
            .map(|e| arg(Value::Integer(e.0), &mut args))
            .collect();
        sql.push_str(&format!(" AND r.experiment_id IN ({})", ids.join(",")));
    }
    if !q.statuses.is_empty() {
        let s: Vec<String> = q
            .statuses
            .iter()
            .map(|s| arg(Value::Text(s.as_str().into()), &mut args))
            .collect();
        sql.push_str(&format!(" AND r.status IN ({})", s.join(",")));
    }
    if let Some(p) = &q.parent_id {
        sql.push_str(&format!(
            " AND r.parent_id = {}",
            arg(Value::Text(p.to_string()), &mut args)
        ));
    }
    if q.top_level_only {
        sql.push_str(" AND r.parent_id IS NULL");
    }
    for (column, filters) in [
        ("tags", &q.tags),
        ("properties", &q.properties),
        ("params", &q.params),
    ] {
        for (k, v) in filters {
            let condition = match json_path(k) {
                // A path lookup: json_each would open a table-valued cursor per row (a fifth of a search).
                Some(path) => {
                    let path = arg(Value::Text(path), &mut args);
                    match v {
                        Some(v) => format!(
                            "json_extract(r.{column}, {path}) = {}",
                            arg(Value::Text(v.clone()), &mut args)
                        ),
                        None => format!("json_type(r.{column}, {path}) IS NOT NULL"),
                    }
                }
                None => {
                    let key = arg(Value::Text(k.clone()), &mut args);
                    let value = match v {
                        Some(v) => {
                            format!(" AND value = {}", arg(Value::Text(v.clone()), &mut args))
                        }
                        None => String::new(),
                    };
                    format!("EXISTS (SELECT 1 FROM json_each(r.{column}) WHERE key = {key}{value})")
                }
            };
            sql.push_str(&format!(" AND {condition}"));
        }
    }
    if !q.include_deleted {
        sql.push_str(" AND r.lifecycle = 'active'");
    }
    if let Some(token) = &q.page_token {
        let (t, id) = paging::decode(token)?;
        let (t, id) = (
            arg(Value::Integer(t), &mut args),
            arg(Value::Text(id), &mut args),
        );
        sql.push_str(&format!(
            " AND (r.created_time < {t} OR (r.created_time = {t} AND r.id > {id}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY r.created_time DESC, r.id LIMIT {}",
        limit + 1
    ));
    let mut st = conn.prepare_cached(&sql).map_err(sql_err("listing runs"))?;
    let mut rows = st
        .query(rusqlite::params_from_iter(args))
        .map_err(sql_err("listing runs"))?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err("listing runs"))? {
        let mut run = from_row_keeping(row, q.only_keys.as_ref())?;
        for i in 0..joined.len() {
            let at = COLUMN_COUNT + metrics::SERIES_COLUMN_COUNT * i;
            run.metrics.extend(metrics::joined_info(row, at)?);
        }
        items.push(run);
    }
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|r| paging::encode(r.created_time.0, r.id.as_str()))
    } else {
        None
    };
    if q.with_metrics {
        metrics::fill_metrics(conn, &mut items)?;
    }
    Ok(Page {
        items,
        next_page_token,
    })
}
