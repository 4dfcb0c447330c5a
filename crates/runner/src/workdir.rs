//! A working directory of its own for each child of a parallel sweep: children that run side by side in one
//! source dir would write into the same `./outputs` and `./logs`, and each would upload what the others wrote.

use flightlog_model::RunId;
use std::path::{Path, PathBuf};

/// The folders a job's own files go to, uploaded to its run under the same names.
const OWN: [&str; 2] = ["outputs", "logs"];

/// A child's working directory: a folder (under the system's temp dir) of links to the source dir's entries,
/// so the job finds its code and data where it expects them, except `outputs` and `logs`, which link to
/// folders of the child's own in the source dir (`outputs/<child>`, `logs/<child>`): what the job writes
/// there stays on disk after the run, beside the other children's. Removed when dropped (the links only).
#[derive(Debug)]
pub struct ChildDir {
    path: PathBuf,
}

impl ChildDir {
    /// Makes the working dir of child `name` of sweep `sweep`, whose source dir is `source`.
    pub fn create(source: &Path, sweep: &RunId, name: &str) -> std::io::Result<ChildDir> {
        let source = std::fs::canonicalize(source)?;
        let folder = folder_name(name);
        let path = std::env::temp_dir()
            .join(format!("flightlog-sweep-{sweep}"))
            .join(&folder);
        std::fs::create_dir_all(&path)?;
        let dir = ChildDir { path };
        for entry in std::fs::read_dir(&source)? {
            let name = entry?.file_name();
            if !OWN.iter().any(|own| name == *own) {
                link(&source.join(&name), &dir.path.join(&name))?;
            }
        }
        for own in OWN {
            let real = source.join(own).join(&folder);
            std::fs::create_dir_all(&real)?;
            link(&real, &dir.path.join(own))?;
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Links `at` to `to`, replacing a link left there by an earlier sweep that was killed.
fn link(to: &Path, at: &Path) -> std::io::Result<()> {
    if at
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        std::fs::remove_file(at)?;
    }
    std::os::unix::fs::symlink(to, at)
}

/// A child's name (`lr=0.1 depth=3`) as one folder name: no `/`, no NUL, at most 200 bytes.
fn folder_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}

impl Drop for ChildDir {
    /// Removes the links, never what they lead to. Anything else the job wrote into its working dir itself
    /// (not under `outputs` or `logs`) is kept where it is, and named in a warning.
    fn drop(&mut self) {
        let mut kept = Vec::new();
        for entry in std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
        {
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if !is_link || std::fs::remove_file(entry.path()).is_err() {
                kept.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        if !kept.is_empty() {
            tracing::warn!(
                "the job wrote {} into its working dir {}: kept there (only ./outputs and ./logs are its own folders in the source dir)",
                kept.join(", "),
                self.path.display()
            );
            return;
        }
        let _ = std::fs::remove_dir(&self.path);
        // The sweep's folder goes with its last child.
        if let Some(sweep) = self.path.parent() {
            let _ = std::fs::remove_dir(sweep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_sees_the_source_and_writes_outputs_of_its_own() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("train.py"), "print(1)").unwrap();
        std::fs::create_dir_all(src.path().join("outputs")).unwrap();
        std::fs::write(src.path().join("outputs/old.bin"), "before").unwrap();
        let sweep = RunId::new();
        let a = ChildDir::create(src.path(), &sweep, "lr=0.1 path=a/b").unwrap();
        let b = ChildDir::create(src.path(), &sweep, "lr=0.2 path=a/b").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(
            std::fs::read_to_string(a.path().join("train.py")).unwrap(),
            "print(1)"
        );
        assert!(
            !a.path().join("outputs/old.bin").exists(),
            "outputs are the child's own"
        );
        std::fs::write(a.path().join("outputs/model.bin"), "a").unwrap();
        std::fs::write(b.path().join("logs/b.log"), "b").unwrap();
        std::fs::write(a.path().join("stray.txt"), "written beside").unwrap();
        let (a_path, b_path) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop(a);
        drop(b);
        let own = |rel: &str| std::fs::read_to_string(src.path().join(rel)).unwrap();
        assert_eq!(own("outputs/lr=0.1 path=a_b/model.bin"), "a");
        assert_eq!(own("logs/lr=0.2 path=a_b/b.log"), "b");
        assert_eq!(
            own("train.py"),
            "print(1)",
            "links removed, never their targets"
        );
        assert!(!b_path.exists());
        assert_eq!(
            std::fs::read_dir(&a_path).unwrap().count(),
            1,
            "only what the job wrote itself is kept"
        );
        assert!(a_path.join("stray.txt").exists());
        std::fs::remove_dir_all(a_path.parent().unwrap()).unwrap();
    }

    #[test]
    fn long_names_are_cut_between_characters() {
        let name = "é".repeat(150);
        let folder = folder_name(&name);
        assert!(folder.len() <= 200 && name.starts_with(&folder));
    }
}
