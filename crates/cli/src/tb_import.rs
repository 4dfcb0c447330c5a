//! `flightlog import tensorboard`: every folder holding event files becomes a run (sub-folders child runs),
//! and its summaries ordinary flightlog metrics. Importing again adds only what was appended since.

use crate::output::{print_json, Table};
use crate::tensorboard_cmd::{Bridge, ImportArgs};
use crate::{CliError, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE};
use flightlog_model::*;
use flightlog_tensorboard::ingest::{
    clean_name, write_behind, FileIngest, IngestCounts, IngestSink, StoredRun,
};
use flightlog_tensorboard::{
    file_identity, is_event_file_name, replaced_since, EventFileReader, ValueDecoder,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Points per batch sent: small enough that the server stores one batch while this process decodes the
/// next (and the run threads take turns), large enough that commits stay few: the server's single writer
/// spent about half its time in commits with 16,384. Import of 4 × 50,000 points, medians of 25 alternating
/// runs at raised priority, two orders: 16,384 51.5 / 54.5 ms, 32,768 50.4 / 53.6 ms, 65,536 48.4 / 50.9 ms.
const SEND_POINTS: usize = 65_536;

/// Where a run remembers how far each of its event files was imported (file name → byte offset).
pub const STATE_ARTIFACT: &str = "tensorboard/import-state.json";

/// What one run's import did.
#[derive(Debug, Default, Serialize)]
struct RunReport {
    run_id: String,
    name: String,
    dir: String,
    files: usize,
    #[serde(flatten)]
    counts: IngestCounts,
    /// Damaged or truncated records (file and offset), reported and skipped, and files read anew because they
    /// were replaced.
    errors: Vec<String>,
}

pub(crate) fn run(b: &Bridge, args: ImportArgs) -> Result<(), CliError> {
    let root = std::fs::canonicalize(&args.logdir)
        .map_err(|e| CliError::new(EXIT_NOT_FOUND, format!("{}: {e}", args.logdir.display())))?;
    if !root.is_dir() {
        let folder = root.parent().unwrap_or(&root).display();
        return Err(CliError::new(
            EXIT_USAGE,
            format!(
                "{} is a file, not a logdir: give the folder that holds the event files (flightlog import tensorboard {folder})",
                args.logdir.display()
            ),
        ));
    }
    if !args.follow && run_dirs(&root)?.is_empty() {
        return Err(CliError::new(
            EXIT_NOT_FOUND,
            format!(
                "no TensorBoard event files (*tfevents*) under {}",
                root.display()
            ),
        ));
    }
    let experiment = match &args.experiment {
        Some(name) => b.client.get_or_create_experiment(name)?.id,
        None => ExperimentId::DEFAULT,
    };
    let mut imp = Importer {
        b,
        root: root.clone(),
        experiment,
        runs: BTreeMap::new(),
    };
    if args.follow {
        crate::tensorboard_cmd::stop_on_signals();
        let pause = Duration::from_secs_f64(args.interval);
        let mut unreachable: Option<CliError> = None;
        while !crate::tensorboard_cmd::stop_requested() {
            match imp.sync(false) {
                Ok(()) if unreachable.is_some() => {
                    eprintln!("flightlog: the server answers again; importing");
                    unreachable = None;
                }
                Ok(()) => {}
                // An outage only pauses following: what was not stored is read again next time.
                Err(e) if e.code == EXIT_UNREACHABLE => {
                    if unreachable.is_none() {
                        eprintln!(
                            "flightlog: warning: {}; retrying every {:.1} s",
                            e.message,
                            pause.as_secs_f64()
                        );
                    }
                    unreachable = Some(e);
                }
                Err(e) => return Err(e),
            }
            let until = Instant::now() + pause;
            while Instant::now() < until && !crate::tensorboard_cmd::stop_requested() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Stopped during an outage: the last sync would only wait for the server again. What was not stored
        // is read again by the next import (a re-import adds nothing twice).
        if let Some(e) = unreachable {
            return Err(e);
        }
    }
    imp.sync(true)?;
    let reports = imp.reports();
    print_report(b.json, &root, &reports)
}

fn print_report(json: bool, root: &Path, reports: &[RunReport]) -> Result<(), CliError> {
    for r in reports {
        for e in &r.errors {
            eprintln!("warning: {e}");
        }
        for (why, n) in &r.counts.skipped {
            eprintln!("warning: {}: skipped {n} value(s): {why}", r.name);
        }
    }
    if json {
        let out = serde_json::json!({"logdir": root.display().to_string(), "runs": reports});
        return Ok(print_json(&out)?);
    }
    let mut t = Table::new(&[
        "RUN", "NAME", "FILES", "SCALARS", "OTHER", "IMAGES", "PARAMS",
    ])
    .align_right(&[2, 3, 4, 5, 6]);
    for r in reports {
        t.row(vec![
            r.run_id.clone(),
            crate::output::cut(&r.name, 40),
            r.files.to_string(),
            r.counts.scalar_points.to_string(),
            r.counts.other_points.to_string(),
            r.counts.images.to_string(),
            r.counts.params.to_string(),
        ]);
    }
    t.print()?;
    println!("imported {} run(s) from {}", reports.len(), root.display());
    Ok(())
}

// --- runs ---------------------------------------------------------------------------------------------------

/// Every folder under `root` (itself included) that directly holds event files: its '/'-separated path
/// relative to `root` ("" for root) and its event files in name order (TensorBoard's reading order).
/// Symbolic links are followed, as TensorBoard follows them (a logdir of links to runs is common), each
/// folder read once however many links lead to it (no cycles); a broken link is left out.
pub fn run_dirs(root: &Path) -> std::io::Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !std::fs::canonicalize(&dir).is_ok_and(|real| seen.insert(real)) {
            continue;
        }
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let mut ft = entry.file_type()?;
            if ft.is_symlink() {
                match std::fs::metadata(entry.path()) {
                    Ok(m) => ft = m.file_type(),
                    Err(_) => continue,
                }
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && is_event_file_name(&name) {
                files.push(entry.path());
            }
        }
        if !files.is_empty() {
            files.sort();
            let rel = dir.strip_prefix(root).unwrap_or(&dir);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), files));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn base_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "tensorboard".to_string())
}

/// The same logdir folder imported into the same experiment is always the same run (128-bit FNV-1a of both).
pub fn derive_run_id(experiment: ExperimentId, root: &Path, rel: &str) -> RunId {
    let key = format!(
        "flightlog-tensorboard\0{experiment}\0{}\0{rel}",
        root.display()
    );
    format!("{:032x}", fnv1a128(key.as_bytes()))
        .parse()
        .unwrap_or_default()
}

fn create_run(
    b: &Bridge,
    id: &RunId,
    experiment: ExperimentId,
    name: &str,
    parent: Option<RunId>,
    dir: &Path,
) -> Result<bool, CliError> {
    let mut tags = BTreeMap::new();
    tags.insert("tensorboard.logdir".to_string(), dir.display().to_string());
    let (_, created) = b.client.create_run_reporting(&NewRun {
        id: Some(id.clone()),
        experiment_id: experiment,
        display_name: Some(clean_name(name)),
        parent_id: parent,
        tags,
        ..Default::default()
    })?;
    Ok(created)
}

// --- one run ------------------------------------------------------------------------------------------------

/// How far one event file was imported, and which file it was ([`file_identity`]), as the state artifact
/// keeps them. States written before files had identities hold the offset alone, and are read as well.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredMark")]
struct FileMark {
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoredMark {
    Offset(u64),
    Mark {
        offset: u64,
        #[serde(default)]
        identity: Option<u64>,
    },
}

impl From<StoredMark> for FileMark {
    fn from(m: StoredMark) -> Self {
        match m {
            StoredMark::Offset(offset) => FileMark {
                offset,
                identity: None,
            },
            StoredMark::Mark { offset, identity } => FileMark { offset, identity },
        }
    }
}

fn load_state(b: &Bridge, run: &RunId) -> Result<BTreeMap<String, FileMark>, CliError> {
    match b.artifact_bytes(run, STATE_ARTIFACT) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
        Err(Error::NotFound { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Imports a logdir, once or again and again (`--follow`): the runs found so far and, per event file, a
/// reader and a decoder that persist, so each sync reads only what was appended.
struct Importer<'a> {
    b: &'a Bridge,
    root: PathBuf,
    experiment: ExperimentId,
    runs: BTreeMap<String, RunImport>,
}

/// One run being imported.
struct RunImport {
    id: RunId,
    report: RunReport,
    /// Whether `state` and `stored` were read from the server yet.
    loaded: bool,
    /// How far each file was imported (stored as [`STATE_ARTIFACT`]).
    state: BTreeMap<String, FileMark>,
    stored: StoredRun,
    files: BTreeMap<String, OpenFile>,
    span: Option<(f64, f64)>,
}

/// One event file being followed: its reader and decoder, and its identity as of the length and modification
/// time it had when the identity was read.
struct OpenFile {
    reader: EventFileReader,
    decoder: ValueDecoder,
    identity: Option<(FileStamp, Option<u64>)>,
}

/// A file's length and modification time.
type FileStamp = (u64, Option<std::time::SystemTime>);

impl OpenFile {
    fn new(path: &Path) -> OpenFile {
        OpenFile {
            reader: EventFileReader::new(path),
            decoder: ValueDecoder::default(),
            identity: None,
        }
    }

    /// The file's [`file_identity`], read again only when its length or modification time moved: a
    /// followed logdir is looked at every interval, and most of its files have not changed since.
    fn identity(&mut self, path: &Path, stamp: Option<FileStamp>) -> Option<u64> {
        match &self.identity {
            Some((seen, identity)) if Some(*seen) == stamp => *identity,
            _ => {
                // A file that cannot be opened has no identity; reading it reports why.
                let identity = file_identity(path).ok().flatten();
                self.identity = stamp.map(|s| (s, identity));
                identity
            }
        }
    }
}

impl Importer<'_> {
    /// Finds new run folders and files, and imports what was appended to every file since the last sync;
    /// the `last` sync also marks each run Completed as soon as its own files are done.
    fn sync(&mut self, last: bool) -> Result<(), CliError> {
        let dirs = run_dirs(&self.root)?;
        self.open_new_runs(&dirs)?;
        let files: HashMap<&String, &[PathBuf]> =
            dirs.iter().map(|(r, f)| (r, f.as_slice())).collect();
        let b = self.b;
        // Runs are independent: each is read, decoded, sent and ended on its own thread (a few at a time).
        let mut pending: Vec<(&mut RunImport, &[PathBuf])> = self
            .runs
            .iter_mut()
            .map(|(rel, run)| (run, files.get(rel).copied().unwrap_or_default()))
            .collect();
        let width = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(4, 8));
        // One run's failure does not stop the others: every run is imported, then every failure reported.
        let mut failures = Vec::new();
        while !pending.is_empty() {
            let chunk: Vec<_> = pending.drain(..width.min(pending.len())).collect();
            let results: Vec<Result<(), CliError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .into_iter()
                    .map(|(run, files)| scope.spawn(move || run.sync(b, files, last)))
                    .collect();
                handles.into_iter().map(joined).collect()
            });
            failures.extend(results.into_iter().filter_map(Result::err));
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            n => Err(CliError::new(
                failures[0].code,
                format!(
                    "{n} runs failed to import:\n{}",
                    failures
                        .iter()
                        .map(|f| f.message.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            )),
        }
    }

    /// Creates the runs of folders not seen before, side by side; parents before their children (a level
    /// of folder depth at a time), so every child names a parent that exists.
    fn open_new_runs(&mut self, dirs: &[(String, Vec<PathBuf>)]) -> Result<(), CliError> {
        let depth = |rel: &str| {
            if rel.is_empty() {
                0
            } else {
                1 + rel.matches('/').count()
            }
        };
        let mut fresh: Vec<&String> = dirs
            .iter()
            .map(|(rel, _)| rel)
            .filter(|rel| !self.runs.contains_key(*rel))
            .collect();
        fresh.sort_by_key(|rel| depth(rel));
        for level in fresh.chunk_by(|a, b| depth(a) == depth(b)) {
            for chunk in level.chunks(8) {
                let this = &*self;
                let opened = std::thread::scope(|scope| {
                    let handles: Vec<_> = chunk
                        .iter()
                        .map(|rel| scope.spawn(move || this.open_run(rel, this.ancestor(rel))))
                        .collect();
                    handles
                        .into_iter()
                        .map(joined)
                        .collect::<Result<Vec<_>, _>>()
                })?;
                for (rel, run) in chunk.iter().zip(opened) {
                    self.runs.insert((*rel).clone(), run);
                }
            }
        }
        Ok(())
    }

    /// The nearest enclosing folder that is a run.
    fn ancestor(&self, rel: &str) -> Option<RunId> {
        let mut cur = rel;
        while !cur.is_empty() {
            cur = cur.rfind('/').map_or("", |i| &cur[..i]);
            if let Some(r) = self.runs.get(cur) {
                return Some(r.id.clone());
            }
        }
        None
    }

    fn open_run(&self, rel: &str, parent: Option<RunId>) -> Result<RunImport, CliError> {
        let b = self.b;
        let id = derive_run_id(self.experiment, &self.root, rel);
        let name = if rel.is_empty() {
            base_name(&self.root)
        } else {
            rel.to_string()
        };
        // A run this import just created has no earlier state or metrics to read back.
        let created = create_run(b, &id, self.experiment, &name, parent, &self.root.join(rel))?;
        Ok(RunImport {
            report: RunReport {
                run_id: id.to_string(),
                name,
                dir: rel.to_string(),
                ..Default::default()
            },
            loaded: created,
            state: BTreeMap::new(),
            stored: StoredRun::default(),
            files: BTreeMap::new(),
            span: None,
            id,
        })
    }

    /// Each run's report, with what is left at the end of each file.
    fn reports(self) -> Vec<RunReport> {
        let mut out = Vec::new();
        for mut run in self.runs.into_values() {
            for open in run.files.values() {
                run.report
                    .errors
                    .extend(open.reader.trailing_error().map(|e| e.to_string()));
            }
            run.report.files = run.files.len();
            out.push(run.report);
        }
        out
    }
}

impl RunImport {
    fn sync(&mut self, b: &Bridge, files: &[PathBuf], last: bool) -> Result<(), CliError> {
        if !self.loaded {
            self.load(b)?;
        }
        let mut changed = false;
        for path in files {
            changed |= self.import_file(b, path)?;
        }
        let save_state = || -> Result<(), CliError> {
            if changed {
                let json = serde_json::to_vec(&self.state).unwrap_or_default();
                b.client
                    .put_artifact_bytes(&self.id, STATE_ARTIFACT, &json)?;
            }
            Ok(())
        };
        if !last {
            return save_state();
        }
        // Side by side: each is a durable commit of its own, and neither needs the other (the state only
        // spares a later import re-reading; batch ids already make that harmless).
        let (id, span) = (&self.id, self.span);
        std::thread::scope(|scope| {
            let finish = scope.spawn(move || finish_run(b, id, span));
            save_state()?;
            joined(finish)
        })
    }

    /// Reads (on the run's own thread) what an earlier import stored: kinds, params, per-file offsets.
    fn load(&mut self, b: &Bridge) -> Result<(), CliError> {
        let series = b.client.list_metrics(&self.id)?;
        self.stored = StoredRun::new(series, b.client.get_run(&self.id)?.params);
        self.state = load_state(b, &self.id)?;
        self.loaded = true;
        Ok(())
    }

    /// Imports what was added to one file since its mark (all of it if it was replaced); returns whether its
    /// mark moved.
    fn import_file(&mut self, b: &Bridge, path: &Path) -> Result<bool, CliError> {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let open = self
            .files
            .entry(file.clone())
            .or_insert_with(|| OpenFile::new(path));
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        let identity = open.identity(path, stamp);
        let len = stamp.map_or(u64::MAX, |(len, _)| len);
        let mut mark = self.state.get(&file).copied().unwrap_or_default();
        let read = mark.offset.max(open.reader.offset());
        if let Some(why) = replaced_since(read, mark.identity, len, identity) {
            self.report.errors.push(format!(
                "{}: {why}: importing it again from its start",
                path.display()
            ));
            *open = OpenFile::new(path);
            mark = FileMark {
                offset: 0,
                identity,
            };
        }
        let from = mark.offset;
        let OpenFile {
            reader, decoder, ..
        } = open;
        let (id, stored, counts, span) = (
            &self.id,
            &mut self.stored,
            &mut self.report.counts,
            &mut self.span,
        );
        // Batches go out on a second thread while this one decodes the next.
        let sent = write_behind(&mut BridgeSink(b), |sink| {
            let mut imp = FileIngest::new(sink, id, (&file, identity), stored, counts, decoder)
                .batch_points(SEND_POINTS);
            let mut failure = None;
            let polled = reader.poll_decoded(|offset, record| {
                let new = offset >= from;
                let t = record.wall_time();
                if new && t > 0.0 {
                    *span = Some(span.map_or((t, t), |(a, z): (f64, f64)| (a.min(t), z.max(t))));
                }
                if failure.is_none() {
                    failure = imp.decoded(offset, &record, new).err();
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            imp.flush()?;
            Ok(polled)
        });
        let errors = match sent.map_err(CliError::from) {
            Ok(polled) => polled?,
            Err(e) => {
                // What was read but not stored is read again by the next sync (from the file's start,
                // storing from its mark on: the same batches, which the server stores once).
                self.files.remove(&file);
                return Err(e);
            }
        };
        self.report
            .errors
            .extend(errors.iter().map(|e| e.to_string()));
        let now = FileMark {
            offset: reader.offset().max(from),
            identity: identity.or(mark.identity),
        };
        let moved = self.state.get(&file).copied().unwrap_or_default() != now;
        self.state.insert(file, now);
        Ok(moved)
    }
}

/// A scoped import thread's result; a panic is an error, not a crash of the whole import.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, CliError>>) -> Result<T, CliError> {
    h.join()
        .unwrap_or_else(|_| Err(CliError::new(crate::EXIT_ERROR, "import thread panicked")))
}

/// Marks the run Completed (with the first and last event times) unless it already ended.
fn finish_run(b: &Bridge, id: &RunId, span: Option<(f64, f64)>) -> Result<(), CliError> {
    let run = b.client.get_run(id)?;
    if run.status.is_terminal() {
        return Ok(());
    }
    let (start, end) = span.map_or((None, None), |(a, z)| {
        (WallTime::from_seconds(a), WallTime::from_seconds(z))
    });
    b.client.update_run(
        id,
        &RunPatch {
            status: Some(RunStatus::Completed),
            start_time: start,
            end_time: end,
            ..Default::default()
        },
    )?;
    Ok(())
}

/// The client as the importer's destination.
struct BridgeSink<'a>(&'a Bridge);

impl IngestSink for BridgeSink<'_> {
    fn write_batch(&mut self, run: &RunId, batch: Batch) -> Result<()> {
        self.0.write_batch(run, &batch).map(|_| ())
    }
    fn write_image(&mut self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        self.0.client.write_image(run, meta, bytes).map(|_| ())
    }
    fn write_params(&mut self, run: &RunId, params: BTreeMap<String, String>) -> Result<()> {
        let patch = RunPatch {
            add_params: params,
            ..Default::default()
        };
        self.0.client.update_run(run, &patch).map(|_| ())
    }
}
