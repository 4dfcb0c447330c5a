//! End-to-end tests of `flightlog submit` and `flightlog runs wait` against the real binary and server: the
//! lifecycle, captured output, properties, outputs, failure, timeout, cancel of the whole process group,
//! unexecutable commands, snapshot rules and limits, attaching from a second process, the script's env.

mod common;

use common::TestServer;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn cmd(server: &TestServer, spool: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightlog"));
    c.arg("--server")
        .arg(server.base())
        .env("FLIGHTLOG_SPOOL", spool)
        .env_remove("FLIGHTLOG_TRACKING_URI");
    c
}

fn run_cli(server: &TestServer, spool: &Path, args: &[&str]) -> Output {
    cmd(server, spool)
        .args(args)
        .output()
        .expect("run flightlog")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The run id announced on stderr ("flightlog: run <id> submitted").
fn announced_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            let (id, rest) = l.strip_prefix("flightlog: run ")?.split_once(' ')?;
            rest.starts_with("submitted (").then(|| id.to_string())
        })
        .unwrap_or_else(|| panic!("no run announced in: {stderr}"))
}

fn get_run(s: &TestServer, id: &str) -> Value {
    let (status, run) = s.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200, "{run}");
    run
}

fn log(s: &TestServer, id: &str, stream: &str) -> String {
    let (status, v) = s.get(&format!(
        "/api/v1/runs/{id}/logs/{stream}?max_bytes=16777216"
    ));
    if status == 404 {
        return String::new();
    }
    assert_eq!(status, 200, "{v}");
    v["data"].as_str().unwrap_or_default().to_string()
}

fn artifacts(s: &TestServer, id: &str, prefix: &str) -> Vec<String> {
    let (status, v) = s.get(&format!(
        "/api/v1/runs/{id}/artifacts?prefix={prefix}&recursive=true"
    ));
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["is_dir"].as_bool().unwrap_or(false))
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Both streams merged back into write order by their time stamps: (stream, text).
fn merged(s: &TestServer, id: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for stream in ["stdout", "stderr"] {
        for l in log(s, id, stream).lines() {
            let (t, rest) = l.split_once(' ').expect("stamped line");
            assert_eq!(t.len(), 27, "stamp of {l:?}");
            lines.push((t.to_string(), stream.to_string(), rest.to_string()));
        }
    }
    lines.sort();
    lines.into_iter().map(|(_, s, t)| (s, t)).collect()
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn run_count(s: &TestServer) -> usize {
    let (_, v) = s.get("/api/v1/runs");
    v["items"].as_array().map(|a| a.len()).unwrap_or(0)
}

#[test]
fn a_successful_script_is_recorded_with_output_properties_and_outputs() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(
        src.path(),
        "train.sh",
        "echo out1\nsleep 0.1\necho err1 >&2\nsleep 0.1\necho out2\n\
         echo \"run=$FLIGHTLOG_RUN_ID mlflow=$MLFLOW_RUN_ID exp=$MLFLOW_EXPERIMENT_ID uri=$FLIGHTLOG_TRACKING_URI\"\n\
         mkdir -p outputs logs\necho weights > outputs/model.txt\necho step1 > logs/train.log\n",
    );
    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--experiment",
            "scripts",
            "--name",
            "first",
            "--tag",
            "team=ml",
            "--source-dir",
            src.path().to_str().unwrap(),
            "--show-output",
            "--",
            "sh",
            "train.sh",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let id = announced_id(&stderr);
    assert!(
        stderr.contains(&format!("run {id} Completed (exit code 0)")),
        "{stderr}"
    );
    // --show-output echoes the script's stdout on ours.
    assert!(
        text(&out.stdout).contains("out1\nout2\n"),
        "{}",
        text(&out.stdout)
    );

    let run = get_run(&s, &id);
    assert_eq!(run["status"], "Completed");
    assert_eq!(run["display_name"], "first");
    assert_eq!(run["tags"]["team"], "ml");
    assert_eq!(run["command"], "sh train.sh");
    let props = &run["properties"];
    assert_eq!(props["command"], "sh train.sh");
    assert_eq!(props["compute_target"], "local");
    let dir = src.path().canonicalize().unwrap();
    assert_eq!(props["working_dir"], dir.to_str().unwrap());
    assert!(props["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(props["os"].as_str().is_some_and(|o| !o.is_empty()));

    let lines = merged(&s, &id);
    let pairs: Vec<(&str, &str)> = lines
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        &pairs[..3],
        &[("stdout", "out1"), ("stderr", "err1"), ("stdout", "out2")]
    );
    let exp_id = run["experiment_id"].as_str().unwrap();
    assert_eq!(
        pairs[3].1,
        format!("run={id} mlflow={id} exp={exp_id} uri={}", s.base())
    );

    assert_eq!(artifacts(&s, &id, "outputs"), vec!["outputs/model.txt"]);
    assert_eq!(artifacts(&s, &id, "logs"), vec!["logs/train.log"]);
    assert_eq!(artifacts(&s, &id, "snapshot"), vec!["snapshot/train.sh"]);
}

#[test]
fn a_failing_script_propagates_its_exit_code_and_stderr_tail() {
    let s = TestServer::start();
    let script = "for i in $(seq 1 30); do echo \"problem $i\" >&2; done; exit 7";
    let run = failed_sh_run(&s, script, 7);
    assert_eq!(run["error"]["message"], "the command exited with code 7");
    let details = run["error"]["details"].as_str().unwrap();
    assert!(details.ends_with("problem 29\nproblem 30"), "{details}");
    assert!(
        details.contains("problem 11\n") && !details.contains("problem 10\n"),
        "{details}"
    );
}

#[test]
fn a_failing_script_with_a_progress_bar_on_stderr_keeps_the_end_of_it() {
    // A tqdm-style bar: thousands of redraws joined by \r, one "line" of 300 KB, above the server's limit on
    // error details; the run was left Finalizing and submit exited 4.
    let s = TestServer::start();
    let script =
        "i=0; while [ $i -lt 6000 ]; do printf '\\r%05d it|##########################|' $i >&2; \
                  i=$((i+1)); done; printf 'boom' >&2; exit 3";
    let run = failed_sh_run(&s, script, 3);
    let details = run["error"]["details"].as_str().unwrap();
    assert!(
        details.len() < 20_000 && details.ends_with("05999 it|##########################|boom"),
        "{}",
        details.len()
    );
}

/// Submits `sh -c script`, which must exit with `code`; returns the run, checked Failed with that exit code.
fn failed_sh_run(s: &TestServer, script: &str, code: i32) -> Value {
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let out = run_cli(
        s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "sh", "-c", script],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    let run = get_run(s, &announced_id(&stderr));
    assert_eq!(run["status"], "Failed");
    assert_eq!(run["properties"]["exit_code"], code.to_string());
    run
}

#[test]
fn a_timeout_stops_the_script_and_fails_the_run() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--timeout",
            "1",
            "--source-dir",
            src.path().to_str().unwrap(),
            "--",
            "sleep",
            "60",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let run = get_run(&s, &announced_id(&stderr));
    assert_eq!(run["status"], "Failed");
    assert_eq!(run["error"]["message"], "timed out after 1 s");
}

#[test]
fn unexecutable_commands_fail_the_run_with_the_os_reason() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "notes.txt", "not a program");
    let dir = src.path().to_str().unwrap();
    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "./notes.txt"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    let run = get_run(&s, &announced_id(&stderr));
    assert_eq!(run["status"], "Failed");
    let msg = run["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("cannot execute './notes.txt': Permission denied"),
        "{msg}"
    );

    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "no-such-program-xyz"],
    );
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

#[test]
fn bad_input_is_refused_before_any_run_or_process_exists() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let out = run_cli(&s, spool.path(), &["submit", "--source-dir", dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("error: no command given"),
        "{}",
        text(&out.stderr)
    );

    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", "/nonexistent/dir", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("cannot read the source directory '/nonexistent/dir'"));

    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--no-create",
            "-e",
            "nope",
            "--source-dir",
            dir,
            "--",
            "touch",
            "ran",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("experiment 'nope' does not exist"));
    assert!(!src.path().join("ran").exists());
    assert_eq!(run_count(&s), 0);
}

#[test]
fn the_snapshot_honours_ignore_files_and_refuses_too_many_files() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "train.py", "print(1)");
    write(src.path(), ".gitignore", "data/\n*.ckpt\n");
    write(src.path(), ".flightlogignore", "notes.md\n");
    write(src.path(), "data/big.csv", "1,2");
    write(src.path(), "model.ckpt", "w");
    write(src.path(), "notes.md", "n");
    write(src.path(), "lib/util.py", "u");
    let dir = src.path().to_str().unwrap();
    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "true"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = announced_id(&text(&out.stderr));
    assert_eq!(
        artifacts(&s, &id, "snapshot"),
        vec![
            "snapshot/.flightlogignore",
            "snapshot/.gitignore",
            "snapshot/lib/util.py",
            "snapshot/train.py"
        ]
    );

    // A snapshot refused before the run exists: submit exits 4, the job never ran, no run was created.
    let refused = || {
        let out = run_cli(
            &s,
            spool.path(),
            &["submit", "--source-dir", dir, "--", "touch", "ran"],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(!src.path().join("ran").exists());
        assert_eq!(run_count(&s), 1);
        stderr
    };
    for i in 0..2001 {
        write(src.path(), &format!("dataset/f{i}.py"), "");
    }
    let stderr = refused();
    assert!(stderr.contains("2005 files (limit 2000)"), "{stderr}");
    assert!(stderr.contains("biggest: dataset/ (2001 files"), "{stderr}");

    // A name the server cannot store is refused before the run exists (it failed the upload half-way and
    // left the run Preparing for good).
    std::fs::remove_dir_all(src.path().join("dataset")).unwrap();
    write(src.path(), "notes\\draft.txt", "d");
    let stderr = refused();
    assert!(
        stderr.contains("the snapshot cannot hold 'notes\\draft.txt': use '/' to separate folders")
            && stderr.contains(".flightlogignore"),
        "{stderr}"
    );
}

/// A background `flightlog submit` whose announced run id arrives on a channel.
fn spawn_submit(s: &TestServer, spool: &Path, args: &[&str]) -> (Child, String) {
    let mut child = cmd(s, spool)
        .arg("submit")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("announcement");
    (child, announced_id(&line))
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("flightlog submit did not exit in {within:?}");
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[test]
fn runs_cancel_from_another_process_stops_the_whole_process_group() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let script = "sleep 300 & echo \"child $!\"; wait";
    let (mut child, id) = spawn_submit(
        &s,
        spool.path(),
        &[
            "--grace",
            "2",
            "--source-dir",
            dir,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let mut pid = 0u32;
    wait_for("the child's pid in stdout", Duration::from_secs(20), || {
        pid = log(&s, &id, "stdout")
            .split("child ")
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    assert!(process_alive(pid));
    let out = run_cli(&s, spool.path(), &["runs", "cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("run {id} is Canceled")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(130));
    assert_eq!(get_run(&s, &id)["status"], "Canceled");
    wait_for("the child sleep to be gone", Duration::from_secs(5), || {
        !process_alive(pid)
    });
}

/// SIGTERM, and SIGHUP (a closed terminal, a dropped ssh session, whose default action killed the submitter
/// and left the run Running for good), cancel the run.
#[test]
fn sigterm_or_sighup_to_submit_cancels_the_run() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    for signal in ["-TERM", "-HUP"] {
        let (mut child, id) = spawn_submit(
            &s,
            spool.path(),
            &["--source-dir", dir, "--", "sleep", "300"],
        );
        wait_for("Running", Duration::from_secs(20), || {
            get_run(&s, &id)["status"] == "Running"
        });
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(20)),
            Some(130),
            "{signal}"
        );
        assert_eq!(get_run(&s, &id)["status"], "Canceled", "{signal}");
    }
}

/// `submit --show-output | head -1`: the reader goes away; the submitter stops being heard but goes on
/// supervising, keeps the job's whole output and records its outcome (it died of SIGPIPE, killing the job's
/// output with it and leaving the run Running).
#[test]
fn submit_outlives_a_closed_output_pipe_and_records_the_outcome() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let script = "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done";
    let mut child = cmd(&s, spool.path())
        .args([
            "submit",
            "--show-output",
            "--source-dir",
            dir,
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "line 0\n");
    drop(stdout);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let id = announced_id(&err);
    assert_eq!(get_run(&s, &id)["status"], "Completed", "{err}");
    assert!(log(&s, &id, "stdout").contains("line 2999"));
}

#[test]
fn runs_wait_from_another_process_sees_all_output_and_the_outcome() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let script = "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.3; done; echo oops >&2; exit 3";
    let (mut child, id) = spawn_submit(
        &s,
        spool.path(),
        &["--source-dir", dir, "--", "sh", "-c", script],
    );
    let waited = run_cli(&s, spool.path(), &["runs", "wait", &id, "--show-output"]);
    assert_eq!(waited.status.code(), Some(1), "{}", text(&waited.stderr));
    assert_eq!(
        text(&waited.stdout),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );
    let werr = text(&waited.stderr);
    assert!(werr.contains("oops\n"), "{werr}");
    assert!(werr.contains(&format!("run {id} Failed")), "{werr}");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(3));

    // Attaching after the end replays the output and the outcome.
    let again = run_cli(&s, spool.path(), &["runs", "wait", &id, "--show-output"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stdout),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );

    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "true"],
    );
    let ok = announced_id(&text(&out.stderr));
    let waited = run_cli(&s, spool.path(), &["runs", "wait", &ok]);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
}

#[test]
fn a_sweep_runs_one_child_per_combination_and_fails_the_parent_if_one_fails() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--sweep",
            "a=1,2",
            "--sweep",
            "b=x,y",
            "--parallel",
            "2",
            "--source-dir",
            dir,
            "--",
            "sh",
            "-c",
            "echo run-{a}-{b}; test {a}{b} != 2y",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let parent = announced_id(&stderr);
    let run = get_run(&s, &parent);
    assert_eq!(run["status"], "Failed");
    assert_eq!(run["properties"]["sweep"], "a=1,2 b=x,y");
    assert_eq!(
        run["error"]["message"],
        "1 of 4 child runs did not complete"
    );
    let (_, kids) = s.get(&format!("/api/v1/runs?parent_id={parent}"));
    let kids = kids["items"].as_array().unwrap();
    assert_eq!(kids.len(), 4);
    for k in kids {
        let (a, b) = (
            k["params"]["a"].as_str().unwrap(),
            k["params"]["b"].as_str().unwrap(),
        );
        let id = k["id"].as_str().unwrap();
        let want = if (a, b) == ("2", "y") {
            "Failed"
        } else {
            "Completed"
        };
        assert_eq!(k["status"], want, "{k}");
        assert!(log(&s, id, "stdout").ends_with(&format!(" run-{a}-{b}\n")));
    }
    let summary = log(&s, &parent, "stdout");
    assert!(
        summary.contains("RUN") && summary.contains("STATUS"),
        "{summary}"
    );
    assert_eq!(summary.matches("Completed").count(), 3, "{summary}");
    assert_eq!(
        artifacts(&s, &parent, "sweep_summary.json"),
        vec!["sweep_summary.json"]
    );
    // A sweep's parent records its exit code, which `runs wait` takes as its end (it waited for good).
    assert_eq!(run["properties"]["exit_code"], "1");
    let waited = run_cli(&s, spool.path(), &["runs", "wait", &parent]);
    assert_eq!(waited.status.code(), Some(1), "{}", text(&waited.stderr));

    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--sweep",
            "c=1",
            "--source-dir",
            dir,
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad --sweep: the command has no {c} placeholder"));
}

#[test]
fn runs_wait_resumes_after_the_server_restarts_without_repeating_output() {
    let mut s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (st, run) = s.post("/api/v1/runs", &serde_json::json!({"status": "Running"}));
    assert_eq!(st, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let append = |s: &TestServer, text: &str| {
        let path = format!("/api/v1/runs/{id}/logs/stdout");
        let (st, v) = s.send_raw("POST", &path, "application/octet-stream", text.as_bytes());
        assert_eq!(st, 200, "{v}");
    };
    append(&s, "before 1\nbefore 2\n");
    let mut waiter = cmd(&s, spool.path())
        .args(["runs", "wait", &id, "--show-output"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = waiter.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "before 1"
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "before 2"
    );
    s.restart();
    append(&s, "after 1\n");
    let (st, v) = s.patch(
        &format!("/api/v1/runs/{id}"),
        &serde_json::json!({"status": "Completed"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(wait_exit(&mut waiter, Duration::from_secs(60)), Some(0));
    let rest: Vec<String> = rx.iter().collect();
    assert_eq!(rest, vec!["after 1".to_string()]);
}

#[test]
fn binary_output_and_a_long_line_are_stored_safely() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let script = "printf 'bin \\377\\376\\000 end\\n'; head -c 10000000 /dev/zero | tr '\\0' a; echo; echo done";
    let out = run_cli(
        &s,
        spool.path(),
        &["submit", "--source-dir", dir, "--", "sh", "-c", script],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = announced_id(&text(&out.stderr));
    let stdout = log(&s, &id, "stdout");
    let lines: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(lines[0], "bin \u{fffd}\u{fffd}\u{0} end");
    let a_count: usize = lines[1..lines.len() - 1].iter().map(|l| l.len()).sum();
    assert_eq!(
        a_count, 10_000_000,
        "the long line is stored whole, in 1 MiB pieces"
    );
    assert_eq!(*lines.last().unwrap(), "done");
}

#[test]
fn a_parallel_sweep_runs_at_most_n_children_at_once_and_sums_up_their_metrics() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    // Each child marks itself running, records how many are running, logs `score` through the API, waits.
    write(
        src.path(),
        "child.py",
        &format!(
            "import json, os, sys, time, urllib.request\n\
             lr = sys.argv[1]\n\
             marks = {:?}\n\
             open(os.path.join(marks, lr + '.running'), 'w').close()\n\
             running = len([m for m in os.listdir(marks) if m.endswith('.running')])\n\
             open(os.path.join(marks, lr + '.seen'), 'w').write(str(running))\n\
             body = json.dumps({{'scalars': [{{'name': 'score', 'values': [round(float(lr) * 10)]}}]}}).encode()\n\
             url = os.environ['FLIGHTLOG_TRACKING_URI'] + '/api/v1/runs/' + os.environ['FLIGHTLOG_RUN_ID'] + '/batch'\n\
             req = urllib.request.Request(url, body, {{'Content-Type': 'application/json'}})\n\
             urllib.request.urlopen(req).read()\n\
             time.sleep(1.0)\n\
             os.remove(os.path.join(marks, lr + '.running'))\n",
            marks.path().to_str().unwrap()
        ),
    );
    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--sweep",
            "lr=0.1,0.2,0.3,0.4",
            "--parallel",
            "2",
            "--source-dir",
            src.path().to_str().unwrap(),
            "--",
            "python3",
            "child.py",
            "{lr}",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let seen: Vec<usize> = ["0.1", "0.2", "0.3", "0.4"]
        .iter()
        .map(|lr| {
            let p = marks.path().join(format!("{lr}.seen"));
            std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
        })
        .collect();
    assert!(
        seen.iter().all(|&n| n <= 2),
        "more than 2 at once: {seen:?}"
    );
    assert!(seen.contains(&2), "never 2 at once: {seen:?}");
    let parent = announced_id(&stderr);
    assert_eq!(get_run(&s, &parent)["status"], "Completed");
    let summary = log(&s, &parent, "stdout");
    // RUN STATUS lr score: each child's params and the last value of its metrics.
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["RUN", "STATUS", "lr", "score"]),
        "{summary}"
    );
    for (lr, score) in [("0.1", 1.0), ("0.2", 2.0), ("0.3", 3.0), ("0.4", 4.0)] {
        let row: Vec<&str> = summary
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.get(2) == Some(&lr))
            .unwrap_or_else(|| panic!("no row for lr={lr}: {summary}"));
        assert_eq!(row[1], "Completed", "{row:?}");
        assert_eq!(row[3].parse::<f64>().ok(), Some(score), "{row:?}");
    }
}

/// Children running side by side each have `./outputs` and `./logs` of their own: each run gets only what its
/// own job wrote (before, each uploaded what the others wrote there meanwhile), and the files stay on disk in
/// the source dir's `outputs/<child>` and `logs/<child>`. The job still finds its code and data in its
/// working dir, and its temporary working dir is gone afterwards.
#[test]
fn parallel_sweep_children_have_outputs_of_their_own() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "data/input.txt", "shared input");
    write(src.path(), "outputs/old.bin", "an earlier run's");
    let marks = tempfile::tempdir().unwrap();
    // Both children write a file of the same name, while the other is running too.
    let script = format!(
        "cat data/input.txt > outputs/model-{{x}}.txt; echo {{x}} > outputs/model.txt; echo log > logs/train.log; \
         touch {m}/{{x}}; while [ $(ls {m} | wc -l) -lt 2 ]; do sleep 0.05; done; sleep 0.3",
        m = marks.path().display()
    );
    let out = run_cli(
        &s,
        spool.path(),
        &[
            "submit",
            "--sweep",
            "x=a,b",
            "--parallel",
            "2",
            "--source-dir",
            src.path().to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let parent = announced_id(&stderr);
    let (_, kids) = s.get(&format!("/api/v1/runs?parent_id={parent}"));
    let kids = kids["items"].as_array().unwrap();
    assert_eq!(kids.len(), 2);
    for k in kids {
        let x = k["params"]["x"].as_str().unwrap();
        let id = k["id"].as_str().unwrap();
        let want = vec![
            "logs/train.log".to_string(),
            "outputs/model-".to_string() + x + ".txt",
            "outputs/model.txt".to_string(),
        ];
        let mut got = artifacts(&s, id, "outputs");
        got.extend(artifacts(&s, id, "logs"));
        got.sort();
        assert_eq!(got, want, "child {x}");
        let (_, model, _) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/outputs/model.txt"));
        assert_eq!(String::from_utf8_lossy(&model), format!("{x}\n"));
        let (_, copy, _) = s.get_bytes(&format!(
            "/api/v1/runs/{id}/artifacts/outputs/model-{x}.txt"
        ));
        assert_eq!(copy, b"shared input");
        let local = src.path().join(format!("outputs/x={x}/model.txt"));
        assert_eq!(std::fs::read_to_string(local).unwrap(), format!("{x}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(src.path().join("outputs/old.bin")).unwrap(),
        "an earlier run's"
    );
    let work = std::env::temp_dir().join(format!("flightlog-sweep-{parent}"));
    assert!(!work.exists(), "{} is left", work.display());
}

/// A run that looks submitted (it has `compute_target`) but has no supervisor listening: the cancel asks, waits,
/// then marks it Canceled itself instead of leaving it CancelRequested for good. One already Finalizing has no
/// job left to stop: the cancel waits for its end and takes it as it is.
#[test]
fn cancel_of_a_run_no_supervisor_answers_for_ends_it_and_finalizing_runs_are_left_to_finish() {
    use flightlog_client::{Client, ClientConfig};
    use flightlog_model::{NewRun, RunPatch, RunStatus};
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = Client::new(ClientConfig {
        uri: s.base(),
        spool_dir: spool.path().to_path_buf(),
        replay_on_start: false,
        ..Default::default()
    });
    let looks_submitted = || {
        c.create_run(&NewRun {
            properties: [("compute_target".to_string(), "gpu-1".to_string())].into(),
            ..Default::default()
        })
        .unwrap()
        .id
    };
    let orphan = looks_submitted();
    let r = flightlog_runner::wait::cancel_run(&c, &orphan, Duration::from_millis(300)).unwrap();
    assert_eq!(r.status, RunStatus::Canceled);

    let finishing = looks_submitted();
    c.update_run(&finishing, &RunPatch::to_status(RunStatus::Finalizing))
        .unwrap();
    let r = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            c.update_run(&finishing, &RunPatch::to_status(RunStatus::Completed))
                .unwrap();
        });
        flightlog_runner::wait::cancel_run(&c, &finishing, Duration::from_secs(20)).unwrap()
    });
    assert_eq!(r.status, RunStatus::Completed);
}

/// Every run's (display name, status), but the given one's.
fn other_runs(s: &TestServer, but: &str) -> Vec<(String, String)> {
    let (_, v) = s.get("/api/v1/runs");
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] != but)
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (field("display_name"), field("status"))
        })
        .collect();
    out.sort();
    out
}

/// `runs cancel PARENT` stops the children running and starts no more (none are made as runs), and the
/// parent ends Canceled at once rather than after the whole sweep.
#[test]
fn canceling_a_sweeps_parent_stops_its_children_and_starts_no_more() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().to_str().unwrap();
    let args = [
        "--sweep",
        "a=1,2,3,4",
        "--parallel",
        "2",
        "--grace",
        "2",
        "--source-dir",
        dir,
        "--",
        "sh",
        "-c",
        "echo started {a}; sleep 300",
    ];
    let (mut child, parent) = spawn_submit(&s, spool.path(), &args);
    wait_for("two children Running", Duration::from_secs(30), || {
        let runs = other_runs(&s, &parent);
        runs.len() == 2 && runs.iter().all(|(_, status)| status == "Running")
    });
    let started = Instant::now();
    let out = run_cli(&s, spool.path(), &["runs", "cancel", &parent]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is Canceled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(130));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(get_run(&s, &parent)["status"], "Canceled");
    let canceled = |name: &str| (name.to_string(), "Canceled".to_string());
    assert_eq!(
        other_runs(&s, &parent),
        vec![canceled("a=1"), canceled("a=2")]
    );
    let summary = log(&s, &parent, "stdout");
    assert_eq!(summary.matches("NotStarted").count(), 2, "{summary}");
}

#[test]
fn a_zero_parallel_or_timeout_is_refused() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let zero_parallel = [
        "submit",
        "--sweep",
        "a=1",
        "--parallel",
        "0",
        "--",
        "echo",
        "{a}",
    ];
    let zero_timeout = ["submit", "--timeout", "0", "--", "true"];
    for (args, says) in [
        (&zero_parallel[..], "must be at least 1"),
        (
            &zero_timeout[..],
            "--timeout must be more than 0 seconds (leave it out for no limit), not 0",
        ),
    ] {
        let out = run_cli(&s, spool.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
    assert_eq!(run_count(&s), 0);
}

/// The server dies while the job runs: submit does not wait long for it, says what was not uploaded and that
/// the outcome waits in the spool, and `flightlog sync` later records the outcome and the output.
#[test]
fn a_server_gone_at_the_end_is_reported_and_sync_records_the_outcome() {
    let mut s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let job = "echo first; while [ ! -f go ]; do sleep 0.05; done; echo last; \
               mkdir -p outputs; echo m > outputs/model.txt";
    let dir = src.path().to_str().unwrap();
    let mut child = cmd(&s, spool.path())
        .args(["submit", "--source-dir", dir, "--", "sh", "-c", job])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let id = announced_id(&first);
    wait_for("the first line", Duration::from_secs(20), || {
        log(&s, &id, "stdout").contains(" first")
    });
    s.kill_9();
    write(src.path(), "go", "");
    let started = Instant::now();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        rest.contains("flightlog: warning: cannot upload "),
        "{rest}"
    );
    assert!(
        rest.contains(&format!("flightlog artifacts put {id} ")),
        "{rest}"
    );
    assert!(
        rest.contains("run `flightlog sync` once it is reachable"),
        "{rest}"
    );
    s.restart();
    assert_eq!(get_run(&s, &id)["status"], "Running");
    let out = run_cli(&s, spool.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = get_run(&s, &id);
    assert_eq!(run["status"], "Completed");
    assert_eq!(run["properties"]["exit_code"], "0");
    assert!(log(&s, &id, "stdout").contains(" last\n"));
}
