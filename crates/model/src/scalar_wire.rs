//! The binary form of a scalar-only [`Batch`] (`POST /api/v1/runs/{id}/batch` with Content-Type
//! [`MEDIA_TYPE`]): columns of little-endian numbers instead of JSON text, so that a big import is a memory
//! copy on both sides rather than number formatting and parsing.
//!
//! Layout (all integers little-endian): `b"FLSB"`, version `1u8`; batch id: `u32` length (`u32::MAX` for none)
//! and UTF-8 bytes; `u32` series count; per series: `u32` name length and UTF-8 name, `u8` flags (1: steps
//! present, 2: times present), `u64` point count n, then n `i64` steps (if present), n `i64` times in µs (if
//! present), n `f64` values.

use crate::{Batch, Error, Result, ScalarWrite, WallTime, F64};

/// The Content-Type of a binary scalar batch.
pub const MEDIA_TYPE: &str = "application/vnd.flightlog.scalars";

const MAGIC: &[u8; 4] = b"FLSB";
const VERSION: u8 = 1;
const HAS_STEPS: u8 = 1;
const HAS_TIMES: u8 = 2;
const NO_BATCH_ID: u32 = u32::MAX;

/// The binary form of `batch`, or `None` when it holds anything the form cannot carry (other metric kinds,
/// logs, descriptions, or a step column with gaps): such a batch goes as JSON.
pub fn encode(batch: &Batch) -> Option<Vec<u8>> {
    if !batch.metrics.is_empty() || !batch.logs.is_empty() {
        return None;
    }
    let points: usize = batch.scalars.iter().map(|s| s.values.len()).sum();
    let mut out = Vec::with_capacity(64 + points * 24);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    match &batch.batch_id {
        Some(id) => put_str(&mut out, id)?,
        None => out.extend_from_slice(&NO_BATCH_ID.to_le_bytes()),
    }
    out.extend_from_slice(&u32::try_from(batch.scalars.len()).ok()?.to_le_bytes());
    for s in &batch.scalars {
        encode_series(&mut out, s)?;
    }
    Some(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    let len = u32::try_from(s.len()).ok().filter(|&l| l != NO_BATCH_ID)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Some(())
}

fn encode_series(out: &mut Vec<u8>, s: &ScalarWrite) -> Option<()> {
    if s.description.is_some() {
        return None;
    }
    let n = s.values.len();
    let steps = s.steps.as_ref();
    let times = s.times.as_ref();
    if steps.is_some_and(|c| c.len() != n || c.iter().any(Option::is_none))
        || times.is_some_and(|c| c.len() != n)
    {
        return None;
    }
    put_str(out, &s.name)?;
    out.push(steps.map_or(0, |_| HAS_STEPS) | times.map_or(0, |_| HAS_TIMES));
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for step in steps.into_iter().flatten() {
        out.extend_from_slice(&step.unwrap_or_default().to_le_bytes());
    }
    for t in times.into_iter().flatten() {
        out.extend_from_slice(&t.0.to_le_bytes());
    }
    for v in &s.values {
        out.extend_from_slice(&v.0.to_le_bytes());
    }
    Some(())
}

/// Reads a binary scalar batch. Malformed input (wrong magic or version, lengths past the end, names that are
/// not UTF-8, bytes left over) is an `InvalidArgument`, never a panic. Names and values are validated later by
/// the store, like a JSON batch's.
pub fn decode(bytes: &[u8]) -> Result<Batch> {
    let mut r = Cursor { bytes, pos: 0 };
    if r.take(4)? != MAGIC || r.take(1)? != [VERSION] {
        return Err(bad("not a flightlog binary scalar batch (version 1)"));
    }
    let batch_id = match r.u32()? {
        NO_BATCH_ID => None,
        len => Some(r.string(len)?),
    };
    let count = r.u32()?;
    let mut scalars = Vec::new();
    for _ in 0..count {
        scalars.push(decode_series(&mut r)?);
    }
    if r.pos != bytes.len() {
        return Err(bad("bytes left after the last series"));
    }
    Ok(Batch {
        batch_id,
        scalars,
        ..Default::default()
    })
}

fn decode_series(r: &mut Cursor<'_>) -> Result<ScalarWrite> {
    let len = r.u32()?;
    let name = r.string(len)?;
    let flags = r.take(1)?[0];
    if flags & !(HAS_STEPS | HAS_TIMES) != 0 {
        return Err(bad("unknown series flags"));
    }
    let n = usize::try_from(r.u64()?).map_err(|_| bad("point count too large"))?;
    let steps = (flags & HAS_STEPS != 0)
        .then(|| r.column(n, |b| Some(i64::from_le_bytes(b))))
        .transpose()?;
    let times = (flags & HAS_TIMES != 0)
        .then(|| r.column(n, |b| WallTime(i64::from_le_bytes(b))))
        .transpose()?;
    let values = r.column(n, |b| F64(f64::from_le_bytes(b)))?;
    Ok(ScalarWrite {
        name,
        description: None,
        steps,
        times,
        values,
    })
}

fn bad(why: &str) -> Error {
    Error::invalid("body", format!("binary scalar batch: {why}"))
}

/// Reads the body front to back; every read checks the bytes are there.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad("ends early"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, len: u32) -> Result<String> {
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    }

    /// `n` 8-byte little-endian numbers, each turned into a `T`.
    fn column<T>(&mut self, n: usize, f: impl Fn([u8; 8]) -> T) -> Result<Vec<T>> {
        let bytes = self.take(n.checked_mul(8).ok_or_else(|| bad("ends early"))?)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogAppend, MetricWrite};

    fn series(name: &str, n: i64) -> ScalarWrite {
        ScalarWrite {
            name: name.into(),
            description: None,
            steps: Some((0..n).map(Some).collect()),
            times: Some(
                (0..n)
                    .map(|s| WallTime(1_700_000_000_000_000 + s))
                    .collect(),
            ),
            values: (0..n).map(|s| F64(1.0 / (s as f64 + 1.0))).collect(),
        }
    }

    #[test]
    fn round_trip_keeps_every_column_and_nan_payloads() {
        let mut odd = series("é/loss", 3);
        odd.values[1] = F64(f64::from_bits(0x7ff8_0000_0000_0123));
        odd.times = None;
        let batch = Batch {
            batch_id: Some("tb-1-0-99".into()),
            scalars: vec![series("loss", 1000), odd, series("empty", 0)],
            ..Default::default()
        };
        let bytes = encode(&batch).expect("scalar-only batch encodes");
        let back = decode(&bytes).unwrap();
        assert_eq!(back.batch_id, batch.batch_id);
        assert_eq!(back.scalars.len(), 3);
        assert_eq!(back.scalars[0], batch.scalars[0]);
        assert_eq!(back.scalars[1].times, None);
        assert_eq!(back.scalars[1].values[1].0.to_bits(), 0x7ff8_0000_0000_0123);
        let none = Batch {
            scalars: vec![series("a", 2)],
            ..Default::default()
        };
        assert_eq!(decode(&encode(&none).unwrap()).unwrap().batch_id, None);
    }

    #[test]
    fn what_binary_cannot_carry_goes_as_json() {
        let mut gaps = series("a", 3);
        gaps.steps = Some(vec![Some(1), None, Some(3)]);
        let mut described = series("b", 1);
        described.description = Some("why".into());
        let text = MetricWrite::Text {
            name: "t".into(),
            description: None,
            steps: None,
            times: None,
            values: vec!["x".into()],
        };
        let log = LogAppend {
            stream: "stdout".into(),
            ..Default::default()
        };
        for b in [
            Batch {
                scalars: vec![gaps],
                ..Default::default()
            },
            Batch {
                scalars: vec![described],
                ..Default::default()
            },
            Batch {
                metrics: vec![text],
                ..Default::default()
            },
            Batch {
                logs: vec![log],
                ..Default::default()
            },
        ] {
            assert!(encode(&b).is_none(), "{b:?}");
        }
    }

    #[test]
    fn every_truncation_and_damage_is_an_error_not_a_panic() {
        let batch = Batch {
            batch_id: Some("id".into()),
            scalars: vec![series("loss", 4)],
            ..Default::default()
        };
        let bytes = encode(&batch).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] = 0xff;
            let _ = decode(&b);
        }
        assert!(decode(b"FLSB\x02").is_err());
    }
}
