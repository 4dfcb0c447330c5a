//! Documents: small JSON bodies keyed by (kind, id) for API layers whose records flightlog has no type for.

use super::{sql_err, Inner};
use flightlog_model::{validate, Error, Result, WallTime};
use rusqlite::{params, Connection, OptionalExtension};

/// Longest document body, in bytes: these are metadata records, not a blob store.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `value` as JSON text, or `TooLarge` naming `what` when the text is longer than `limit` bytes.
fn json_within(what: &str, value: &serde_json::Value, limit: usize) -> Result<String> {
    let text = serde_json::to_string(value).map_err(Error::storage)?;
    if text.len() > limit {
        return Err(Error::TooLarge {
            what: what.into(),
            size: text.len() as u64,
            limit: limit as u64,
        });
    }
    Ok(text)
}

/// Inserts or replaces one document after checking its kind, id and size.
pub fn put(inner: &Inner, kind: &str, id: &str, body: &serde_json::Value) -> Result<()> {
    validate::name("document kind", kind)?;
    validate::name("document id", id)?;
    let text = json_within("document", body, MAX_BODY_BYTES)?;
    let (kind, id) = (kind.to_string(), id.to_string());
    inner.write(move |ctx| {
        ctx.conn
            .execute(
                "REPLACE INTO documents (kind, id, body, updated_time) VALUES (?1, ?2, ?3, ?4)",
                params![kind, id, text, WallTime::now().0],
            )
            .map_err(sql_err("storing a document"))?;
        Ok(())
    })
}

pub fn get(conn: &Connection, kind: &str, id: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT body FROM documents WHERE kind = ?1 AND id = ?2",
            [kind, id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("reading a document"))?;
    text.map(|t| serde_json::from_str(&t).map_err(Error::storage))
        .transpose()
}

/// Every document of `kind`, by id.
pub fn list(conn: &Connection, kind: &str) -> Result<Vec<(String, serde_json::Value)>> {
    let mut st = conn
        .prepare_cached("SELECT id, body FROM documents WHERE kind = ?1 ORDER BY id")
        .map_err(sql_err("listing documents"))?;
    let rows = st
        .query_map([kind], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql_err("listing documents"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, text) = row.map_err(sql_err("listing documents"))?;
        out.push((id, serde_json::from_str(&text).map_err(Error::storage)?));
    }
    Ok(out)
}

/// Whether a document was there to delete; its items go with it.
pub fn delete(inner: &Inner, kind: &str, id: &str) -> Result<bool> {
    let (kind, id) = (kind.to_string(), id.to_string());
    inner.write(move |ctx| {
        let n = ctx
            .conn
            .execute(
                "DELETE FROM documents WHERE kind = ?1 AND id = ?2",
                [&kind, &id],
            )
            .map_err(sql_err("deleting a document"))?;
        ctx.conn
            .execute(
                "DELETE FROM document_items WHERE kind = ?1 AND id = ?2",
                [&kind, &id],
            )
            .map_err(sql_err("deleting a document"))?;
        Ok(n > 0)
    })
}

/// Longest document item, in bytes.
const MAX_ITEM_BYTES: usize = 64 * 1024;

/// Appends items to the list kept beside document (kind, id), in one commit; an item already in the list (the
/// same JSON) is not added again, so a retried request adds nothing. Appending costs the same however long the
/// list is: the document is not rewritten.
pub fn append_items(
    inner: &Inner,
    kind: &str,
    id: &str,
    items: &[serde_json::Value],
) -> Result<()> {
    validate::name("document kind", kind)?;
    validate::name("document id", id)?;
    let texts = items
        .iter()
        .map(|item| json_within("document item", item, MAX_ITEM_BYTES))
        .collect::<Result<Vec<String>>>()?;
    let (kind, id) = (kind.to_string(), id.to_string());
    inner.write(move |ctx| {
        let mut st = ctx
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO document_items (kind, id, item) VALUES (?1, ?2, ?3)",
            )
            .map_err(sql_err("storing document items"))?;
        for text in &texts {
            st.execute(params![kind, id, text])
                .map_err(sql_err("storing document items"))?;
        }
        Ok(())
    })
}

/// The items of document (kind, id), in the order they were first appended.
pub fn items(conn: &Connection, kind: &str, id: &str) -> Result<Vec<serde_json::Value>> {
    let mut st = conn
        .prepare_cached(
            "SELECT item FROM document_items WHERE kind = ?1 AND id = ?2 ORDER BY rowid",
        )
        .map_err(sql_err("reading document items"))?;
    let rows = st
        .query_map([kind, id], |r| r.get::<_, String>(0))
        .map_err(sql_err("reading document items"))?;
    let mut out = Vec::new();
    for text in rows {
        let text = text.map_err(sql_err("reading document items"))?;
        out.push(serde_json::from_str(&text).map_err(Error::storage)?);
    }
    Ok(out)
}
