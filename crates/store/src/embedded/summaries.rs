//! Segment summaries of scalar blocks: for every [`SEGMENT_POINTS`]-point segment of a series (aligned on the
//! point index, so a segment may span a full block's edge or several fragment rows), its smallest step and its
//! min, max and first NaN point. Written with each block; an overview of a long series merges them instead of
//! decoding every point.

use super::blocks::{put_varint, varint_at, Scalars};
use flightlog_model::{Error, Result, WallTime, F64};

/// Points per segment: an overview reads summaries once its buckets average two segments or more, so this
/// sets how fine a summarized overview can be, against the summaries' size (about a quarter byte a point).
pub const SEGMENT_POINTS: u64 = 256;

/// A kept point with its index in the series, which orders points of equal step and tells a point kept twice
/// (as min and max) from two points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub index: u64,
    pub step: i64,
    pub time: WallTime,
    pub value: F64,
}

/// No point (in tables of indexes).
pub const NONE: u32 = u32::MAX;

/// The points a run keeps, as indexes into a slice: its min, its max, and its first NaN.
#[derive(Clone, Copy)]
pub struct Keep {
    pub min: u32,
    pub max: u32,
    pub nan: u32,
}

pub const KEEP_NONE: Keep = Keep {
    min: NONE,
    max: NONE,
    nan: NONE,
};

/// Min, max and first NaN of `values`, as indexes offset by `base`; of equal values the earliest. One
/// branch-free pass finds the extreme values (the compiler vectorizes it: NaN fails both comparisons, so it
/// never becomes an extreme), then the earliest position of each is looked up (`==` holds -0.0 and 0.0 equal,
/// as the comparisons do).
pub fn extremes(values: &[F64], base: usize) -> Keep {
    let (mut lo, mut hi, mut nan) = (f64::INFINITY, f64::NEG_INFINITY, false);
    for v in values {
        let v = v.0;
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
        nan |= v.is_nan();
    }
    let at = |found: Option<usize>| found.map_or(NONE, |j| (base + j) as u32);
    Keep {
        min: at(values.iter().position(|v| v.0 == lo)),
        max: at(values.iter().position(|v| v.0 == hi)),
        nan: if nan {
            at(values.iter().position(|v| v.0.is_nan()))
        } else {
            NONE
        },
    }
}

/// Point `i` of `p`, which is the series' point `index`.
pub fn point(p: &Scalars, i: usize, index: u64) -> Point {
    Point {
        index,
        step: p.steps[i],
        time: p.times[i],
        value: p.values[i],
    }
}

/// The min, max and first NaN point of some run of points; of equal values the earliest.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Kept {
    pub min: Option<Point>,
    pub max: Option<Point>,
    pub nan: Option<Point>,
}

impl Kept {
    /// Takes in `p`, which comes after every point seen so far.
    pub fn add(&mut self, p: Point) {
        self.merge(Kept {
            min: Some(p).filter(|p| !p.value.0.is_nan()),
            max: Some(p).filter(|p| !p.value.0.is_nan()),
            nan: Some(p).filter(|p| p.value.0.is_nan()),
        });
    }

    /// Takes in the extremes of points that all come after those seen so far: they win only when strictly
    /// beyond, so ties keep the earliest point, as one pass over every point would.
    pub fn merge(&mut self, later: Kept) {
        if let Some(m) = later.min {
            if self.min.is_none_or(|c| m.value.0 < c.value.0) {
                self.min = Some(m);
            }
        }
        if let Some(m) = later.max {
            if self.max.is_none_or(|c| m.value.0 > c.value.0) {
                self.max = Some(m);
            }
        }
        if self.nan.is_none() {
            self.nan = later.nan;
        }
    }

    /// The points a run's [`Keep`] names (indexes into `block`, whose first point is the series' `first`).
    pub fn of_run(block: &Scalars, first: u64, run: Keep) -> Kept {
        let at = |i: u32| (i != NONE).then(|| point(block, i as usize, first + u64::from(i)));
        Kept {
            min: at(run.min),
            max: at(run.max),
            nan: at(run.nan),
        }
    }

    pub fn points(&self) -> impl Iterator<Item = Point> {
        [self.min, self.max, self.nan].into_iter().flatten()
    }
}

/// What one block (or the part of it in a step range) holds of one segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Part {
    pub segment: u64,
    pub min_step: i64,
    pub kept: Kept,
}

/// The parts of the points of `block` (whose first point is the series' point `first`) with steps in
/// `lo..=hi`, in index order. A segment's points all in range (always so when writing) are summarized in one
/// vectorized pass; only a segment the range cuts goes point by point.
pub fn parts_of(first: u64, block: &Scalars, (lo, hi): (i64, i64)) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let segment = (first + i as u64) / SEGMENT_POINTS;
        let end = ((segment + 1) * SEGMENT_POINTS - first).min(block.len() as u64) as usize;
        let steps = &block.steps[i..end];
        let (min, max) = steps
            .iter()
            .fold((i64::MAX, i64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
        if lo <= min && max <= hi {
            let kept = Kept::of_run(block, first, extremes(&block.values[i..end], i));
            parts.push(Part {
                segment,
                min_step: min,
                kept,
            });
        } else {
            parts.extend(cut_part(first, block, i..end, (lo, hi)));
        }
        i = end;
    }
    parts
}

/// The part of segment points `run` of `block` with steps in `lo..=hi`, if any.
fn cut_part(
    first: u64,
    block: &Scalars,
    run: std::ops::Range<usize>,
    (lo, hi): (i64, i64),
) -> Option<Part> {
    let mut part: Option<Part> = None;
    for i in run.filter(|&i| lo <= block.steps[i] && block.steps[i] <= hi) {
        let p = point(block, i, first + i as u64);
        let part = part.get_or_insert(Part {
            segment: p.index / SEGMENT_POINTS,
            min_step: p.step,
            kept: Kept::default(),
        });
        part.min_step = part.min_step.min(p.step);
        part.kept.add(p);
    }
    part
}

/// The stored summary of a whole block.
pub fn of_block(first: u64, block: &Scalars) -> Vec<u8> {
    encode(&parts_of(first, block, (i64::MIN, i64::MAX)))
}

/// Layout: varint part count; per part varint segment, zigzag min step, a byte of flags (1 min, 2 max, 4 NaN
/// present), then per present point varint offset in the segment, zigzag step above the min step, zigzag
/// time and the value's 8 bits little-endian.
pub fn encode(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.len() * 64 + 4);
    put_varint(&mut out, parts.len() as u64);
    for part in parts {
        put_varint(&mut out, part.segment);
        put_varint(&mut out, zigzag(part.min_step));
        let k = &part.kept;
        let flags = u8::from(k.min.is_some())
            | u8::from(k.max.is_some()) << 1
            | u8::from(k.nan.is_some()) << 2;
        out.push(flags);
        for p in k.points() {
            put_varint(&mut out, p.index - part.segment * SEGMENT_POINTS);
            put_varint(&mut out, zigzag(p.step.wrapping_sub(part.min_step)));
            put_varint(&mut out, zigzag(p.time.0));
            out.extend_from_slice(&p.value.0.to_bits().to_le_bytes());
        }
    }
    out
}

/// Reads what [`encode`] wrote; anything else is a storage error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Vec<Part>> {
    let mut pos = 0;
    let varint = |pos: &mut usize| varint_at(bytes, pos).ok_or_else(corrupt);
    let n = varint(&mut pos)?;
    let mut parts = Vec::with_capacity((n as usize).min(bytes.len()));
    for _ in 0..n {
        let segment = varint(&mut pos)?;
        let min_step = unzigzag(varint(&mut pos)?);
        let flags = *bytes.get(pos).ok_or_else(corrupt)?;
        pos += 1;
        let mut point = |present: u8| -> Result<Option<Point>> {
            if flags & present == 0 {
                return Ok(None);
            }
            let index = segment
                .checked_mul(SEGMENT_POINTS)
                .and_then(|base| base.checked_add(varint(&mut pos).ok()?))
                .ok_or_else(corrupt)?;
            let step = min_step.wrapping_add(unzigzag(varint(&mut pos)?));
            let time = WallTime(unzigzag(varint(&mut pos)?));
            let bits = bytes.get(pos..pos + 8).ok_or_else(corrupt)?;
            pos += 8;
            let value = F64(f64::from_bits(u64::from_le_bytes(
                bits.try_into().map_err(|_| corrupt())?,
            )));
            Ok(Some(Point {
                index,
                step,
                time,
                value,
            }))
        };
        let kept = Kept {
            min: point(1)?,
            max: point(2)?,
            nan: point(4)?,
        };
        parts.push(Part {
            segment,
            min_step,
            kept,
        });
    }
    Ok(parts)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn corrupt() -> Error {
    Error::storage("corrupt block summary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::blocks::ScalarsExt;

    #[test]
    fn summaries_round_trip_and_keep_the_earliest_extremes() {
        let mut s = Scalars::default();
        let values = [
            3.0,
            f64::NAN,
            -1.0,
            7.0,
            -1.0,
            7.0,
            f64::INFINITY,
            f64::NAN,
            -0.0,
        ];
        for (i, v) in values.into_iter().enumerate() {
            s.push(100 - i as i64, WallTime(i as i64 * 1_000_000_007), F64(v));
        }
        // The block starts 3 points before a segment edge: two parts.
        let first = SEGMENT_POINTS * 5 - 3;
        let parts = parts_of(first, &s, (i64::MIN, i64::MAX));
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].segment, parts[0].min_step), (4, 98));
        let (k0, k1) = (parts[0].kept, parts[1].kept);
        assert_eq!(k0.min.map(|p| p.index), Some(first + 2), "-1.0");
        assert_eq!(k0.nan.map(|p| p.index), Some(first + 1));
        assert_eq!(
            k1.min.map(|p| p.index),
            Some(first + 4),
            "the earlier -1.0 of its segment"
        );
        assert_eq!(k1.max.map(|p| p.value), Some(F64(f64::INFINITY)));
        assert_eq!(decode(&encode(&parts)).unwrap(), parts);
        let cut = parts_of(first, &s, (95, 97));
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].kept.max.map(|p| p.step), Some(97), "the earlier 7.0");
        assert_eq!(cut[0].min_step, 95);
    }

    #[test]
    fn corrupt_summaries_are_errors_not_panics() {
        let mut s = Scalars::default();
        s.push(1, WallTime(2), F64(3.0));
        let good = of_block(0, &s);
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "cut at {len}");
        }
        assert!(decode(&[0xff; 12]).is_err());
    }
}
