//! The SQLite schema and its migrations, applied in order up to [`VERSION`] (tracked in `PRAGMA user_version`).

use super::sql_err;
use flightlog_model::{Result, WallTime};
use rusqlite::Connection;

/// The schema version this build writes.
pub const VERSION: i64 = 9;

/// Version 1: experiments, runs, metric series and their blocks, batches, logs and events.
const V1: &str = r#"
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_time INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL,
    lifecycle TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    artifact_location TEXT
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    display_name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    parent_id TEXT,
    status TEXT NOT NULL,
    lifecycle TEXT NOT NULL,
    created_time INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    error TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    params TEXT NOT NULL DEFAULT '{}',
    user TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    command TEXT
) WITHOUT ROWID;
CREATE INDEX runs_by_time ON runs(created_time DESC, id);
CREATE INDEX runs_by_experiment ON runs(experiment_id, created_time DESC, id);
CREATE INDEX runs_by_parent ON runs(parent_id);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 0,
    first_time INTEGER,
    last_time INTEGER,
    last_step INTEGER,
    last_value TEXT NOT NULL DEFAULT 'null',
    min REAL,
    max REAL,
    schema TEXT,
    columns TEXT NOT NULL DEFAULT '[]',
    UNIQUE(run_id, name)
);
CREATE TABLE blocks (
    series_id INTEGER NOT NULL,
    first_index INTEGER NOT NULL,
    count INTEGER NOT NULL,
    min_step INTEGER NOT NULL,
    max_step INTEGER NOT NULL,
    min_value REAL,
    max_value REAL,
    encoding INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY(series_id, first_index)
) WITHOUT ROWID;
CREATE TABLE batches (
    run_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY(run_id, batch_id)
) WITHOUT ROWID;
CREATE TABLE log_streams (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    length INTEGER NOT NULL,
    last_time INTEGER,
    PRIMARY KEY(run_id, name)
) WITHOUT ROWID;
CREATE TABLE log_chunks (
    run_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY(run_id, stream, start_offset)
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    experiment_id INTEGER NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_run ON events(run_id, seq);
CREATE INDEX events_by_experiment ON events(experiment_id, seq);
"#;

/// Version 2: documents (small JSON records keyed by kind and id, e.g. MLflow logged models).
const V2: &str = r#"
CREATE TABLE documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_time INTEGER NOT NULL,
    PRIMARY KEY(kind, id)
) WITHOUT ROWID;
"#;

/// Version 3: log bytes move to files (`<data>/logs/<run_id>/<stream>`, see `log_files`). A stream's bytes
/// before `file_start` stay in `log_chunks` (written by version ≤ 2 and still read), the rest are in its file
/// from file offset 0; existing streams continue in a file after what they already hold.
const V3: &str = r#"
ALTER TABLE log_streams ADD COLUMN file_start INTEGER NOT NULL DEFAULT 0;
UPDATE log_streams SET file_start = length;
"#;

/// Version 4: small appends are kept as `log_chunks` rows until enough gather to move them to the file together
/// (one durable write each, not two); the stream's bytes from `file_end` on are those rows.
const V4: &str = r#"
ALTER TABLE log_streams ADD COLUMN file_end INTEGER NOT NULL DEFAULT 0;
UPDATE log_streams SET file_end = length;
"#;

/// Version 5: each scalar block's segment summaries (min, max and first NaN point of every 256-point segment,
/// see `summaries`), so an overview of a long series reads them instead of decoding every point. Blocks written
/// before have none and are summarized from their points when read.
const V5: &str = r#"
ALTER TABLE blocks ADD COLUMN summary BLOB;
"#;

/// Version 6: lists of items kept beside a document (e.g. a logged model's metric points), appended to without
/// rewriting the document, each distinct item once. (`IF NOT EXISTS`: a directory marked older may have it.)
const V6: &str = r#"
CREATE TABLE IF NOT EXISTS document_items (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    item TEXT NOT NULL,
    UNIQUE(kind, id, item)
);
"#;

/// Version 7: metric blocks move to a rowid table with an index on (series, first index). In the keyed table a
/// block's whole record, blob included, was its key: every comparison while inserting read a multi-KiB record
/// from its overflow pages, interior pages carried copies of whole blocks, and each series' fragments went to a
/// page of their own. Now a batch's fragments share the table's last pages, only the small index is searched,
/// and the summary is stored before the data, so reading it does not walk the data's overflow chain.
const V7: &str = r#"
CREATE TABLE blocks_v7 (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    first_index INTEGER NOT NULL,
    count INTEGER NOT NULL,
    min_step INTEGER NOT NULL,
    max_step INTEGER NOT NULL,
    min_value REAL,
    max_value REAL,
    encoding INTEGER NOT NULL,
    summary BLOB,
    data BLOB NOT NULL
);
INSERT INTO blocks_v7 (series_id, first_index, count, min_step, max_step, min_value, max_value, encoding, summary,
    data)
SELECT series_id, first_index, count, min_step, max_step, min_value, max_value, encoding, summary, data
FROM blocks ORDER BY series_id, first_index;
DROP TABLE blocks;
ALTER TABLE blocks_v7 RENAME TO blocks;
CREATE UNIQUE INDEX blocks_by_series ON blocks(series_id, first_index);
"#;

/// Version 8: each block's time span, and an index that finds the blocks a span of steps and times cuts
/// without reading them (see `repeats`). Blocks written before hold the widest span, [`UNKNOWN_MIN_TIME`] to
/// [`UNKNOWN_MAX_TIME`], as the columns' defaults, so no row is rewritten; they count as cut by every span.
const V8: &str = r#"
ALTER TABLE blocks ADD COLUMN min_time INTEGER NOT NULL DEFAULT -9223372036854775807;
ALTER TABLE blocks ADD COLUMN max_time INTEGER NOT NULL DEFAULT 9223372036854775807;
CREATE INDEX blocks_by_time ON blocks(series_id, max_time, min_time, max_step, min_step);
"#;

/// Version 9: each scalar series' top point, the one MLflow reports as its latest (see
/// `flightlog_model::TopPoint`): the greatest by (step, time, value), not the one logged last. NULL where it is
/// the last point (steps logged in order), so it costs nothing then; series written before start that way,
/// which is right unless they were logged out of step order.
const V9: &str = r#"
ALTER TABLE series ADD COLUMN top_step INTEGER;
ALTER TABLE series ADD COLUMN top_time INTEGER;
ALTER TABLE series ADD COLUMN top_value TEXT;
"#;

/// The time span of a block whose times are not known (written before version 8, or a record block).
/// `i64::MIN + 1`: SQLite reads `-9223372036854775808` in SQL as a float.
pub const UNKNOWN_MIN_TIME: i64 = i64::MIN + 1;
pub const UNKNOWN_MAX_TIME: i64 = i64::MAX;

/// Whether `table` has `column` (a version-5 column may already be there in a directory that was marked older,
/// and SQLite cannot add a column only if missing).
fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sql_err("reading the table's columns"))
}

/// How long a connection waits for another process's lock before failing.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets the per-connection pragmas: WAL, fully synced commits (the writer's connection then applies its
/// [`super::Durability`]), and a busy timeout so that several processes
/// sharing one data directory wait for each other instead of failing. Pages stay at SQLite's 4 KiB: every page
/// a commit touches is written whole to the log, so small pages keep a one-point write cheap. Statement journals
/// (one per savepoint, i.e. per grouped write) live in memory rather than in a temp file created and unlinked
/// per write. Memory-mapped reads and a larger page cache make whole-series reads fast.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("setting the busy timeout"))?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sql_err("setting temp_store"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err("enabling WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err("setting synchronous"))?;
    conn.pragma_update(None, "mmap_size", 1i64 << 30)
        .map_err(sql_err("setting mmap_size"))?;
    conn.pragma_update(None, "cache_size", -16384)
        .map_err(sql_err("setting cache_size"))?;
    // One metric batch alone runs about 14 distinct cached statements; with rusqlite's default of 16, other
    // requests' statements pushed them out and they were parsed again.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the database up to [`VERSION`] in one immediate transaction (so two processes opening a fresh data
/// directory at once do not both migrate), and makes sure the Default experiment exists.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err("starting the migration"))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err("reading the schema version"))?;
    if version > VERSION {
        return Err(flightlog_model::Error::storage(format!(
            "the data directory has schema version {version}, newer than this build's {VERSION}; upgrade flightlog"
        )));
    }
    if version < 1 {
        tx.execute_batch(V1)
            .map_err(sql_err("creating the schema"))?;
    }
    if version < 2 {
        tx.execute_batch(V2).map_err(sql_err("adding documents"))?;
    }
    if version < 3 {
        tx.execute_batch(V3)
            .map_err(sql_err("moving log streams to files"))?;
    }
    if version < 4 {
        tx.execute_batch(V4)
            .map_err(sql_err("keeping small log appends inline"))?;
    }
    if version < 5 && !has_column(&tx, "blocks", "summary")? {
        tx.execute_batch(V5)
            .map_err(sql_err("adding block summaries"))?;
    }
    if version < 6 {
        tx.execute_batch(V6)
            .map_err(sql_err("adding document items"))?;
    }
    if version < 7 {
        tx.execute_batch(V7)
            .map_err(sql_err("moving metric blocks to an indexed table"))?;
    }
    if version < 8 {
        tx.execute_batch(V8)
            .map_err(sql_err("indexing metric blocks by time"))?;
    }
    if version < 9 && !has_column(&tx, "series", "top_step")? {
        tx.execute_batch(V9)
            .map_err(sql_err("adding series' top points"))?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(sql_err("writing the schema version"))?;
    let now = WallTime::now().0;
    tx.execute(
        "INSERT OR IGNORE INTO experiments (id, name, created_time, last_update_time, lifecycle) \
         VALUES (0, 'Default', ?1, ?1, 'active')",
        [now],
    )
    .map_err(sql_err("creating the Default experiment"))?;
    tx.commit().map_err(sql_err("committing the migration"))
}
