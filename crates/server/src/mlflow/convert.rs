//! flightlog types ↔ MLflow JSON, and MLflow's rules on incoming keys and values (validation.py).

use super::error::{MlError, MlResult};
use flightlog_model::{Experiment, Lifecycle, MetricKind, Run, RunStatus, SeriesInfo, WallTime};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// The tag MLflow keeps the run name in; here it is the run's display name.
pub const RUN_NAME_TAG: &str = "mlflow.runName";
/// The tag MLflow keeps the parent run in; here it is the run's parent id.
pub const PARENT_TAG: &str = "mlflow.parentRunId";
/// The tag MLflow keeps a run's description in (the UI's notes); here it is the run's description.
pub const NOTE_TAG: &str = "mlflow.note.content";
/// MLflow's limits (mlflow/utils/validation.py).
pub const MAX_KEY: usize = 250;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_TAG_VALUE: usize = 8000;
pub const MAX_EXPERIMENT_NAME: usize = 500;
pub const MAX_EXPERIMENT_TAG_VALUE: usize = 20000;
/// Largest finite double: MLflow stores ±Inf as these.
const MAX_DOUBLE: f64 = f64::MAX;

/// A `{key, value}` pair as MLflow sends params and tags.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct KeyValue {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

pub fn millis(t: WallTime) -> i64 {
    t.millis()
}

/// A double as MLflow writes it: NaN and ±Inf as strings.
pub fn double(v: f64) -> Value {
    match flightlog_model::non_finite_name(v) {
        Some(name) => json!(name),
        None => json!(v),
    }
}

/// The latest time in milliseconds flightlog stores exactly (its times are microseconds in an i64).
pub const MAX_MILLIS: i64 = i64::MAX / 1000;

/// The metric timestamps (ms) accepted: not negative, as MLflow requires, and not past [`MAX_MILLIS`] (stored
/// clamped, distinct points would become equal and be stored once).
pub const METRIC_TIMESTAMPS: RangeInclusive<i64> = 0..=MAX_MILLIS;

/// A metric timestamp (ms) checked against [`METRIC_TIMESTAMPS`].
pub fn metric_timestamp(ms: i64) -> MlResult<i64> {
    match ms {
        _ if METRIC_TIMESTAMPS.contains(&ms) => Ok(ms),
        ..0 => Err(MlError::invalid(format!(
            "Timestamp must be a nonnegative long (64-bit integer), got {ms}"
        ))),
        _ => Err(out_of_range("timestamp", ms)),
    }
}

/// A run's start or end time (ms) as flightlog stores it; beyond [`MAX_MILLIS`] either way is a 400.
pub fn run_time(field: &str, ms: i64) -> MlResult<WallTime> {
    if (-MAX_MILLIS..=MAX_MILLIS).contains(&ms) {
        Ok(WallTime::from_millis(ms))
    } else {
        Err(out_of_range(field, ms))
    }
}

fn out_of_range(field: &str, ms: i64) -> MlError {
    MlError::invalid(format!(
        "{field} {ms} is out of range: flightlog stores milliseconds up to {MAX_MILLIS} either side of 1970"
    ))
}

/// ±Inf become ±max double, as MLflow stores them; NaN is kept (and read back as "NaN").
pub fn clamp_infinite(v: f64) -> f64 {
    if v.is_infinite() {
        MAX_DOUBLE.copysign(v)
    } else {
        v
    }
}

/// MLflow status names. Statuses MLflow has no word for map to the nearest: not yet running → SCHEDULED,
/// still running (finalizing, asked to cancel) → RUNNING.
pub fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::NotStarted | RunStatus::Queued | RunStatus::Preparing => "SCHEDULED",
        RunStatus::Running | RunStatus::Finalizing | RunStatus::CancelRequested => "RUNNING",
        RunStatus::Completed => "FINISHED",
        RunStatus::Failed => "FAILED",
        RunStatus::Canceled => "KILLED",
    }
}

pub fn parse_status(s: &str) -> MlResult<RunStatus> {
    // By name, or by the enum's number in mlflow's protobuf (which its JSON parser also takes).
    match s {
        "RUNNING" | "1" => Ok(RunStatus::Running),
        "SCHEDULED" | "2" => Ok(RunStatus::Queued),
        "FINISHED" | "3" => Ok(RunStatus::Completed),
        "FAILED" | "4" => Ok(RunStatus::Failed),
        "KILLED" | "5" => Ok(RunStatus::Canceled),
        other => Err(MlError::invalid(format!(
            "Invalid value '{other}' for parameter 'status': expected one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED"
        ))),
    }
}

pub fn lifecycle_name(l: Lifecycle) -> &'static str {
    l.as_str()
}

pub fn key_values(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

pub fn experiment_json(e: &Experiment) -> Value {
    json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": super::artifact_roots::artifact_location(e),
        "lifecycle_stage": lifecycle_name(e.lifecycle),
        "creation_time": millis(e.created_time),
        "last_update_time": millis(e.last_update_time),
        "tags": key_values(&e.tags),
    })
}

/// The latest value of a scalar series as MLflow means it: (value, timestamp ms, step) of the series' top point
/// (the greatest by step, time and value; see `TopPoint`), or of its last point where the store has no top.
/// Other kinds are not MLflow metrics.
pub fn latest_scalar(s: &SeriesInfo) -> Option<(f64, i64, i64)> {
    if s.kind != MetricKind::Scalar {
        return None;
    }
    if let Some(top) = s.top {
        return Some((top.value.0, millis(top.time), top.step));
    }
    let value = match &s.last_value {
        Value::Number(n) => n.as_f64()?,
        Value::String(t) => flightlog_model::parse_non_finite(t)?,
        _ => return None,
    };
    Some((
        value,
        s.last_time.map_or(0, millis),
        s.last_step.unwrap_or(0),
    ))
}

/// A run's info; `artifact_uri` is where its experiment puts its files (see [`super::artifact_roots`]).
pub fn run_info_json(run: &Run, artifact_uri: String) -> Value {
    serde_json::to_value(RunInfoView::of(run, artifact_uri)).unwrap_or_default()
}

/// A whole run; `inputs`/`outputs` are the MLflow-only records kept as documents.
pub fn run_json(
    run: &Run,
    artifact_uri: String,
    inputs: Option<Value>,
    outputs: Option<Value>,
) -> Value {
    serde_json::to_value(RunView::of(run, artifact_uri, inputs, outputs)).unwrap_or_default()
}

/// A run as MLflow's JSON shows it, serialized straight from the run: a search writes hundreds, so no
/// `Value` tree is built for them first.
#[derive(Serialize)]
pub struct RunView<'a> {
    info: RunInfoView<'a>,
    data: RunDataView<'a>,
    inputs: Value,
    outputs: Value,
}

impl<'a> RunView<'a> {
    pub fn of(
        run: &'a Run,
        artifact_uri: String,
        inputs: Option<Value>,
        outputs: Option<Value>,
    ) -> Self {
        RunView {
            info: RunInfoView::of(run, artifact_uri),
            data: RunDataView {
                metrics: run.metrics.iter().filter_map(MetricView::latest).collect(),
                params: run
                    .params
                    .iter()
                    .map(|(k, v)| KeyValueView::of((k, v)))
                    .collect(),
                tags: run_tags(run).into_iter().map(KeyValueView::of).collect(),
            },
            inputs: inputs.unwrap_or_else(|| json!({})),
            outputs: outputs.unwrap_or_else(|| json!({})),
        }
    }
}

#[derive(Serialize)]
struct RunInfoView<'a> {
    run_id: &'a str,
    run_uuid: &'a str,
    run_name: &'a str,
    experiment_id: String,
    user_id: &'a str,
    status: &'static str,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: String,
    lifecycle_stage: &'static str,
}

impl<'a> RunInfoView<'a> {
    fn of(run: &'a Run, artifact_uri: String) -> Self {
        RunInfoView {
            run_id: run.id.as_str(),
            run_uuid: run.id.as_str(),
            run_name: &run.display_name,
            experiment_id: run.experiment_id.to_string(),
            user_id: &run.user,
            status: status_name(run.status),
            start_time: millis(run.start_time.unwrap_or(run.created_time)),
            end_time: run.end_time.map(millis),
            artifact_uri,
            lifecycle_stage: lifecycle_name(run.lifecycle),
        }
    }
}

#[derive(Serialize)]
struct RunDataView<'a> {
    metrics: Vec<MetricView<'a>>,
    params: Vec<KeyValueView<'a>>,
    tags: Vec<KeyValueView<'a>>,
}

/// A metric's latest point; NaN and ±Inf as MLflow's strings.
#[derive(Serialize)]
struct MetricView<'a> {
    key: &'a str,
    value: Value,
    timestamp: i64,
    step: i64,
}

impl<'a> MetricView<'a> {
    fn latest(s: &'a SeriesInfo) -> Option<Self> {
        let (v, timestamp, step) = latest_scalar(s)?;
        Some(MetricView {
            key: &s.name,
            value: double(v),
            timestamp,
            step,
        })
    }
}

#[derive(Serialize)]
struct KeyValueView<'a> {
    key: &'a str,
    value: &'a str,
}

impl<'a> KeyValueView<'a> {
    fn of((key, value): (&'a str, &'a str)) -> Self {
        KeyValueView { key, value }
    }
}

/// The tags flightlog keeps as run fields: (key, value if the run has one, whether it wins over a stored tag
/// of that key). The run name and description always come from their fields; a stored parent tag is kept.
fn field_tags(run: &Run) -> [(&'static str, Option<&str>, bool); 3] {
    [
        (RUN_NAME_TAG, Some(run.display_name.as_str()), true),
        (
            NOTE_TAG,
            Some(run.description.as_str()).filter(|d| !d.is_empty()),
            true,
        ),
        (
            PARENT_TAG,
            run.parent_id.as_ref().map(|p| p.as_str()),
            false,
        ),
    ]
}

/// The run's tags as MLflow shows them: the stored ones plus those of [`field_tags`].
pub fn run_tags(run: &Run) -> BTreeMap<&str, &str> {
    let mut tags: BTreeMap<&str, &str> = run
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (key, value, wins) in field_tags(run) {
        match value {
            Some(v) if wins => {
                tags.insert(key, v);
            }
            Some(v) => {
                tags.entry(key).or_insert(v);
            }
            None => {}
        }
    }
    tags
}

/// One tag of [`run_tags`], without building the map (a search asks this of every run).
pub fn run_tag<'a>(run: &'a Run, key: &str) -> Option<&'a str> {
    let stored = run.tags.get(key).map(String::as_str);
    match field_tags(run)
        .into_iter()
        .find(|(k, v, _)| *k == key && v.is_some())
    {
        Some((_, value, true)) => value,
        Some((_, value, false)) => stored.or(value),
        None => stored,
    }
}

/// MLflow's name rule: `^[/\w.\- :]*$`, a normalized relative path, at most 250 characters.
pub fn validate_key(what: &str, key: &str) -> MlResult<()> {
    if key.is_empty() {
        return Err(MlError::missing("key"));
    }
    let chars_ok = key
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | ' ' | ':'));
    if !chars_ok {
        return Err(MlError::invalid(format!(
            "Invalid {what} name: '{key}'. Names may only contain alphanumerics, underscores (_), \
             dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )));
    }
    // Python's normpath keeps a leading `..a` or `...` as it is, and MLflow refuses every name that then
    // starts with `..`.
    let normalized = key.starts_with('/')
        || key.starts_with("..")
        || key.ends_with('/')
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if normalized {
        return Err(MlError::invalid(format!(
            "Invalid {what} name: '{key}'. Names cannot contain '..', '.' or empty path segments, \
             or start or end with '/'."
        )));
    }
    let len = key.chars().count();
    if len > MAX_KEY {
        return Err(MlError::invalid(format!(
            "{} '{key}' had length {len}, which exceeded length limit of {MAX_KEY}",
            capitalized(what)
        )));
    }
    Ok(())
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Over-long param and tag values are truncated, as MLflow's server does by default.
pub fn truncate_value(v: &str, max_chars: usize) -> String {
    match v.char_indices().nth(max_chars) {
        Some((i, _)) => v[..i].to_string(),
        None => v.to_string(),
    }
}

/// A key/value entry with its key present and valid. A value left out (or null) is `""`, as MLflow's server
/// reads it (proto3 has no absent string).
pub fn checked_pair(what: &str, kv: &KeyValue) -> MlResult<(String, String)> {
    let key = kv.key.as_deref().ok_or_else(|| MlError::missing("key"))?;
    validate_key(what, key)?;
    Ok((key.to_string(), kv.value.clone().unwrap_or_default()))
}

/// An optional string that borrows from the request body unless it has escapes (then it is unescaped into
/// an owned string), for fields repeated thousands of times per request.
pub fn opt_cow_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(V)
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(s)))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s.to_string())))
        }
        fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s)))
        }
    }
    d.deserialize_option(V)
}

/// An int64 that may come as a JSON number, a numeric string (GET query values) or be absent. A visitor
/// rather than an untagged enum: log-batch bodies carry thousands of these, and untagged enums buffer each.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && v.abs() < 9.2e18 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            s.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("'{s}' is not an integer")))
        }
    }
    d.deserialize_option(V)
}

/// A protobuf enum field: its name, or its number (protobuf's JSON form allows either), as the number's text.
pub fn opt_enum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Name(String),
        Number(i64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Name(name) => name,
        Raw::Number(n) => n.to_string(),
    }))
}

/// A list that a GET query may carry as one value (`order_by=x`) or several.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::One(s)) => vec![s],
        Some(Raw::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{ExperimentId, RunId};

    fn run() -> Run {
        Run {
            id: RunId::new(),
            experiment_id: ExperimentId(3),
            display_name: "r".into(),
            description: String::new(),
            parent_id: Some(RunId::new()),
            status: RunStatus::Completed,
            lifecycle: Lifecycle::Active,
            created_time: WallTime(5_000),
            start_time: Some(WallTime(7_000)),
            end_time: Some(WallTime(9_999)),
            error: None,
            tags: BTreeMap::from([("a".to_string(), "b".to_string())]),
            properties: BTreeMap::new(),
            params: BTreeMap::from([("p".to_string(), "1".to_string())]),
            user: "me".into(),
            host: String::new(),
            command: None,
            metrics: vec![SeriesInfo {
                name: "loss".into(),
                kind: MetricKind::Scalar,
                description: String::new(),
                count: 2,
                first_time: None,
                last_time: Some(WallTime(12_000)),
                last_step: Some(4),
                last_value: json!("NaN"),
                min: None,
                max: None,
                schema: None,
                columns: vec![],
                top: None,
            }],
        }
    }

    #[test]
    fn runs_convert_with_mlflow_names_and_units() {
        let r = run();
        let j = run_json(&r, "s3://b/3/r/artifacts".into(), None, None);
        assert_eq!(j["info"]["status"], "FINISHED");
        assert_eq!(j["info"]["start_time"], 7);
        assert_eq!(j["info"]["end_time"], 9);
        assert_eq!(j["info"]["experiment_id"], "3");
        assert_eq!(j["info"]["artifact_uri"], "s3://b/3/r/artifacts");
        assert_eq!(j["data"]["metrics"][0]["value"], "NaN");
        assert_eq!(j["data"]["metrics"][0]["timestamp"], 12);
        let tags = run_tags(&r);
        assert_eq!(tags[RUN_NAME_TAG], "r");
        assert_eq!(tags[PARENT_TAG], r.parent_id.as_ref().unwrap().as_str());
    }

    #[test]
    fn int64_fields_take_numbers_and_strings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "opt_i64")]
            n: Option<i64>,
        }
        let n = |s: &str| serde_json::from_str::<T>(s).map(|t| t.n);
        assert_eq!(n(r#"{"n": 5}"#).unwrap(), Some(5));
        assert_eq!(n(r#"{"n": "-7"}"#).unwrap(), Some(-7));
        assert_eq!(n(r#"{"n": 3.0}"#).unwrap(), Some(3));
        assert_eq!(n(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(n("{}").unwrap(), None);
        assert!(n(r#"{"n": "x"}"#).is_err());
        assert!(n(r#"{"n": 1.5}"#).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for name in ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"] {
            assert_eq!(status_name(parse_status(name).unwrap()), name);
        }
        assert!(parse_status("DONE").unwrap_err().message.contains("'DONE'"));
    }

    #[test]
    fn keys_follow_mlflow_rules() {
        assert!(validate_key("metric", "train/loss 1:a-b.c").is_ok());
        for bad in ["a!b", "../x", "/abs", "a//b", "a/./b"] {
            assert_eq!(
                validate_key("metric", bad).unwrap_err().code,
                "INVALID_PARAMETER_VALUE"
            );
        }
        let long = "k".repeat(251);
        assert!(validate_key("param", &long)
            .unwrap_err()
            .message
            .contains("exceeded length limit of 250"));
        assert_eq!(truncate_value("héllo", 2), "hé");
        assert_eq!(clamp_infinite(f64::NEG_INFINITY), -f64::MAX);
        assert_eq!(double(f64::INFINITY), json!("Infinity"));
    }
}
