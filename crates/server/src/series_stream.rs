//! Huge scalar reads, streamed: the body is written piece by piece as the connection asks for it, each piece
//! from a chunk of points read from the store just then, so a read of tens of millions of points holds one
//! chunk in memory however slowly the client reads, never the series.

use crate::metrics::{write_int_items, write_value_items};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use flightlog_model::{Result, ScalarSeries, SeriesInfo, WallTime, F64};
use std::sync::Arc;

/// Above this many points a read is streamed (a million points is about 45 MB of JSON, 24 MB in memory).
pub const STREAM_POINTS: usize = 2_000_000;
/// Points per chunk, read from the store for one piece of one column.
const CHUNK: usize = 65_536;

/// Points `from..to` of the read (indexes within it, not within the series).
pub type Chunks = Arc<dyn Fn(usize, usize) -> Result<ScalarSeries> + Send + Sync>;

/// The body's format: `{"info":…,"steps":[…],"times":[…],"values":[…]}` or the binary columns.
#[derive(Clone, Copy)]
pub enum Format {
    Json,
    Binary,
}

/// One piece of a body: its head, one chunk of one column, or its tail.
#[derive(Clone, Copy)]
enum Piece {
    Head,
    Column { col: usize, chunk: usize },
    Tail,
}

/// The pieces of an `n`-point body, in order: every chunk of steps, then of times, then of values.
fn pieces(n: usize) -> impl Iterator<Item = Piece> {
    let chunks = n.div_ceil(CHUNK).max(1);
    std::iter::once(Piece::Head)
        .chain(
            (0..3).flat_map(move |col| (0..chunks).map(move |chunk| Piece::Column { col, chunk })),
        )
        .chain(std::iter::once(Piece::Tail))
}

/// An `n`-point read as a streamed response; each piece's chunk is read on the blocking pool when the
/// connection is ready for it. A chunk that cannot be read ends the body early (the status is sent by then),
/// which the client sees as a cut connection, never as a shorter series.
pub fn response(info: SeriesInfo, n: usize, format: Format, chunks: Chunks) -> Response {
    let info = Arc::new(info);
    let stream = futures::StreamExt::then(futures::stream::iter(pieces(n)), move |piece| {
        let (info, chunks) = (info.clone(), chunks.clone());
        async move {
            let written =
                tokio::task::spawn_blocking(move || piece.write(&info, n, format, &*chunks))
                    .await
                    .map_err(std::io::Error::other)?;
            written.map(Bytes::from).map_err(|e| {
                tracing::warn!("a streamed series read stopped: {e}");
                std::io::Error::other(e)
            })
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let media = match format {
        Format::Json => "application/json",
        Format::Binary => "application/octet-stream",
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    resp
}

impl Piece {
    fn write(
        self,
        info: &SeriesInfo,
        n: usize,
        format: Format,
        chunks: &dyn Fn(usize, usize) -> Result<ScalarSeries>,
    ) -> Result<Vec<u8>> {
        let (col, chunk) = match (self, format) {
            (Piece::Head, Format::Json) => {
                let mut out = b"{\"info\":".to_vec();
                if serde_json::to_writer(&mut out, info).is_err() {
                    out.extend_from_slice(b"null");
                }
                return Ok(out);
            }
            (Piece::Head, Format::Binary) => return Ok((n as u64).to_le_bytes().to_vec()),
            (Piece::Tail, Format::Json) => return Ok(b"}".to_vec()),
            (Piece::Tail, Format::Binary) => return Ok(Vec::new()),
            (Piece::Column { col, chunk }, _) => (col, chunk),
        };
        let (from, to) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(n));
        let points = if from < to {
            chunks(from, to)?
        } else {
            ScalarSeries::default()
        };
        // The columns are equal by contract; the shortest bounds the indexing, so a store bug cannot panic.
        let len = (to - from)
            .min(points.steps.len())
            .min(points.times.len())
            .min(points.values.len());
        let column = Column {
            steps: &points.steps[..len],
            times: &points.times[..len],
            values: &points.values[..len],
        };
        Ok(match format {
            Format::Json => column.json(col, from, from + len == n),
            Format::Binary => column.binary(col),
        })
    }
}

/// One chunk's points, of which one column is written.
struct Column<'a> {
    steps: &'a [i64],
    times: &'a [WallTime],
    values: &'a [F64],
}

impl Column<'_> {
    /// Column `col` of points starting at index `from` of the body; the first chunk opens the array, the last
    /// closes it.
    fn json(&self, col: usize, from: usize, last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.steps.len() * 24 + 16);
        if from == 0 {
            out.extend_from_slice([&b",\"steps\":["[..], b",\"times\":[", b",\"values\":["][col]);
        }
        match col {
            0 => write_int_items(&mut out, self.steps.iter().copied(), from),
            1 => write_int_items(&mut out, self.times.iter().map(|t| t.0), from),
            _ => write_value_items(&mut out, self.values, from),
        }
        if last {
            out.push(b']');
        }
        out
    }

    /// Column `col` as little-endian 8-byte words.
    fn binary(&self, col: usize) -> Vec<u8> {
        let words: Box<dyn Iterator<Item = [u8; 8]>> = match col {
            0 => Box::new(self.steps.iter().map(|v| v.to_le_bytes())),
            1 => Box::new(self.times.iter().map(|v| v.0.to_le_bytes())),
            _ => Box::new(self.values.iter().map(|v| v.0.to_le_bytes())),
        };
        words.flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{scalar_binary, scalar_json_parts};
    use flightlog_model::MetricKind;

    fn series(n: i64) -> ScalarSeries {
        ScalarSeries {
            steps: (0..n).collect(),
            times: (0..n).map(|i| WallTime(i * 10)).collect(),
            values: (0..n)
                .map(|i| {
                    F64(if i % 1000 == 7 {
                        f64::NAN
                    } else {
                        i as f64 / 7.0
                    })
                })
                .collect(),
        }
    }

    fn info() -> SeriesInfo {
        serde_json::from_value(
            serde_json::json!({"name": "loss", "kind": MetricKind::Scalar, "count": 3}),
        )
        .unwrap()
    }

    /// The body the pieces write, chunks cut from `s` as the store would return them.
    fn streamed(s: &ScalarSeries, format: Format) -> Vec<u8> {
        let read = |from: usize, to: usize| Ok(s.slice(from, to));
        pieces(s.len())
            .flat_map(|piece| piece.write(&info(), s.len(), format, &read).unwrap())
            .collect()
    }

    #[test]
    fn streamed_bodies_are_the_whole_ones() {
        for n in [0, 1, 3, CHUNK as i64, CHUNK as i64 + 1, 200_000] {
            let s = series(n);
            assert_eq!(
                streamed(&s, Format::Json),
                scalar_json_parts(&info(), &s).concat(),
                "{n}"
            );
            assert_eq!(streamed(&s, Format::Binary), scalar_binary(&s), "{n}");
        }
    }

    #[test]
    fn a_chunk_that_cannot_be_read_fails_its_piece() {
        let fail = |_: usize, _: usize| Err(flightlog_model::Error::storage("disk gone"));
        let piece = Piece::Column { col: 1, chunk: 0 };
        let err = piece.write(&info(), 10, Format::Json, &fail).unwrap_err();
        assert!(err.to_string().contains("disk gone"));
    }
}
