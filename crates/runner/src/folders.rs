//! `./outputs` and `./logs` of a job: uploaded to the run's artifacts under the same names.

use crate::tracker::Tracker;
use flightlog_model::RunId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Uploads the files of one folder that are new or changed since the last call (by size and mtime).
pub struct FolderSync {
    dir: PathBuf,
    prefix: String,
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl FolderSync {
    pub fn new(dir: PathBuf, prefix: &str) -> Self {
        FolderSync {
            dir,
            prefix: prefix.to_string(),
            seen: HashMap::new(),
        }
    }

    /// One pass; returns how many files were uploaded. Failures are logged and retried on the next pass.
    pub fn sync(&mut self, tracker: &dyn Tracker, run: &RunId) -> usize {
        let mut uploaded = 0;
        for (path, rel) in files_under(&self.dir) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = (meta.len(), meta.modified().ok());
            if self.seen.get(&path) == Some(&key) {
                continue;
            }
            match tracker.put_file(run, &format!("{}/{rel}", self.prefix), &path) {
                Ok(()) => {
                    self.seen.insert(path, key);
                    uploaded += 1;
                }
                Err(e) => tracing::warn!("cannot upload {}: {e}", path.display()),
            }
        }
        uploaded
    }
}

/// Every file below `dir` with its '/'-separated relative path, sorted; empty if `dir` does not exist.
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
                Ok(t) if t.is_file() => {
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
