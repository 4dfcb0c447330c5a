//! Log stream bytes in plain files, `<data>/logs/<run_id>/<stream>`: each byte is written once (no database
//! page, write-ahead log frame or checkpoint copy), and made durable before the commit that records the stream's
//! new length. That committed length is the only truth: bytes past it (from a rolled-back or interrupted write)
//! are never read and are overwritten by the next append.

use flightlog_model::{Error, Result, RunId};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Open files the writer keeps between appends; past this, the clean ones are closed.
const MAX_OPEN: usize = 64;

/// The path of a stream's file (run ids are hex and stream names are checked, so both are plain names).
pub fn stream_path(root: &Path, run: &RunId, stream: &str) -> PathBuf {
    root.join(run.as_str()).join(stream)
}

fn io_err(what: &'static str, path: &Path) -> impl Fn(io::Error) -> Error {
    let path = path.display().to_string();
    move |e| Error::storage(format!("{what} {path}: {e}"))
}

/// An open stream file, and whether it holds writes not yet synced.
struct OpenFile {
    file: File,
    dirty: bool,
}

/// The writer thread's log files: writes go to the page cache at once; [`LogFiles::sync`] makes them (and new
/// files' directory entries) durable, and runs before every commit.
pub struct LogFiles {
    root: PathBuf,
    open: HashMap<PathBuf, OpenFile>,
    /// Directories that gained an entry since the last sync.
    new_entries: Vec<PathBuf>,
}

impl LogFiles {
    /// Files under `root` (`<data>/logs`); nothing is opened until the first write.
    pub fn new(root: PathBuf) -> LogFiles {
        LogFiles {
            root,
            open: HashMap::new(),
            new_entries: Vec::new(),
        }
    }

    /// Writes `data` at byte `at` of the stream's file, creating the file (and its run's folder) if needed.
    pub fn write_at(&mut self, run: &RunId, stream: &str, at: u64, data: &[u8]) -> Result<()> {
        let path = stream_path(&self.root, run, stream);
        let open = self.file(path.clone())?;
        open.dirty = true;
        open.file
            .write_all_at(data, at)
            .map_err(io_err("writing the log", &path))
    }

    /// Syncs every file written and every folder that gained an entry since the last call. On failure the
    /// open files are dropped (reopened on the next write) and the caller must not commit.
    pub fn sync(&mut self) -> Result<()> {
        let result = self.sync_all();
        if result.is_err() {
            self.open.clear();
            self.new_entries.clear();
        }
        result
    }

    fn sync_all(&mut self) -> Result<()> {
        for (path, open) in self.open.iter_mut().filter(|(_, o)| o.dirty) {
            open.file
                .sync_data()
                .map_err(io_err("syncing the log", path))?;
            open.dirty = false;
        }
        for dir in std::mem::take(&mut self.new_entries) {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing the folder", &dir))?;
        }
        Ok(())
    }

    /// The open file at `path`, opened or created on first use.
    fn file(&mut self, path: PathBuf) -> Result<&mut OpenFile> {
        if !self.open.contains_key(&path) && self.open.len() >= MAX_OPEN {
            self.open.retain(|_, o| o.dirty);
        }
        Ok(match self.open.entry(path) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let file = open_or_create(&self.root, v.key(), &mut self.new_entries)?;
                v.insert(OpenFile { file, dirty: false })
            }
        })
    }
}

/// Opens a stream file for writing; a new file (and a new run folder) is remembered in `new_entries` so its
/// directory entry is synced with the data.
fn open_or_create(root: &Path, path: &Path, new_entries: &mut Vec<PathBuf>) -> Result<File> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("opening the log", path)(e)),
    }
    let dir = path.parent().unwrap_or(root);
    match std::fs::create_dir(dir) {
        Ok(()) => new_entries.push(root.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating the log folder", dir)(e)),
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("creating the log", path))?;
    new_entries.push(dir.to_path_buf());
    Ok(file)
}

/// Bytes `[start, end)` of a stream's file; all of them were synced before their length was committed, so a
/// shorter file means the data directory was damaged.
pub fn read_range(root: &Path, run: &RunId, stream: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    let path = stream_path(root, run, stream);
    let mut out = vec![0u8; end.saturating_sub(start) as usize];
    if out.is_empty() {
        return Ok(out);
    }
    let file = File::open(&path).map_err(io_err("opening the log", &path))?;
    file.read_exact_at(&mut out, start).map_err(|e| {
        Error::storage(format!(
            "reading bytes {start}..{end} of the log {}: {e} (the file is shorter than its recorded length)",
            path.display()
        ))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_at_their_offsets_and_a_rewrite_replaces_an_uncommitted_tail() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new();
        let mut files = LogFiles::new(dir.path().to_path_buf());
        files.write_at(&run, "stdout", 0, b"hello ").unwrap();
        files.write_at(&run, "stdout", 6, b"garbage").unwrap();
        // The second write was rolled back: the next append starts at the committed length, 6.
        files.write_at(&run, "stdout", 6, b"world").unwrap();
        files.sync().unwrap();
        assert_eq!(
            read_range(dir.path(), &run, "stdout", 0, 11).unwrap(),
            b"hello world"
        );
        assert_eq!(read_range(dir.path(), &run, "stdout", 3, 3).unwrap(), b"");
        let past_end = read_range(dir.path(), &run, "stdout", 10, 20);
        assert!(matches!(past_end, Err(Error::Storage(_))), "{past_end:?}");
        let missing = read_range(dir.path(), &run, "stderr", 0, 1);
        assert!(matches!(missing, Err(Error::Storage(_))), "{missing:?}");
    }

    #[test]
    fn many_streams_keep_only_a_bounded_set_of_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new();
        let mut files = LogFiles::new(dir.path().to_path_buf());
        for i in 0..(MAX_OPEN * 2) {
            files.write_at(&run, &format!("s{i}"), 0, b"x").unwrap();
            files.sync().unwrap();
        }
        assert!(files.open.len() <= MAX_OPEN, "{}", files.open.len());
        for i in 0..(MAX_OPEN * 2) {
            let s = format!("s{i}");
            assert_eq!(read_range(dir.path(), &run, &s, 0, 1).unwrap(), b"x");
        }
    }
}
