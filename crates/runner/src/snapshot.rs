//! The source-directory snapshot: which files (ignore rules), whether they fit (limits), and their upload.

use crate::error::RunnerError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the snapshot lives among the run's artifacts.
pub const SNAPSHOT_PREFIX: &str = "snapshot";

/// The file that lists what not to snapshot, on top of `.gitignore` (same syntax).
pub const IGNORE_FILE: &str = ".flightlogignore";

/// How much a snapshot may hold: a run's snapshot is its source code, not its data, and a huge one usually
/// means a forgotten data or environment folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLimits {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            max_files: 2_000,
            max_bytes: 300 * 1_000_000,
        }
    }
}

/// One file to snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    /// '/'-separated, relative to the source directory.
    pub rel: String,
    pub size: u64,
}

/// The files of a source directory that survive the ignore rules, sorted by relative path.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub files: Vec<SnapshotFile>,
    pub total_bytes: u64,
}

/// Folders that are never source, at any depth: version control, caches, environments, and a local-mode
/// flightlog data folder. Left out even where no ignore file names them (a virtualenv alone passes the limits).
const NEVER_SOURCE: [&str; 12] = [
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ipynb_checkpoints",
    "flightlog-data",
    ".flightlog",
];

/// Lists the files under `dir`, honouring `.gitignore` (also outside a git repository), `.git/info/exclude`,
/// `.flightlogignore` and `.amlignore`; the [`NEVER_SOURCE`] folders are never included. Hidden files are
/// kept (`.env.example`...). Links are not followed, so nothing outside `dir` is taken. `flightlog submit`
/// and the SDK's `start_logging(snapshot_directory=...)` both take this list.
pub fn scan(dir: &Path) -> Result<Snapshot, RunnerError> {
    std::fs::read_dir(dir).map_err(|e| RunnerError::SourceDir {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .parents(true)
        .git_global(false)
        .require_git(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .add_custom_ignore_filename(".amlignore")
        .filter_entry(|e| !is_never_source(e) && !is_job_output(e))
        .build();
    let mut snap = Snapshot::default();
    for entry in walker {
        let entry = entry.map_err(|e| RunnerError::SourceDir {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        snap.total_bytes += size;
        snap.files.push(SnapshotFile {
            path: entry.path().to_path_buf(),
            rel,
            size,
        });
    }
    snap.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(snap)
}

fn is_never_source(e: &ignore::DirEntry) -> bool {
    e.file_type().is_some_and(|t| t.is_dir())
        && NEVER_SOURCE.iter().any(|name| e.file_name() == *name)
}

/// The top-level `outputs/` and `logs/`: what a job writes there is uploaded as the run's own outputs and
/// logs, and a previous run's files there are not the next run's source.
fn is_job_output(e: &ignore::DirEntry) -> bool {
    e.depth() == 1
        && e.file_type().is_some_and(|t| t.is_dir())
        && (e.file_name() == "outputs" || e.file_name() == "logs")
}

impl Snapshot {
    /// Refuses a snapshot over the limits, naming the top-level entries that hold the most files or bytes, and
    /// one with a file name the server cannot store (a backslash, a control character): before the run
    /// exists, rather than failing its upload half-way.
    pub fn check(&self, dir: &Path, limits: SnapshotLimits) -> Result<(), RunnerError> {
        for f in &self.files {
            let stored = format!("{SNAPSHOT_PREFIX}/{}", f.rel);
            if let Err(flightlog_model::Error::InvalidPath { reason, .. }) =
                flightlog_model::validate::artifact_path(&stored)
            {
                return Err(RunnerError::SnapshotName {
                    path: f.rel.clone(),
                    reason,
                });
            }
        }
        let by_files = self.files.len() > limits.max_files;
        if !by_files && self.total_bytes <= limits.max_bytes {
            return Ok(());
        }
        let what = if by_files {
            format!("{} files (limit {})", self.files.len(), limits.max_files)
        } else {
            format!(
                "{} (limit {})",
                human_bytes(self.total_bytes),
                human_bytes(limits.max_bytes)
            )
        };
        Err(RunnerError::SnapshotTooLarge {
            dir: dir.display().to_string(),
            what,
            offenders: self.offenders(by_files, 5),
        })
    }

    /// The `n` top-level entries with the most files (or bytes), e.g. `data/ (1900 files, 12.0 MB)`.
    fn offenders(&self, by_files: bool, n: usize) -> String {
        let mut groups: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for f in &self.files {
            let key = match f.rel.split_once('/') {
                Some((top, _)) => format!("{top}/"),
                None => f.rel.clone(),
            };
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += f.size;
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| {
            let (ka, kb) = if by_files {
                (a.1 .0 as u64, b.1 .0 as u64)
            } else {
                (a.1 .1, b.1 .1)
            };
            kb.cmp(&ka).then_with(|| a.0.cmp(&b.0))
        });
        groups
            .iter()
            .take(n)
            .map(|(name, (count, bytes))| {
                let files = if *count == 1 { "file" } else { "files" };
                format!("{name} ({count} {files}, {})", human_bytes(*bytes))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "12.3 MB" (decimal units, like the limit).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn rels(s: &Snapshot) -> Vec<&str> {
        s.files.iter().map(|f| f.rel.as_str()).collect()
    }

    #[test]
    fn honours_gitignore_and_flightlogignore() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train.py", b"print(1)");
        write(d.path(), ".gitignore", b"*.pyc\ndata/\n");
        write(d.path(), ".flightlogignore", b"secret.txt\n");
        write(d.path(), "mod.pyc", b"x");
        write(d.path(), "data/big.bin", b"xxxx");
        write(d.path(), "secret.txt", b"s");
        write(d.path(), "pkg/util.py", b"u");
        write(d.path(), "pkg/.gitignore", b"local.cfg\n");
        write(d.path(), "pkg/local.cfg", b"c");
        write(d.path(), ".git/HEAD", b"ref");
        let s = scan(d.path()).unwrap();
        assert_eq!(
            rels(&s),
            vec![
                ".flightlogignore",
                ".gitignore",
                "pkg/.gitignore",
                "pkg/util.py",
                "train.py"
            ]
        );
        assert_eq!(s.total_bytes, s.files.iter().map(|f| f.size).sum::<u64>());
    }

    /// Folders that are never source are left out at any depth without an ignore file; `.amlignore` is read as
    /// `.flightlogignore` is; links are not followed.
    #[test]
    fn leaves_out_caches_environments_and_links() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train.py", b"print(1)");
        write(d.path(), "__pycache__/train.pyc", b"c");
        write(d.path(), "pkg/__pycache__/m.pyc", b"c");
        write(d.path(), ".venv/lib/site.py", b"v");
        write(d.path(), "web/node_modules/x.js", b"n");
        write(
            d.path(),
            "venv.py",
            b"kept: a file named like a folder that is not source",
        );
        write(d.path(), ".amlignore", b"*.ckpt\n");
        write(d.path(), "model.ckpt", b"m");
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.txt", b"s");
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            d.path().join("creds.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("elsewhere")).unwrap();
        let s = scan(d.path()).unwrap();
        assert_eq!(rels(&s), vec![".amlignore", "train.py", "venv.py"]);
    }

    #[test]
    fn leaves_out_the_jobs_own_outputs_and_logs() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train.py", b"print(1)");
        write(d.path(), "outputs/model.bin", b"old model");
        write(d.path(), "logs/train.log", b"old log");
        write(
            d.path(),
            "pkg/outputs/schema.py",
            b"kept: not the job's folder",
        );
        write(d.path(), "logs.py", b"kept: a file");
        let s = scan(d.path()).unwrap();
        assert_eq!(
            rels(&s),
            vec!["logs.py", "pkg/outputs/schema.py", "train.py"]
        );
    }

    #[test]
    fn honours_the_enclosing_repositorys_ignore_rules() {
        let repo = tempfile::tempdir().unwrap();
        write(repo.path(), ".git/HEAD", b"ref: refs/heads/main\n");
        write(repo.path(), ".git/info/exclude", b"*.local\n");
        write(repo.path(), ".gitignore", b".env\n*.ckpt\n");
        write(repo.path(), "src/train.py", b"print(1)");
        write(repo.path(), "src/.env", b"SECRET=1");
        write(repo.path(), "src/model.ckpt", b"weights");
        write(repo.path(), "src/notes.local", b"mine");
        let s = scan(&repo.path().join("src")).unwrap();
        assert_eq!(rels(&s), vec!["train.py"]);
    }

    #[test]
    fn refuses_too_many_files_naming_the_biggest_offenders() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..30 {
            write(d.path(), &format!("dataset/f{i}"), b"x");
        }
        for i in 0..3 {
            write(d.path(), &format!("src/f{i}.py"), b"x");
        }
        write(d.path(), "train.py", b"x");
        let s = scan(d.path()).unwrap();
        let limits = SnapshotLimits {
            max_files: 20,
            max_bytes: 1_000_000,
        };
        let msg = s.check(d.path(), limits).unwrap_err().to_string();
        assert!(msg.contains("34 files (limit 20)"), "{msg}");
        assert!(
            msg.contains("biggest: dataset/ (30 files, 30 B), src/ (3 files, 3 B), train.py"),
            "{msg}"
        );
        assert!(msg.contains(".flightlogignore"), "{msg}");
        assert!(s.check(d.path(), SnapshotLimits::default()).is_ok());
    }

    #[test]
    fn refuses_too_many_bytes() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "model.bin", &vec![0u8; 5000]);
        write(d.path(), "a.py", b"x");
        let s = scan(d.path()).unwrap();
        let limits = SnapshotLimits {
            max_files: 10,
            max_bytes: 4000,
        };
        let msg = s.check(d.path(), limits).unwrap_err().to_string();
        assert!(msg.contains("5.0 KB (limit 4.0 KB)"), "{msg}");
        assert!(msg.contains("biggest: model.bin (1 file, 5.0 KB)"), "{msg}");
    }

    #[test]
    fn unreadable_dir_is_a_clear_error() {
        let msg = scan(Path::new("/nonexistent/src")).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read the source directory '/nonexistent/src'"),
            "{msg}"
        );
    }
}
