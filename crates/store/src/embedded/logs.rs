//! Log streams: the bytes of each stream are appended to its file (see [`super::log_files`]); `log_streams`
//! holds its committed length, so a reader resumes at any byte offset with one positioned read. Streams written
//! by schema version 2 or earlier keep their first `file_start` bytes as chunks in `log_chunks` (keyed by start
//! offset) and continue in a file.

use super::events::emit;
use super::log_files;
use super::writer::WriteCtx;
use super::{runs, sql_err, Inner};
use flightlog_model::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

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

/// Appends inside the current transaction (the run is already checked) and returns the new length. The bytes
/// go to the stream's file at the committed length (overwriting whatever an uncommitted write left there);
/// the writer syncs the file before it commits the new length.
pub fn append_in(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    stream: &str,
    data: &[u8],
) -> Result<u64> {
    let StreamEnds {
        length: offset,
        file_start,
    } = ends(&ctx.conn, run, stream)?.unwrap_or_default();
    if data.is_empty() {
        return Ok(offset);
    }
    ctx.logs.write_at(run, stream, offset - file_start, data)?;
    let new_len = offset + data.len() as u64;
    let now = WallTime::now().0;
    ctx.conn
        .prepare_cached(
            "INSERT INTO log_streams (run_id, name, length, last_time, file_start) VALUES (?1, ?2, ?3, ?4, 0) \
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

/// Where a stream's bytes are: `[0, file_start)` in `log_chunks`, `[file_start, length)` in its file.
#[derive(Clone, Copy, Default)]
struct StreamEnds {
    length: u64,
    file_start: u64,
}

fn ends(conn: &Connection, run: &RunId, stream: &str) -> Result<Option<StreamEnds>> {
    conn.prepare_cached(
        "SELECT length, file_start FROM log_streams WHERE run_id = ?1 AND name = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![run.as_str(), stream], |r| {
            Ok(StreamEnds {
                length: r.get::<_, i64>(0)? as u64,
                file_start: r.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
    })
    .map_err(sql_err("reading a log"))
}

/// Up to `max_bytes` from `offset`, never ending inside a UTF-8 character (unless one character is larger than
/// `max_bytes`, which is then returned whole so a reader always advances).
pub fn read(
    conn: &Connection,
    files: &Path,
    run: &RunId,
    stream: &str,
    offset: u64,
    max_bytes: u64,
) -> Result<LogSlice> {
    validate::stream_name(stream)?;
    let Some(at) = ends(conn, run, stream)? else {
        runs::exists(conn, run)?;
        return Err(Error::not_found(Entity::LogStream, stream));
    };
    let length = at.length;
    let start = offset.min(length);
    // Read 3 bytes past the window so a character cut by it can be completed if it must.
    let end = start.saturating_add(max_bytes).min(length);
    let read_end = end.saturating_add(3).min(length);
    let mut bytes = read_chunks(conn, run, stream, start, read_end.min(at.file_start))?;
    if read_end > at.file_start {
        let from = start.max(at.file_start) - at.file_start;
        let to = read_end - at.file_start;
        let tail = log_files::read_range(files, run, stream, from, to)?;
        if bytes.is_empty() {
            bytes = tail;
        } else {
            bytes.extend_from_slice(&tail);
        }
    }
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

/// Bytes `[start, end)` of a stream written before schema version 3, from the chunks that overlap them.
fn read_chunks(
    conn: &Connection,
    run: &RunId,
    stream: &str,
    start: u64,
    end: u64,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
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
    use crate::embedded::EmbeddedStore;
    use crate::Store;
    use flightlog_model::{NewRun, RunId};
    use std::path::Path;

    /// Turns a data directory back into schema version 2 and gives `run` a stream `stdout` holding `chunks`
    /// in `log_chunks`, as a version 2 build stored it.
    fn make_legacy_stream(dir: &Path, run: &RunId, chunks: &[&[u8]]) {
        let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
        c.execute_batch("ALTER TABLE log_streams DROP COLUMN file_start; PRAGMA user_version = 2")
            .unwrap();
        let mut at = 0;
        for chunk in chunks {
            c.execute(
                "INSERT INTO log_chunks (run_id, stream, start_offset, data) VALUES (?1, 'stdout', ?2, ?3)",
                rusqlite::params![run.as_str(), at, chunk],
            )
            .unwrap();
            at += chunk.len() as i64;
        }
        c.execute(
            "INSERT INTO log_streams (run_id, name, length, last_time) VALUES (?1, 'stdout', ?2, 0)",
            rusqlite::params![run.as_str(), at],
        )
        .unwrap();
    }

    #[test]
    fn a_stream_stored_as_chunks_by_version_2_reads_on_and_continues_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.create_run(NewRun::default()).unwrap().id
        };
        // The old stream ends inside 'é' (0xC3 0xA9); its second byte comes with the first new append.
        make_legacy_stream(dir.path(), &run, &[b"old one\n", b"old two \xc3"]);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let old = s.read_log(&run, "stdout", 0, 1 << 20).unwrap();
        assert_eq!((old.data.as_str(), old.length), ("old one\nold two ", 17));
        assert_eq!(s.append_log(&run, "stdout", b"\xa9 new\n").unwrap(), 23);
        let all = s.read_log(&run, "stdout", 0, 1 << 20).unwrap();
        assert_eq!(all.data, "old one\nold two é new\n");
        // Windows that start in the chunks and end in the file, or start in the file, read the same text.
        let (mut off, mut text) = (0, String::new());
        while off < 23 {
            let sl = s.read_log(&run, "stdout", off, 3).unwrap();
            assert!(sl.next_offset > off);
            text.push_str(&sl.data);
            off = sl.next_offset;
        }
        assert_eq!(text, all.data);
        assert_eq!(s.read_log(&run, "stdout", 18, 100).unwrap().data, " new\n");
        // The new bytes are in the stream's file, from its offset 0.
        let file = dir.path().join("logs").join(run.as_str()).join("stdout");
        assert_eq!(std::fs::read(file).unwrap(), b"\xa9 new\n");
    }

    #[test]
    fn a_new_stream_lives_in_its_file_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let run = {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            let run = s.create_run(NewRun::default()).unwrap().id;
            s.append_log(&run, "stdout", b"a\n").unwrap();
            s.append_log(&run, "stdout", b"b\n").unwrap();
            run
        };
        let c = rusqlite::Connection::open(dir.path().join("flightlog.db")).unwrap();
        let chunks: i64 = c
            .query_row("SELECT count(*) FROM log_chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(chunks, 0);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.read_log(&run, "stdout", 0, 100).unwrap().data, "a\nb\n");
        assert_eq!(s.append_log(&run, "stdout", b"c\n").unwrap(), 6);
        assert_eq!(s.read_log(&run, "stdout", 2, 100).unwrap().data, "b\nc\n");
    }

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
