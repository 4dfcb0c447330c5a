//! `flightlog tensorboard` with a stand-in `tensorboard` on PATH (the real one is started by the Python suite):
//! the URL it prints, the export it serves, Ctrl-C stopping it and removing the temporary logdir, and the
//! error when `tensorboard` is not installed.

mod common;

use common::TestServer;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A fake `tensorboard` that records its arguments, prints the start line, and waits to be stopped.
fn fake_tensorboard(dir: &std::path::Path) {
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {}/args\necho 'TensorBoard 9.9.9 at http://127.0.0.1:16006/ (Press CTRL+C to quit)' >&2\nexec sleep 60\n",
        dir.display()
    );
    let path = dir.join("tensorboard");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn serves_an_export_and_cleans_up_on_ctrl_c() {
    let s = TestServer::start();
    let run = s.new_run();
    s.post(
        &format!("/api/v1/runs/{run}/batch"),
        &serde_json::json!({"scalars": [{"name": "loss", "values": [1.0, 0.5]}]}),
    );
    let bin = tempfile::tempdir().unwrap();
    fake_tensorboard(bin.path());
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["--json", "tensorboard", &run, "--port", "0"])
        .env("FLIGHTLOG_TRACKING_URI", s.base())
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["url"], "http://127.0.0.1:16006/");
    assert_eq!(v["runs"], 1);
    let logdir = std::path::PathBuf::from(v["logdir"].as_str().unwrap());
    let args = std::fs::read_to_string(bin.path().join("args")).unwrap();
    assert_eq!(
        args.trim(),
        format!("--logdir {} --port 0 --host 127.0.0.1", logdir.display())
    );
    let files: Vec<_> = std::fs::read_dir(&logdir).unwrap().flatten().collect();
    assert!(files.len() >= 2, "the run's folder and the manifest");
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!logdir.exists(), "temporary logdir removed");
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn without_tensorboard_installed_says_how_to_install_it() {
    let s = TestServer::start();
    let run = s.new_run();
    let out = Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["tensorboard", &run])
        .env("FLIGHTLOG_TRACKING_URI", s.base())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: the `tensorboard` executable was not found on PATH")
            && err.contains("pip install tensorboard"),
        "{err}"
    );
}
