//! Server-side ingest of TensorBoard event files uploaded under a run's `logs/`: they become ordinary metrics
//! of that run, incrementally (only records past the file's durable offset) and idempotently.
//!
//! The ingester follows the store's event log like any stream reader: each `artifact_written` event for a
//! `logs/**/*tfevents*` path reads the file from where the last ingest stopped. Per-file offsets (and the
//! tags' plugins, which writers send only once) are kept as store documents, and so is the event cursor, so a
//! restart neither duplicates nor loses points. Damaged records are logged and skipped; a partial last record
//! (a file uploaded while still being written) waits for the next upload.

use flightlog_model::*;
use flightlog_store::Store;
use flightlog_tensorboard::ingest::{
    fnv1a128, ingest_chunk, write_behind, FileIngest, IngestCounts, IngestSink,
};
use flightlog_tensorboard::{is_event_file_name, ValueDecoder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Document kind of per-file ingest state ([`FileState`]), id `<run>/<hash of path>`.
const FILE_KIND: &str = "tensorboard.ingest.file";
/// Document kind of the event cursor (one document, id [`CURSOR_ID`]).
const CURSOR_KIND: &str = "tensorboard.ingest.cursor";
const CURSOR_ID: &str = "events";
/// Events read per round trip.
const PAGE: usize = 1000;
/// Points per batch: a few batches per file, so decoding the next overlaps storing the last, and an upload's
/// commit never queues behind one huge batch in the store's writer.
const PIPELINE_POINTS: usize = 16_384;

/// How far one event file was ingested.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FileState {
    path: String,
    /// Offset of the first byte not ingested yet (a record boundary).
    offset: u64,
    /// Each tag's plugin, from its first value.
    #[serde(default)]
    plugins: HashMap<String, String>,
}

/// Whether an artifact path is an event file in a run's `logs/` folder.
pub fn is_ingested_path(path: &str) -> bool {
    path.starts_with("logs/") && path.rsplit('/').next().is_some_and(is_event_file_name)
}

/// Follows the store's events until `shutdown`, ingesting every event file written under `logs/`.
pub(crate) async fn run(store: Arc<dyn Store>, shutdown: CancellationToken) {
    // Woken by artifact commits only: a metric commit cannot name an event file.
    let mut watch = store.subscribe_artifacts();
    let s = store.clone();
    let mut after = tokio::task::spawn_blocking(move || load_cursor(s.as_ref()))
        .await
        .unwrap_or(0);
    loop {
        let newest = *watch.borrow_and_update();
        loop {
            let s = store.clone();
            let step = tokio::task::spawn_blocking(move || pass(s.as_ref(), after, newest)).await;
            match step {
                Ok(Ok((next, more))) => {
                    after = next;
                    if !more {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!("tensorboard ingest: cannot read events: {e}");
                    break;
                }
                Err(e) => {
                    tracing::error!("tensorboard ingest: task failed: {e}");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

fn load_cursor(store: &dyn Store) -> u64 {
    match store.get_document(CURSOR_KIND, CURSOR_ID) {
        Ok(Some(v)) => v["seq"].as_u64().unwrap_or(0),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!("tensorboard ingest: cannot read its cursor, starting over: {e}");
            0
        }
    }
}

/// One page of `artifact_written` events after `after` (the store filters them, so the many points events
/// are never decoded here): ingests the event files they name, each once, and saves the cursor. `newest` is a
/// seq committed before the page was read: when the page is not full, every event up to it has been seen, so
/// the cursor moves there even if none matched. Returns the new cursor and whether more events may follow.
fn pass(store: &dyn Store, after: u64, newest: u64) -> Result<(u64, bool)> {
    let filter = EventFilter {
        types: vec!["artifact_written".to_string()],
        ..Default::default()
    };
    let events = store.events_since(&filter, after, PAGE)?;
    let full = events.len() == PAGE;
    let last = events.last().map_or(after, |e| e.seq);
    let next = if full { last } else { last.max(newest) };
    let files: BTreeSet<(RunId, String)> = events
        .into_iter()
        .filter_map(|e| match (e.run_id, e.body) {
            (Some(run), EventBody::ArtifactWritten { path, .. }) if is_ingested_path(&path) => {
                Some((run, path))
            }
            _ => None,
        })
        .collect();
    ingest_files(store, &files);
    if !files.is_empty() || next / PAGE as u64 != after / PAGE as u64 {
        store.put_document(CURSOR_KIND, CURSOR_ID, &serde_json::json!({ "seq": next }))?;
    }
    Ok((next, full))
}

/// Ingests the files, a thread per folder (files of one folder feed the same run, so they go in order, one
/// after the other); the folders side by side, so decoding uses every core and the commits are grouped.
fn ingest_files(store: &dyn Store, files: &BTreeSet<(RunId, String)>) {
    let mut folders: BTreeMap<(&RunId, &str), Vec<&str>> = BTreeMap::new();
    for (run, path) in files {
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        folders.entry((run, dir)).or_default().push(path);
    }
    let folders: Vec<_> = folders.into_iter().collect();
    let width = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(2, 8));
    for chunk in folders.chunks(width) {
        std::thread::scope(|scope| {
            for ((run, _), paths) in chunk {
                scope.spawn(move || {
                    for path in paths {
                        log_outcome(run, path, ingest_file(store, run, path));
                    }
                });
            }
        });
    }
}

fn log_outcome(run: &RunId, path: &str, outcome: Result<IngestCounts>) {
    match outcome {
        Ok(c) if c.scalar_points + c.other_points + c.images > 0 || !c.skipped.is_empty() => {
            tracing::info!(
                "tensorboard ingest: run {run}: {path}: {} scalar, {} other point(s), {} image(s), skipped {:?}",
                c.scalar_points, c.other_points, c.images, c.skipped
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("tensorboard ingest: run {run}: {path}: {e}"),
    }
}

/// Ingests what was added to one event file since its saved offset.
pub fn ingest_file(store: &dyn Store, run: &RunId, path: &str) -> Result<IngestCounts> {
    let doc_id = format!("{run}/{:032x}", fnv1a128(path.as_bytes()));
    let mut state: FileState = store
        .get_document(FILE_KIND, &doc_id)?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let (info, mut reader) = match store.open_artifact(run, path) {
        Err(Error::NotFound { .. }) => return Ok(IngestCounts::default()),
        r => r?,
    };
    let size = info.size.unwrap_or(0);
    if size < state.offset {
        tracing::warn!(
            "tensorboard ingest: run {run}: {path} shrank ({} < {} bytes ingested): reading it anew",
            size,
            state.offset
        );
        state = FileState::default();
    }
    let from = state.offset;
    if size == from {
        return Ok(IngestCounts::default());
    }
    let skipped = std::io::copy(&mut (&mut reader).take(from), &mut std::io::sink())
        .map_err(Error::storage)?;
    if skipped != from {
        return Ok(IngestCounts::default());
    }
    let mut buf = Vec::with_capacity((size - from) as usize);
    reader.read_to_end(&mut buf).map_err(Error::storage)?;
    let owner = run;
    let target = target_run(store, owner, path)?;
    let run = &target;
    let mut kinds: HashMap<String, MetricKind> = store
        .list_metrics(run)?
        .into_iter()
        .map(|m| (m.name, m.kind))
        .collect();
    let mut decoder = ValueDecoder::with_plugins(std::mem::take(&mut state.plugins));
    let mut counts = IngestCounts::default();
    let label = format!("run {run}: {path}");
    // Batches are stored on a second thread while this one decodes the next.
    let (consumed, errors) = write_behind(&mut StoreSink(store), |sink| {
        let mut ing = FileIngest::new(sink, run, path, &mut kinds, &mut counts, &mut decoder)
            .batch_points(PIPELINE_POINTS);
        ingest_chunk(&mut ing, &buf, from, from, &label)
    })?;
    for e in &errors {
        tracing::warn!("tensorboard ingest: {e}");
    }
    if consumed < buf.len() {
        tracing::debug!(
            "tensorboard ingest: {label}: {} byte(s) after offset {} are not a whole record yet",
            buf.len() - consumed,
            from + consumed as u64
        );
    }
    if run != owner {
        follow_status(store, owner, run)?;
    }
    let state = FileState {
        path: path.to_string(),
        offset: from + consumed as u64,
        plugins: decoder.plugins().clone(),
    };
    let body = serde_json::to_value(&state).map_err(Error::storage)?;
    store.put_document(FILE_KIND, &doc_id, &body)?;
    Ok(counts)
}

/// The run that gets a file's points: the run itself for files directly in `logs/`, else a child run named
/// by the folder's path below `logs/` (as `flightlog import tensorboard` makes sub-folders child runs), with an
/// id derived from both so every upload finds the same child.
fn target_run(store: &dyn Store, owner: &RunId, path: &str) -> Result<RunId> {
    let rel = path
        .strip_prefix("logs/")
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(dir, _)| dir);
    if rel.is_empty() {
        return Ok(owner.clone());
    }
    let key = format!("flightlog-tensorboard-logs\0{owner}\0{rel}");
    let id: RunId = format!("{:032x}", fnv1a128(key.as_bytes())).parse()?;
    let parent = store.get_run(owner)?;
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("tensorboard.logdir".to_string(), format!("logs/{rel}"));
    store.create_run(NewRun {
        id: Some(id.clone()),
        experiment_id: parent.experiment_id,
        display_name: Some(flightlog_tensorboard::ingest::clean_name(rel)),
        parent_id: Some(owner.clone()),
        tags,
        ..Default::default()
    })?;
    Ok(id)
}

/// A child run made for a `logs/` sub-folder ends when its parent has ended.
fn follow_status(store: &dyn Store, owner: &RunId, child: &RunId) -> Result<()> {
    let parent = store.get_run(owner)?;
    if !parent.status.is_terminal() || store.get_run(child)?.status.is_terminal() {
        return Ok(());
    }
    store.update_run(
        child,
        RunPatch {
            status: Some(parent.status),
            end_time: parent.end_time,
            ..Default::default()
        },
    )?;
    Ok(())
}

/// The store as the ingest's destination.
struct StoreSink<'a>(&'a dyn Store);

impl IngestSink for StoreSink<'_> {
    fn write_batch(&mut self, run: &RunId, batch: Batch) -> Result<()> {
        self.0.write_batch(run, batch).map(|_| ())
    }
    fn write_image(&mut self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        self.0.write_image(run, meta.clone(), bytes).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_event_files_under_logs() {
        use super::is_ingested_path as f;
        assert!(f("logs/events.out.tfevents.1.host.2.0"));
        assert!(f("logs/train/sub/events.out.tfevents.1.h.2.0.v2"));
        assert!(!f("outputs/events.out.tfevents.1"));
        assert!(!f("logs/tfevents_dir/readme.txt"));
        assert!(!f("logs/stdout.txt"));
    }
}
