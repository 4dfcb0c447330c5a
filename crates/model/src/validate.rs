//! Validation rules shared by every API. Limits are far above what the run-history API allowed (50 metrics,
//! 15 columns...) but still bounded, so no single request can exhaust the server.

use crate::error::{Error, Result};
use crate::ids::truncate;
use crate::metric::{Cell, MetricWrite, ScalarWrite, F64};
use std::collections::BTreeMap;

/// Longest metric, tag, property, param or column name, in characters (as MLflow counts its limits: a name in
/// Chinese or in emoji is as long as one in English).
pub const MAX_NAME_CHARS: usize = 500;
/// Longest tag, property or param value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest display name / experiment name, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 256 * 1024;
/// Longest single text point, in bytes.
pub const MAX_TEXT_POINT_BYTES: usize = 1024 * 1024;
/// Longest artifact path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest log stream name.
pub const MAX_STREAM_NAME_BYTES: usize = 100;
/// Largest single log append, in bytes.
pub const MAX_LOG_APPEND_BYTES: usize = 16 * 1024 * 1024;
/// Largest logged image, in bytes: an image travels as one request body (the server's JSON-route limit is
/// never below it), and anything bigger belongs in a file upload, which streams.
pub const MAX_IMAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest JSON request body the server reads (the native and MLflow APIs alike). Clients hold every request
/// under it: one over it is refused before it is sent, since the server closes the connection mid-body, which
/// reads as an outage and would be retried for good.
pub const MAX_REQUEST_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Largest metric write, as JSON, a client queues: the request that carries it also has its batch around it.
pub const MAX_WRITE_JSON_BYTES: usize = MAX_REQUEST_JSON_BYTES - 64 * 1024;
/// Longest experiment artifact location, in bytes (MLflow's default limit).
pub const MAX_LOCATION_BYTES: usize = 2048;

/// URI schemes whose artifact stores connect to the host the URI names. MLflow's server refuses them in an
/// experiment's location, since a client could otherwise point the server at any host; so does flightlog.
const HOST_SCHEMES: [&str; 9] = [
    "ftp", "sftp", "hdfs", "viewfs", "http", "https", "r2", "b2", "abfss",
];
/// Schemes whose URIs Python's `urlparse` reads `;params` from (the empty one is a plain path): MLflow
/// refuses a location with params, as one with a fragment.
const PARAM_SCHEMES: [&str; 5] = ["", "ftp", "http", "https", "sftp"];

/// A name (metric, tag key, property key, param key, column): non-empty, at most [`MAX_NAME_CHARS`], no
/// control characters. Unicode is welcome, and so are surrounding spaces: MLflow's keys may have them
/// (`log_metrics({"val loss ": ...})`), and refusing one refused the whole batch it came in.
pub fn name(field: &str, value: &str) -> Result<()> {
    text(field, value, MAX_NAME_CHARS)
}

/// A title (experiment name, display name): non-empty, at most [`MAX_TITLE_CHARS`], no control characters;
/// it may begin or end with spaces, as MLflow's experiment and run names may (`set_experiment("trial ")`).
pub fn title(field: &str, value: &str) -> Result<()> {
    text(field, value, MAX_TITLE_CHARS)
}

/// Non-empty, at most `max` characters, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if !fits_chars(value, max) {
        return Err(Error::invalid(
            field,
            format!(
                "is {} characters long, the limit is {max}",
                value.chars().count()
            ),
        ));
    }
    no_control_chars(field, value)
}

/// Whether `value` has at most `max` characters. Counting them costs a pass over the text, so it is done only
/// when the bytes are more than `max` (text within `max` bytes is within `max` characters).
pub fn fits_chars(value: &str, max: usize) -> bool {
    value.len() <= max || value.chars().count() <= max
}

/// A value (tag, property, param): bounded; may be empty; may contain newlines and tabs.
pub fn value(field: &str, value: &str) -> Result<()> {
    bounded(field, value, MAX_VALUE_BYTES)
}

pub fn description(field: &str, value: &str) -> Result<()> {
    bounded(field, value, MAX_DESCRIPTION_BYTES)
}

/// The size of a logged image, checked before it is queued, so that an image the server would refuse raises
/// at the log call instead of blocking the run's delivery behind it.
pub fn image_size(bytes: usize) -> Result<()> {
    if bytes > MAX_IMAGE_BYTES {
        return Err(Error::TooLarge {
            what: "image".into(),
            size: bytes as u64,
            limit: MAX_IMAGE_BYTES as u64,
        });
    }
    Ok(())
}

/// That a metric write fits in a request as JSON ([`MAX_WRITE_JSON_BYTES`]), checked by the SDK before it is
/// queued: a list of millions of values is valid point by point, but no request could carry it, and queued it
/// would hold up everything logged after it. Most writes are far under the limit by a cheap upper bound of
/// their size; only the others are measured, by encoding them.
pub fn write_size(m: &MetricWrite) -> Result<()> {
    if json_len_bound(m).is_some_and(|bound| bound <= MAX_WRITE_JSON_BYTES) {
        return Ok(());
    }
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, m).map_err(|e| Error::invalid(m.name(), e.to_string()))?;
    if counter.0 > MAX_WRITE_JSON_BYTES {
        return Err(Error::TooLarge {
            what: format!(
                "{} '{}' (as JSON; log it in parts, or upload it as a file)",
                m.kind(),
                truncate(m.name(), 80)
            ),
            size: counter.0 as u64,
            limit: MAX_WRITE_JSON_BYTES as u64,
        });
    }
    Ok(())
}

/// The most bytes a write's JSON can take, from its lengths alone (a number is at most 24 characters, a
/// character of text at most 6, as an escape), or none for a JSON value, which only encoding measures.
fn json_len_bound(m: &MetricWrite) -> Option<usize> {
    const NUMBER: usize = 26;
    let text = |s: &str| s.len() * 6 + 3;
    let cell = |c: &Cell| match c {
        Cell::Text(t) => text(t),
        _ => NUMBER,
    };
    let fixed = 1024 + text(m.name()) + m.description().map_or(0, text);
    let body = match m {
        MetricWrite::Text { values, .. } => values.iter().map(|v| text(v) + 3 * NUMBER).sum(),
        MetricWrite::List { values, .. } => values.len() * NUMBER,
        MetricWrite::Row { rows, .. } => rows
            .iter()
            .flat_map(|r| r.iter().map(|(k, c)| text(k) + cell(c)))
            .sum::<usize>()
            .saturating_add(rows.len() * 2 * NUMBER),
        MetricWrite::Table { columns, .. } => columns
            .iter()
            .map(|(k, cells)| text(k) + cells.iter().map(cell).sum::<usize>())
            .sum(),
        MetricWrite::Histogram { limits, counts, .. } => (limits.len() + counts.len()) * NUMBER,
        MetricWrite::Json { .. } => return None,
    };
    Some(fixed.saturating_add(body))
}

/// Counts the bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every rule for a non-scalar metric write that needs no stored state: the store checks a whole batch with it
/// before storing anything, the SDK before queuing, and the TensorBoard ingest point by point (so one bad value
/// in an event file is skipped alone instead of refusing the batch it would have come in).
pub fn metric_write(m: &MetricWrite) -> Result<()> {
    name("metric name", m.name())?;
    description("description", m.description().unwrap_or(""))?;
    match m {
        MetricWrite::Text {
            name,
            steps,
            times,
            values,
            ..
        } => {
            same_len(name, "steps", steps.as_ref().map(Vec::len), values.len())?;
            same_len(name, "times", times.as_ref().map(Vec::len), values.len())?;
            values.iter().try_for_each(|v| text_point(name, v))
        }
        MetricWrite::Row {
            name, rows, times, ..
        } => {
            same_len(name, "times", times.as_ref().map(Vec::len), rows.len())?;
            rows.iter()
                .flat_map(BTreeMap::keys)
                .try_for_each(|col| self::name("column name", col))
        }
        MetricWrite::Table { name, columns, .. } => table_columns(name, columns),
        MetricWrite::Json { schema, .. } => self::name("schema", schema),
        MetricWrite::Histogram {
            name,
            limits,
            counts,
            lower,
            ..
        } => histogram(name, limits.len(), counts.len(), *lower),
        MetricWrite::List { .. } => Ok(()),
    }
}

/// A scalar write: its name, description, and step and time columns as long as its values.
pub fn scalar_write(s: &ScalarWrite) -> Result<()> {
    name("metric name", &s.name)?;
    description("description", s.description.as_deref().unwrap_or(""))?;
    let n = s.values.len();
    same_len(&s.name, "steps", s.steps.as_ref().map(Vec::len), n)?;
    same_len(&s.name, "times", s.times.as_ref().map(Vec::len), n)
}

/// That a column of `values` of metric `name` has as many `what` (steps, times) as values, when it has any.
pub fn same_len(name: &str, what: &str, len: Option<usize>, values: usize) -> Result<()> {
    match len {
        Some(n) if n != values => Err(Error::invalid(
            what,
            format!("metric '{name}' has {n} {what} for {values} values; the columns must have equal lengths"),
        )),
        _ => Ok(()),
    }
}

/// One text point of metric `name`: at most [`MAX_TEXT_POINT_BYTES`].
pub fn text_point(name: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_POINT_BYTES {
        return Err(Error::TooLarge {
            what: format!("a text point of metric '{name}'"),
            size: value.len() as u64,
            limit: MAX_TEXT_POINT_BYTES as u64,
        });
    }
    Ok(())
}

/// A histogram point of metric `name`: a count per bucket limit, and a lower edge that is a number.
pub fn histogram(name: &str, limits: usize, counts: usize, lower: Option<F64>) -> Result<()> {
    if limits != counts {
        return Err(Error::invalid(
            "counts",
            format!("histogram '{name}' has {limits} limits and {counts} counts; they must be equally long"),
        ));
    }
    // Not checked against the first limit: files whose first bucket is empty hold a `min` above its limit,
    // and TensorBoard reads them as they are.
    if lower.is_some_and(|l| l.0.is_nan()) {
        return Err(Error::invalid(
            "lower",
            format!("histogram '{name}': the lower edge must be a number, not NaN"),
        ));
    }
    Ok(())
}

/// A table's columns: at least one, each validly named, all equally long.
fn table_columns(table: &str, columns: &BTreeMap<String, Vec<Cell>>) -> Result<()> {
    if columns.is_empty() {
        return Err(Error::invalid(
            "columns",
            format!("table '{table}' has no columns"),
        ));
    }
    let len = columns.values().next().map_or(0, Vec::len);
    for (col, cells) in columns {
        name("column name", col)?;
        if cells.len() != len {
            return Err(Error::invalid(
                "columns",
                format!("table '{table}': column '{col}' has {} cells, others have {len}; columns must have equal lengths", cells.len()),
            ));
        }
    }
    Ok(())
}

/// A log stream name: letters, digits, `_`, `-`, `.`; 1 to 100 characters.
pub fn stream_name(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_STREAM_NAME_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "stream",
            format!(
                "'{}' is not a log stream name (1-100 of letters, digits, '_', '-', '.')",
                truncate(value, 80)
            ),
        ))
    }
}

/// Longest folder or file name in an artifact path: what filesystems allow (NAME_MAX).
pub const MAX_PATH_SEGMENT_BYTES: usize = 255;

/// Checks an artifact path and returns it normalized ('/'-separated, no empty or '.' segments). Rejects
/// absolute paths, `..`, backslashes, NUL and control characters, and names over [`MAX_PATH_SEGMENT_BYTES`]: a
/// path can never leave its owner's storage, and what the API accepts the filesystem can hold.
pub fn artifact_path(path: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidPath {
        path: truncate(path, 200),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("the path is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(&format!("longer than {MAX_PATH_BYTES} bytes")));
    }
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return Err(bad(
            "absolute paths are not allowed; give a path relative to the run's artifacts",
        ));
    }
    if path.contains('\\') {
        return Err(bad("use '/' to separate folders, not '\\'"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("control characters are not allowed"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(bad("'..' is not allowed")),
            p if p.len() > MAX_PATH_SEGMENT_BYTES => {
                return Err(bad(&format!(
                    "'{}' is {} bytes; each folder or file name may be at most {MAX_PATH_SEGMENT_BYTES} bytes",
                    truncate(p, 40),
                    p.len()
                )))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("the path names no file"));
    }
    Ok(parts.join("/"))
}

/// An experiment's artifact location, where MLflow clients put its runs' files (`<location>/<run>/artifacts`),
/// checked as MLflow's server checks it: bounded, not a `runs:` URI, no fragment or params, no `..` in its query,
/// no scheme that names another host. Returns it as stored: a relative local path is made absolute against the
/// server's working directory, as MLflow does (clients then write there on their own machine).
pub fn artifact_location(location: &str) -> Result<String> {
    let bad = |why: String| Error::invalid("artifact_location", why);
    if location.is_empty() {
        return Err(bad(
            "must not be empty; leave it out for the server's own storage".into(),
        ));
    }
    bounded("artifact_location", location, MAX_LOCATION_BYTES)?;
    no_control_chars("artifact_location", location)?;
    let (scheme, rest) = split_scheme(location);
    if scheme == "runs" {
        return Err(bad(format!("cannot be a runs:/ URI, given '{location}'")));
    }
    let names_host = rest.strip_prefix("//").is_some_and(|r| !r.starts_with('/'));
    if HOST_SCHEMES.contains(&scheme.as_str()) || (scheme == "mlflow-artifacts" && names_host) {
        return Err(bad(format!(
            "cannot use the '{scheme}' scheme: it names a host other than this server's storage, which the \
             server would then connect to; leave artifact_location out to keep files on this server, or give \
             a location clients write to themselves (s3://, gs://, file://, a path)"
        )));
    }
    let before_fragment = rest.split('#').next().unwrap_or(rest);
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let last_segment = path.rsplit('/').next().unwrap_or_default();
    if rest.contains('#')
        || (PARAM_SCHEMES.contains(&scheme.as_str()) && last_segment.contains(';'))
    {
        return Err(bad(
            "a URL with a fragment (#) or params (;) cannot be an artifact location".into(),
        ));
    }
    if percent_decoded(query).contains("..") {
        return Err(bad("its query string must not contain '..'".into()));
    }
    let relative = scheme.is_empty() && !std::path::Path::new(location).is_absolute();
    match std::env::current_dir() {
        Ok(cwd) if relative => Ok(cwd.join(location).to_string_lossy().into_owned()),
        _ => Ok(location.to_string()),
    }
}

/// A URI's scheme, lower-cased, and what follows its colon, as Python's `urlsplit` reads them: letters first,
/// then letters, digits, `+`, `-` or `.`; none for a plain path.
fn split_scheme(uri: &str) -> (String, &str) {
    match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), uri),
    }
}

/// `%XX` escapes decoded until nothing changes (at most 10 rounds, as MLflow does), so `%252e%252e` is `..`.
fn percent_decoded(text: &str) -> String {
    let mut current = text.to_string();
    for _ in 0..10 {
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn bounded(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {max}", value.len()),
        ))
    } else {
        Ok(())
    }
}

fn no_control_chars(field: &str, value: &str) -> Result<()> {
    if value.chars().any(|c| c.is_control()) {
        Err(Error::invalid(
            field,
            format!(
                "'{}' contains control characters",
                truncate(value, 80).escape_debug()
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write no request could carry is refused by its measured size; one over the cheap bound but short
    /// as encoded (3M zeros bound at 78 MB, 12 MB as JSON) passes.
    #[test]
    fn writes_must_fit_in_a_request() {
        let list = |v: f64, n: usize| MetricWrite::List {
            name: "per_sample".into(),
            description: None,
            values: vec![F64(v); n],
            step: None,
            time: None,
        };
        assert!(write_size(&list(0.5, 10)).is_ok());
        assert!(write_size(&list(0.0, 3_000_000)).is_ok());
        let err = write_size(&list(1.0 / 3.0, 4_000_000)).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, .. } if size > 76_000_000),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(
                "list 'per_sample' (as JSON; log it in parts, or upload it as a file) is too large: "
            ),
            "{err}"
        );
        let text = MetricWrite::Text {
            name: "t".into(),
            description: None,
            steps: None,
            times: None,
            values: vec!["\u{1}".repeat(1 << 20); 12],
        };
        assert!(
            matches!(write_size(&text), Err(Error::TooLarge { .. })),
            "12 MiB of control characters are 72 MiB of escapes"
        );
    }

    /// Names and titles follow one rule: surrounding spaces and any script welcome, the limit in
    /// characters, no control characters, never empty.
    #[test]
    fn names_and_titles() {
        type Check = fn(&str, &str) -> Result<()>;
        for (check, field) in [(name as Check, "metric"), (title as Check, "name")] {
            for good in [
                "loss",
                "train/loss é 損失",
                " x",
                "val loss ",
                " ",
                &"损".repeat(500),
            ] {
                assert!(check(field, good).is_ok(), "{field} {good:?} refused");
            }
            let refused = |value: &str| check(field, value).unwrap_err().to_string();
            assert_eq!(refused(""), format!("invalid {field}: must not be empty"));
            assert_eq!(
                refused(&"损".repeat(501)),
                format!("invalid {field}: is 501 characters long, the limit is 500")
            );
            assert!(refused(&"x".repeat(501)).contains("the limit is 500"));
            assert!(refused("a\nb").contains("control characters"));
        }
        assert!(fits_chars(&"损".repeat(500), 500) && !fits_chars(&"损".repeat(501), 500));
    }

    #[test]
    fn artifact_paths_cannot_escape() {
        assert_eq!(artifact_path("a/./b//c.txt").unwrap(), "a/b/c.txt");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "C:/x",
            "a/\0b",
            "./.",
            &format!("a/{}/b", "x".repeat(256)),
        ] {
            assert!(
                matches!(artifact_path(bad), Err(Error::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn artifact_locations_are_checked_as_mlflow_checks_them() {
        for good in [
            "s3://bucket/path",
            "gs://b/p/",
            "file:///tmp/x",
            "/mnt/shared/exp",
            "mlflow-artifacts:/custom/x",
            "mlflow-artifacts:///custom/x",
            "s3://b/p;v=1",
            "s3://b/p?versioned=true",
        ] {
            assert_eq!(artifact_location(good).unwrap(), good);
        }
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            artifact_location("relative/dir").unwrap(),
            cwd.join("relative/dir").to_string_lossy()
        );
        let refused = |loc: &str| artifact_location(loc).unwrap_err().to_string();
        assert!(refused("http://example.com/x").contains("cannot use the 'http' scheme"));
        assert!(refused("HTTPS://example.com/x").contains("'https' scheme"));
        assert!(refused("mlflow-artifacts://other:5000/x").contains("'mlflow-artifacts' scheme"));
        assert!(refused("runs:/abc/model").contains("runs:/ URI"));
        assert!(refused("s3://b/p#frag").contains("fragment"));
        assert!(refused("/tmp/a;b").contains("params"));
        assert!(refused("s3://b/p?x=%252e%252e/y").contains("'..'"));
        assert!(refused("").contains("must not be empty"));
        assert!(refused(&format!("s3://b/{}", "x".repeat(2048))).contains("the limit is 2048"));
    }

    #[test]
    fn metric_writes_are_refused_with_what_is_wrong() {
        let text = |values: Vec<String>, steps| MetricWrite::Text {
            name: "notes".into(),
            description: None,
            steps,
            times: None,
            values,
        };
        let refused = |m: &MetricWrite| metric_write(m).unwrap_err().to_string();
        assert!(metric_write(&text(vec!["a".into()], Some(vec![Some(1)]))).is_ok());
        assert_eq!(
            refused(&text(vec!["a".into()], Some(vec![]))),
            "invalid steps: metric 'notes' has 0 steps for 1 values; the columns must have equal lengths"
        );
        let big = "x".repeat(MAX_TEXT_POINT_BYTES + 1);
        assert!(refused(&text(vec![big], None)).contains("a text point of metric 'notes'"));
        let hist = |limits: usize, lower: Option<f64>| MetricWrite::Histogram {
            name: "h".into(),
            description: None,
            limits: vec![F64(1.0); limits],
            counts: vec![F64(1.0); 2],
            lower: lower.map(F64),
            step: None,
            time: None,
        };
        assert!(metric_write(&hist(2, Some(0.0))).is_ok());
        assert_eq!(
            refused(&hist(3, None)),
            "invalid counts: histogram 'h' has 3 limits and 2 counts; they must be equally long"
        );
        assert!(refused(&hist(2, Some(f64::NAN))).contains("lower edge must be a number"));
        let table = MetricWrite::Table {
            name: "t".into(),
            description: None,
            columns: BTreeMap::new(),
            time: None,
        };
        assert_eq!(refused(&table), "invalid columns: table 't' has no columns");
    }

    #[test]
    fn stream_names() {
        assert!(stream_name("stdout").is_ok());
        assert!(stream_name("python.logging-1").is_ok());
        assert!(stream_name("a/b").is_err());
        assert!(stream_name(".hidden").is_err());
    }
}
