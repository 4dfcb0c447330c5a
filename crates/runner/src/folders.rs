//! `./outputs` and `./logs` of a job: uploaded to the run's artifacts under the same names.

use crate::tracker::Tracker;
use flightlog_model::RunId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Uploads the files of one folder that are new or changed since the last call (by size and mtime), or
/// since the job started: the folder is the working directory's, so a previous run's `./outputs` is still
/// there and is not this run's.
pub struct FolderSync {
    dir: PathBuf,
    prefix: String,
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl FolderSync {
    /// Takes what the folder holds now as already seen: call it before the job starts.
    pub fn since_now(dir: PathBuf, prefix: &str) -> Self {
        let seen = files_under(&dir)
            .into_iter()
            .filter_map(|(path, _)| Some((path.clone(), stamp(&path)?)))
            .collect();
        FolderSync {
            dir,
            prefix: prefix.to_string(),
            seen,
        }
    }

    /// One pass; returns how many files were uploaded. Failures are logged and retried on the next pass.
    pub fn sync(&mut self, tracker: &dyn Tracker, run: &RunId) -> usize {
        let mut uploaded = 0;
        for (path, rel) in files_under(&self.dir) {
            let Some(key) = stamp(&path) else {
                continue;
            };
            if self.seen.get(&path) == Some(&key) {
                continue;
            }
            let dest = format!("{}/{rel}", self.prefix);
            match tracker.put_file(run, &dest, &path) {
                Ok(()) => {
                    self.seen.insert(path, key);
                    uploaded += 1;
                }
                Err(e) => tracing::warn!(
                    "cannot upload {} ({e}); to upload it later: flightlog artifacts put {run} '{}' {dest}",
                    path.display(),
                    path.display()
                ),
            }
        }
        uploaded
    }
}

/// What tells a changed file: its size and modification time (of the file a link points to).
fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// Every file below `dir` with its '/'-separated relative path, sorted; empty if `dir` does not exist. A
/// link to a file counts as that file (`best.pt -> ckpt/model.pt`); links to folders are not followed (no
/// cycles, no folder outside `dir`).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() || (t.is_symlink() && p.is_file()) => {
                    if let Ok(rel) = p.strip_prefix(dir) {
                        let rel = rel
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy())
                            .collect::<Vec<_>>()
                            .join("/");
                        out.push((p.clone(), rel));
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}
