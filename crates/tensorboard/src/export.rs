//! Export of runs to TensorBoard log folders: every metric kind in the form TensorBoard shows best, with each
//! point's own step and wall time. Shared by `flightlog export tensorboard`, `flightlog tensorboard` and the
//! Python SDK; it reads runs through [`ExportSource`] (the HTTP client or a local store).

use crate::summary::{self, markdown_table};
use crate::EventWriter;
use flightlog_model::*;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Marks the event files flightlog writes, so that a new export can replace them (TensorBoard reads any file
/// whose name contains `tfevents`, suffix or not).
pub const SUFFIX: &str = ".flightlog";
/// Lists the files of the last export into a logdir (relative paths), so that they are replaced even when
/// runs were renamed since.
pub const MANIFEST: &str = ".flightlog-tensorboard.json";

/// Where exported runs are read from: the HTTP client (CLI, SDK server mode) or a store (SDK local mode).
/// `Sync`: scalar series are fetched on a second thread while the first writes.
pub trait ExportSource: Sync {
    /// Every run matching the query (all pages).
    fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>>;
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>>;
    /// The whole scalar series.
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries>;
    /// Every record of a non-scalar series.
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>>;
    fn artifact_bytes(&self, run: &RunId, path: &str) -> Result<Vec<u8>>;
}

/// Why an export failed: reading runs, or writing the logdir.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One run to export and its folder, relative to the logdir.
struct Planned {
    run: Run,
    dir: PathBuf,
}

/// What was written for one run.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub name: String,
    pub dir: String,
    pub file: String,
    pub scalar_points: u64,
    pub other_points: u64,
    /// Points replaced by a later point at the same or an earlier step (see [`increasing`]).
    pub replaced_points: u64,
    pub skipped: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    files: Vec<String>,
}

/// Exports `runs` (and, if `recursive`, their child runs nested in their folders) into `logdir`, replacing
/// what an earlier export wrote there.
pub fn export(
    src: &dyn ExportSource,
    logdir: &Path,
    runs: Vec<Run>,
    recursive: bool,
) -> std::result::Result<Vec<RunReport>, ExportError> {
    let mut plan = Vec::new();
    let mut seen = HashSet::new();
    place(src, runs, Path::new(""), recursive, &mut plan, &mut seen)?;
    std::fs::create_dir_all(logdir).map_err(|e| {
        let hint = if logdir.is_file() {
            ": it is a file; give a folder"
        } else {
            ""
        };
        std::io::Error::new(
            e.kind(),
            format!("cannot create the logdir {}: {e}{hint}", logdir.display()),
        )
    })?;
    remove_previous(logdir, &plan)?;
    let mut reports = Vec::new();
    for p in &plan {
        reports.push(export_run(src, logdir, p)?);
    }
    let manifest = Manifest {
        files: reports.iter().map(|r| r.file.clone()).collect(),
    };
    let tmp = logdir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    std::fs::rename(&tmp, logdir.join(MANIFEST))?;
    Ok(reports)
}

/// Every run matching `q`, oldest first (a stable folder order).
fn list_sorted(src: &dyn ExportSource, q: RunQuery) -> Result<Vec<Run>> {
    let mut all = src.list_runs(&q)?;
    all.sort_by(|a, b| (a.created_time, &a.id).cmp(&(b.created_time, &b.id)));
    Ok(all)
}

/// The top-level runs of an experiment, oldest first.
pub fn experiment_runs(src: &dyn ExportSource, experiment: ExperimentId) -> Result<Vec<Run>> {
    list_sorted(
        src,
        RunQuery {
            experiment_ids: vec![experiment],
            top_level_only: true,
            ..Default::default()
        },
    )
}

/// Gives each run a folder under `parent` (unique among its siblings) and, if `recursive`, places its children
/// inside it.
fn place(
    src: &dyn ExportSource,
    runs: Vec<Run>,
    parent: &Path,
    recursive: bool,
    out: &mut Vec<Planned>,
    seen: &mut HashSet<RunId>,
) -> Result<()> {
    let mut taken = HashSet::new();
    for run in runs {
        if !seen.insert(run.id.clone()) {
            continue;
        }
        let dir = parent.join(unique_name(&run, &mut taken));
        let id = run.id.clone();
        out.push(Planned {
            run,
            dir: dir.clone(),
        });
        if recursive {
            let q = RunQuery {
                parent_id: Some(id),
                ..Default::default()
            };
            let kids = list_sorted(src, q)?;
            place(src, kids, &dir, recursive, out, seen)?;
        }
    }
    Ok(())
}

/// A folder name for a run: its display name with characters that no file system accepts replaced by `_`.
pub fn safe_dir_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .take(100)
        .collect();
    let s = s.trim().trim_end_matches('.').to_string();
    if s.is_empty() || s.starts_with('.') && s.chars().all(|c| c == '.') {
        String::new()
    } else {
        s
    }
}

/// The run's folder name, made unique (case-insensitively) by adding its id's first 8 digits, then its id.
fn unique_name(run: &Run, taken: &mut HashSet<String>) -> String {
    let base = safe_dir_name(&run.display_name);
    let id = run.id.as_str();
    let candidates = if base.is_empty() {
        vec![id.to_string()]
    } else {
        vec![
            base.clone(),
            format!("{base}-{}", &id[..8]),
            format!("{base}-{id}"),
        ]
    };
    for c in candidates {
        if taken.insert(c.to_lowercase()) {
            return c;
        }
    }
    id.to_string()
}

/// Deletes the event files of the previous export (named in the manifest, or carrying [`SUFFIX`] in a folder
/// this export writes to), and the folders that leaves empty.
fn remove_previous(logdir: &Path, plan: &[Planned]) -> std::io::Result<()> {
    let old: Manifest = std::fs::read(logdir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = old.files.iter().map(|f| logdir.join(f)).collect();
    for p in plan {
        if let Ok(entries) = std::fs::read_dir(logdir.join(&p.dir)) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("tfevents") && name.ends_with(SUFFIX) && f.is_file() {
            std::fs::remove_file(&f)?;
            remove_empty_parents(logdir, &f);
        }
    }
    Ok(())
}

fn remove_empty_parents(logdir: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == logdir || !d.starts_with(logdir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

// --- one run ------------------------------------------------------------------------------------------------

fn export_run(
    src: &dyn ExportSource,
    logdir: &Path,
    p: &Planned,
) -> std::result::Result<RunReport, ExportError> {
    let mut w = EventWriter::create(&logdir.join(&p.dir), SUFFIX, p.run.created_time.seconds())?;
    let mut rep = RunReport {
        run_id: p.run.id.to_string(),
        name: p.run.display_name.clone(),
        dir: p.dir.display().to_string(),
        ..Default::default()
    };
    let mut metrics = src.list_metrics(&p.run.id)?;
    metrics.sort_by(|a, b| a.name.cmp(&b.name));
    let scalars: Vec<&str> = metrics
        .iter()
        .filter(|m| m.kind == MetricKind::Scalar)
        .map(|m| m.name.as_str())
        .collect();
    let mut out = Out {
        w: &mut w,
        rep: &mut rep,
    };
    // Reading a series (server round trip, block decoding) overlaps with encoding the previous one.
    std::thread::scope(|scope| -> std::result::Result<(), ExportError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<ScalarSeries>>(1);
        let run = &p.run.id;
        scope.spawn(move || {
            for name in scalars {
                if tx.send(src.read_scalars(run, name)).is_err() {
                    return;
                }
            }
        });
        for m in &metrics {
            if m.kind == MetricKind::Scalar {
                let s = rx
                    .recv()
                    .map_err(|_| Error::storage("the series reader stopped"))??;
                let pts = (0..s.len()).map(|i| (s.steps[i], s.times[i], s.values[i].0));
                out.scalars(&m.name, pts.collect())?;
            } else {
                export_metric(src, &p.run.id, m, &mut out)?;
            }
        }
        Ok(())
    })?;
    // No fsync: an export is a view that can be made again, and syncing tens of MB costs more than writing them.
    let path = w.finish()?;
    rep.file = path
        .strip_prefix(logdir)
        .unwrap_or(&path)
        .display()
        .to_string();
    Ok(rep)
}

/// Where events go, and what is counted.
struct Out<'a> {
    w: &'a mut EventWriter,
    rep: &'a mut RunReport,
}

impl Out<'_> {
    fn scalars(&mut self, tag: &str, points: Vec<(i64, WallTime, f64)>) -> std::io::Result<()> {
        let points = self.increasing(points.into_iter().map(|(s, t, v)| (s, (t, v))));
        for (step, (t, v)) in points {
            self.w.write_scalar(t.seconds(), step, tag, v as f32)?;
            self.rep.scalar_points += 1;
        }
        Ok(())
    }

    fn values(&mut self, points: Vec<(i64, WallTime, summary_value::V)>) -> std::io::Result<()> {
        let points = self.increasing(points.into_iter().map(|(s, t, v)| (s, (t, v))));
        for (step, (t, v)) in points {
            self.w.write(&summary::event(t.seconds(), step, v))?;
            self.rep.other_points += 1;
        }
        Ok(())
    }

    fn increasing<T>(&mut self, points: impl Iterator<Item = (i64, T)>) -> Vec<(i64, T)> {
        let (kept, replaced) = increasing(points);
        self.rep.replaced_points += replaced;
        kept
    }
}

mod summary_value {
    pub type V = crate::proto::summary::Value;
}

/// Makes steps strictly increasing the way TensorBoard itself resolves a restarted series: taken in logging
/// order, a point at step `s` replaces every earlier-logged point at a step `>= s` (so a repeated step keeps
/// its last value, and a series that restarted from a checkpoint keeps the new run from that step on).
/// Returns the kept points and how many were replaced.
pub fn increasing<T>(points: impl Iterator<Item = (i64, T)>) -> (Vec<(i64, T)>, u64) {
    let mut kept: Vec<(i64, T)> = Vec::new();
    let mut replaced = 0u64;
    for (s, v) in points {
        if kept.last().map_or(true, |p| p.0 < s) {
            kept.push((s, v));
            continue;
        }
        let cut = kept.partition_point(|p| p.0 < s);
        replaced += (kept.len() - cut) as u64;
        kept.truncate(cut);
        kept.push((s, v));
    }
    (kept, replaced)
}

fn export_metric(
    src: &dyn ExportSource,
    run: &RunId,
    m: &SeriesInfo,
    out: &mut Out,
) -> std::result::Result<(), ExportError> {
    let name = m.name.as_str();
    let records = src.read_records(run, name)?;
    match m.kind {
        MetricKind::Text => {
            let pts = records.iter().map(|r| {
                let text = r
                    .value
                    .as_str()
                    .map_or_else(|| r.value.to_string(), str::to_string);
                (r.step, r.time, summary::text(name, &text))
            });
            out.values(pts.collect())?;
        }
        MetricKind::List => export_lists(name, &records, out)?,
        MetricKind::Row => export_rows(name, &m.columns, rows_of_row_records(&records), out)?,
        MetricKind::Table => export_rows(name, &m.columns, rows_of_tables(&records), out)?,
        MetricKind::Json => {
            let pts = records.iter().map(|r| {
                (
                    r.step,
                    r.time,
                    summary::text(name, &json_markdown(&r.value)),
                )
            });
            out.values(pts.collect())?;
        }
        MetricKind::Histogram => {
            let mut pts = Vec::new();
            for r in &records {
                let (limits, counts) = (numbers(&r.value["limits"]), numbers(&r.value["counts"]));
                let lower = r.value["lower"].as_f64();
                if limits.len() == counts.len() {
                    pts.push((
                        r.step,
                        r.time,
                        summary::histogram(name, &limits, &counts, lower),
                    ));
                } else {
                    out.rep.skipped.push(format!(
                        "{name}: a histogram with unequal limits and counts"
                    ));
                }
            }
            out.values(pts)?;
        }
        MetricKind::Image => export_images(src, run, name, &records, out)?,
        MetricKind::Scalar => {} // read ahead by export_run
    }
    Ok(())
}

fn numbers(v: &Json) -> Vec<f64> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| serde_json::from_value::<F64>(x.clone()).map_or(f64::NAN, |f| f.0))
                .collect()
        })
        .unwrap_or_default()
}

/// A list is a series with step = index; several lists of one name become `name/<step>` series.
fn export_lists(name: &str, records: &[Record], out: &mut Out) -> std::io::Result<()> {
    for r in records {
        let tag = if records.len() == 1 {
            name.to_string()
        } else {
            format!("{name}/{}", r.step)
        };
        let pts = numbers(&r.value)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as i64, r.time, v));
        out.scalars(&tag, pts.collect())?;
    }
    Ok(())
}

type Rows = Vec<(WallTime, BTreeMap<String, Cell>)>;

fn cells(v: &Json) -> BTreeMap<String, Cell> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn rows_of_row_records(records: &[Record]) -> Rows {
    records.iter().map(|r| (r.time, cells(&r.value))).collect()
}

fn rows_of_tables(records: &[Record]) -> Rows {
    let mut rows = Rows::new();
    for r in records {
        let cols: BTreeMap<String, Vec<Cell>> =
            serde_json::from_value(r.value.clone()).unwrap_or_default();
        let n = cols.values().map(Vec::len).max().unwrap_or(0);
        for i in 0..n {
            let row = cols
                .iter()
                .filter_map(|(k, v)| v.get(i).map(|c| (k.clone(), c.clone())))
                .collect();
            rows.push((r.time, row));
        }
    }
    rows
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Bool(b) => b.to_string(),
        Cell::Number(F64(v)) => non_finite_name(*v).map_or_else(|| v.to_string(), str::to_string),
        Cell::Text(s) => s.clone(),
    }
}

/// Rows and tables: the whole table as markdown text (step 0, time of the last row), and one scalar series
/// `name/column` per numeric column with step = row index.
fn export_rows(name: &str, columns: &[String], rows: Rows, out: &mut Out) -> std::io::Result<()> {
    let Some(last_time) = rows.last().map(|r| r.0) else {
        return Ok(());
    };
    let mut cols: Vec<String> = columns.to_vec();
    for (_, r) in &rows {
        for k in r.keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let mut table = vec![cols.clone()];
    for (_, r) in &rows {
        table.push(
            cols.iter()
                .map(|c| r.get(c).map(cell_text).unwrap_or_default())
                .collect(),
        );
    }
    out.values(vec![(
        0,
        last_time,
        summary::text(name, &markdown_table(&table)),
    )])?;
    for c in &cols {
        let numeric = rows
            .iter()
            .all(|(_, r)| matches!(r.get(c), None | Some(Cell::Null) | Some(Cell::Number(_))));
        if !numeric {
            continue;
        }
        let pts = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (t, r))| match r.get(c) {
                Some(Cell::Number(F64(v))) => Some((i as i64, *t, *v)),
                _ => None,
            });
        out.scalars(&format!("{name}/{c}"), pts.collect())?;
    }
    Ok(())
}

/// A JSON metric as markdown: its first matrix (a confusion matrix...) as a table with any `labels`, else the
/// JSON itself in a code block.
fn json_markdown(record_value: &Json) -> String {
    let v = record_value.get("value").unwrap_or(record_value);
    match find_matrix(v, 3) {
        Some(m) => {
            let labels = find_labels(v, m.len());
            let width = m.iter().map(Vec::len).max().unwrap_or(0);
            let head = |i: usize| {
                labels
                    .as_ref()
                    .and_then(|l| l.get(i).cloned())
                    .unwrap_or(i.to_string())
            };
            let mut rows = vec![std::iter::once(String::new())
                .chain((0..width).map(head))
                .collect()];
            for (i, r) in m.iter().enumerate() {
                rows.push(
                    std::iter::once(head(i))
                        .chain(r.iter().map(json_cell))
                        .collect(),
                );
            }
            markdown_table(&rows)
        }
        None => format!(
            "```json\n{}\n```",
            serde_json::to_string_pretty(v).unwrap_or_default()
        ),
    }
}

fn json_cell(v: &Json) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn find_matrix(v: &Json, depth: u32) -> Option<Vec<Vec<Json>>> {
    if let Some(a) = v.as_array() {
        if !a.is_empty() && a.iter().all(Json::is_array) {
            return Some(
                a.iter()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect(),
            );
        }
    }
    if depth == 0 {
        return None;
    }
    v.as_object()?
        .values()
        .find_map(|x| find_matrix(x, depth - 1))
}

fn find_labels(v: &Json, n: usize) -> Option<Vec<String>> {
    let o = v.as_object()?;
    // `class_labels` is what the SDK's log_confusion_matrix stores.
    for key in ["class_labels", "labels", "class_names", "classes"] {
        if let Some(a) = o.get(key).and_then(Json::as_array).filter(|a| a.len() == n) {
            return Some(a.iter().map(json_cell).collect());
        }
    }
    o.values().find_map(|x| find_labels(x, n))
}

/// Images as image summaries of their stored bytes (SVG is left out: TensorBoard cannot show it).
fn export_images(
    src: &dyn ExportSource,
    run: &RunId,
    name: &str,
    records: &[Record],
    out: &mut Out,
) -> std::result::Result<(), ExportError> {
    let mut pts = Vec::new();
    for r in records {
        let path = r.value["path"].as_str().unwrap_or_default();
        if r.value["media_type"].as_str() == Some("image/svg+xml") {
            out.rep.skipped.push(format!(
                "{name}: SVG image at step {} (TensorBoard cannot show SVG)",
                r.step
            ));
            continue;
        }
        let bytes = src.artifact_bytes(run, path)?;
        pts.push((r.step, r.time, summary::image(name, bytes)));
    }
    Ok(out.values(pts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confusion_matrix_logged_by_the_sdk_keeps_its_class_labels() {
        let v = serde_json::json!({"value": {"class_labels": ["cat", "dog"], "matrix": [[3, 1], [0, 4]]}});
        let md = json_markdown(&v);
        assert!(md.contains("cat") && md.contains("dog"), "{md}");
        assert!(!md.lines().next().unwrap_or("").contains(" 0 "), "{md}");
    }
}
