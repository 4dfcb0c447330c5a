//! Metric kinds and their wire forms: what a batch carries in, what a read gives back, and the stream events
//! that announce new data. Scalars travel as columns (steps, times, values) because that is how they are stored
//! and drawn, and because a column of a million numbers parses far faster than a million small objects.

use crate::time::WallTime;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// What a metric name holds. One name has one kind for the life of a run.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// f64 values at steps: `log(name, number)`.
    Scalar,
    /// String values at steps: `log(name, "text")`.
    Text,
    /// A whole array of numbers logged at once: `log_list`.
    List,
    /// A table that grows one row at a time: `log_row`.
    Row,
    /// A dict of equal-length columns logged at once: `log_table`.
    Table,
    /// Images stored as artifacts: `log_image`.
    Image,
    /// A JSON value with a schema name (confusion matrix, accuracy table...).
    Json,
    /// Histograms (bucket limits and counts), from TensorBoard ingest.
    Histogram,
}

impl MetricKind {
    pub const ALL: [MetricKind; 8] = [
        MetricKind::Scalar,
        MetricKind::Text,
        MetricKind::List,
        MetricKind::Row,
        MetricKind::Table,
        MetricKind::Image,
        MetricKind::Json,
        MetricKind::Histogram,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Scalar => "scalar",
            MetricKind::Text => "text",
            MetricKind::List => "list",
            MetricKind::Row => "row",
            MetricKind::Table => "table",
            MetricKind::Image => "image",
            MetricKind::Json => "json",
            MetricKind::Histogram => "histogram",
        }
    }
    pub fn parse(s: &str) -> Option<MetricKind> {
        MetricKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An f64 that survives JSON: finite values are numbers, NaN and ±Inf are the strings "NaN", "Infinity",
/// "-Infinity" (MLflow's convention). Reads accept either form.
#[derive(Clone, Copy, Debug, Default)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    /// Bitwise for NaN so that "NaN kept exactly" can be tested; numeric otherwise.
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || (self.0.is_nan() && other.0.is_nan())
    }
}

impl Serialize for F64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match non_finite_name(self.0) {
            None => s.serialize_f64(self.0),
            Some(name) => s.serialize_str(name),
        }
    }
}

/// How flightlog spells a non-finite value everywhere it is written as text (JSON, CSV, tables): "NaN",
/// "Infinity" or "-Infinity"; `None` for finite values.
pub fn non_finite_name(v: f64) -> Option<&'static str> {
    if v.is_finite() {
        None
    } else if v.is_nan() {
        Some("NaN")
    } else if v > 0.0 {
        Some("Infinity")
    } else {
        Some("-Infinity")
    }
}

/// Parses the three non-finite spellings (and their common variants); `None` for any other string.
pub fn parse_non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" | "NAN" => Some(f64::NAN),
        "Infinity" | "inf" | "Inf" | "+Infinity" | "infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" | "-Inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = F64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or one of \"NaN\", \"Infinity\", \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64, E> {
                Ok(F64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F64, E> {
                parse_non_finite(v)
                    .map(F64)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// One cell of a row or table: a number (NaN/±Inf as in [`F64`]), a string, a bool, or null.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Bool(bool),
    Number(F64),
    Text(String),
}

/// Read by hand rather than as an untagged enum, whose refusal of a list or an object in a cell said only
/// "data did not match any variant". "NaN", "Infinity" and "-Infinity" are numbers, as in [`F64`].
impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Cell;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a cell: a number, text, true, false or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
                Ok(Cell::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Cell, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell, E> {
                Ok(Cell::Bool(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell, E> {
                Ok(Cell::Number(F64(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell, E> {
                Ok(Cell::Number(F64(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell, E> {
                Ok(Cell::Number(F64(v as f64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell, E> {
                Ok(match parse_non_finite(v) {
                    Some(x) => Cell::Number(F64(x)),
                    None => Cell::Text(v.to_string()),
                })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Cell, E> {
                Ok(match parse_non_finite(&v) {
                    Some(x) => Cell::Number(F64(x)),
                    None => Cell::Text(v),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// New scalar points for one metric, as columns (the hot path of ingest, so a plain struct that serde parses
/// without buffering). `steps[i] == None` (or no `steps`) means "the next integer after the previous step of
/// this series, starting at 0"; no `times` means "now" on the server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarWrite {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Option<i64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<WallTime>>,
    pub values: Vec<F64>,
}

/// One entry of a batch for the kinds other than scalars: new data for one metric of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetricWrite {
    /// String values at steps; same step and time rules as [`ScalarWrite`].
    Text {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<Vec<Option<i64>>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        times: Option<Vec<WallTime>>,
        values: Vec<String>,
    },
    List {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        values: Vec<F64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<WallTime>,
    },
    Row {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Each row maps column name to cell; columns may differ between rows (missing cells read as null).
        rows: Vec<BTreeMap<String, Cell>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        times: Option<Vec<WallTime>>,
    },
    Table {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Equal-length columns; logging a table again under the same name appends its rows.
        columns: BTreeMap<String, Vec<Cell>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<WallTime>,
    },
    Json {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// What the value is, e.g. "confusion_matrix", "accuracy_table".
        schema: String,
        value: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<WallTime>,
    },
    Histogram {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Upper edges of the buckets, ascending.
        limits: Vec<F64>,
        counts: Vec<F64>,
        /// The first bucket's lower edge (TensorBoard's `min`), when known: `limits` are upper edges only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<F64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<WallTime>,
    },
}

impl MetricWrite {
    pub fn name(&self) -> &str {
        match self {
            MetricWrite::Text { name, .. }
            | MetricWrite::List { name, .. }
            | MetricWrite::Row { name, .. }
            | MetricWrite::Table { name, .. }
            | MetricWrite::Json { name, .. }
            | MetricWrite::Histogram { name, .. } => name,
        }
    }
    pub fn description(&self) -> Option<&str> {
        match self {
            MetricWrite::Text { description, .. }
            | MetricWrite::List { description, .. }
            | MetricWrite::Row { description, .. }
            | MetricWrite::Table { description, .. }
            | MetricWrite::Json { description, .. }
            | MetricWrite::Histogram { description, .. } => description.as_deref(),
        }
    }
    pub fn kind(&self) -> MetricKind {
        match self {
            MetricWrite::Text { .. } => MetricKind::Text,
            MetricWrite::List { .. } => MetricKind::List,
            MetricWrite::Row { .. } => MetricKind::Row,
            MetricWrite::Table { .. } => MetricKind::Table,
            MetricWrite::Json { .. } => MetricKind::Json,
            MetricWrite::Histogram { .. } => MetricKind::Histogram,
        }
    }
    /// How many stored points (scalar/text points, rows, or records) this entry adds.
    pub fn point_count(&self) -> usize {
        match self {
            MetricWrite::Text { values, .. } => values.len(),
            MetricWrite::Row { rows, .. } => rows.len(),
            MetricWrite::Table { columns, .. } => columns.values().next().map_or(0, Vec::len),
            MetricWrite::List { .. } | MetricWrite::Json { .. } | MetricWrite::Histogram { .. } => {
                1
            }
        }
    }
}

/// A batch of writes to one run, applied atomically. A batch with a `batch_id` that was already applied to
/// this run is acknowledged again without being applied twice (clients retry after timeouts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalars: Vec<ScalarWrite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricWrite>,
    /// Text appended to log streams, in order, deduplicated with the rest of the batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogAppend>,
    /// Whether a scalar point equal to one its series already holds, or to one earlier in the batch (same
    /// step, time and value, NaN equal to NaN), is left out. MLflow's rule: its metrics table is keyed on the
    /// whole point, and its clients count on that, sending points again in new requests (XGBoost autologging
    /// sends its first iteration twice). Set by the MLflow API only, never read from the wire: the native API
    /// keeps every point it is sent and makes retries safe with `batch_id`.
    #[serde(skip)]
    pub drop_repeated_points: bool,
}

/// Text to append to one of the run's log streams.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAppend {
    pub stream: String,
    pub data: String,
}

impl Batch {
    /// Points, rows and records the batch adds, all kinds together.
    pub fn point_count(&self) -> usize {
        self.scalars.iter().map(|s| s.values.len()).sum::<usize>()
            + self
                .metrics
                .iter()
                .map(MetricWrite::point_count)
                .sum::<usize>()
    }
}

/// What the store says after a batch: how many points it holds, and whether it had seen the batch before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    pub points: u64,
    pub duplicate: bool,
}

/// An image to store: its bytes travel separately (request body / artifact stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageWrite {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<WallTime>,
    /// "image/png", "image/jpeg", "image/gif" or "image/svg+xml"; checked against the bytes.
    pub media_type: String,
    /// Makes the write idempotent like a batch's `batch_id`: a write repeated with the same id (a retry after
    /// a timeout) stores nothing and returns the record the first one stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// Summary of one metric of a run: enough to list, filter and sort without reading points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub name: String,
    pub kind: MetricKind,
    #[serde(default)]
    pub description: String,
    /// Points (scalar/text), rows (row), tables logged (table: each `log_table` call is one record holding its
    /// columns) or records (list/image/json/histogram) stored.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<i64>,
    /// The latest value: a number (F64 form) for scalars, a string for text, null otherwise.
    #[serde(default)]
    pub last_value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<F64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<F64>,
    /// Schema name of json metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Column names of row/table metrics, in first-seen order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Of a scalar series, the point MLflow reports as the metric's latest (see [`TopPoint`]) where that is not
    /// the last point (`last_*`, which the native API serves); None where it is.
    #[serde(skip)]
    pub top: Option<TopPoint>,
}

/// The point of a scalar series that MLflow's server keeps as its "latest metric": the greatest by (step,
/// time, value), a NaN counting as 0 and ±Inf as ±f64::MAX (how MLflow stores them), the first logged of equal
/// ones. It differs from the point logged last when steps come out of order (a validation loop logging an
/// earlier step, a re-logged step), and MLflow's run views, filters and ordering use it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopPoint {
    pub step: i64,
    pub time: WallTime,
    pub value: F64,
}

impl TopPoint {
    /// The greater of `self` and `other` by MLflow's rule (`self` on a tie: it was logged first).
    pub fn max(self, other: TopPoint) -> TopPoint {
        if other.key() > self.key() {
            other
        } else {
            self
        }
    }

    fn key(&self) -> (i64, i64, f64) {
        (self.step, self.time.0, mlflow_stored_value(self.value.0))
    }
}

/// A value as MLflow's SQL store holds it, which is how MLflow compares and orders points: NaN as 0 (with a
/// flag beside it), ±Inf as ±f64::MAX.
pub fn mlflow_stored_value(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

/// Scalar points read back, as columns of equal length, in the order they were logged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalarSeries {
    pub steps: Vec<i64>,
    pub times: Vec<WallTime>,
    pub values: Vec<F64>,
}

impl ScalarSeries {
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// A copy of points `from..to`, cut short where a column is (none is, by contract).
    pub fn slice(&self, from: usize, to: usize) -> ScalarSeries {
        let cut = |len: usize| from.min(len)..to.min(len);
        ScalarSeries {
            steps: self.steps[cut(self.steps.len())].to_vec(),
            times: self.times[cut(self.times.len())].to_vec(),
            values: self.values[cut(self.values.len())].to_vec(),
        }
    }
}

/// Which points of a series to read: by position (index in logging order) and/or by step range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadRange {
    /// First point index (0-based, in logging order).
    #[serde(default)]
    pub start_index: u64,
    /// At most this many points (None: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only points with step >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step: Option<i64>,
    /// Only points with step <= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<i64>,
}

/// One stored record of a non-scalar metric (text point, list, row, table chunk, image, json, histogram).
/// `value` is: a string (text), an array of numbers (list), an object column→cell (row), an object
/// column→array (table), `{"path", "media_type"}` (image), `{"schema", "value"}` (json),
/// `{"limits", "counts"}` (histogram).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub index: u64,
    pub step: i64,
    pub time: WallTime,
    pub value: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_point_is_the_greatest_by_step_time_and_value_as_on_mlflow() {
        let p = |step, time, value| TopPoint {
            step,
            time: WallTime(time),
            value: F64(value),
        };
        let top = |points: &[TopPoint]| points.iter().copied().reduce(TopPoint::max).unwrap();
        assert_eq!(top(&[p(10, 1, 0.5), p(5, 2, 0.9)]), p(10, 1, 0.5));
        assert_eq!(top(&[p(0, 5, 1.0), p(0, 4, 2.0)]), p(0, 5, 1.0));
        assert_eq!(top(&[p(0, 5, 1.0), p(0, 5, 2.0)]), p(0, 5, 2.0));
        let nan = top(&[p(0, 5, -1.0), p(0, 5, f64::NAN)]);
        assert!(nan.value.0.is_nan(), "NaN counts as 0, above -1");
        assert_eq!(top(&[p(0, 5, 1.0), p(0, 5, f64::NAN)]), p(0, 5, 1.0));
        assert!(
            top(&[p(0, 5, f64::NAN), p(0, 5, 0.0)]).value.0.is_nan(),
            "of equal points the first logged stays"
        );
        assert_eq!(
            top(&[p(0, 1, f64::INFINITY), p(0, 1, f64::MAX)]).value.0,
            f64::INFINITY
        );
    }

    #[test]
    fn non_finite_values_travel_as_strings() {
        let v = vec![
            F64(1.5),
            F64(f64::NAN),
            F64(f64::INFINITY),
            F64(f64::NEG_INFINITY),
        ];
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(s, r#"[1.5,"NaN","Infinity","-Infinity"]"#);
        let back: Vec<F64> = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
        assert!(serde_json::from_str::<F64>("\"abc\"").is_err());
    }

    #[test]
    fn batch_wire_form() {
        let json = r#"{"batch_id":"b1","scalars":[{"name":"loss","steps":[0,null],"values":[0.5,"NaN"]}],"metrics":[
            {"kind":"text","name":"msg","values":["a","b"]},
            {"kind":"row","name":"r","rows":[{"a":1,"b":"x","c":null,"d":true}]},
            {"kind":"json","name":"cm","schema":"confusion_matrix","value":{"data":[[1,2],[3,4]]}}
        ]}"#;
        let b: Batch = serde_json::from_str(json).unwrap();
        assert_eq!(b.metrics.len(), 3);
        assert_eq!(b.scalars[0].steps, Some(vec![Some(0), None]));
        assert_eq!(b.metrics[0].kind(), MetricKind::Text);
        assert_eq!(b.point_count(), 2 + 2 + 1 + 1);
        let MetricWrite::Row { rows, .. } = &b.metrics[1] else {
            panic!("row expected")
        };
        assert_eq!(rows[0]["a"], Cell::Number(F64(1.0)));
        assert_eq!(rows[0]["b"], Cell::Text("x".into()));
        assert_eq!(rows[0]["c"], Cell::Null);
        assert_eq!(rows[0]["d"], Cell::Bool(true));
        let again: Batch = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn cells_read_non_finite_text_as_numbers_and_say_what_a_cell_is() {
        let cells: Vec<Cell> =
            serde_json::from_str(r#"[null, false, 2, -3, 0.5, "NaN", "-Infinity", "x"]"#).unwrap();
        assert_eq!(cells[2], Cell::Number(F64(2.0)));
        assert_eq!(cells[3], Cell::Number(F64(-3.0)));
        assert!(matches!(cells[5], Cell::Number(F64(v)) if v.is_nan()));
        assert_eq!(cells[6], Cell::Number(F64(f64::NEG_INFINITY)));
        assert_eq!(cells[7], Cell::Text("x".into()));
        let err = serde_json::from_str::<Cell>(r#"{"x":1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid type: map, expected a cell: a number, text, true, false or null"
            ),
            "{err}"
        );
    }
}
