//! Experiments, runs, and the requests that create, change and find them; log slices, artifact listings and
//! the commit events that live streams are made of.

use crate::ids::{ExperimentId, RunId};
use crate::metric::{MetricKind, SeriesInfo};
use crate::status::RunStatus;
use crate::time::WallTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Active or deleted (soft: a deleted experiment or run can be restored).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    #[default]
    Active,
    Deleted,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Deleted => "deleted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub id: ExperimentId,
    pub name: String,
    pub created_time: WallTime,
    pub last_update_time: WallTime,
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where MLflow clients put this experiment's artifacts (kept for MLflow compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_location: Option<String>,
    /// Runs in the experiment (active ones), and when the newest activity happened; filled by listings.
    #[serde(default)]
    pub run_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<WallTime>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_location: Option<String>,
}

/// Changes to an experiment; absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExperimentQuery {
    /// Case-insensitive substring of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_contains: Option<String>,
    #[serde(default)]
    pub include_deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// Why a run failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetails {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Longer text: a traceback, the last lines of stderr...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub experiment_id: ExperimentId,
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<RunId>,
    pub status: RunStatus,
    pub lifecycle: Lifecycle,
    pub created_time: WallTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetails>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Latest value of each metric; filled by `get_run` and by listings that ask for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<SeriesInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// A client-chosen id makes creation idempotent (a replayed create returns the same run) and lets an
    /// offline client log before the server has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RunId>,
    #[serde(default)]
    pub experiment_id: ExperimentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<RunId>,
    /// Default Running (interactive runs); NotStarted or Queued for submitted ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<WallTime>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Changes to a run; absent fields are left as they are. Applied atomically: if any part is rejected
/// (illegal transition, property rewrite, param change), nothing changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Checked against the lifecycle; entering a terminal state sets `end_time` (unless given) and entering
    /// Running sets `start_time` if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<WallTime>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
    /// Properties are write-once: a key that exists with another value is a Conflict (same value is a no-op).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add_properties: BTreeMap<String, String>,
    /// Params are write-once like properties (MLflow's rule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add_params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Moves a finished run (Completed, Failed, Canceled) back to Running and clears its end time, before
    /// `status` is applied. The one way out of a terminal state, and explicit, so that a stray or replayed
    /// status change never revives a run; MLflow's `start_run(run_id=...)` resume uses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reopen: bool,
}

impl RunPatch {
    /// A patch that only moves the run to `status`.
    pub fn to_status(status: RunStatus) -> RunPatch {
        RunPatch {
            status: Some(status),
            ..Default::default()
        }
    }
}

/// Which runs to list. All conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunQuery {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experiment_ids: Vec<ExperimentId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<RunStatus>,
    /// Only the children of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<RunId>,
    /// Only runs without a parent.
    #[serde(default)]
    pub top_level_only: bool,
    /// Tag key → required value (None: the key must be present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Option<String>>,
    /// Param key → required value (None: the key must be present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub include_deleted: bool,
    /// Fill `Run::metrics` with each run's latest values.
    #[serde(default)]
    pub with_metrics: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// Read only these keys of each run's params, tags and metrics, and no properties (None: everything; then
    /// `with_metrics` says whether metrics are read). A search that filters thousands of runs on a key or two
    /// reads the rest only for the page it returns.
    #[serde(skip)]
    pub only_keys: Option<RunKeys>,
}

/// What a lean run listing keeps (see [`RunQuery::only_keys`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunKeys {
    pub params: Vec<String>,
    pub tags: Vec<String>,
    /// Metrics by name (those the run has), each with its summary.
    pub metrics: Vec<String>,
}

/// One page of a listing; `next_page_token` is opaque and absent on the last page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    /// Every item of a paged listing: calls `fetch` with each page's token (None first) until the last page.
    pub fn collect_all<E>(
        mut fetch: impl FnMut(Option<String>) -> Result<Page<T>, E>,
    ) -> Result<Vec<T>, E> {
        let (mut all, mut token) = (Vec::new(), None);
        loop {
            let page = fetch(token)?;
            all.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }
}

/// A named text stream of a run (stdout, stderr, python...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStreamInfo {
    pub name: String,
    /// Total bytes appended so far.
    pub length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<WallTime>,
}

/// Bytes of a log stream from `offset`; `next_offset` is where a reader resumes. `data` holds the bytes
/// decoded as UTF-8 (invalid sequences replaced), and never ends inside a multi-byte character.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSlice {
    pub stream: String,
    pub offset: u64,
    pub next_offset: u64,
    /// Total length of the stream when read.
    pub length: u64,
    pub data: String,
}

/// A file (or, in listings, a folder) in a run's artifact storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Relative to the run's artifact root, '/'-separated.
    pub path: String,
    pub is_dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<WallTime>,
}

/// Something committed to the store, announced to live streams. `seq` increases with every event across the
/// whole store and is the SSE event id: a reader that reconnects with its last seq misses nothing. It has gaps
/// where a points event was replaced (see [`EventBody::Points`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: WallTime,
    pub experiment_id: ExperimentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What an [`Event`] announces. Point data is not copied into events: a `Points` event names the index range,
/// and a stream reader reads those points from the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    ExperimentCreated {
        name: String,
    },
    ExperimentUpdated {
        name: String,
        lifecycle: Lifecycle,
    },
    RunCreated {
        display_name: String,
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_id: Option<RunId>,
    },
    /// Status, name, tags, properties or params changed; `status` is the status after the change.
    RunUpdated {
        status: RunStatus,
        #[serde(default)]
        status_changed: bool,
    },
    /// Points `[from_index, from_index + count)` of metric `name` were appended. A series' newest points
    /// event is replaced by the next append's, which then covers both ranges (so the log keeps one event for
    /// many small appends); `replaced` says which event it took the place of.
    Points {
        name: String,
        kind: MetricKind,
        from_index: u64,
        count: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_step: Option<i64>,
        #[serde(default)]
        last_value: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced: Option<Replaced>,
    },
    /// Bytes `[offset, offset + length)` were appended to log stream `stream`. Like points events, a
    /// stream's newest append event is replaced by the next append's, which then covers both ranges;
    /// `replaced` says which event it took the place of (`end` a byte offset).
    LogAppended {
        stream: String,
        offset: u64,
        length: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced: Option<Replaced>,
    },
    ArtifactWritten {
        path: String,
        size: u64,
    },
    ArtifactDeleted {
        path: String,
    },
}

impl EventBody {
    /// Whether the event is a run's end: its status changed to a terminal one (not a later change of an ended
    /// run, such as a tag set after it ended).
    pub fn is_run_end(&self) -> bool {
        matches!(self, EventBody::RunUpdated { status, status_changed: true } if status.is_terminal())
    }
}

/// The event a merged one took the place of: event `seq`, which covered the series' points before index `end`
/// (of a log stream: its bytes before offset `end`). A reader past `seq` has those already and needs only what
/// follows `end`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Replaced {
    pub seq: u64,
    pub end: u64,
}

/// What a follower of a log stream, which has passed on its text up to byte `have`, still needs of a
/// `log_appended` event. Merged events cover bytes it may have had (see [`Replaced`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LogNews<'a> {
    /// It had every byte the event announces.
    Nothing,
    /// This text, which runs from `have` to the event's end.
    Text(&'a str),
    /// Bytes to read from the store: the event carried no text, or its text does not start or split at `have`.
    Read(std::ops::Range<u64>),
}

/// [`LogNews`] of an event announcing bytes `announced` with the attached text `data` (if any), for a
/// follower that has passed on bytes up to `have`.
pub fn log_news(have: u64, announced: std::ops::Range<u64>, data: Option<&str>) -> LogNews<'_> {
    if announced.end <= have {
        return LogNews::Nothing;
    }
    let attached = data.filter(|d| d.len() as u64 == announced.end - announced.start);
    let skip = have.saturating_sub(announced.start) as usize;
    match attached {
        Some(d) if announced.start <= have && d.is_char_boundary(skip) => LogNews::Text(&d[skip..]),
        _ => LogNews::Read(have..announced.end),
    }
}

/// Which events a stream reader wants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub run_id: Option<RunId>,
    pub experiment_id: Option<ExperimentId>,
    /// Only events of these types (the `type` of [`EventBody`]'s JSON, e.g. `"artifact_written"`); empty: all.
    /// Matched by the store, so a reader that wants one rare type does not decode every event.
    pub types: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_news_is_what_a_follower_lacks() {
        let cases = [
            (
                10,
                0..10,
                Some("0123456789"),
                LogNews::Nothing,
                "had it all",
            ),
            (
                4,
                0..10,
                Some("0123456789"),
                LogNews::Text("456789"),
                "overlap skipped",
            ),
            (0, 0..3, Some("abc"), LogNews::Text("abc"), "all new"),
            (3, 0..5, None, LogNews::Read(3..5), "no text attached"),
            (1, 0..3, Some("éa"), LogNews::Read(1..3), "mid-character"),
            (
                2,
                5..8,
                Some("xyz"),
                LogNews::Read(2..8),
                "a gap is read too",
            ),
            (
                0,
                0..9,
                Some("short"),
                LogNews::Read(0..9),
                "text cut short",
            ),
        ];
        for (have, announced, data, news, why) in cases {
            assert_eq!(log_news(have, announced, data), news, "{why}");
        }
    }
}
