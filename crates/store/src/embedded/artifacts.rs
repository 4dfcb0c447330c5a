//! Artifact files under `<data>/artifacts/<run_id>/`: atomic streamed uploads (temp file, fsync, rename,
//! fsync the folder), listings, deletion, and images. Every path is checked component by component so neither
//! `..` nor a planted symbolic link can lead outside the run's folder.
//!
//! The rename happens in the write's transaction (atomic with the run check and the event), but the folder's
//! fsync runs on a thread of its own ([`FolderSync`]) beside the commit, and the caller is answered once both
//! are done: an acknowledged upload is as durable as before, while the single writer thread, which every other
//! write waits behind, no longer sits through a folder sync. (On a file system that does not persist the rename
//! with the database's own sync, a crash between the two can leave the event of an upload that was never
//! acknowledged while the path still holds nothing or the earlier file: readers take a missing file as not
//! found, and the TensorBoard ingester re-reads a file shorter than it had ingested.)

use super::events::emit;
use super::file_changes;
use super::writer::WriteCtx;
use super::{metrics, runs, Inner};
use crate::{ByteReader, FileOwner, FileUpload};
use flightlog_model::*;
use rusqlite::Connection;
use serde_json::json;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is at a checked path.
enum Found {
    Missing,
    File(fs::Metadata),
    Dir,
}

fn io_err(what: &'static str, path: &Path) -> impl Fn(io::Error) -> Error {
    let path = path.display().to_string();
    move |e| Error::storage(format!("{what} {path}: {e}"))
}

fn bad_path(rel: &str, reason: impl Into<String>) -> Error {
    Error::InvalidPath {
        path: rel.to_string(),
        reason: reason.into(),
    }
}

/// Models' files live under `artifacts/models/<id>/`: `models` is no run id, so the two never meet.
const MODELS_FOLDER: &str = "models";

/// The owner's folder; a model id must be one plain name (letters, digits, `-`, `_`), never a path.
fn root(inner: &Inner, owner: &FileOwner) -> Result<PathBuf> {
    match owner {
        FileOwner::Run(run) => Ok(run_root(inner, run)),
        FileOwner::Model(id) => {
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if id.is_empty() || id.len() > 64 || !id.chars().all(plain) {
                return Err(Error::invalid(
                    "model_id",
                    format!("'{id}' is not a model id (letters, digits, '-' and '_', at most 64)"),
                ));
            }
            Ok(inner.dirs.artifacts.join(MODELS_FOLDER).join(id))
        }
    }
}

fn run_root(inner: &Inner, run: &RunId) -> PathBuf {
    inner.dirs.artifacts.join(run.as_str())
}

/// Walks `rel` under `root` without following links: a symbolic link anywhere (the root included) or a file
/// where a folder is needed is `InvalidPath`. Says what the final component is.
fn check(root: &Path, rel: &str) -> Result<Found> {
    if kind_at(root, rel, "")?.is_none() {
        return Ok(Found::Missing);
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let mut cur = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let shown = parts[..=i].join("/");
        let Some(meta) = kind_at(&cur, rel, &shown)? else {
            return Ok(Found::Missing);
        };
        if i + 1 == parts.len() {
            return Ok(if meta.is_dir() {
                Found::Dir
            } else {
                Found::File(meta)
            });
        }
        if !meta.is_dir() {
            return Err(bad_path(
                rel,
                format!("'{shown}' is a file, so it cannot hold other files"),
            ));
        }
    }
    Ok(Found::Dir)
}

/// The metadata at `path` (not following links), `None` if nothing is there; a link is `InvalidPath`.
fn kind_at(path: &Path, rel: &str, shown: &str) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let what = if shown.is_empty() {
                "the run's artifact folder".to_string()
            } else {
                format!("'{shown}'")
            };
            Err(bad_path(
                rel,
                format!("{what} is a symbolic link; links are not followed"),
            ))
        }
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::storage(format!("checking {}: {e}", path.display()))),
    }
}

/// Checks that the canonical form of `dir` is inside the canonical run root (a last line of defence).
fn inside(root: &Path, dir: &Path, rel: &str) -> Result<()> {
    let root = root.canonicalize().map_err(io_err("resolving", root))?;
    let dir = dir.canonicalize().map_err(io_err("resolving", dir))?;
    if dir.starts_with(&root) {
        Ok(())
    } else {
        Err(bad_path(rel, "it leads outside the run's artifacts"))
    }
}

/// An upload's temp file in `tmp`: removed when dropped, unless [`Spool::placed`] says it was moved into place.
struct Spool {
    path: PathBuf,
    file: File,
    size: u64,
    placed: bool,
}

impl Spool {
    fn create(inner: &Inner) -> Result<Spool> {
        let path = inner.dirs.tmp.join(super::temp_name());
        let file = File::create(&path).map_err(io_err("creating", &path))?;
        Ok(Spool {
            path,
            file,
            size: 0,
            placed: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(io_err("writing", &self.path))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(io_err("syncing", &self.path))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Moves a spooled file to `rel` under `root` after re-checking the path, and starts syncing the folders whose
/// entries changed. The file it replaces is kept aside in `tmp` until the write commits, and the move is undone
/// if it does not (see [`file_changes`]).
fn place(
    ctx: &mut WriteCtx,
    tmp: &Path,
    root: &Path,
    rel: &str,
    spool: &Path,
) -> Result<(fs::Metadata, FolderSync)> {
    if matches!(check(root, rel)?, Found::Dir) {
        return Err(bad_path(rel, format!("'{rel}' is a folder")));
    }
    let target = root.join(rel);
    let parent = target.parent().unwrap_or(root).to_path_buf();
    let created = create_folders(&parent).map_err(io_err("creating", &parent))?;
    check(root, rel)?;
    inside(root, &parent, rel)?;
    file_changes::keep_aside(&mut ctx.files, &target, file_changes::parking_place(tmp))
        .map_err(io_err("replacing", &target))?;
    fs::rename(spool, &target).map_err(io_err("storing", &target))?;
    // The entries that changed: the file's in its folder, and each new folder's in the folder above it.
    let mut changed = vec![parent];
    changed.extend(
        created
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf)),
    );
    file_changes::record_created(&mut ctx.files, target.clone(), created);
    let meta = fs::symlink_metadata(&target).map_err(io_err("reading", &target))?;
    Ok((meta, FolderSync::start(changed)))
}

/// Creates `dir` and whatever folders above it are missing; returns those it created, outermost first.
fn create_folders(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    fs::create_dir_all(dir)?;
    Ok(missing)
}

/// The fsync of the folders a file was just renamed into (and of those new folders were made in), running on a
/// thread of its own so that it overlaps the commit instead of holding the writer thread: without the second
/// kind, a power cut could take an acknowledged upload away with its new folder. [`FolderSync::wait`] before
/// answering the caller.
struct FolderSync {
    dirs: Vec<PathBuf>,
    syncing: std::result::Result<std::thread::JoinHandle<io::Result<()>>, io::Error>,
}

impl FolderSync {
    fn start(dirs: Vec<PathBuf>) -> FolderSync {
        let d = dirs.clone();
        let syncing =
            flightlog_model::background::spawn("flightlog-dir-sync", move || sync_dirs(&d));
        FolderSync { dirs, syncing }
    }

    /// Waits for the sync (or, if no thread could be started for it, syncs here).
    fn wait(self) -> Result<()> {
        let synced = match self.syncing {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked"))),
            Err(_) => sync_dirs(&self.dirs),
        };
        let first = self
            .dirs
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(""));
        synced.map_err(io_err("syncing", first))
    }
}

fn sync_dirs(dirs: &[PathBuf]) -> io::Result<()> {
    dirs.iter().try_for_each(|d| sync_dir(d))
}

/// Makes the folder's entries (a rename into it) durable. A folder that is gone was deleted, with the file
/// just renamed into it, by a write that ran after the one that placed the file (the sync runs beside the
/// writer, not in it): the upload did succeed and then was deleted, so there is nothing left to sync.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn info(rel: String, meta: &fs::Metadata) -> ArtifactInfo {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| WallTime(d.as_micros() as i64));
    ArtifactInfo {
        path: rel,
        is_dir: meta.is_dir(),
        size: (!meta.is_dir()).then_some(meta.len()),
        modified_time: modified,
    }
}

/// A file being received into the owner's `rel`: checked when it begins (path, run open for writes) and again
/// when it is placed, since the run may have ended or the path become a folder in between.
pub struct Upload {
    inner: Arc<Inner>,
    owner: FileOwner,
    root: PathBuf,
    rel: String,
    spool: Spool,
}

pub fn begin(inner: &Arc<Inner>, owner: &FileOwner, path: &str) -> Result<Upload> {
    let rel = validate::artifact_path(path)?;
    if let FileOwner::Run(run) = owner {
        inner.read(|c| runs::writable(c, run))?;
    }
    let root = root(inner, owner)?;
    if matches!(check(&root, &rel)?, Found::Dir) {
        return Err(bad_path(&rel, format!("'{rel}' is a folder")));
    }
    Ok(Upload {
        inner: inner.clone(),
        owner: owner.clone(),
        root,
        rel,
        spool: Spool::create(inner)?,
    })
}

impl FileUpload for Upload {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.spool.write(bytes)
    }

    /// Syncs the temp file, then renames it into place in the write's transaction (with the run check and
    /// the event), and answers once the folder holding it is synced too.
    fn finish(self: Box<Self>) -> Result<ArtifactInfo> {
        let Upload {
            inner,
            owner,
            root,
            rel,
            mut spool,
        } = *self;
        spool.sync()?;
        let (size, tmp) = (spool.size, spool.path.clone());
        let tmp_dir = inner.dirs.tmp.clone();
        let (info, synced) = inner.write(move |ctx| {
            let readers = open_for_write(ctx, &owner)?;
            let (meta, synced) = place(ctx, &tmp_dir, &root, &rel, &tmp)?;
            let body = EventBody::ArtifactWritten {
                path: rel.clone(),
                size,
            };
            announce(ctx, readers, &body)?;
            Ok((info(rel, &meta), synced))
        })?;
        spool.placed = true;
        synced.wait().map(|()| info)
    }
}

/// The run whose readers hear of a change to the owner's files, with its experiment, after checking in the
/// write's transaction that the run takes writes; none for a model (its files have no readers).
fn open_for_write<'o>(
    ctx: &WriteCtx,
    owner: &'o FileOwner,
) -> Result<Option<(ExperimentId, &'o RunId)>> {
    match owner {
        FileOwner::Run(run) => runs::open_for_write(&ctx.conn, run).map(|exp| Some((exp, run))),
        FileOwner::Model(_) => Ok(None),
    }
}

/// Tells the readers of the run [`open_for_write`] found, if any, of a change to its files.
fn announce(
    ctx: &mut WriteCtx,
    readers: Option<(ExperimentId, &RunId)>,
    body: &EventBody,
) -> Result<()> {
    match readers {
        Some((exp, run)) => emit(ctx, exp, Some(run), body).map(|_| ()),
        None => Ok(()),
    }
}

/// A run's files can be read while the run exists (deleted runs included); a model's while its folder does.
fn readable_root(inner: &Inner, owner: &FileOwner) -> Result<PathBuf> {
    if let FileOwner::Run(run) = owner {
        inner.read(|c| runs::exists(c, run))?;
    }
    root(inner, owner)
}

pub fn open(inner: &Inner, owner: &FileOwner, path: &str) -> Result<(ArtifactInfo, ByteReader)> {
    let rel = validate::artifact_path(path)?;
    let root = readable_root(inner, owner)?;
    let Found::File(_) = check(&root, &rel)? else {
        return Err(Error::not_found(Entity::Artifact, &rel));
    };
    // The size comes from the opened file, not from the check: a file replaced in between (every upload
    // is a rename over the old one) would otherwise be sent with the old file's length and the new one's
    // bytes. O_NOFOLLOW keeps the check's promise that the last component is no link.
    let target = root.join(&rel);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::not_found(Entity::Artifact, &rel),
            _ => io_err("opening", &target)(e),
        })?;
    let meta = file.metadata().map_err(io_err("reading", &target))?;
    if !meta.is_file() {
        return Err(Error::not_found(Entity::Artifact, &rel));
    }
    Ok((info(rel, &meta), Box::new(file)))
}

pub fn list(
    inner: &Inner,
    owner: &FileOwner,
    prefix: Option<&str>,
    recursive: bool,
) -> Result<Vec<ArtifactInfo>> {
    let root = readable_root(inner, owner)?;
    let rel = match prefix.filter(|p| !p.trim_matches('/').is_empty()) {
        Some(p) => Some(validate::artifact_path(p)?),
        None => None,
    };
    let found = match &rel {
        Some(rel) => check(&root, rel)?,
        None => match fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => Found::Dir,
            Ok(_) => return Err(bad_path("", "the artifact folder is not a folder")),
            Err(_) => Found::Missing,
        },
    };
    let mut out = Vec::new();
    match found {
        Found::Missing => {}
        Found::File(meta) => out.push(info(rel.unwrap_or_default(), &meta)),
        Found::Dir => walk(&root, rel.as_deref(), recursive, &mut out)?,
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Lists folder `rel` (None: the root); symbolic links are skipped, never followed.
fn walk(
    root: &Path,
    rel: Option<&str>,
    recursive: bool,
    out: &mut Vec<ArtifactInfo>,
) -> Result<()> {
    let dir = rel.map_or_else(|| root.to_path_buf(), |r| root.join(r));
    for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        let entry = entry.map_err(io_err("listing", &dir))?;
        let meta = entry.metadata().map_err(io_err("reading", &entry.path()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = rel.map_or_else(|| name.clone(), |r| format!("{r}/{name}"));
        if meta.file_type().is_symlink() {
            continue;
        }
        match (meta.is_dir(), recursive) {
            (true, true) => walk(root, Some(&path), true, out)?,
            _ => out.push(info(path, &meta)),
        }
    }
    Ok(())
}

pub fn delete(inner: &Inner, owner: &FileOwner, path: &str) -> Result<()> {
    let rel = validate::artifact_path(path)?;
    let root = root(inner, owner)?;
    let (owner, tmp) = (owner.clone(), inner.dirs.tmp.clone());
    inner.write(move |ctx| {
        let readers = open_for_write(ctx, &owner)?;
        if matches!(check(&root, &rel)?, Found::Missing) {
            return Err(Error::not_found(Entity::Artifact, &rel));
        }
        take_away(ctx, &tmp, &root.join(&rel))?;
        announce(ctx, readers, &EventBody::ArtifactDeleted { path: rel })
    })
}

/// Deletes a model's folder with every file in it (nothing, if it has none).
pub fn delete_model_files(inner: &Inner, model: &str) -> Result<()> {
    let root = root(inner, &FileOwner::Model(model.to_string()))?;
    let tmp = inner.dirs.tmp.clone();
    inner.write(move |ctx| take_away(ctx, &tmp, &root).map(|_| ()))
}

/// Moves a file or folder being deleted out of the way (into `tmp`, removed once the write commits, put back if
/// it does not), and has its folder synced at the commit so that the delete survives a power cut as its event
/// does. `false`: nothing was there.
fn take_away(ctx: &mut WriteCtx, tmp: &Path, target: &Path) -> Result<bool> {
    let parked = file_changes::parking_place(tmp);
    if !file_changes::park(&mut ctx.files, target, parked).map_err(io_err("deleting", target))? {
        return Ok(false);
    }
    if let Some(parent) = target.parent().map(Path::to_path_buf) {
        ctx.files.record(
            || {},
            move || {
                if let Err(e) = sync_dir(&parent) {
                    tracing::warn!("syncing {} after a delete: {e}", parent.display());
                }
            },
        );
    }
    Ok(true)
}

// --- images ----------------------------------------------------------------------------------------------

/// The file extension for `media_type`, if the bytes really are that kind of image.
fn image_ext(media_type: &str, bytes: &[u8]) -> Result<&'static str> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let sniffed = if bytes.starts_with(b"\x89PNG") {
        Some(("image/png", "png"))
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some(("image/jpeg", "jpg"))
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(("image/gif", "gif"))
    } else if head.contains("<svg") {
        Some(("image/svg+xml", "svg"))
    } else {
        None
    };
    let declared = match media_type {
        "image/jpg" => "image/jpeg",
        m => m,
    };
    match sniffed {
        Some((m, ext)) if m == declared => Ok(ext),
        Some((m, _)) => Err(Error::invalid("media_type", format!("the bytes are a {m} image but media_type says '{media_type}'"))),
        None => Err(Error::invalid(
            "media_type",
            format!("the bytes are not a PNG, JPEG, GIF or SVG image (declared '{media_type}'); only those are accepted"),
        )),
    }
}

/// The folder of a metric's images, under `images/`: its name where each `/`-separated part is a plain file
/// name (letters, digits, `-_.`, not starting with a dot) and the whole at most [`PLAIN_FOLDER_BYTES`], so
/// `samples/pred` keeps its images in `samples/pred/`; otherwise the name made plain and cut, then a hash of the
/// whole name, so that no two metrics share a folder (`x y` and `x_y` would) and the name fits the filesystem.
fn folder_name(name: &str) -> String {
    let plain_part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c))
    };
    if name.len() <= PLAIN_FOLDER_BYTES && name.split('/').all(plain_part) {
        return name.to_string();
    }
    let mut cut: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string();
    while cut.len() > PLAIN_FOLDER_BYTES - 17 {
        cut.pop();
    }
    format!("{cut}-{:016x}", fnv1a64(name.as_bytes()))
}

/// Longest metric name used as its image folder's name as it is.
const PLAIN_FOLDER_BYTES: usize = 200;

/// `folder/stem.ext`, or `folder/stem-N.ext` with the first N that names nothing yet: an image never replaces
/// a file already there (one uploaded by hand, or left by a write that was rolled back).
fn unused_path(root: &Path, folder: &str, stem: &str, ext: &str) -> Result<String> {
    let mut rel = format!("{folder}/{stem}.{ext}");
    let mut n = 0;
    while !matches!(check(root, &rel)?, Found::Missing) {
        n += 1;
        rel = format!("{folder}/{stem}-{n}.{ext}");
    }
    Ok(rel)
}

pub fn write_image(inner: &Inner, run: &RunId, meta: ImageWrite, bytes: &[u8]) -> Result<Record> {
    validate::name("metric name", &meta.name)?;
    validate::description("description", meta.description.as_deref().unwrap_or(""))?;
    if let Some(id) = &meta.batch_id {
        validate::name("batch_id", id)?;
    }
    validate::image_size(bytes.len())?;
    let ext = image_ext(&meta.media_type, bytes)?;
    inner.read(|c| runs::writable(c, run))?;
    let mut spool = Spool::create(inner)?;
    spool.write(bytes)?;
    spool.sync()?;
    let (size, tmp) = (spool.size, spool.path.clone());
    let root = run_root(inner, run);
    let (run, tmp_dir) = (run.clone(), inner.dirs.tmp.clone());
    let (record, synced) = inner.write(move |ctx| {
        let exp = runs::open_for_write(&ctx.conn, &run)?;
        if let Some(earlier) = image_written(&ctx.conn, &run, &meta)? {
            return Ok((earlier, None));
        }
        let series = metrics::open_series(
            &ctx.conn,
            &run,
            &meta.name,
            MetricKind::Image,
            meta.description.as_deref(),
        )?;
        let step = meta
            .step
            .unwrap_or_else(|| series.last_step.map_or(0, |s| s.saturating_add(1)));
        let folder = format!("images/{}", folder_name(&meta.name));
        let rel = unused_path(&root, &folder, &format!("{step}_{}", series.count), ext)?;
        let mut value = json!({"path": rel, "media_type": meta.media_type});
        if let Some(d) = meta.description.filter(|d| !d.is_empty()) {
            value["description"] = json!(d);
        }
        if let Some(id) = &meta.batch_id {
            value["batch_id"] = json!(id);
        }
        let record = Record {
            index: series.count,
            step,
            time: meta.time.unwrap_or_else(WallTime::now),
            value,
        };
        let (_, synced) = place(ctx, &tmp_dir, &root, &rel, &tmp)?;
        metrics::append_records(
            ctx,
            exp,
            &run,
            &meta.name,
            MetricKind::Image,
            &series,
            vec![record.clone()],
            None,
            Vec::new(),
        )?;
        emit(
            ctx,
            exp,
            Some(&run),
            &EventBody::ArtifactWritten { path: rel, size },
        )?;
        if let Some(id) = &meta.batch_id {
            metrics::record_batch(&ctx.conn, &run, id, 1)?;
        }
        Ok((record, Some(synced)))
    })?;
    match synced {
        Some(synced) => {
            spool.placed = true;
            synced.wait().map(|()| record)
        }
        None => Ok(record),
    }
}

/// The record an earlier image write with the same batch id stored (found among the series' records at the
/// same step), if there was one: a retried upload is stored once. An id that a batch of points used is a
/// conflict.
fn image_written(conn: &Connection, run: &RunId, meta: &ImageWrite) -> Result<Option<Record>> {
    let Some(id) = &meta.batch_id else {
        return Ok(None);
    };
    if metrics::stored_batch(conn, run, id)?.is_none() {
        return Ok(None);
    }
    let same_step = ReadRange {
        min_step: meta.step,
        max_step: meta.step,
        ..Default::default()
    };
    let earlier = match metrics::read_records(conn, run, &meta.name, &same_step) {
        Ok(records) => records
            .into_iter()
            .rev()
            .find(|r| r.value["batch_id"].as_str() == Some(id.as_str())),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    earlier.map(Some).ok_or_else(|| {
        Error::conflict(format!(
            "batch_id '{id}' was already used by a write that is not an image of '{}'",
            meta.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A write that replaces or deletes a file and then fails (as one whose commit fails does) leaves the
    /// acknowledged file as it was: the writer undoes the job's file changes with its rollback.
    #[test]
    fn a_failed_write_leaves_the_files_it_replaced_or_deleted_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::EmbeddedStore::open(dir.path()).unwrap();
        let run = s.create_run(NewRun::default()).unwrap().id;
        s.put_artifact(&run, "model.bin", &mut &b"acknowledged"[..])
            .unwrap();
        let inner = s.inner.clone();
        let (root, tmp) = (run_root(&inner, &run), inner.dirs.tmp.clone());
        let spool = tmp.join(super::super::temp_name());
        fs::write(&spool, b"not committed").unwrap();
        let failed = |why: &str| Err::<(), _>(Error::storage(why));
        let (r, t) = (root.clone(), tmp.clone());
        let replaced = inner.write(move |ctx| {
            place(ctx, &t, &r, "model.bin", &spool)?;
            place_new_folder_file(ctx, &t, &r)?;
            failed("after the upload")
        });
        assert!(replaced.is_err());
        let (r, t) = (root.clone(), tmp.clone());
        let deleted = inner.write(move |ctx| {
            take_away(ctx, &t, &r.join("model.bin"))?;
            failed("after the delete")
        });
        assert!(deleted.is_err());
        let (_, reader) = s.open_artifact(&run, "model.bin").unwrap();
        let mut got = Vec::new();
        io::Read::read_to_end(&mut { reader }, &mut got).unwrap();
        assert_eq!(got, b"acknowledged");
        assert!(
            !root.join("new").exists(),
            "a folder the failed write made is gone"
        );
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left parked"
        );
    }

    /// Places a file in a folder that does not exist yet (`new/sub/f`).
    fn place_new_folder_file(ctx: &mut WriteCtx, tmp: &Path, root: &Path) -> Result<()> {
        let spool = tmp.join(super::super::temp_name());
        fs::write(&spool, b"x").map_err(io_err("writing", &spool))?;
        place(ctx, tmp, root, "new/sub/f", &spool).map(|_| ())
    }

    #[test]
    fn images_are_checked_by_their_bytes() {
        assert_eq!(
            image_ext("image/png", b"\x89PNG\r\n\x1a\nrest").unwrap(),
            "png"
        );
        assert_eq!(image_ext("image/jpeg", b"\xFF\xD8\xFF\xE0").unwrap(), "jpg");
        assert_eq!(image_ext("image/gif", b"GIF89a...").unwrap(), "gif");
        assert_eq!(
            image_ext("image/svg+xml", b"<?xml?><svg xmlns=''/>").unwrap(),
            "svg"
        );
        assert!(image_ext("image/jpeg", b"\x89PNG\r\n")
            .unwrap_err()
            .to_string()
            .contains("image/png image"));
        assert!(image_ext("image/png", b"hello").is_err());
        assert_eq!(folder_name("train/img_é"), "train/img_é");
        assert!(folder_name("train/img é").starts_with("train_img_é-"));
        assert!(folder_name("..").starts_with('-'), "{}", folder_name(".."));
        assert!(folder_name("a//b").starts_with("a__b-"));
    }

    /// The race behind an upload answered 500: the upload's rename commits, a delete of the model (or folder)
    /// commits next, and the upload's folder sync, running beside the writer, then finds no folder.
    #[test]
    fn a_folder_deleted_before_its_sync_leaves_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("w0");
        fs::create_dir(&folder).unwrap();
        File::create(folder.join("f0")).unwrap();
        assert!(sync_dir(&folder).is_ok());
        fs::remove_dir_all(&folder).unwrap();
        let sync = FolderSync {
            dirs: vec![folder],
            syncing: Err(io::Error::other("no thread")),
        };
        assert!(sync.wait().is_ok(), "a deleted folder has nothing to sync");
    }
}
