//! Metric blocks: the columnar scalar encoding (varint deltas + raw f64 bits, lz4 when it pays), the JSON-lines
//! record encoding, the writer's cache of each series' open tail block, and appending across block boundaries.

use super::job_cache::JobCache;
use super::schema::{UNKNOWN_MAX_TIME, UNKNOWN_MIN_TIME};
use super::{sql_err, summaries};
use flightlog_model::{Error, Record, Result, ScalarSeries, WallTime, F64};
use rusqlite::{params, Connection};
use std::ops::RangeInclusive;

/// Points per block: big enough that per-block overhead vanishes, small enough that re-encoding the tail on
/// every append stays cheap.
pub const BLOCK_POINTS: usize = 4096;
/// A record block is also closed once its JSON passes this size, so big text points do not make huge blobs.
const RECORD_BLOCK_BYTES: usize = 1 << 20;
/// Tails kept in the writer's cache before it is emptied (a cheap bound on its memory).
const MAX_CACHED_TAILS: usize = 1024;
/// What the cached tails may weigh together. A record tail is up to a block (1 MiB) plus its last record, so
/// 1024 of them alone could pin gigabytes for as long as the server runs.
const MAX_CACHED_TAIL_BYTES: usize = 128 << 20;
/// Rows a scalar series' open region may span before it is merged: more rows cost readers a little; fewer make
/// small appends re-encode more.
const MAX_FRAGMENTS: usize = 16;

/// `blocks.encoding`: scalar columns, plain or lz4-compressed; JSON-lines records, plain or lz4-compressed;
/// scalar columns with the values stored byte-plane by byte-plane (what this build writes), plain or lz4.
const ENC_SCALAR: i64 = 1;
const ENC_SCALAR_LZ4: i64 = 2;
const ENC_RECORDS: i64 = 3;
const ENC_RECORDS_LZ4: i64 = 4;
const ENC_SCALAR_PLANES: i64 = 5;
const ENC_SCALAR_PLANES_LZ4: i64 = 6;

/// Scalar points as columns, decoded straight into the read API's type so reads copy nothing more. Values
/// are moved but never computed on, so NaN payloads keep their exact bits.
pub type Scalars = ScalarSeries;

/// Column operations on [`Scalars`] used by blocks and reads.
pub trait ScalarsExt {
    fn with_capacity(n: usize) -> Self;
    /// Appends points `range` of `other`.
    fn extend_from(&mut self, other: &Scalars, range: std::ops::Range<usize>);
    fn push(&mut self, step: i64, time: WallTime, value: F64);
    fn clear(&mut self);
}

impl ScalarsExt for Scalars {
    fn with_capacity(n: usize) -> Self {
        Scalars {
            steps: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }
    fn extend_from(&mut self, other: &Scalars, range: std::ops::Range<usize>) {
        self.steps.extend_from_slice(&other.steps[range.clone()]);
        self.times.extend_from_slice(&other.times[range.clone()]);
        self.values.extend_from_slice(&other.values[range]);
    }
    fn push(&mut self, step: i64, time: WallTime, value: F64) {
        self.steps.push(step);
        self.times.push(time);
        self.values.push(value);
    }
    fn clear(&mut self) {
        self.steps.clear();
        self.times.clear();
        self.values.clear();
    }
}

/// A record line with its step, kept so a block knows its step range without parsing JSON.
#[derive(Clone, Debug)]
struct RecordLine {
    step: i64,
    json: String,
}

/// The contents of a block being filled.
#[derive(Clone, Debug)]
enum TailData {
    Scalars(Scalars),
    Records {
        lines: Vec<RecordLine>,
        bytes: usize,
    },
}

/// The open end of a series, decoded, so appends need not read it back from SQLite: for records the newest
/// block; for scalars the points after the last full block, which may span several fragment rows.
#[derive(Clone, Debug)]
pub struct Tail {
    first_index: u64,
    data: TailData,
    /// How many stored rows hold these points.
    rows: usize,
}

impl Tail {
    fn len(&self) -> usize {
        match &self.data {
            TailData::Scalars(s) => s.len(),
            TailData::Records { lines, .. } => lines.len(),
        }
    }
    fn is_full(&self) -> bool {
        match &self.data {
            TailData::Scalars(s) => s.len() >= BLOCK_POINTS,
            TailData::Records { lines, bytes } => {
                lines.len() >= BLOCK_POINTS || *bytes >= RECORD_BLOCK_BYTES
            }
        }
    }
    /// An empty block of the same kind starting after this one.
    fn next_empty(&self) -> Tail {
        let data = match self.data {
            TailData::Scalars(_) => TailData::Scalars(Scalars::default()),
            TailData::Records { .. } => TailData::Records {
                lines: Vec::new(),
                bytes: 0,
            },
        };
        Tail {
            first_index: self.first_index + self.len() as u64,
            data,
            rows: 0,
        }
    }
}

/// The writer's cache of tails by series id.
pub type TailCache = JobCache<Tail>;

/// An empty tail cache, bounded by count and by bytes.
pub fn tail_cache() -> TailCache {
    JobCache::with_budget(MAX_CACHED_TAILS, MAX_CACHED_TAIL_BYTES, tail_bytes)
}

/// About what a tail holds in memory.
fn tail_bytes(tail: &Tail) -> usize {
    match &tail.data {
        TailData::Scalars(s) => s.len() * 24,
        TailData::Records { lines, bytes } => {
            bytes + lines.len() * std::mem::size_of::<RecordLine>()
        }
    }
}

/// Takes the cached tail of `series_id` if it still ends at `count` (another process may have appended).
fn take_tail(cache: &mut TailCache, series_id: i64, count: u64) -> Option<Tail> {
    cache
        .take(&series_id)
        .filter(|t| t.first_index + t.len() as u64 == count)
}

/// An encoded block ready for the `blocks` table.
struct Encoded {
    count: usize,
    min_step: i64,
    max_step: i64,
    min_time: i64,
    max_time: i64,
    min_value: Option<f64>,
    max_value: Option<f64>,
    encoding: i64,
    data: Vec<u8>,
}

/// Appends scalar points to series `series_id`, which holds `count` points. Small appends go into a fragment
/// row of their own, so an append costs what it adds rather than a rewrite of the whole open block; once the
/// open region holds [`MAX_FRAGMENTS`] rows or would pass [`BLOCK_POINTS`], it is merged into full blocks.
/// Each point is thus encoded about twice, however small the appends.
pub fn append_scalars(
    conn: &Connection,
    cache: &mut TailCache,
    series_id: i64,
    count: u64,
    pts: &Scalars,
) -> Result<()> {
    let mut tail = open_scalar_tail(conn, cache, series_id, count)?;
    let TailData::Scalars(region) = &mut tail.data else {
        return Err(Error::storage(format!(
            "series {series_id}: stored blocks are not scalar blocks"
        )));
    };
    let fits = region.len() + pts.len() <= BLOCK_POINTS;
    if fits && tail.rows < MAX_FRAGMENTS {
        save_scalars(conn, series_id, tail.first_index + region.len() as u64, pts)?;
        region.extend_from(pts, 0..pts.len());
        tail.rows += 1;
    } else {
        region.extend_from(pts, 0..pts.len());
        let region = std::mem::take(region);
        tail = merge_region(conn, series_id, tail.first_index, region)?;
    }
    cache.put(series_id, tail);
    Ok(())
}

/// Rewrites the open region (`region`, from index `first_index`; its rows deleted) as full blocks plus at most
/// one partial block, which is returned as the new open region.
fn merge_region(
    conn: &Connection,
    series_id: i64,
    first_index: u64,
    region: Scalars,
) -> Result<Tail> {
    conn.prepare_cached("DELETE FROM blocks WHERE series_id = ?1 AND first_index >= ?2")
        .and_then(|mut st| st.execute(params![series_id, first_index as i64]))
        .map_err(sql_err("merging metric blocks"))?;
    let mut start = 0;
    while region.len() - start >= BLOCK_POINTS {
        let mut block = Scalars::with_capacity(BLOCK_POINTS);
        block.extend_from(&region, start..start + BLOCK_POINTS);
        save_scalars(conn, series_id, first_index + start as u64, &block)?;
        start += BLOCK_POINTS;
    }
    let mut rest = Scalars::with_capacity(region.len() - start);
    rest.extend_from(&region, start..region.len());
    if !rest.is_empty() {
        save_scalars(conn, series_id, first_index + start as u64, &rest)?;
    }
    Ok(Tail {
        first_index: first_index + start as u64,
        rows: usize::from(!rest.is_empty()),
        data: TailData::Scalars(rest),
    })
}

/// Appends records (with their steps) to series `series_id`, which holds `count` records.
pub fn append_records(
    conn: &Connection,
    cache: &mut TailCache,
    series_id: i64,
    count: u64,
    records: &[Record],
) -> Result<()> {
    let mut tail = open_record_tail(conn, cache, series_id, count)?;
    let mut pending = false;
    for r in records {
        if tail.is_full() {
            if pending {
                save_block(conn, series_id, &tail)?;
            }
            tail = tail.next_empty();
        }
        let TailData::Records { lines, bytes } = &mut tail.data else {
            return Err(Error::storage(format!(
                "series {series_id}: stored blocks are not record blocks"
            )));
        };
        let json = serde_json::to_string(r).map_err(Error::storage)?;
        *bytes += json.len() + 1;
        lines.push(RecordLine { step: r.step, json });
        pending = true;
    }
    if pending {
        save_block(conn, series_id, &tail)?;
    }
    // A full block is stored whole and the next append starts a new one: keeping it would only hold memory.
    let tail = if tail.is_full() {
        tail.next_empty()
    } else {
        tail
    };
    cache.put(series_id, tail);
    Ok(())
}

/// The record tail to append to: the cached one, else the last stored block, else an empty first block.
fn open_record_tail(
    conn: &Connection,
    cache: &mut TailCache,
    series_id: i64,
    count: u64,
) -> Result<Tail> {
    if let Some(t) = take_tail(cache, series_id, count) {
        return Ok(t);
    }
    let mut stored = last_blocks(conn, series_id, 1)?;
    let tail = match stored.pop() {
        None => Tail {
            first_index: 0,
            data: TailData::Records {
                lines: Vec::new(),
                bytes: 0,
            },
            rows: 0,
        },
        Some(b) => {
            let lines = decode_record_lines(b.encoding, &b.data)?;
            let bytes = lines.iter().map(|l| l.json.len() + 1).sum();
            Tail {
                first_index: b.first_index,
                data: TailData::Records { lines, bytes },
                rows: 1,
            }
        }
    };
    check_tail(series_id, &tail, count)?;
    Ok(tail)
}

/// The scalar region to append to: the cached one, else the stored partial blocks after the last full one
/// (decoded into one column set), else an empty region at the end of the series.
fn open_scalar_tail(
    conn: &Connection,
    cache: &mut TailCache,
    series_id: i64,
    count: u64,
) -> Result<Tail> {
    if let Some(t) = take_tail(cache, series_id, count) {
        return Ok(t);
    }
    let stored = last_blocks(conn, series_id, MAX_FRAGMENTS)?;
    let partial: Vec<&StoredBlock> = stored
        .iter()
        .rev()
        .take_while(|b| b.count < BLOCK_POINTS as u64)
        .collect();
    let mut region = Scalars::default();
    for b in partial.iter().rev() {
        decode_scalars(b.encoding, &b.data, &mut region)?;
    }
    let tail = Tail {
        first_index: partial.last().map_or(count, |b| b.first_index),
        data: TailData::Scalars(region),
        rows: partial.len(),
    };
    check_tail(series_id, &tail, count)?;
    Ok(tail)
}

/// A stored block as the tail readers need it.
struct StoredBlock {
    first_index: u64,
    count: u64,
    encoding: i64,
    data: Vec<u8>,
}

/// The newest `n` blocks of a series, oldest first.
fn last_blocks(conn: &Connection, series_id: i64, n: usize) -> Result<Vec<StoredBlock>> {
    // `+ 0`: a bare `LIMIT ?` would make SQLite parse the statement again on every call (see events::since).
    let mut st = conn
        .prepare_cached(
            "SELECT first_index, count, encoding, data FROM blocks WHERE series_id = ?1 \
             ORDER BY first_index DESC LIMIT ?2 + 0",
        )
        .map_err(sql_err("reading a tail block"))?;
    let rows = st
        .query_map(params![series_id, n as i64], |r| {
            Ok(StoredBlock {
                first_index: r.get::<_, i64>(0)? as u64,
                count: r.get::<_, i64>(1)? as u64,
                encoding: r.get(2)?,
                data: r.get(3)?,
            })
        })
        .map_err(sql_err("reading a tail block"))?;
    let mut blocks = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_err("reading a tail block"))?;
    blocks.reverse();
    Ok(blocks)
}

/// A tail whose end is not the series' count means the blocks and the series row disagree.
fn check_tail(series_id: i64, tail: &Tail, count: u64) -> Result<()> {
    if tail.first_index + tail.len() as u64 != count {
        return Err(Error::storage(format!(
            "series {series_id}: blocks hold a different number of points than its count"
        )));
    }
    Ok(())
}

/// Inserts or rewrites the block `tail`.
fn save_block(conn: &Connection, series_id: i64, tail: &Tail) -> Result<()> {
    match &tail.data {
        TailData::Scalars(s) => save_scalars(conn, series_id, tail.first_index, s),
        TailData::Records { lines, .. } => insert_block(
            conn,
            series_id,
            tail.first_index,
            encode_records(lines),
            None,
        ),
    }
}

/// Inserts or rewrites a scalar block starting at `first_index`, with its segment summaries.
fn save_scalars(conn: &Connection, series_id: i64, first_index: u64, s: &Scalars) -> Result<()> {
    let summary = summaries::of_block(first_index, s);
    insert_block(
        conn,
        series_id,
        first_index,
        encode_scalars(s),
        Some(summary),
    )
}

fn insert_block(
    conn: &Connection,
    series_id: i64,
    first_index: u64,
    e: Encoded,
    summary: Option<Vec<u8>>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO blocks (series_id, first_index, count, min_step, max_step, min_time, max_time, \
         min_value, max_value, encoding, data, summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut st| {
        st.execute(params![
            series_id,
            first_index as i64,
            e.count as i64,
            e.min_step,
            e.max_step,
            e.min_time,
            e.max_time,
            e.min_value,
            e.max_value,
            e.encoding,
            e.data,
            summary
        ])
    })
    .map_err(sql_err("writing a metric block"))?;
    Ok(())
}

/// Compresses `raw` with lz4 when that saves at least 10%.
fn maybe_compress(raw: Vec<u8>, plain: i64, compressed: i64) -> (i64, Vec<u8>) {
    let c = lz4_flex::compress_prepend_size(&raw);
    if c.len() * 10 <= raw.len() * 9 {
        (compressed, c)
    } else {
        (plain, raw)
    }
}

fn decompress(data: &[u8]) -> Result<Vec<u8>> {
    lz4_flex::decompress_size_prepended(data).map_err(corrupt_lz4)
}

fn corrupt_lz4(e: impl std::fmt::Display) -> Error {
    Error::storage(format!("corrupt metric block: {e}"))
}

/// Largest decompressed scalar block accepted: the biggest point count [`decode_scalars_with`] allows, at the
/// widest varints (two of 10 bytes) plus 8 value bytes a point. A bigger size prefix is corruption, and is not
/// allowed to allocate.
const MAX_SCALAR_BLOCK_BYTES: usize = BLOCK_POINTS * 16 * 28 + 16;

/// Decompresses a size-prepended lz4 block into `buf` (reused from block to block, so a whole-series scan does
/// not allocate a fresh buffer per block).
fn decompress_into(data: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    let (size, body) = lz4_flex::block::uncompressed_size(data).map_err(corrupt_lz4)?;
    if size > MAX_SCALAR_BLOCK_BYTES {
        return Err(corrupt());
    }
    buf.resize(size, 0);
    let written = lz4_flex::block::decompress_into(body, buf).map_err(corrupt_lz4)?;
    buf.truncate(written);
    Ok(())
}

/// Scalar block layout: varint n, n zigzag-varint step deltas, n zigzag-varint time deltas, then the n f64
/// values as 8 byte planes (every value's least significant byte, then every second byte, ...). Neighbouring
/// values of a series share sign, exponent and leading mantissa bits, so the high planes are long repeats
/// that lz4 folds away even when the low bits are noise (older blocks: `ENC_SCALAR*`, values as 8-byte LE).
fn encode_scalars(s: &Scalars) -> Encoded {
    let n = s.len();
    let mut buf = Vec::with_capacity(n * 12 + 8);
    put_varint(&mut buf, n as u64);
    put_deltas(&mut buf, s.steps.iter().copied());
    put_deltas(&mut buf, s.times.iter().map(|t| t.0));
    let start = buf.len();
    buf.resize(start + n * 8, 0);
    for (i, v) in s.values.iter().enumerate() {
        for (plane, byte) in v.0.to_bits().to_le_bytes().into_iter().enumerate() {
            buf[start + plane * n + i] = byte;
        }
    }
    let finite = s.values.iter().map(|v| v.0).filter(|v| !v.is_nan());
    let min_value = finite.clone().reduce(f64::min);
    let max_value = finite.reduce(f64::max);
    let (encoding, data) = maybe_compress(buf, ENC_SCALAR_PLANES, ENC_SCALAR_PLANES_LZ4);
    let steps = span(s.steps.iter().copied()).unwrap_or(0..=0);
    let times = span(s.times.iter().map(|t| t.0)).unwrap_or(UNKNOWN_MIN_TIME..=UNKNOWN_MAX_TIME);
    Encoded {
        count: n,
        min_step: *steps.start(),
        max_step: *steps.end(),
        min_time: *times.start(),
        max_time: *times.end(),
        min_value,
        max_value,
        encoding,
        data,
    }
}

/// The smallest and largest of `values`, in one pass; `None` for none.
pub fn span(values: impl IntoIterator<Item = i64>) -> Option<RangeInclusive<i64>> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some(v..=v),
        Some(r) => Some(v.min(*r.start())..=v.max(*r.end())),
    })
}

/// Appends to `out` the points of the scalar blocks of series `series_id` whose spans cut both `steps` and
/// `times`, found through the `blocks_by_time` index, which holds every block's spans, so that only those blocks
/// are read. Their points outside the ranges come too: the caller filters.
pub fn scalars_cut_by(
    conn: &Connection,
    series_id: i64,
    steps: &RangeInclusive<i64>,
    times: &RangeInclusive<i64>,
    out: &mut Scalars,
) -> Result<()> {
    let err = sql_err("reading the metric blocks a span cuts");
    let mut st = conn
        .prepare_cached(
            "SELECT encoding, data FROM blocks INDEXED BY blocks_by_time WHERE series_id = ?1 \
             AND max_time >= ?2 AND min_time <= ?3 AND max_step >= ?4 AND min_step <= ?5",
        )
        .map_err(&err)?;
    let mut rows = st
        .query(params![
            series_id,
            times.start(),
            times.end(),
            steps.start(),
            steps.end()
        ])
        .map_err(&err)?;
    let mut scratch = Vec::new();
    while let Some(row) = rows.next().map_err(&err)? {
        let encoding: i64 = row.get(0).map_err(&err)?;
        let data = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(&err)?;
        decode_scalars_with(&mut scratch, encoding, data, out)?;
    }
    Ok(())
}

/// Decodes a scalar block, appending its points to `out`.
pub fn decode_scalars(encoding: i64, data: &[u8], out: &mut Scalars) -> Result<()> {
    decode_scalars_with(&mut Vec::new(), encoding, data, out)
}

/// [`decode_scalars`] with a caller's buffer for the decompressed bytes, for scans over many blocks.
pub fn decode_scalars_with(
    scratch: &mut Vec<u8>,
    encoding: i64,
    data: &[u8],
    out: &mut Scalars,
) -> Result<()> {
    let raw = match encoding {
        ENC_SCALAR | ENC_SCALAR_PLANES => data,
        ENC_SCALAR_LZ4 | ENC_SCALAR_PLANES_LZ4 => {
            decompress_into(data, scratch)?;
            &scratch[..]
        }
        _ => {
            return Err(Error::storage(format!(
                "a scalar series holds a block of encoding {encoding}"
            )))
        }
    };
    let mut r = Reader { buf: raw, pos: 0 };
    let n = r.varint()? as usize;
    if n > BLOCK_POINTS * 16 {
        return Err(corrupt());
    }
    r.deltas(n, &mut out.steps, |v| v)?;
    r.deltas(n, &mut out.times, WallTime)?;
    let bytes = r.buf.get(r.pos..r.pos + n * 8).ok_or_else(corrupt)?;
    if matches!(encoding, ENC_SCALAR_PLANES | ENC_SCALAR_PLANES_LZ4) {
        join_planes(bytes, n, &mut out.values);
    } else {
        let bits = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        out.values
            .extend(bytes.chunks_exact(8).map(|c| F64(f64::from_bits(bits(c)))));
    }
    Ok(())
}

/// Values a plane join assembles at once: small enough to stay in registers and L1, long enough that each plane
/// is read as a contiguous run (the compiler vectorizes the inner loop).
const JOIN_CHUNK: usize = 64;

/// Reassembles `n` f64 values from their 8 byte planes (`bytes` holds exactly `8 * n` bytes), a chunk of
/// values at a time: each plane's bytes are OR-ed into place in one pass, instead of gathering 8 bytes that
/// lie `n` apart for every value.
fn join_planes(bytes: &[u8], n: usize, out: &mut Vec<F64>) {
    out.reserve(n);
    let mut base = 0;
    while base < n {
        let len = JOIN_CHUNK.min(n - base);
        let mut acc = [0u64; JOIN_CHUNK];
        for plane in 0..8 {
            let src = &bytes[plane * n + base..plane * n + base + len];
            for (a, &b) in acc.iter_mut().zip(src) {
                *a |= u64::from(b) << (8 * plane);
            }
        }
        out.extend(acc[..len].iter().map(|&b| F64(f64::from_bits(b))));
        base += len;
    }
}

/// The layout written before byte planes (encoding 1: values as 8-byte LE), for tests that old data
/// directories still read.
#[cfg(test)]
pub fn encode_pre_plane_layout(s: &Scalars) -> (i64, Vec<u8>) {
    let mut buf = Vec::new();
    put_varint(&mut buf, s.len() as u64);
    put_deltas(&mut buf, s.steps.iter().copied());
    put_deltas(&mut buf, s.times.iter().map(|t| t.0));
    for v in &s.values {
        buf.extend_from_slice(&v.0.to_bits().to_le_bytes());
    }
    (ENC_SCALAR, buf)
}

/// Record block layout: one JSON [`Record`] per line.
fn encode_records(lines: &[RecordLine]) -> Encoded {
    let mut buf = Vec::with_capacity(lines.iter().map(|l| l.json.len() + 1).sum());
    for l in lines {
        buf.extend_from_slice(l.json.as_bytes());
        buf.push(b'\n');
    }
    let (encoding, data) = maybe_compress(buf, ENC_RECORDS, ENC_RECORDS_LZ4);
    let steps = span(lines.iter().map(|l| l.step)).unwrap_or(0..=0);
    Encoded {
        count: lines.len(),
        min_step: *steps.start(),
        max_step: *steps.end(),
        min_time: UNKNOWN_MIN_TIME,
        max_time: UNKNOWN_MAX_TIME,
        min_value: None,
        max_value: None,
        encoding,
        data,
    }
}

/// Decodes a record block into records.
pub fn decode_records(encoding: i64, data: &[u8]) -> Result<Vec<Record>> {
    decode_record_lines(encoding, data)?
        .into_iter()
        .map(|l| {
            serde_json::from_str(&l.json)
                .map_err(|e| Error::storage(format!("corrupt record: {e}")))
        })
        .collect()
}

fn decode_record_lines(encoding: i64, data: &[u8]) -> Result<Vec<RecordLine>> {
    let raw = match encoding {
        ENC_RECORDS => data.to_vec(),
        ENC_RECORDS_LZ4 => decompress(data)?,
        _ => {
            return Err(Error::storage(format!(
                "a record series holds a block of encoding {encoding}"
            )))
        }
    };
    let text = String::from_utf8(raw).map_err(|_| corrupt())?;
    text.lines()
        .map(|line| {
            #[derive(serde::Deserialize)]
            struct StepOnly {
                step: i64,
            }
            let s: StepOnly = serde_json::from_str(line)
                .map_err(|e| Error::storage(format!("corrupt record: {e}")))?;
            Ok(RecordLine {
                step: s.step,
                json: line.to_string(),
            })
        })
        .collect()
}

fn corrupt() -> Error {
    Error::storage("corrupt metric block")
}

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes each value's difference from the previous one (the first from 0), zigzag-varint encoded.
fn put_deltas(buf: &mut Vec<u8>, vals: impl Iterator<Item = i64>) {
    let mut prev = 0i64;
    for v in vals {
        let d = v.wrapping_sub(prev);
        put_varint(buf, ((d << 1) ^ (d >> 63)) as u64);
        prev = v;
    }
}

/// A bounds-checked cursor over a decoded block.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64> {
        varint_at(self.buf, &mut self.pos).ok_or_else(corrupt)
    }
    /// Decodes `n` zigzag-varint deltas, pushing each running sum through `wrap`. The loop is an exact-length
    /// `extend` (no capacity check per point), and one-byte varints (small deltas: the common case for steps
    /// and times) take a fast path; a bad varint is remembered and reported once the loop ends.
    fn deltas<T>(&mut self, n: usize, out: &mut Vec<T>, wrap: impl Fn(i64) -> T) -> Result<()> {
        let (buf, mut pos, mut prev, mut bad) = (self.buf, self.pos, 0i64, false);
        out.extend((0..n).map(|_| {
            let z = match buf.get(pos) {
                Some(&b) if b < 0x80 => {
                    pos += 1;
                    u64::from(b)
                }
                _ => varint_at(buf, &mut pos).unwrap_or_else(|| {
                    bad = true;
                    0
                }),
            };
            prev = prev.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
            wrap(prev)
        }));
        self.pos = pos;
        if bad {
            return Err(corrupt());
        }
        Ok(())
    }
}

/// The varint at `*pos`, moving `pos` past it; `None` past the end or for more than 64 bits.
pub(super) fn varint_at(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_hold_the_extremes() {
        assert_eq!(span([3, -1, 7, 2]), Some(-1..=7));
        assert_eq!(span([]), None);
    }

    #[test]
    fn scalar_blocks_round_trip_exact_bits() {
        let mut s = Scalars::default();
        let weird = f64::from_bits(0x7ff8_0000_dead_beef);
        for (i, v) in [0.5, weird, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e308]
            .into_iter()
            .enumerate()
        {
            s.push(
                i as i64 * 3 - 5,
                WallTime(1_700_000_000_000_000 + i as i64 * 1000),
                F64(v),
            );
        }
        s.push(i64::MIN, WallTime(i64::MAX), F64(2.0));
        s.push(i64::MAX, WallTime(i64::MIN), F64(3.0));
        let e = encode_scalars(&s);
        let mut back = Scalars::default();
        decode_scalars(e.encoding, &e.data, &mut back).unwrap();
        assert_eq!(back.steps, s.steps);
        assert_eq!(back.times, s.times);
        let bits = |v: &[F64]| v.iter().map(|x| x.0.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&s.values));
        assert_eq!(e.min_value, Some(f64::NEG_INFINITY));
        assert_eq!(e.max_value, Some(f64::INFINITY));
    }

    #[test]
    fn blocks_written_before_byte_planes_still_decode() {
        // The pre-plane layout: n, step deltas, time deltas, values as 8-byte LE (encoding 1).
        let mut old = Vec::new();
        put_varint(&mut old, 2);
        put_deltas(&mut old, [3i64, 4].into_iter());
        put_deltas(&mut old, [1000i64, 2000].into_iter());
        for v in [0.25f64, -1.5] {
            old.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let mut back = Scalars::default();
        decode_scalars(ENC_SCALAR, &old, &mut back).unwrap();
        decode_scalars(
            ENC_SCALAR_LZ4,
            &lz4_flex::compress_prepend_size(&old),
            &mut back,
        )
        .unwrap();
        assert_eq!(back.steps, vec![3, 4, 3, 4]);
        assert_eq!(
            back.values,
            vec![F64(0.25), F64(-1.5), F64(0.25), F64(-1.5)]
        );
    }

    #[test]
    fn byte_planes_compress_a_smooth_series() {
        let mut s = Scalars::default();
        for i in 0..BLOCK_POINTS as i64 {
            s.push(i, WallTime(i * 1000), F64(1.0 / (i as f64 + 1.0)));
        }
        let e = encode_scalars(&s);
        assert_eq!(e.encoding, ENC_SCALAR_PLANES_LZ4);
        assert!(e.data.len() < BLOCK_POINTS * 7, "{} bytes", e.data.len());
        let mut back = Scalars::default();
        decode_scalars(e.encoding, &e.data, &mut back).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        let mut out = Scalars::default();
        assert!(decode_scalars(ENC_SCALAR, &[0xff; 3], &mut out).is_err());
        assert!(decode_scalars(ENC_SCALAR, &[5, 0, 0], &mut out).is_err());
        assert!(decode_scalars(ENC_SCALAR_LZ4, &[1, 2, 3], &mut out).is_err());
        assert!(decode_records(ENC_RECORDS, b"not json").is_err());
    }
}
