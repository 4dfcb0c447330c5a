//! Min/max downsampling that never hides a spike: [`downsample`] over points in memory (the reference), and
//! [`scan`], which gives the same answer straight from a series' stored blocks in one pass through a reused
//! block buffer, so an overview of a million points neither builds nor caches the whole decoded series.

use super::{load_scalars, range_blocks, sql_err};
use crate::embedded::blocks::{self, Scalars, ScalarsExt};
use crate::embedded::summaries::{
    self, extremes, point, Keep, Kept, Part, Point, KEEP_NONE, NONE, SEGMENT_POINTS,
};
use flightlog_model::{ReadRange, Result};
use rusqlite::{params, Connection};

/// `n` equal step intervals over the steps `lo..=hi`. One mapping for both forms, so they agree on every
/// boundary to the last bit of float rounding.
#[derive(Clone, Copy)]
struct Buckets {
    lo: i64,
    scale: f64,
    n: usize,
}

impl Buckets {
    fn new(lo: i64, hi: i64, n: usize) -> Self {
        Buckets {
            lo,
            scale: n as f64 / ((hi as f64 - lo as f64) + 1.0),
            n,
        }
    }

    fn of(&self, step: i64) -> usize {
        (((step as f64 - self.lo as f64) * self.scale) as usize).min(self.n - 1)
    }
}

/// Min/max downsampling: `buckets` equal step intervals over the points' step span, each keeping its min and
/// max point (the earliest of equal ones) and, if it has any, its first NaN point, emitted bucket by bucket in
/// step order. Series of at most `2 * buckets` points come back whole.
pub fn downsample(p: &Scalars, buckets: usize) -> Scalars {
    if p.len() <= 2 * buckets || p.len() >= NONE as usize {
        return p.clone();
    }
    let sorted = is_sorted(&p.steps);
    let (lo, hi) = match (sorted, p.steps.first(), p.steps.last()) {
        (true, Some(&first), Some(&last)) => (first, last),
        _ => p
            .steps
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s))),
    };
    let b = Buckets::new(lo, hi, buckets);
    let keep = if sorted {
        keep_sorted(p, b)
    } else {
        keep_any(p, b)
    };
    let mut out = Scalars::with_capacity(2 * buckets);
    for k in keep {
        let kept =
            [k.min, k.max, k.nan].map(|i| (i != NONE).then(|| point(p, i as usize, u64::from(i))));
        push_in_step_order(&mut out, kept);
    }
    out
}

fn is_sorted(steps: &[i64]) -> bool {
    steps.windows(2).all(|w| w[0] <= w[1])
}

/// Steps in order: each bucket is a contiguous run whose end is found by binary search, so the scan itself
/// touches only values, with the running extremes in registers.
fn keep_sorted(p: &Scalars, b: Buckets) -> Vec<Keep> {
    let mut keep = vec![KEEP_NONE; b.n];
    let mut i = 0;
    while i < p.len() {
        let k = b.of(p.steps[i]);
        let end = i + p.steps[i..].partition_point(|&s| b.of(s) <= k);
        keep[k] = extremes(&p.values[i..end], i);
        i = end;
    }
    keep
}

/// Steps in any order: every point updates its bucket's entry.
fn keep_any(p: &Scalars, b: Buckets) -> Vec<Keep> {
    let mut keep = vec![KEEP_NONE; b.n];
    for (i, (&s, v)) in p.steps.iter().zip(&p.values).enumerate() {
        let k = &mut keep[b.of(s)];
        let v = v.0;
        if v.is_nan() {
            if k.nan == NONE {
                k.nan = i as u32;
            }
            continue;
        }
        if k.min == NONE || v < p.values[k.min as usize].0 {
            k.min = i as u32;
        }
        if k.max == NONE || v > p.values[k.max as usize].0 {
            k.max = i as u32;
        }
    }
    keep
}

/// Appends a bucket's kept points ordered by (step, position), each point once.
fn push_in_step_order(out: &mut Scalars, mut kept: [Option<Point>; 3]) {
    kept.sort_by_key(|p| p.map_or((i64::MAX, u64::MAX), |p| (p.step, p.index)));
    let mut prev = None;
    for p in kept.into_iter().flatten() {
        if prev != Some(p.index) {
            out.push(p.step, p.time, p.value);
            prev = Some(p.index);
        }
    }
}

/// The points a step range holds and their step span, which fix the buckets before the scan.
struct Span {
    count: u64,
    lo: i64,
    hi: i64,
}

/// Downsamples the points of `series` whose steps lie in `range` (a step range or none: `start_index` and
/// `limit` are the caller's to handle). The blocks' stored step bounds give the point count and step span
/// (only blocks the range cuts are decoded for it). A range of at most `2 * buckets` points comes back whole;
/// one averaging [`SUMMARY_MODE_POINTS`] a bucket or more is read from segment summaries
/// ([`scan_summaries`]); in between, exactly as [`downsample`] over those points would, with every block in
/// range decoded once into one reused buffer and folded into the buckets.
pub fn scan(
    conn: &Connection,
    series: i64,
    count: u64,
    range: &ReadRange,
    buckets: usize,
) -> Result<Scalars> {
    let (lo, hi) = (
        range.min_step.unwrap_or(i64::MIN),
        range.max_step.unwrap_or(i64::MAX),
    );
    let span = step_span(conn, series, lo, hi)?;
    if span.count <= 2 * buckets as u64 {
        return load_scalars(conn, series, count, range);
    }
    let b = Buckets::new(span.lo, span.hi, buckets);
    if span.count >= SUMMARY_MODE_POINTS * buckets as u64 {
        return scan_summaries(conn, series, (lo, hi), b);
    }
    let mut kept = vec![Kept::default(); buckets];
    let (mut block, mut scratch) = (Scalars::with_capacity(blocks::BLOCK_POINTS), Vec::new());
    let steps_only = ReadRange {
        min_step: range.min_step,
        max_step: range.max_step,
        ..ReadRange::default()
    };
    range_blocks(conn, series, &steps_only, &mut |first, enc, data| {
        block.clear();
        blocks::decode_scalars_with(&mut scratch, enc, data, &mut block)?;
        fold_block(&mut kept, b, &block, first, (lo, hi));
        Ok(true)
    })?;
    let mut out = Scalars::with_capacity(2 * buckets);
    for k in kept {
        push_in_step_order(&mut out, [k.min, k.max, k.nan]);
    }
    Ok(out)
}

/// Counts the points with steps in `lo..=hi` and finds their step span. A block wholly inside the range is
/// counted from its row alone; only blocks the range cuts are read and decoded.
fn step_span(conn: &Connection, series: i64, lo: i64, hi: i64) -> Result<Span> {
    let mut span = Span {
        count: 0,
        lo: i64::MAX,
        hi: i64::MIN,
    };
    let mut cut = Vec::new();
    let mut st = conn
        .prepare_cached(
            "SELECT first_index, count, min_step, max_step FROM blocks WHERE series_id = ?1 \
             AND max_step >= ?2 AND min_step <= ?3",
        )
        .map_err(sql_err("reading metric block bounds"))?;
    let mut rows = st
        .query(params![series, lo, hi])
        .map_err(sql_err("reading metric block bounds"))?;
    while let Some(row) = rows
        .next()
        .map_err(sql_err("reading metric block bounds"))?
    {
        let bounds = (|| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))()
            .map_err(sql_err("reading metric block bounds"))?;
        let (first, n, min, max): (i64, i64, i64, i64) = bounds;
        if lo <= min && max <= hi {
            span.count += n as u64;
            (span.lo, span.hi) = (span.lo.min(min), span.hi.max(max));
        } else {
            cut.push(first);
        }
    }
    for first in cut {
        add_cut_block(conn, series, first, (lo, hi), &mut span)?;
    }
    Ok(span)
}

/// Adds the in-range points of the block at `first` (one the range cuts) to `span`.
fn add_cut_block(
    conn: &Connection,
    series: i64,
    first: i64,
    (lo, hi): (i64, i64),
    span: &mut Span,
) -> Result<()> {
    let steps = with_block(conn, series, first, |block| block.steps.clone())?;
    for &s in steps.iter().filter(|&&s| lo <= s && s <= hi) {
        span.count += 1;
        (span.lo, span.hi) = (span.lo.min(s), span.hi.max(s));
    }
    Ok(())
}

/// Decodes the block at `first` and hands it to `f`.
fn with_block<T>(
    conn: &Connection,
    series: i64,
    first: i64,
    f: impl FnOnce(&Scalars) -> T,
) -> Result<T> {
    let mut block = Scalars::default();
    conn.prepare_cached(
        "SELECT encoding, data FROM blocks WHERE series_id = ?1 AND first_index = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![series, first], |r| {
            let data = r.get_ref(1)?.as_blob()?;
            Ok(blocks::decode_scalars(r.get(0)?, data, &mut block))
        })
    })
    .map_err(sql_err("reading a metric block"))??;
    Ok(f(&block))
}

/// Folds the points of `block` (whose first point is the series' point `first`) with steps in `lo..=hi` into
/// the buckets. Sorted steps go a bucket-long run at a time, like [`keep_sorted`]; a run's extremes replace
/// the bucket's only when strictly beyond them, so ties keep the earliest point, as in one pass over the series.
fn fold_block(kept: &mut [Kept], b: Buckets, block: &Scalars, first: u64, (lo, hi): (i64, i64)) {
    if !is_sorted(&block.steps) {
        for (i, &s) in block.steps.iter().enumerate() {
            if lo <= s && s <= hi {
                kept[b.of(s)].merge(Kept::of_run(
                    block,
                    first,
                    extremes(&block.values[i..=i], i),
                ));
            }
        }
        return;
    }
    let start = block.steps.partition_point(|&s| s < lo);
    let end = block.steps.partition_point(|&s| s <= hi);
    let mut i = start;
    while i < end {
        let k = b.of(block.steps[i]);
        let run = i + block.steps[i..end].partition_point(|&s| b.of(s) <= k);
        kept[k].merge(Kept::of_run(
            block,
            first,
            extremes(&block.values[i..run], i),
        ));
        i = run;
    }
}

/// Points a bucket must average before an overview merges segment summaries instead of points.
const SUMMARY_MODE_POINTS: u64 = 2 * SEGMENT_POINTS;

/// An overview of a range dense enough for summaries: each [`SEGMENT_POINTS`]-point segment (its points in
/// range) goes whole into the bucket of its smallest step, so bucket edges snap to segment edges, and each
/// bucket keeps the earliest min, max and first NaN of its segments — what the summaries hold, read without
/// decoding a point. Only blocks the range cuts, or written before summaries, are decoded (and summarized).
fn scan_summaries(
    conn: &Connection,
    series: i64,
    (lo, hi): (i64, i64),
    b: Buckets,
) -> Result<Scalars> {
    let mut kept = vec![Kept::default(); b.n];
    let mut open: Option<Part> = None;
    let mut st = conn
        .prepare_cached(
            "SELECT first_index, min_step, max_step, summary FROM blocks WHERE series_id = ?1 \
             AND max_step >= ?2 AND min_step <= ?3 ORDER BY first_index",
        )
        .map_err(sql_err("reading block summaries"))?;
    let mut rows = st
        .query(params![series, lo, hi])
        .map_err(sql_err("reading block summaries"))?;
    while let Some(row) = rows.next().map_err(sql_err("reading block summaries"))? {
        let (first, min, max): (i64, i64, i64) = (|| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))()
            .map_err(sql_err("reading block summaries"))?;
        let summary = row
            .get_ref(3)
            .and_then(|v| Ok(v.as_blob_or_null()?))
            .map_err(sql_err("reading block summaries"))?;
        let parts = match summary {
            Some(bytes) if lo <= min && max <= hi => summaries::decode(bytes)?,
            _ => with_block(conn, series, first, |block| {
                summaries::parts_of(first as u64, block, (lo, hi))
            })?,
        };
        for part in parts {
            if let Some(done) = add_part(&mut open, part) {
                kept[b.of(done.min_step)].merge(done.kept);
            }
        }
    }
    if let Some(done) = open {
        kept[b.of(done.min_step)].merge(done.kept);
    }
    Ok(in_step_order(kept.iter().flat_map(Kept::points)))
}

/// Adds a part to the open segment, or opens its segment; returns the segment this closes.
fn add_part(open: &mut Option<Part>, part: Part) -> Option<Part> {
    match open {
        Some(o) if o.segment == part.segment => {
            o.min_step = o.min_step.min(part.min_step);
            o.kept.merge(part.kept);
            None
        }
        _ => open.replace(part),
    }
}

/// Kept points sorted by (step, position), each once (a bucket of snapped edges may reach past the next one's
/// first step).
fn in_step_order(points: impl Iterator<Item = Point>) -> Scalars {
    let mut all: Vec<Point> = points.collect();
    all.sort_by_key(|p| (p.step, p.index));
    all.dedup_by_key(|p| p.index);
    let mut out = Scalars::with_capacity(all.len());
    for p in all {
        out.push(p.step, p.time, p.value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift64 stream: cheap, seeded, reproducible test data.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }
    use crate::embedded::EmbeddedStore;
    use crate::Store;
    use flightlog_model::{Batch, NewRun, RunId, ScalarWrite, WallTime, F64};

    #[test]
    fn downsampling_keeps_extremes_and_nans() {
        let mut p = Scalars::default();
        for i in 0..1000 {
            // Distinct values (7919 is coprime with 1000), so min and max have no ties.
            let v = match i {
                500 => 1e9,
                700 => f64::NAN,
                _ => ((i * 7919) % 1000) as f64,
            };
            p.push(i, WallTime(i), F64(v));
        }
        let d = downsample(&p, 10);
        assert!(d.len() <= 30);
        assert!(d.values.contains(&F64(1e9)));
        assert!(d.values.iter().any(|v| v.0.is_nan()));
        // The same points in another order keep the same extremes.
        let mut shuffled = Scalars::default();
        for i in (0..1000).rev() {
            shuffled.push(p.steps[i], p.times[i], p.values[i]);
        }
        assert_eq!(downsample(&shuffled, 10).steps, d.steps);
        assert!(d.steps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            downsample(&p, 500).steps,
            p.steps,
            "small series come back whole"
        );
    }

    #[test]
    fn extremes_are_the_earliest_min_max_and_nan() {
        let naive = |vals: &[F64]| {
            let mut k = KEEP_NONE;
            for (j, v) in vals.iter().enumerate() {
                let j = j as u32 + 10;
                if v.0.is_nan() {
                    k.nan = k.nan.min(j);
                } else {
                    if k.min == NONE || v.0 < vals[k.min as usize - 10].0 {
                        k.min = j;
                    }
                    if k.max == NONE || v.0 > vals[k.max as usize - 10].0 {
                        k.max = j;
                    }
                }
            }
            (k.min, k.max, k.nan)
        };
        let pool = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2.5,
        ];
        let mut next = xorshift(0x1234_5678_9ABC_DEF1);
        for len in [0, 1, 2, 3, 7, 64, 300] {
            for _ in 0..200 {
                let vals: Vec<F64> = (0..len)
                    .map(|_| F64(pool[(next() % pool.len() as u64) as usize]))
                    .collect();
                let k = extremes(&vals, 10);
                assert_eq!((k.min, k.max, k.nan), naive(&vals), "{vals:?}");
            }
        }
    }

    /// Folding `p` cut into blocks of `block` points equals [`downsample`] over it (bit for bit, times too).
    fn folded(p: &Scalars, block: usize, buckets: usize) -> Scalars {
        let lo = p.steps.iter().copied().min().unwrap_or(0);
        let hi = p.steps.iter().copied().max().unwrap_or(0);
        let b = Buckets::new(lo, hi, buckets);
        let mut kept = vec![Kept::default(); buckets];
        for start in (0..p.len()).step_by(block) {
            let mut part = Scalars::default();
            part.extend_from(p, start..(start + block).min(p.len()));
            fold_block(&mut kept, b, &part, start as u64, (i64::MIN, i64::MAX));
        }
        let mut out = Scalars::default();
        for k in kept {
            push_in_step_order(&mut out, [k.min, k.max, k.nan]);
        }
        out
    }

    #[test]
    fn folding_blocks_equals_downsampling_the_whole() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for (n, unsorted) in [(5000, false), (20_000, false), (7000, true)] {
            let mut p = Scalars::default();
            for i in 0..n {
                let v = match next() % 50 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    3 => 0.5, // ties: the earliest must win in both
                    _ => (next() % 1000) as f64 / 7.0,
                };
                let step = if unsorted {
                    (next() % 3000) as i64
                } else {
                    i / 3
                };
                p.push(step, WallTime(i), F64(v));
            }
            for (block, buckets) in [(4096, 100), (333, 7), (1, 1000), (100, 1)] {
                let (a, b) = (downsample(&p, buckets), folded(&p, block, buckets));
                assert_eq!(a.steps, b.steps, "n={n} block={block} buckets={buckets}");
                assert_eq!(a.times, b.times);
                let bits = |s: &Scalars| s.values.iter().map(|v| v.0.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b));
            }
        }
    }

    /// Random points with NaN, ±Inf and ties; steps ascending with repeats and gaps, or in any order.
    fn random_write(
        next: &mut impl FnMut() -> u64,
        n: usize,
        first_step: i64,
        sorted: bool,
    ) -> ScalarWrite {
        let mut step = first_step;
        let (mut steps, mut values) = (Vec::new(), Vec::new());
        for _ in 0..n {
            step += [0, 1, 1, 1, 5][(next() % 5) as usize];
            steps.push(Some(if sorted {
                step
            } else {
                (next() % 50_000) as i64
            }));
            values.push(F64(match next() % 100 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3..=9 => 1.0,
                _ => (next() % 10_000) as f64 / 3.0,
            }));
        }
        ScalarWrite {
            name: if sorted { "sorted" } else { "shuffled" }.into(),
            steps: Some(steps),
            values,
            ..Default::default()
        }
    }

    /// The overview by its definition, from every point of the series: the points in `lo..=hi` (with their
    /// index in the series); ranges averaging [`SUMMARY_MODE_POINTS`] a bucket put each segment's points in
    /// the bucket of the segment's smallest step, others are [`downsample`]'s equal step intervals; each bucket
    /// keeps its earliest min, max and NaN, found here by brute force.
    fn by_definition(all: &Scalars, (lo, hi): (i64, i64), buckets: usize) -> Scalars {
        let picked: Vec<usize> = (0..all.len())
            .filter(|&i| lo <= all.steps[i] && all.steps[i] <= hi)
            .collect();
        let mut selected = Scalars::default();
        for &i in &picked {
            selected.push(all.steps[i], all.times[i], all.values[i]);
        }
        if (picked.len() as u64) < SUMMARY_MODE_POINTS * buckets as u64 {
            return downsample(&selected, buckets);
        }
        let min = |idx: &[usize]| idx.iter().map(|&i| all.steps[i]).min().unwrap_or(0);
        let b = Buckets::new(min(&picked), *selected.steps.iter().max().unwrap(), buckets);
        let mut segments: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
        for &i in &picked {
            segments
                .entry(i as u64 / SEGMENT_POINTS)
                .or_default()
                .push(i);
        }
        let mut members = vec![Vec::new(); buckets];
        for idx in segments.values() {
            members[b.of(min(idx))].extend_from_slice(idx);
        }
        let mut kept: Vec<usize> = Vec::new();
        for m in members {
            let v = |i: usize| all.values[i].0;
            let numbers: Vec<usize> = m.iter().copied().filter(|&i| !v(i).is_nan()).collect();
            let lowest = numbers.iter().map(|&i| v(i)).fold(f64::INFINITY, f64::min);
            let highest = numbers
                .iter()
                .map(|&i| v(i))
                .fold(f64::NEG_INFINITY, f64::max);
            kept.extend(numbers.iter().find(|&&i| v(i) == lowest).copied());
            kept.extend(numbers.iter().find(|&&i| v(i) == highest).copied());
            kept.extend(m.iter().find(|&&i| v(i).is_nan()).copied());
        }
        kept.sort_by_key(|&i| (all.steps[i], i));
        kept.dedup();
        let mut out = Scalars::default();
        for i in kept {
            out.push(all.steps[i], all.times[i], all.values[i]);
        }
        out
    }

    /// Every overview the store answers equals the overview by definition: whole series, zooms that cut
    /// blocks, ranges small enough to come back whole; bucket counts that read summaries and that do not.
    fn assert_overviews_exact(s: &EmbeddedStore, run: &RunId, name: &str) {
        let last = s.metric_info(run, name).unwrap().last_step.unwrap_or(0);
        let ranges = [
            (None, None),
            (Some(1000), Some(last / 2)),
            (Some(last / 3), None),
            (Some(77), Some(1300)),
            (Some(500), Some(520)),
            (Some(last + 1), None),
        ];
        let all = s.read_scalars(run, name, &ReadRange::default()).unwrap();
        for (min_step, max_step) in ranges {
            let range = ReadRange {
                min_step,
                max_step,
                ..ReadRange::default()
            };
            let bounds = (min_step.unwrap_or(i64::MIN), max_step.unwrap_or(i64::MAX));
            for buckets in [1, 3, 64, 700, 2000] {
                let fast = s.read_downsampled(run, name, &range, buckets).unwrap();
                let slow = by_definition(&all, bounds, buckets as usize);
                let what = format!("{name} {range:?} buckets={buckets}");
                assert_eq!(fast.steps, slow.steps, "{what}");
                assert_eq!(fast.times, slow.times, "{what}");
                let bits = |s: &Scalars| s.values.iter().map(|v| v.0.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&slow), "{what}");
            }
        }
    }

    #[test]
    fn store_overviews_equal_downsampling_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let run = s.create_run(NewRun::default()).unwrap().id;
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let mut step = 0;
        // Big batches make full blocks, small ones fragment rows; the overview is checked after each kind.
        for n in [30_000, 7, 300, 1, 5000, 20_000, 3] {
            let sorted = random_write(&mut next, n, step, true);
            step = sorted
                .steps
                .as_ref()
                .and_then(|s| *s.last()?)
                .unwrap_or(step);
            let shuffled = random_write(&mut next, n, 0, false);
            let batch = Batch {
                scalars: vec![sorted, shuffled],
                ..Default::default()
            };
            s.write_batch(&run, batch).unwrap();
            assert_overviews_exact(&s, &run, "sorted");
        }
        assert_overviews_exact(&s, &run, "shuffled");
        rewrite_in_pre_plane_layout(dir.path());
        assert_overviews_exact(&s, &run, "sorted");
        assert_overviews_exact(&s, &run, "shuffled");
    }

    /// Re-encodes every block of the data directory as a build before byte planes (and summaries) wrote it.
    fn rewrite_in_pre_plane_layout(dir: &std::path::Path) {
        let conn = Connection::open(dir.join("flightlog.db")).unwrap();
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = conn
            .prepare("SELECT series_id, first_index, encoding, data FROM blocks")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (series, first, enc, data) in rows {
            let mut points = Scalars::default();
            blocks::decode_scalars(enc, &data, &mut points).unwrap();
            let (enc, data) = blocks::encode_pre_plane_layout(&points);
            conn.execute(
                "UPDATE blocks SET encoding = ?1, data = ?2, summary = NULL WHERE series_id = ?3 \
                 AND first_index = ?4",
                params![enc, data, series, first],
            )
            .unwrap();
        }
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use crate::Store;
    use flightlog_model::{Batch, NewRun, ScalarWrite, F64};

    /// `cargo test --release -p flightlog-store -- --ignored overview_speed --nocapture`
    #[test]
    #[ignore]
    fn overview_speed() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let run = s.create_run(NewRun::default()).unwrap().id;
        let mut x = 0x9E37_79B9u64;
        for start in (0..1_000_000).step_by(25_000) {
            let values = (start..start + 25_000)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = (x >> 40) as f64 / (1u64 << 24) as f64;
                    F64(((0.999999f64.powi(i) + 0.05 * noise) * 1e5).round() / 1e5)
                })
                .collect();
            let w = ScalarWrite {
                name: "loss".into(),
                values,
                ..Default::default()
            };
            let batch = Batch {
                scalars: vec![w],
                ..Default::default()
            };
            s.write_batch(&run, batch).unwrap();
        }
        let all = ReadRange::default();
        for buckets in [418, 1300, 2000] {
            let (mut scan, mut whole) = (f64::MAX, f64::MAX);
            for _ in 0..10 {
                let t = std::time::Instant::now();
                let d = s.read_downsampled(&run, "loss", &all, buckets).unwrap();
                scan = scan.min(t.elapsed().as_secs_f64() * 1e3);
                assert!(d.len() <= 3 * buckets as usize);
                let t = std::time::Instant::now();
                let p = s.read_scalars(&run, "loss", &all).unwrap();
                downsample(&p, buckets as usize);
                whole = whole.min(t.elapsed().as_secs_f64() * 1e3);
            }
            eprintln!(
                "1M-point overview of {buckets} buckets, best of 10: {scan:.1} ms; decode all + downsample {whole:.1} ms"
            );
        }
    }
}
