//! log-batch's hot path: a body of plain metric points (what a training loop sends every few steps) parsed
//! straight into one column set per key, and the grouping of checked points into those columns.
//!
//! The general path (serde into structs, then checked and grouped) took ~3,800 instructions per point of the
//! MLflow client's body (callgrind): field names matched through visitors, every string re-validated as UTF-8,
//! each point built as a struct and then copied into columns. This parser knows the one shape and reads it in
//! a single pass over text validated once: ~1,900 instructions per point, a 1,000-point body in ~140 µs
//! instead of ~320 µs; matching the client's member names as literals took ~280 more off (a 40k-point ingest,
//! 144.3M server instructions down to 133.0M). It takes only bodies it can read exactly as serde would;
//! anything else (escapes, `null`, numbers in strings, NaN, params, tags, model fields, unknown or repeated
//! fields, invalid keys) makes it return `None` and the body takes the general path, which also words every
//! error. Its tests check it against that path.

use super::convert::{validate_key, METRIC_TIMESTAMPS};
use flightlog_model::{ScalarWrite, WallTime, F64};
use std::collections::HashMap;

/// A log-batch body the fast path read: its run id and its points, one scalar write per key.
#[derive(Debug)]
pub struct PlainMetrics<'a> {
    pub run_id: &'a str,
    pub scalars: Vec<ScalarWrite>,
}

/// Reads `body` if it is `{"run_id": "...", "metrics": [...]}` with at most `max_points` points of `key`,
/// `value`, `timestamp` and optional `step`, every key valid; `params` and `tags` may be present if empty.
/// `None` for anything else: the caller then parses the body the general way.
pub fn plain_metrics(body: &[u8], max_points: usize) -> Option<PlainMetrics<'_>> {
    let mut c = Cursor {
        text: std::str::from_utf8(body).ok()?,
        pos: 0,
    };
    let (mut run_id, mut columns, mut seen) = (None, None, [false; 2]);
    c.expect(b'{')?;
    loop {
        let name = c.name()?;
        if is(name, b"run_id") && run_id.is_none() {
            run_id = Some(c.string()?);
        } else if is(name, b"metrics") && columns.is_none() {
            columns = Some(metric_array(&mut c, max_points)?);
        } else if is(name, b"params") || is(name, b"tags") {
            if std::mem::replace(&mut seen[usize::from(is(name, b"tags"))], true) {
                return None;
            }
            c.empty_array()?;
        } else {
            return None;
        }
        if !c.next_member(b'}')? {
            break;
        }
    }
    c.end()?;
    let (run_id, scalars) = (run_id?, columns?.finish());
    (!scalars.is_empty()).then_some(PlainMetrics { run_id, scalars })
}

/// The `metrics` array, into columns; `None` past `max_points` or at anything outside the plain shape.
fn metric_array<'a>(c: &mut Cursor<'a>, max_points: usize) -> Option<Columns<'a>> {
    let mut columns = Columns::default();
    let mut points = 0usize;
    c.expect(b'[')?;
    if c.peek_after_space()? == b']' {
        c.pos += 1;
        return Some(columns);
    }
    loop {
        points += 1;
        if points > max_points {
            return None;
        }
        let (key, value, timestamp, step) = metric(c)?;
        if !METRIC_TIMESTAMPS.contains(&timestamp) {
            return None; // the general path words the error
        }
        columns.push_new_checked(key, value, timestamp, step, |key| {
            validate_key("metric", key).is_ok()
        })?;
        if !c.next_member(b']')? {
            return Some(columns);
        }
    }
}

/// One point: `{"key": "...", "value": n, "timestamp": n, "step": n}` in any order, `step` optional (0).
fn metric<'a>(c: &mut Cursor<'a>) -> Option<(&'a str, f64, i64, i64)> {
    let (mut key, mut value, mut timestamp, mut step) = (None, None, None, None);
    c.expect(b'{')?;
    let mut expected = CLIENT_ORDER.iter();
    loop {
        let name = c.name_likely(expected.next().copied())?;
        if is(name, b"key") && key.is_none() {
            key = Some(c.string()?);
        } else if is(name, b"value") && value.is_none() {
            value = Some(c.finite_number()?);
        } else if is(name, b"timestamp") && timestamp.is_none() {
            timestamp = Some(c.integer()?);
        } else if is(name, b"step") && step.is_none() {
            step = Some(c.integer()?);
        } else {
            return None;
        }
        if !c.next_member(b'}')? {
            break;
        }
    }
    Some((key?, value?, timestamp?, step.unwrap_or(0)))
}

/// The member order of the mlflow client's points, whose names are then matched as literals.
const CLIENT_ORDER: [&[u8]; 4] = [b"key", b"value", b"timestamp", b"step"];

/// A position in JSON text.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not JSON whitespace, left unconsumed.
    fn peek_after_space(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek_after_space()? == byte).then(|| self.pos += 1)
    }

    /// After a member: `true` at a comma (another follows), `false` at `close`.
    fn next_member(&mut self, close: u8) -> Option<bool> {
        let b = self.peek_after_space()?;
        self.pos += 1;
        match b {
            b',' => Some(true),
            _ if b == close => Some(false),
            _ => None,
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.peek_after_space().is_none().then_some(())
    }

    fn empty_array(&mut self) -> Option<()> {
        self.expect(b'[')?;
        self.expect(b']')
    }

    /// A string without escapes or control characters, borrowed from the text (quotes are ASCII, so both ends
    /// are character boundaries).
    fn string(&mut self) -> Option<&'a str> {
        let (start, end) = self.string_span()?;
        self.text.get(start..end)
    }

    /// A member's name and its colon, as bytes: names are compared as fixed-size arrays (see [`is`]), where a
    /// `str` match would call `memcmp` for each arm.
    fn name(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.string_span()?;
        self.expect(b':')?;
        Some(&self.bytes()[start..end])
    }

    /// [`Cursor::name`], compared first with `likely` as a literal: the scan for the closing quote was a seventh
    /// of the server's instructions per point (callgrind).
    fn name_likely(&mut self, likely: Option<&[u8]>) -> Option<&'a [u8]> {
        if let Some(lit) = likely {
            self.peek_after_space()?;
            let (b, open) = (self.bytes(), self.pos);
            let close = open + 1 + lit.len();
            if b[open] == b'"' && b.get(open + 1..close) == Some(lit) && b.get(close) == Some(&b'"')
            {
                self.pos = close + 1;
                self.expect(b':')?;
                return Some(&b[open + 1..close]);
            }
        }
        self.name()
    }

    /// Where the contents of the string at the cursor start and end, if it has no escapes or control
    /// characters; the cursor moves past its closing quote.
    fn string_span(&mut self) -> Option<(usize, usize)> {
        self.expect(b'"')?;
        let (b, start) = (self.bytes(), self.pos);
        let mut i = start;
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Some((start, i))
    }

    /// An integer that fits i64, read in one pass; a fraction, an exponent, a string or an overflow is the
    /// general path's (it accepts some of them, with its own rules).
    fn integer(&mut self) -> Option<i64> {
        self.peek_after_space()?;
        let b = self.bytes();
        let negative = b[self.pos] == b'-';
        let start = self.pos + usize::from(negative);
        let mut i = start;
        let mut v: i64 = 0;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10) {
            v = v.checked_mul(10)?.checked_add(i64::from(d))?;
            i += 1;
        }
        let leading_zero = i - start > 1 && b[start] == b'0';
        if i == start || leading_zero || matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.pos = i;
        Some(if negative { -v } else { v })
    }

    /// A finite number. The token is checked against JSON's grammar (std's parser takes more, such as `1.` or
    /// `+1`), then parsed by std, which rounds correctly as serde_json's `float_roundtrip` does; an integer
    /// token converts as serde's `u64`/`i64 as f64` would (both round to nearest). Beyond f64's range is an
    /// error on the general path, so it is left to it.
    fn finite_number(&mut self) -> Option<f64> {
        self.peek_after_space()?;
        let b = self.bytes();
        let start = self.pos;
        let mut i = start + usize::from(b[start] == b'-');
        let int_start = i;
        i = digits_from(b, i);
        if i == int_start || (i - int_start > 1 && b[int_start] == b'0') {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            let frac = i + 1;
            i = digits_from(b, frac);
            if i == frac {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
            let exp = i;
            i = digits_from(b, exp);
            if i == exp {
                return None;
            }
        }
        self.pos = i;
        let v: f64 = self.text[start..i].parse().ok()?;
        v.is_finite().then_some(v)
    }
}

/// The index of the first byte at or after `i` that is not an ASCII digit.
fn digits_from(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// `name` is the literal `lit`: an array comparison, which compiles to a few integer compares.
fn is<const N: usize>(name: &[u8], lit: &[u8; N]) -> bool {
    <&[u8; N]>::try_from(name).is_ok_and(|a| a == lit)
}

/// Points grouped into one scalar write per key, keys and points in request order: a batch repeats a few keys
/// in a cycle, so the key after the last one is tried before the map.
#[derive(Default)]
pub struct Columns<'a> {
    writes: Vec<ScalarWrite>,
    index: HashMap<&'a str, usize>,
    last: usize,
}

impl<'a> Columns<'a> {
    /// Appends a point whose key is known to be valid.
    pub fn push(&mut self, key: &'a str, value: f64, timestamp: i64, step: i64) {
        let _ = self.push_new_checked(key, value, timestamp, step, |_| true);
    }

    /// Appends a point; a key not seen before is added only if `accept` passes it (`None` otherwise).
    fn push_new_checked(
        &mut self,
        key: &'a str,
        value: f64,
        timestamp: i64,
        step: i64,
        accept: impl FnOnce(&str) -> bool,
    ) -> Option<()> {
        let i = self.column(key, accept)?;
        let w = &mut self.writes[i];
        w.steps.get_or_insert_with(Vec::new).push(Some(step));
        w.times
            .get_or_insert_with(Vec::new)
            .push(WallTime::from_millis(timestamp));
        w.values.push(F64(value));
        self.last = i;
        Some(())
    }

    fn column(&mut self, key: &'a str, accept: impl FnOnce(&str) -> bool) -> Option<usize> {
        // Not `% len`: a division per point showed in profiles.
        let next = if self.last + 1 < self.writes.len() {
            self.last + 1
        } else {
            0
        };
        if self.writes.get(next).is_some_and(|w| w.name == key) {
            return Some(next);
        }
        if let Some(&i) = self.index.get(key) {
            return Some(i);
        }
        if !accept(key) {
            return None;
        }
        self.writes.push(ScalarWrite {
            name: key.to_string(),
            steps: Some(Vec::new()),
            times: Some(Vec::new()),
            ..Default::default()
        });
        self.index.insert(key, self.writes.len() - 1);
        Some(self.writes.len() - 1)
    }

    pub fn finish(self) -> Vec<ScalarWrite> {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(metrics: &str) -> String {
        format!(r#"{{"run_id": "abc", "metrics": [{metrics}], "params": [], "tags": []}}"#)
    }

    fn read(body: &str) -> Option<Vec<ScalarWrite>> {
        plain_metrics(body.as_bytes(), 1000).map(|p| p.scalars)
    }

    #[test]
    fn reads_the_mlflow_clients_body_into_columns() {
        let b = body(
            r#"{"key": "loss", "value": 0.5, "timestamp": 1700000000000, "step": 3},
               {"key": "acc", "value": 1, "timestamp": 1700000000001, "step": 3},
               {"step": 4, "timestamp": 1700000000002, "value": -2.5e-3, "key": "loss"},
               {"key": "loss", "value": -0, "timestamp": 5}"#,
        );
        let p = plain_metrics(b.as_bytes(), 1000).expect("the plain shape");
        assert_eq!(p.run_id, "abc");
        let names: Vec<&str> = p.scalars.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["loss", "acc"]);
        let loss = &p.scalars[0];
        assert_eq!(loss.values, [F64(0.5), F64(-2.5e-3), F64(-0.0)]);
        assert!(loss.values[2].0.is_sign_negative());
        assert_eq!(loss.steps, Some(vec![Some(3), Some(4), Some(0)]));
        let times = loss.times.as_ref().unwrap();
        assert_eq!(times[0], WallTime::from_millis(1_700_000_000_000));
        assert_eq!(p.scalars[1].values, [F64(1.0)]);
    }

    #[test]
    fn leaves_every_other_shape_to_the_general_path() {
        let point = r#"{"key": "m", "value": 1.5, "timestamp": 1}"#;
        assert!(read(&body(point)).is_some(), "the control case");
        let others = [
            body(r#"{"key": "m\u0041", "value": 1, "timestamp": 1}"#),
            body("{\"key\": \"m\tx\", \"value\": 1, \"timestamp\": 1}"),
            body(r#"{"key": "m", "value": "NaN", "timestamp": 1}"#),
            body(r#"{"key": "m", "value": 1e999, "timestamp": 1}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": "1"}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": 1.5}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": 1, "step": null}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": 99999999999999999999}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": 1, "model_id": "x"}"#),
            body(r#"{"key": "m", "value": 1, "value": 2, "timestamp": 1}"#),
            body(r#"{"key": "m", "timestamp": 1}"#),
            body(r#"{"key": "../m", "value": 1, "timestamp": 1}"#),
            body(r#"{"key": "m", "value": 01, "timestamp": 1}"#),
            body(r#"{"key": "m", "value": 1., "timestamp": 1}"#),
            body(r#"{"key": "m", "value": .5, "timestamp": 1}"#),
            body(r#"{"key": "m", "value": +1, "timestamp": 1}"#),
            body(r#"{"key": "m", "value": 1, "timestamp": 1,}"#),
            body(r#"{"keys": "m", "value": 1, "timestamp": 1}"#),
            body(r#"{"ke": "m", "value": 1, "timestamp": 1}"#),
            body(r#"{"key\u0073": "m", "value": 1, "timestamp": 1}"#),
            body(r#"{"k\u0065y": "m", "value": 1, "timestamp": 1}"#),
            body(r#"{"key" "m", "value": 1, "timestamp": 1}"#),
            r#"{"run_id": "abc", "metrics": [{"key"#.to_string(),
            body(""),
            format!(
                r#"{{"run_id": "abc", "metrics": [{point}], "params": [{{"key": "p", "value": "v"}}]}}"#
            ),
            format!(r#"{{"run_id": "abc", "metrics": [{point}], "extra": 1}}"#),
            format!(r#"{{"metrics": [{point}]}}"#),
            format!(r#"{{"run_id": "abc", "metrics": [{point}]}} x"#),
            format!(r#"{{"run_id": "abc", "metrics": [{point}]"#),
        ];
        for b in others {
            assert!(read(&b).is_none(), "took {b}");
        }
        let mut latin1 = body(r#"{"key": "mÿ", "value": 1, "timestamp": 1}"#).into_bytes();
        let at = latin1.iter().position(|&b| b == 0xc3).unwrap();
        latin1.splice(at..at + 2, [0xff]);
        assert!(
            plain_metrics(&latin1, 1000).is_none(),
            "a key that is not UTF-8"
        );
        let many = [point; 3].join(",");
        assert!(
            plain_metrics(body(&many).as_bytes(), 2).is_none(),
            "past the limit"
        );
    }

    #[test]
    fn keys_cycle_through_the_prediction_and_the_map_alike() {
        let mut points = Vec::new();
        for step in 0..5 {
            for k in ["a", "b", "c"] {
                points.push(format!(
                    r#"{{"key": "{k}", "value": {step}, "timestamp": 0, "step": {step}}}"#
                ));
            }
            points.push(format!(
                r#"{{"key": "b", "value": -{step}, "timestamp": 0}}"#
            ));
        }
        let scalars = read(&body(&points.join(","))).unwrap();
        let counts: Vec<(&str, usize)> = scalars
            .iter()
            .map(|s| (s.name.as_str(), s.values.len()))
            .collect();
        assert_eq!(counts, [("a", 5), ("b", 10), ("c", 5)]);
        let b: Vec<f64> = scalars[1].values.iter().map(|v| v.0).collect();
        assert_eq!(b, [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0]);
    }
}
