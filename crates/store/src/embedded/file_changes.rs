//! Changes to files that a write makes inside its transaction, each kept undoable until the transaction ends:
//! the database and the files agree whichever way a write ends.
//!
//! An upload renames its file into place and a delete moves the file away while the write runs, because later
//! writes of the same group must see the change (an upload to a path a delete just freed). Before this, a
//! commit that failed afterwards (a full disk, an I/O error on the log) answered 500 while the change stayed:
//! an acknowledged file was replaced by an unacknowledged one, or gone. Now the old file is parked in `tmp`
//! until the commit, and put back if the job or the commit fails.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

type Action = Box<dyn FnOnce() + Send>;

/// One change: what to do once it is committed (drop what was parked) and how to undo it.
struct Change {
    commit: Action,
    undo: Action,
}

/// The changes of the writer's current group: those of jobs that succeeded, and those of the job running.
#[derive(Default)]
pub struct FileChanges {
    kept: Vec<Change>,
    job: Vec<Change>,
}

impl FileChanges {
    /// Records a change the running job made.
    pub fn record(
        &mut self,
        undo: impl FnOnce() + Send + 'static,
        commit: impl FnOnce() + Send + 'static,
    ) {
        self.job.push(Change {
            commit: Box::new(commit),
            undo: Box::new(undo),
        });
    }

    /// The running job succeeded: its changes wait for the group's commit.
    pub fn keep_job(&mut self) {
        self.kept.append(&mut self.job);
    }

    /// The running job was rolled back: its changes are undone, newest first.
    pub fn undo_job(&mut self) {
        undo_all(&mut self.job);
    }

    /// The group committed: what its changes parked is dropped.
    pub fn committed(&mut self) {
        for change in self.kept.drain(..) {
            (change.commit)();
        }
    }

    /// The group's commit failed: every change it kept is undone, newest first.
    pub fn rolled_back(&mut self) {
        undo_all(&mut self.kept);
    }
}

fn undo_all(changes: &mut Vec<Change>) {
    while let Some(change) = changes.pop() {
        (change.undo)();
    }
}

/// Where `target` is parked while the write that replaces or deletes it is not yet committed: `tmp`, on the
/// same filesystem (a rename), under a name the stale-file sweep knows as this process's.
pub fn parking_place(tmp: &Path) -> PathBuf {
    tmp.join(super::temp_name())
}

/// Moves `target` (a file or a folder, which a delete takes away) to `parked`, recording an undo that puts it
/// back and a commit that removes it. `Ok(false)`: there was nothing at `target`.
pub fn park(changes: &mut FileChanges, target: &Path, parked: PathBuf) -> io::Result<bool> {
    match fs::rename(target, &parked) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    record_parked(changes, target, parked);
    Ok(true)
}

/// Keeps the file at `target`, which an upload is about to replace, at `parked` as a second link, so that
/// readers of `target` see the old file until the rename over it and never a missing one. Where links cannot
/// be made (some network filesystems) the file is moved away instead. `Ok(false)`: there was no file.
pub fn keep_aside(changes: &mut FileChanges, target: &Path, parked: PathBuf) -> io::Result<bool> {
    match fs::hard_link(target, &parked) {
        Ok(()) => {
            record_parked(changes, target, parked);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(_) => park(changes, target, parked),
    }
}

fn record_parked(changes: &mut FileChanges, target: &Path, parked: PathBuf) {
    let (back, gone) = (target.to_path_buf(), parked.clone());
    changes.record(move || restore(&parked, &back), move || remove_parked(gone));
}

/// Puts a parked file or folder back where it was (over whatever the undone write left there).
fn restore(parked: &Path, target: &Path) {
    if let Err(e) = fs::rename(parked, target) {
        tracing::error!(
            "cannot put {} back at {} after a failed write: {e}",
            parked.display(),
            target.display()
        );
    }
}

/// Removes what a committed write parked; a folder (a deleted artifact folder may be large) goes on a thread of
/// its own so the writer is not held. Whatever a crash leaves is swept at the next open.
fn remove_parked(parked: PathBuf) {
    if parked.is_dir() {
        let p = parked.clone();
        if flightlog_model::background::spawn("flightlog-remove", move || {
            let _ = fs::remove_dir_all(&p);
        })
        .is_err()
        {
            let _ = fs::remove_dir_all(&parked);
        }
    } else {
        let _ = fs::remove_file(&parked);
    }
}

/// Removes a file a write created, if the write is undone; and the folders it created for it, deepest
/// first, as far as they are empty.
pub fn record_created(changes: &mut FileChanges, file: PathBuf, folders: Vec<PathBuf>) {
    changes.record(
        move || {
            let _ = fs::remove_file(&file);
            for dir in folders.iter().rev() {
                if fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        },
        || {},
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        fs::write(p, s).unwrap();
    }

    #[test]
    fn an_undone_job_puts_back_what_it_parked_and_a_commit_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let (target, tmp) = (dir.path().join("f"), dir.path().join("tmp"));
        fs::create_dir(&tmp).unwrap();
        write(&target, "acknowledged");
        let mut changes = FileChanges::default();
        assert!(keep_aside(&mut changes, &target, parking_place(&tmp)).unwrap());
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "acknowledged",
            "readers still see it"
        );
        fs::remove_file(&target).unwrap();
        write(&target, "not committed");
        changes.undo_job();
        assert_eq!(fs::read_to_string(&target).unwrap(), "acknowledged");

        assert!(park(&mut changes, &target, parking_place(&tmp)).unwrap());
        changes.keep_job();
        changes.committed();
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "the parked file is removed"
        );
        assert!(!park(&mut changes, &target, parking_place(&tmp)).unwrap());
    }

    #[test]
    fn a_failed_commit_undoes_every_kept_job_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (target, tmp) = (dir.path().join("f"), dir.path().join("tmp"));
        fs::create_dir(&tmp).unwrap();
        write(&target, "v1");
        let mut changes = FileChanges::default();
        // Two uploads of the same path in one group, then the commit fails: v1 is what stays.
        keep_aside(&mut changes, &target, parking_place(&tmp)).unwrap();
        fs::remove_file(&target).unwrap();
        write(&target, "v2");
        changes.keep_job();
        keep_aside(&mut changes, &target, parking_place(&tmp)).unwrap();
        fs::remove_file(&target).unwrap();
        write(&target, "v3");
        changes.keep_job();
        changes.rolled_back();
        assert_eq!(fs::read_to_string(&target).unwrap(), "v1");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn an_undone_creation_removes_the_file_and_its_empty_new_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("a/b"));
        fs::create_dir_all(&b).unwrap();
        write(&b.join("f"), "x");
        let mut changes = FileChanges::default();
        record_created(&mut changes, b.join("f"), vec![a.clone(), b.clone()]);
        changes.undo_job();
        assert!(!a.exists());
    }
}
