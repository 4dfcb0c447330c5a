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
    ingest_reader, write_behind, FileIngest, IngestCounts, IngestSink, StoredRun,
};
use flightlog_tensorboard::{is_event_file_name, read_identity, replaced_since, ValueDecoder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Document kind of per-file ingest state ([`FileState`]), id `<run>/<hash of path>`.
const FILE_KIND: &str = "tensorboard.ingest.file";
/// Document kind of the event cursor (one document, id [`CURSOR_ID`]).
const CURSOR_KIND: &str = "tensorboard.ingest.cursor";
const CURSOR_ID: &str = "events";
/// The tag of a child run made for a `logs/` sub-folder: the folder.
const CHILD_TAG: &str = "tensorboard.logdir";
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
    /// The file's [`read_identity`]: another one means the file was replaced and is read anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<u64>,
}

/// Whether an artifact path is an event file in a run's `logs/` folder.
pub fn is_ingested_path(path: &str) -> bool {
    path.starts_with("logs/") && path.rsplit('/').next().is_some_and(is_event_file_name)
}

/// Follows the store's events until `shutdown`, ingesting every event file written under `logs/`. Each
/// `logs/` folder has a worker thread of its own while it has files to ingest, so a new upload is taken up at
/// once instead of after the files other folders are still ingesting.
pub(crate) async fn run(store: Arc<dyn Store>, shutdown: CancellationToken) {
    // Woken by uploads and run ends only: a metric commit neither names an event file nor ends a run.
    let mut watch = store.subscribe_uploads_and_run_ends();
    let s = store.clone();
    let mut after = tokio::task::spawn_blocking(move || load_cursor(s.as_ref()))
        .await
        .unwrap_or(0);
    let work = Arc::new(Work::starting_at(after));
    loop {
        let newest = *watch.borrow_and_update();
        loop {
            let (s, w) = (store.clone(), work.clone());
            let step = tokio::task::spawn_blocking(move || scan(&s, &w, after, newest)).await;
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
/// are never decoded here): hands the event files they name to their folders' workers. `newest` is a seq
/// committed before the page was read: when the page is not full, every event up to it has been seen, so the
/// scan moves there even if none matched. Returns where the scan got to and whether more events may follow.
fn scan(store: &Arc<dyn Store>, work: &Arc<Work>, after: u64, newest: u64) -> Result<(u64, bool)> {
    let filter = EventFilter {
        types: vec!["artifact_written".to_string(), "run_updated".to_string()],
        ..Default::default()
    };
    let events = store.events_since(&filter, after, PAGE)?;
    let full = events.len() == PAGE;
    let last = events.last().map_or(after, |e| e.seq);
    let next = if full { last } else { last.max(newest) };
    for e in events {
        match (e.run_id, e.body) {
            (Some(run), EventBody::ArtifactWritten { path, .. }) if is_ingested_path(&path) => {
                work.enqueue(store, run, path, e.seq);
            }
            (Some(run), body) if body.is_run_end() => {
                if let Err(e) = end_children(store.as_ref(), &run) {
                    tracing::warn!(
                        "tensorboard ingest: cannot end the logs/ child runs of run {run}: {e}"
                    );
                }
            }
            _ => {}
        }
    }
    work.scanned_to(store.as_ref(), next);
    Ok((next, full))
}

/// A `logs/` folder of a run: its files feed the same run, so they are ingested in order, one at a time.
type Folder = (RunId, String);

/// The files waiting or being ingested, and how far the event log is done: the saved cursor never passes an
/// event whose file is not ingested yet, so a restart neither repeats nor loses one.
struct Work {
    state: Mutex<WorkState>,
}

struct WorkState {
    /// Each busy folder's files still to ingest (the first one is being ingested), with their events' seqs.
    queues: HashMap<Folder, VecDeque<(String, u64)>>,
    /// Seqs of the events whose file is waiting or being ingested.
    open: BTreeSet<u64>,
    /// Every event up to here was read and handed out.
    scanned: u64,
    /// The cursor saved last.
    saved: u64,
}

impl Work {
    fn starting_at(cursor: u64) -> Work {
        Work {
            state: Mutex::new(WorkState {
                queues: HashMap::new(),
                open: BTreeSet::new(),
                scanned: cursor,
                saved: cursor,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a file on its folder's worker, starting one if the folder has none.
    fn enqueue(self: &Arc<Self>, store: &Arc<dyn Store>, run: RunId, path: String, seq: u64) {
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
        let folder = (run, dir);
        let mut st = self.lock();
        st.open.insert(seq);
        if let Some(queue) = st.queues.get_mut(&folder) {
            queue.push_back((path, seq));
            return;
        }
        st.queues
            .insert(folder.clone(), VecDeque::from([(path, seq)]));
        drop(st);
        let (work, store) = (self.clone(), store.clone());
        let started = std::thread::Builder::new()
            .name("tensorboard-ingest".into())
            .spawn(move || work.drain(store.as_ref(), &folder));
        if let Err(e) = started {
            tracing::error!("tensorboard ingest: cannot start a worker: {e}");
        }
    }

    /// A folder's worker: ingests its files until none is left.
    fn drain(&self, store: &dyn Store, folder: &Folder) {
        while let Some((path, seq)) = self.next_file(folder) {
            log_outcome(&folder.0, &path, ingest_file(store, &folder.0, &path));
            let mut st = self.lock();
            if let Some(queue) = st.queues.get_mut(folder) {
                queue.pop_front();
            }
            st.open.remove(&seq);
            self.save_cursor(st, store, true);
        }
    }

    /// The folder's next file, or `None` (and the folder is no longer busy) when it has none.
    fn next_file(&self, folder: &Folder) -> Option<(String, u64)> {
        let mut st = self.lock();
        let next = st.queues.get(folder).and_then(|q| q.front().cloned());
        if next.is_none() {
            st.queues.remove(folder);
        }
        next
    }

    fn scanned_to(&self, store: &dyn Store, seq: u64) {
        let mut st = self.lock();
        st.scanned = st.scanned.max(seq);
        self.save_cursor(st, store, false);
    }

    /// Saves the cursor just before the oldest event whose file is not done (or at the scan if none): after a
    /// file was ingested, or (to keep a restart's re-read short) when it moved into another page of events.
    fn save_cursor(
        &self,
        mut st: std::sync::MutexGuard<'_, WorkState>,
        store: &dyn Store,
        ingested: bool,
    ) {
        let safe = st
            .open
            .first()
            .map_or(st.scanned, |oldest| oldest.saturating_sub(1));
        let new_page = safe / PAGE as u64 != st.saved / PAGE as u64;
        if safe <= st.saved || !(ingested || new_page) {
            return;
        }
        st.saved = safe;
        drop(st);
        if let Err(e) =
            store.put_document(CURSOR_KIND, CURSOR_ID, &serde_json::json!({ "seq": safe }))
        {
            tracing::warn!("tensorboard ingest: cannot save its cursor: {e}");
        }
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
    let (identity, head) = read_identity(&mut reader).map_err(Error::storage)?;
    if let Some(why) = replaced_since(state.offset, state.identity, size, identity) {
        tracing::warn!("tensorboard ingest: run {run}: {path} {why}: reading it anew");
        state = FileState::default();
    }
    let from = state.offset;
    if size == from {
        return Ok(IngestCounts::default());
    }
    // The file from `from` on: what is left of its start (read for its identity), then the rest.
    let head_left = head.get(from as usize..).unwrap_or_default();
    let to_skip = from.saturating_sub(head.len() as u64);
    let skipped = std::io::copy(&mut (&mut reader).take(to_skip), &mut std::io::sink())
        .map_err(Error::storage)?;
    if skipped != to_skip {
        return Ok(IngestCounts::default());
    }
    let mut reader = head_left.chain(reader);
    let owner = run;
    let child = child_run(owner, path);
    let run = child.as_ref().map_or(owner, |c| &c.0);
    // A child run that does not exist yet holds nothing: read before it is created, side by side.
    let mut stored = stored_run(store, run)?;
    let mut decoder = ValueDecoder::with_plugins(std::mem::take(&mut state.plugins));
    let mut counts = IngestCounts::default();
    let label = format!("run {run}: {path}");
    let (end, errors) = std::thread::scope(|scope| {
        // The child run's creation (a commit) overlaps decoding; the first write waits for it.
        let creating = child
            .as_ref()
            .map(|(id, rel)| scope.spawn(move || create_child_run(store, owner, id, rel)));
        let mut sink = StoreSink { store, creating };
        // Batches are stored on a second thread while this one decodes the next.
        let ingested = write_behind(&mut sink, |sink| {
            let file = (path, identity);
            let mut ing = FileIngest::new(sink, run, file, &mut stored, &mut counts, &mut decoder)
                .batch_points(PIPELINE_POINTS);
            ingest_reader(&mut ing, &mut reader, from, &label)
        });
        // Created even when the file held no points yet, as before.
        sink.ready().and(ingested)
    })?;
    for e in &errors {
        tracing::warn!("tensorboard ingest: {e}");
    }
    if end < size {
        tracing::debug!(
            "tensorboard ingest: {label}: {} byte(s) after offset {end} are not a whole record yet",
            size - end
        );
    }
    if run != owner {
        follow_status(store, owner, run)?;
    }
    let state = FileState {
        path: path.to_string(),
        offset: end,
        plugins: decoder.plugins().clone(),
        identity,
    };
    let body = serde_json::to_value(&state).map_err(Error::storage)?;
    store.put_document(FILE_KIND, &doc_id, &body)?;
    Ok(counts)
}

/// What the run holds already (nothing if it does not exist yet).
fn stored_run(store: &dyn Store, run: &RunId) -> Result<StoredRun> {
    let params = match store.get_run(run) {
        Err(Error::NotFound { .. }) => return Ok(StoredRun::default()),
        found => found?.params,
    };
    Ok(StoredRun::new(store.list_metrics(run)?, params))
}

/// The child run that gets a file's points when the file is in a sub-folder of `logs/` (as `flightlog import
/// tensorboard` makes sub-folders child runs): its id, derived from the run and the folder's path below `logs/`
/// so every upload finds the same child, and that path. `None` for files directly in `logs/` (the run itself).
fn child_run(owner: &RunId, path: &str) -> Option<(RunId, String)> {
    let rel = path
        .strip_prefix("logs/")
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(dir, _)| dir);
    if rel.is_empty() {
        return None;
    }
    let key = format!("flightlog-tensorboard-logs\0{owner}\0{rel}");
    let id: RunId = format!("{:032x}", fnv1a128(key.as_bytes())).parse().ok()?;
    Some((id, rel.to_string()))
}

/// Creates the child run of [`child_run`] (a no-op if it exists).
fn create_child_run(store: &dyn Store, owner: &RunId, id: &RunId, rel: &str) -> Result<()> {
    let parent = store.get_run(owner)?;
    let mut tags = std::collections::BTreeMap::new();
    tags.insert(CHILD_TAG.to_string(), format!("logs/{rel}"));
    store.create_run(NewRun {
        id: Some(id.clone()),
        experiment_id: parent.experiment_id,
        display_name: Some(flightlog_tensorboard::ingest::clean_name(rel)),
        parent_id: Some(owner.clone()),
        tags,
        ..Default::default()
    })?;
    Ok(())
}

/// Ends the `logs/` child runs of a run that has ended: a script's `logs/train` and `logs/val` runs end with
/// it, also when their last file was ingested before it ended. (A file ingested after the run ended ends its
/// child at once: [`follow_status`].)
fn end_children(store: &dyn Store, owner: &RunId) -> Result<()> {
    let query = RunQuery {
        parent_id: Some(owner.clone()),
        tags: [(CHILD_TAG.to_string(), None)].into(),
        ..Default::default()
    };
    let children = Page::collect_all(|page_token| {
        store.list_runs(&RunQuery {
            page_token,
            ..query.clone()
        })
    })?;
    children
        .iter()
        .filter(|c| !c.status.is_terminal())
        .try_for_each(|c| follow_status(store, owner, &c.id))
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

/// The store as the ingest's destination; a child run still being created is waited for before the first
/// write.
struct StoreSink<'a, 's> {
    store: &'a dyn Store,
    creating: Option<std::thread::ScopedJoinHandle<'s, Result<()>>>,
}

impl StoreSink<'_, '_> {
    /// Waits until the target run exists.
    fn ready(&mut self) -> Result<()> {
        match self.creating.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::storage("creating the child run panicked"))),
            None => Ok(()),
        }
    }
}

impl IngestSink for StoreSink<'_, '_> {
    fn write_batch(&mut self, run: &RunId, batch: Batch) -> Result<()> {
        self.ready()?;
        self.store.write_batch(run, batch).map(|_| ())
    }
    fn write_image(&mut self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        self.ready()?;
        self.store.write_image(run, meta.clone(), bytes).map(|_| ())
    }
    fn write_params(&mut self, run: &RunId, params: BTreeMap<String, String>) -> Result<()> {
        self.ready()?;
        let patch = RunPatch {
            add_params: params,
            ..Default::default()
        };
        self.store.update_run(run, patch).map(|_| ())
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
