//! Log streams: appends are chunks keyed by their start offset, so a reader resumes at any byte offset by
//! reading only the chunks that overlap it.

use super::events::emit;
use super::writer::WriteCtx;
use super::{runs, sql_err, Inner};
use flightlog_model::*;
use rusqlite::{params, Connection, OptionalExtension};

/// Checks a stream name and an append's size.
pub fn validate_append(stream: &str, len: usize) -> Result<()> {
    validate::stream_name(stream)?;
    if len > validate::MAX_LOG_APPEND_BYTES {
        return Err(Error::TooLarge {
            what: format!("an append to log stream '{stream}'"),
            size: len as u64,
            limit: validate::MAX_LOG_APPEND_BYTES as u64,
        });
    }
    Ok(())
}

pub fn append(inner: &Inner, run: &RunId, stream: &str, data: &[u8]) -> Result<u64> {
    validate_append(stream, data.len())?;
    let (run, stream, data) = (run.clone(), stream.to_string(), data.to_vec());
    inner.write(move |ctx| {
        let exp = runs::open_for_write(&ctx.conn, &run)?;
        append_in(ctx, exp, &run, &stream, &data)
    })
}

/// Appends inside the current transaction (the run is already checked) and returns the new length.
pub fn append_in(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    stream: &str,
    data: &[u8],
) -> Result<u64> {
    let offset = length(&ctx.conn, run, stream)?.unwrap_or(0);
    if data.is_empty() {
        return Ok(offset);
    }
    let new_len = offset + data.len() as u64;
    let now = WallTime::now().0;
    ctx.conn
        .prepare_cached(
            "INSERT INTO log_chunks (run_id, stream, start_offset, data) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![run.as_str(), stream, offset as i64, data]))
        .map_err(sql_err("appending to a log"))?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO log_streams (run_id, name, length, last_time) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(run_id, name) DO UPDATE SET length = excluded.length, last_time = excluded.last_time",
        )
        .and_then(|mut st| st.execute(params![run.as_str(), stream, new_len as i64, now]))
        .map_err(sql_err("appending to a log"))?;
    let body = EventBody::LogAppended {
        stream: stream.to_string(),
        offset,
        length: data.len() as u64,
    };
    emit(ctx, exp, Some(run), &body)?;
    Ok(new_len)
}

fn length(conn: &Connection, run: &RunId, stream: &str) -> Result<Option<u64>> {
    conn.prepare_cached("SELECT length FROM log_streams WHERE run_id = ?1 AND name = ?2")
        .and_then(|mut st| {
            st.query_row(params![run.as_str(), stream], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|l| l.map(|l| l as u64))
        .map_err(sql_err("reading a log"))
}

/// Up to `max_bytes` from `offset`, never ending inside a UTF-8 character (unless one character is larger than
/// `max_bytes`, which is then returned whole so a reader always advances).
pub fn read(
    conn: &Connection,
    run: &RunId,
    stream: &str,
    offset: u64,
    max_bytes: u64,
) -> Result<LogSlice> {
    validate::stream_name(stream)?;
    let Some(length) = length(conn, run, stream)? else {
        runs::exists(conn, run)?;
        return Err(Error::not_found(Entity::LogStream, stream));
    };
    let start = offset.min(length);
    // Read 3 bytes past the window so a character cut by it can be completed if it must.
    let end = start.saturating_add(max_bytes).min(length);
    let bytes = read_bytes(conn, run, stream, start, end.saturating_add(3).min(length))?;
    let want = (end - start) as usize;
    let take = char_boundary(&bytes, want);
    Ok(LogSlice {
        stream: stream.to_string(),
        offset: start,
        next_offset: start + take as u64,
        length,
        data: String::from_utf8_lossy(&bytes[..take]).into_owned(),
    })
}

/// How many of `want` bytes to return so the slice does not end in a partial character: back off to the
/// character's start, or, if that leaves nothing, extend to its end. At the end of the stream a partial
/// character is left for later (its writer may not have finished it).
fn char_boundary(bytes: &[u8], want: usize) -> usize {
    let want = want.min(bytes.len());
    let at_end = want == bytes.len();
    if !at_end && bytes[want] & 0xC0 != 0x80 {
        return want;
    }
    let Some(lead) = (want.saturating_sub(3)..want)
        .rev()
        .find(|&i| bytes[i] & 0xC0 != 0x80)
    else {
        return want;
    };
    let len = utf8_len(bytes[lead]);
    if lead + len <= want {
        return want;
    }
    if lead > 0 || at_end {
        lead
    } else {
        (lead + len).min(bytes.len())
    }
}

/// The length of the character a lead byte starts (1 for ASCII and for invalid bytes).
fn utf8_len(b: u8) -> usize {
    match b {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// Bytes `[start, end)` of a stream, from the chunks that overlap them.
fn read_bytes(
    conn: &Connection,
    run: &RunId,
    stream: &str,
    start: u64,
    end: u64,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((end - start) as usize);
    if end <= start {
        return Ok(out);
    }
    let mut st = conn
        .prepare_cached(
            "SELECT start_offset, data FROM log_chunks WHERE run_id = ?1 AND stream = ?2 AND start_offset < ?4 \
             AND start_offset >= coalesce((SELECT max(start_offset) FROM log_chunks \
             WHERE run_id = ?1 AND stream = ?2 AND start_offset <= ?3), 0) ORDER BY start_offset",
        )
        .map_err(sql_err("reading a log"))?;
    let mut rows = st
        .query(params![run.as_str(), stream, start as i64, end as i64])
        .map_err(sql_err("reading a log"))?;
    while let Some(row) = rows.next().map_err(sql_err("reading a log"))? {
        let at = row.get::<_, i64>(0).map_err(sql_err("reading a log"))? as u64;
        let data = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(sql_err("reading a log"))?;
        let from = start.saturating_sub(at).min(data.len() as u64) as usize;
        let to = (end.saturating_sub(at)).min(data.len() as u64) as usize;
        out.extend_from_slice(&data[from..to.max(from)]);
    }
    Ok(out)
}

pub fn list(conn: &Connection, run: &RunId) -> Result<Vec<LogStreamInfo>> {
    runs::exists(conn, run)?;
    let mut st = conn
        .prepare_cached(
            "SELECT name, length, last_time FROM log_streams WHERE run_id = ?1 ORDER BY name",
        )
        .map_err(sql_err("listing logs"))?;
    let rows = st
        .query_map([run.as_str()], |r| {
            Ok(LogStreamInfo {
                name: r.get(0)?,
                length: r.get::<_, i64>(1)? as u64,
                last_time: r.get::<_, Option<i64>>(2)?.map(WallTime),
            })
        })
        .map_err(sql_err("listing logs"))?;
    rows.map(|r| r.map_err(sql_err("listing logs"))).collect()
}

#[cfg(test)]
mod tests {
    use super::char_boundary;

    #[test]
    fn slices_end_on_char_boundaries() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(char_boundary(s, 1), 1);
        assert_eq!(char_boundary(s, 2), 1);
        assert_eq!(char_boundary(s, 3), 3);
        assert_eq!(char_boundary(s, 5), 3);
        assert_eq!(char_boundary(s, 6), 6);
        assert_eq!(char_boundary(s, 9), 6);
        assert_eq!(char_boundary(s, 10), 10);
        // A window smaller than one character still advances by the whole character.
        assert_eq!(char_boundary(&s[6..], 1), 4);
        // The stream itself ends in half a character: wait for the rest.
        assert_eq!(char_boundary(&s[..8], 8), 6);
    }
}
