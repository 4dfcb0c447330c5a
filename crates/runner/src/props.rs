//! The facts recorded with a submitted run: command line, directory, git state, host, Python and OS.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs a probe command quietly; its trimmed stdout (or stderr: old Pythons print their version there).
fn probe(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Some(String::from_utf8_lossy(&text).trim().to_string())
}

/// Quotes an argument for display when the shell would need it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command as one line a user could paste into a shell.
pub fn command_line(cmd: &[String]) -> String {
    cmd.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Git commit, branch and dirty state of `dir` (nothing when git is missing or `dir` is not in a repository).
fn git(dir: &Path, props: &mut BTreeMap<String, String>) {
    let Some(commit) = probe(dir, "git", &["rev-parse", "HEAD"]) else {
        return;
    };
    props.insert("git.commit".into(), commit);
    if let Some(b) = probe(dir, "git", &["rev-parse", "--abbrev-ref", "HEAD"]) {
        props.insert("git.branch".into(), b);
    }
    if let Some(s) = probe(dir, "git", &["status", "--porcelain"]) {
        props.insert("git.dirty".into(), (!s.is_empty()).to_string());
    }
}

fn os_version() -> String {
    let base = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    match probe(Path::new("/"), "uname", &["-sr"]) {
        Some(u) if !u.is_empty() => format!("{u} ({base})"),
        _ => base,
    }
}

/// Collects the properties (probes run in parallel: they sit between `submit` and the script's start).
pub fn collect(cmd: &[String], dir: &Path, target: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    props.insert("command".into(), command_line(cmd));
    props.insert("working_dir".into(), dir.display().to_string());
    props.insert("compute_target".into(), target.to_string());
    props.insert("hostname".into(), hostname());
    let (python, os) = std::thread::scope(|s| {
        let py = s.spawn(|| probe(dir, "python3", &["--version"]));
        let os = s.spawn(os_version);
        git(dir, &mut props);
        (py.join().ok().flatten(), os.join().unwrap_or_default())
    });
    if let Some(p) = python {
        props.insert("python_version".into(), p);
    }
    props.insert("os".into(), os);
    props
}

/// Who runs this, as Python's `getpass.getuser()` finds it: `$USER`, `$LOGNAME`, else the account of the
/// effective user id. Cron, `docker run` and systemd units set neither variable, and runs were recorded with
/// an empty user.
pub fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .or_else(account_name)
        .unwrap_or_default()
}

fn account_name() -> Option<String> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pw` and `buf` (whose length it is given) and sets `found` to `&pw`
    // or null; the name it points to lives in `buf`, read before `buf` goes.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_found_without_user_or_logname() {
        // The account of the effective uid; the tests run as some user with an entry in the passwd database.
        assert!(account_name().is_some_and(|n| !n.is_empty()));
    }

    #[test]
    fn command_lines_quote_what_the_shell_would_split() {
        let cmd: Vec<String> = ["python", "train.py", "--msg", "it's two", "--lr=0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&cmd),
            r"python train.py --msg 'it'\''s two' --lr=0.1"
        );
    }

    #[test]
    fn collects_the_basics() {
        let d = tempfile::tempdir().unwrap();
        let p = collect(&["true".to_string()], d.path(), "local");
        assert_eq!(p["command"], "true");
        assert_eq!(p["compute_target"], "local");
        assert!(!p["os"].is_empty());
        assert!(!p.contains_key("git.commit"));
    }
}
