//! Log streams: `log_streams` holds each stream's committed length and where its bytes are, so a reader resumes
//! at any byte offset reading only what overlaps it:
//! - `[0, file_start)`: chunks in `log_chunks` keyed by start offset (streams written by schema version 2 or
//!   earlier; `file_start` is 0 for newer ones);
//! - `[file_start, file_end)`: the stream's file (see [`super::log_files`]), from file offset 0;
//! - `[file_end, length)`: recent small appends, again as `log_chunks` rows, until they move to the file.
//!
//! Large appends (heavy output) go to the file: each byte written once, no database page or write-ahead log
//! frame. Small ones (a line now and then) stay rows: a file needs a sync of its own before the commit, and
//! for a few bytes that second sync would double the append's latency.

use super::events::emit_log_append;
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

/// An append smaller than this is kept as a row (one durable commit, no file sync)...
const INLINE_BELOW: usize = 16 * 1024;
/// ...unless the stream's rows would then hold this much: they move to the file with this append.
const MOVE_TO_FILE_AT: u64 = 256 * 1024;

/// Appends inside the current transaction (the run is already checked) and returns the new length. A small
/// append becomes a row; otherwise the stream's rows past `file_end` and the append go to its file at their
/// offsets (overwriting whatever an uncommitted write left there), and the writer syncs the file before it
/// commits the new length.
pub fn append_in(
    ctx: &mut WriteCtx,
    exp: ExperimentId,
    run: &RunId,
    stream: &str,
    data: &[u8],
) -> Result<u64> {
    let at = ends(&ctx.conn, run, stream)?.unwrap_or_default();
    let offset = at.length;
    if data.is_empty() {
        return Ok(offset);
    }
    let new_len = offset + data.len() as u64;
    let in_rows = offset - at.file_end + data.len() as u64;
    let file_end = if data.len() < INLINE_BELOW && in_rows < MOVE_TO_FILE_AT {
        insert_chunk(&ctx.conn, run, stream, offset, data)?;
        at.file_end
    } else {
        move_rows_to_file(ctx, run, stream, &at)?;
        ctx.logs
            .write_at(run, stream, offset - at.file_start, data)?;
        new_len
    };
    let now = WallTime::now().0;
    ctx.conn
        .prepare_cached(
            "INSERT INTO log_streams (run_id, name, length, last_time, file_start, file_end) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT(run_id, name) DO UPDATE SET \
             length = excluded.length, last_time = excluded.last_time, file_end = excluded.file_end",
        )
        .and_then(|mut st| {
            st.execute(params![
                run.as_str(),
                stream,
                new_len as i64,
                now,
                file_end as i64
            ])
        })
        .map_err(sql_err("appending to a log"))?;
    emit_log_append(ctx, exp, run, stream, offset..new_len)?;
    Ok(new_len)
}

/// Stores `data` as the row of the stream's bytes from offset `at`.
fn insert_chunk(conn: &Connection, run: &RunId, stream: &str, at: u64, data: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO log_chunks (run_id, stream, start_offset, data) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![run.as_str(), stream, at as i64, data]))
    .map(|_| ())
    .map_err(sql_err("appending to a log"))
}

/// Writes the stream's rows past `file_end` into its file and deletes them (in the current transaction, so
/// until it commits they stay the truth).
fn move_rows_to_file(ctx: &mut WriteCtx, run: &RunId, stream: &str, at: &StreamEnds) -> Result<()> {
    if at.length == at.file_end {
        return Ok(());
    }
    let bytes = read_chunks(&ctx.conn, run, stream, at.file_end, at.length)?;
    ctx.logs
        .write_at(run, stream, at.file_end - at.file_start, &bytes)?;
    ctx.conn
        .prepare_cached(
            "DELETE FROM log_chunks WHERE run_id = ?1 AND stream = ?2 AND start_offset >= ?3",
        )
        .and_then(|mut st| st.execute(params![run.as_str(), stream, at.file_end as i64]))
        .map(|_| ())
        .map_err(sql_err("moving log text to its file"))
}

/// Where a stream's bytes are (see the module's documentation).
#[derive(Clone, Copy, Default)]
struct StreamEnds {
    length: u64,
    file_start: u64,
    file_end: u64,
}

/// The stream's length and parts; `None` if it has never been appended to.
fn ends(conn: &Connection, run: &RunId, stream: &str) -> Result<Option<StreamEnds>> {
    conn.prepare_cached(
        "SELECT length, file_start, file_end FROM log_streams WHERE run_id = ?1 AND name = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![run.as_str(), stream], |r| {
            Ok(StreamEnds {
                length: r.get::<_, i64>(0)? as u64,
                file_start: r.get::<_, i64>(1)? as u64,
                file_end: r.get::<_, i64>(2)? as u64,
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
    let bytes = read_bytes(conn, files, run, stream, &at, start, read_end)?;
    let want = (end - start) as usize;
    let mut take = char_boundary(&bytes, want);
    if take < want && end == length && writer_is_done(conn, run)? {
        // The stream ends inside a character that its ended run will never complete: hand over the bytes
        // (as U+FFFD) so a reader reaches the end instead of waiting at them for ever.
        take = want;
    }
    Ok(LogSlice {
        stream: stream.to_string(),
        offset: start,
        next_offset: start + take as u64,
        length,
        data: String::from_utf8_lossy(&bytes[..take]).into_owned(),
    })
}

/// Whether the run's output is over (the run has a terminal status), so nothing will finish a partial character.
fn writer_is_done(conn: &Connection, run: &RunId) -> Result<bool> {
    Ok(runs::find(conn, run)?.is_some_and(|r| r.status.is_terminal()))
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

/// Bytes `[start, end)` of a stream, from each of its parts that overlaps them.
fn read_bytes(
    conn: &Connection,
    files: &Path,
    run: &RunId,
    stream: &str,
    at: &StreamEnds,
    start: u64,
    end: u64,
) -> Result<Vec<u8>> {
    let mut bytes = read_chunks(conn, run, stream, start, end.min(at.file_start))?;
    let (from, to) = (start.max(at.file_start), end.min(at.file_end));
    if to > from {
        let (from, to) = (from - at.file_start, to - at.file_start);
        let text = log_files::read_range(files, run, stream, from, to)?;
        if bytes.is_empty() {
            bytes = text;
        } else {
            bytes.extend_from_slice(&text);
        }
    }
    let from = start.max(at.file_end);
    bytes.extend(read_chunks(conn, run, stream, from, end)?);
    Ok(bytes)
}

/// Bytes `[start, end)` of a stream, from the `log_chunks` rows that overlap them (all of them must be rows).
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
    use super::{char_boundary, INLINE_BELOW, MOVE_TO_FILE_AT};
    use crate::embedded::EmbeddedStore;
    use crate::Store;
    use flightlog_model::{NewRun, RunId};
    use std::path::Path;

    /// Turns a data directory back into schema version 2 and gives `run` a stream `stdout` holding `chunks`
    /// in `log_chunks`, as a version 2 build stored it.
    fn make_legacy_stream(dir: &Path, run: &RunId, chunks: &[&[u8]]) {
        let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
        c.execute_batch(
            "ALTER TABLE log_streams DROP COLUMN file_start; ALTER TABLE log_streams DROP COLUMN file_end; \
             PRAGMA user_version = 2",
        )
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

    /// `[from, to)` of `stdout` read in windows of `window` bytes, each read advancing.
    fn read_in_windows(s: &EmbeddedStore, run: &RunId, from: u64, to: u64, window: u64) -> String {
        let (mut off, mut text) = (from, String::new());
        while off < to {
            let slice = s
                .read_log(run, "stdout", off, window.min(to - off))
                .unwrap();
            assert!(slice.next_offset > off, "stuck at {off}");
            text.push_str(&slice.data);
            off = slice.next_offset;
        }
        text
    }

    /// The rows `stdout` of `run` has in `log_chunks`, and the length of its file.
    fn where_stored(dir: &Path, run: &RunId) -> (i64, u64) {
        let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
        let rows = c
            .query_row(
                "SELECT count(*) FROM log_chunks WHERE run_id = ?1",
                [run.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        let file = dir.join("logs").join(run.as_str()).join("stdout");
        (rows, std::fs::metadata(file).map_or(0, |m| m.len()))
    }

    #[test]
    fn a_stream_stored_as_chunks_by_version_2_reads_on_and_continues() {
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
        let big = format!("{}\n", "z".repeat(INLINE_BELOW));
        s.append_log(&run, "stdout", big.as_bytes()).unwrap();
        let all = s.read_log(&run, "stdout", 0, 1 << 20).unwrap();
        let expected = format!("old one\nold two é new\n{big}");
        assert_eq!(all.data, expected);
        // Windows that start in the old chunks and end in the file, or start in the file, read the same text.
        assert_eq!(read_in_windows(&s, &run, 0, 40, 3), expected[..40]);
        assert_eq!(s.read_log(&run, "stdout", 18, 7).unwrap().data, " new\nzz");
        // The new bytes are in the stream's file, from its offset 0; the old chunks stay.
        assert_eq!(where_stored(dir.path(), &run), (2, 6 + big.len() as u64));
    }

    #[test]
    fn small_appends_stay_rows_until_they_move_to_the_file_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let run = s.create_run(NewRun::default()).unwrap().id;
        s.append_log(&run, "stdout", b"a\n").unwrap();
        s.append_log(&run, "stdout", b"b\n").unwrap();
        assert_eq!(where_stored(dir.path(), &run), (2, 0));
        // A large append takes the rows with it into the file.
        let big = format!("{}\n", "x".repeat(INLINE_BELOW));
        s.append_log(&run, "stdout", big.as_bytes()).unwrap();
        let in_file = 4 + big.len() as u64;
        assert_eq!(where_stored(dir.path(), &run), (0, in_file));
        s.append_log(&run, "stdout", b"c\n").unwrap();
        assert_eq!(where_stored(dir.path(), &run), (1, in_file));
        let mut expected = format!("a\nb\n{big}c\n");
        let tail = read_in_windows(&s, &run, in_file - 5, in_file + 2, 2);
        assert_eq!(tail, expected[in_file as usize - 5..]);
        // Small appends alone move once their rows would hold MOVE_TO_FILE_AT bytes.
        let line = format!("{}\n", "y".repeat(999));
        for _ in 0..(MOVE_TO_FILE_AT / 1000 + 10) {
            s.append_log(&run, "stdout", line.as_bytes()).unwrap();
            expected.push_str(&line);
        }
        let (rows, file) = where_stored(dir.path(), &run);
        assert!(
            file > in_file && (rows as u64) < MOVE_TO_FILE_AT / 1000,
            "{rows} rows, {file} in the file"
        );
        assert_eq!(file + rows as u64 * 1000, expected.len() as u64);
        drop(s);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            s.read_log(&run, "stdout", 0, 1 << 20).unwrap().data,
            expected
        );
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
