//! The `flightlog` subcommands against a real server: human and `--json` output with real values, exit codes,
//! `logs --follow`, artifact downloads, completions.

mod common;

use common::TestServer;
use flightlog_client::{Client, ClientConfig};
use flightlog_model::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Cli<'a> {
    server: &'a TestServer,
}

impl Cli<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flightlog"));
        c.args(args)
            .env("FLIGHTLOG_TRACKING_URI", self.server.base())
            .env("FLIGHTLOG_SPOOL", "/nonexistent-flightlog-spool");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run flightlog")
    }
    /// Runs and expects exit 0; returns stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "flightlog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("flightlog {a:?} printed no JSON ({e}): {out}"))
    }
    #[track_caller]
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "flightlog {args:?}: {err}");
        err
    }
}

fn client(s: &TestServer) -> Client {
    let spool = std::env::temp_dir().join("flightlog-cli-test-spool");
    Client::new(ClientConfig {
        uri: s.base(),
        spool_dir: spool,
        replay_on_start: false,
        ..Default::default()
    })
}

/// An experiment with one run holding metrics, logs, params, tags and artifacts.
fn fixture(s: &TestServer) -> (Client, RunId) {
    let c = client(s);
    let exp = c.get_or_create_experiment("cli-exp").unwrap();
    let run = c
        .create_run(&NewRun {
            experiment_id: exp.id,
            display_name: Some("cli run".into()),
            params: [("lr".to_string(), "0.01".to_string())].into(),
            tags: [("team".to_string(), "vision".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
    for i in 0..10 {
        c.log_scalar(&run.id, "loss", Some(i), 1.0 / (i + 1) as f64, None)
            .unwrap();
    }
    c.log(
        &run.id,
        MetricWrite::Text {
            name: "phase".into(),
            description: None,
            steps: None,
            times: None,
            values: vec!["warmup".into(), "train, fast".into()],
        },
    )
    .unwrap();
    c.log_text_to_stream(&run.id, "stdout", "hello\nworld\n")
        .unwrap();
    c.log_text_to_stream(&run.id, "stderr", "oops\n").unwrap();
    assert!(c.flush(Duration::from_secs(30)).unwrap().complete);
    c.put_artifact_bytes(&run.id, "outputs/model.txt", b"weights")
        .unwrap();
    c.put_artifact_bytes(&run.id, "outputs/sub/a.txt", b"AAA")
        .unwrap();
    (c, run.id)
}

#[test]
fn listing_and_showing() {
    let s = TestServer::start();
    let cli = Cli { server: &s };
    let (_c, run) = fixture(&s);
    let id = run.as_str();

    let out = cli.ok(&["experiments", "ls"]);
    let line = out.lines().find(|l| l.contains("cli-exp")).expect(&out);
    assert!(
        line.split_whitespace().any(|w| w == "1"),
        "run count in {line:?}"
    );
    assert!(out.lines().next().unwrap().starts_with("ID"));
    let exps = cli.json(&["experiments", "ls"]);
    let e = exps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "cli-exp")
        .expect("experiment listed");
    assert_eq!(e["run_count"], 1);

    let out = cli.ok(&["runs", "ls", "--experiment", "cli-exp"]);
    assert!(
        out.contains(id)
            && out.contains("cli run")
            && out.contains("Running")
            && out.contains("cli-exp"),
        "{out}"
    );
    let runs = cli.json(&["runs", "ls", "-e", "cli-exp"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], id);
    assert_eq!(
        cli.json(&["runs", "ls", "--status", "Completed"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        cli.json(&["runs", "ls", "--status", "running"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    cli.fails(&["runs", "ls", "--experiment", "no-such-exp"], 3);
    cli.fails(&["runs", "ls", "--status", "done"], 4);

    let out = cli.ok(&["runs", "show", id]);
    for needle in [
        "cli run", "cli-exp", "Running", "lr", "0.01", "team", "vision", "loss", "0.1",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    let r = cli.json(&["runs", "show", id]);
    assert_eq!(r["id"], id);
    assert_eq!(r["params"]["lr"], "0.01");

    // Metrics: table of latest values, all points, CSV, JSON.
    let out = cli.ok(&["metrics", id]);
    let loss = out.lines().find(|l| l.starts_with("loss")).expect(&out);
    assert!(
        loss.contains("scalar") && loss.contains("10") && loss.contains("0.1"),
        "{loss}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("phase") && l.contains("train, fast")),
        "{out}"
    );
    let csv = cli.ok(&["metrics", id, "loss", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,time,value");
    assert_eq!(lines.len(), 11);
    assert!(
        lines[2].starts_with("1,") && lines[2].ends_with(",0.5"),
        "{}",
        lines[2]
    );
    let table = cli.ok(&["metrics", id, "loss"]);
    assert!(
        table.lines().nth(4).unwrap().trim_end().ends_with("0.25"),
        "{table}"
    );
    let pts = cli.json(&["metrics", id, "loss"]);
    assert_eq!(pts["values"].as_array().unwrap().len(), 10);
    assert_eq!(pts["steps"][9], 9);
    let text_csv = cli.ok(&["metrics", id, "phase", "--csv"]);
    assert!(text_csv.contains("\"train, fast\""), "{text_csv}");
    let infos = cli.json(&["metrics", id]);
    assert!(infos
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "loss" && m["count"] == 10));
    cli.fails(&["metrics", id, "nope"], 3);

    // Logs.
    assert_eq!(
        cli.ok(&["logs", id, "--stream", "stdout"]),
        "hello\nworld\n"
    );
    let all = cli.ok(&["logs", id]);
    assert!(
        all.contains("==> stdout <==\nhello\nworld\n") && all.contains("==> stderr <==\noops\n"),
        "{all}"
    );
    assert!(all.find("stdout").unwrap() < all.find("stderr").unwrap());
    let slices = cli.json(&["logs", id, "--stream", "stderr"]);
    assert_eq!(slices[0]["data"], "oops\n");
    cli.fails(&["logs", id, "--stream", "bad/name"], 4);

    // Artifacts.
    let out = cli.ok(&["artifacts", "ls", id]);
    assert!(out.contains("outputs/"), "{out}");
    let out = cli.ok(&["artifacts", "ls", id, "outputs"]);
    assert!(
        out.contains("outputs/model.txt") && out.contains("7 B") && out.contains("outputs/sub/"),
        "{out}"
    );
    let items = cli.json(&["artifacts", "ls", id, "outputs", "-r"]);
    assert_eq!(items.as_array().unwrap().len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.txt");
    cli.ok(&[
        "artifacts",
        "get",
        id,
        "outputs/model.txt",
        "-o",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"weights");
    let folder = dir.path().join("out");
    let got = cli.json(&[
        "artifacts",
        "get",
        id,
        "outputs",
        "-o",
        folder.to_str().unwrap(),
    ]);
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read(folder.join("model.txt")).unwrap(), b"weights");
    assert_eq!(std::fs::read(folder.join("sub/a.txt")).unwrap(), b"AAA");
    cli.fails(
        &[
            "artifacts",
            "get",
            id,
            "missing.bin",
            "-o",
            dest.to_str().unwrap(),
        ],
        3,
    );
    // Upload a file and a folder, then read them back.
    let up = dir.path().join("up");
    std::fs::create_dir_all(up.join("deep")).unwrap();
    std::fs::write(up.join("x.txt"), b"xx").unwrap();
    std::fs::write(up.join("deep/y.txt"), b"yyy").unwrap();
    let put = cli.json(&["artifacts", "put", id, up.to_str().unwrap(), "uploads"]);
    assert_eq!(put.as_array().unwrap().len(), 2, "{put}");
    let out = cli.ok(&["artifacts", "put", id, up.join("x.txt").to_str().unwrap()]);
    assert!(out.contains("-> x.txt (2 B)"), "{out}");
    let listed = cli.json(&["artifacts", "ls", id, "uploads", "--recursive"]);
    let mut paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["uploads/deep/y.txt", "uploads/x.txt"]);
    cli.fails(&["artifacts", "put", id, "/nonexistent/file"], 4);
    cli.fails(&["artifacts", "get", id, "../etc/passwd"], 4);

    // Cancel: a running run becomes Canceled; a finished one cannot change (exit 4).
    let r = cli.json(&["runs", "cancel", id]);
    assert_eq!(r["status"], "Canceled");
    assert!(cli.ok(&["runs", "show", id]).contains("Canceled"));
    let c = client(&s);
    let done = c.create_run(&NewRun::default()).unwrap();
    c.update_run(
        &done.id,
        &RunPatch {
            status: Some(RunStatus::Completed),
            ..Default::default()
        },
    )
    .unwrap();
    let err = cli.fails(&["runs", "cancel", done.id.as_str()], 4);
    assert!(
        err.contains("error: run status cannot change from Completed to Canceled"),
        "{err}"
    );
}

#[test]
fn exit_codes_and_messages() {
    let s = TestServer::start();
    let cli = Cli { server: &s };
    let missing = RunId::new();
    let err = cli.fails(&["runs", "show", missing.as_str()], 3);
    assert!(
        err.contains(&format!("error: run '{missing}' not found")),
        "{err}"
    );
    assert!(err.contains("hint:"));
    cli.fails(&["runs", "show", "not-a-run-id"], 4);
    cli.fails(&["runs", "frobnicate"], 2);
    cli.fails(&[], 2);
    let out = cli.run(&["--server", "http://127.0.0.1:1", "experiments", "ls"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the flightlog server at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("is `flightlog server` running? set --server or FLIGHTLOG_TRACKING_URI"),
        "{err}"
    );
    let help = cli.ok(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("5  cannot reach the server"));
    let bash = cli.ok(&["completions", "bash"]);
    assert!(bash.len() > 1000 && bash.contains("flightlog"), "{bash}");
    assert!(!cli.ok(&["completions", "zsh"]).is_empty());
    // An empty spool syncs to nothing.
    let spool = tempfile::tempdir().unwrap();
    let rep = cli.json(&["sync", "--spool", spool.path().to_str().unwrap()]);
    assert_eq!(rep["files_found"], 0);
    assert!(cli
        .ok(&["sync", "--spool", spool.path().to_str().unwrap()])
        .contains("sent 0 entries"));
}

#[test]
fn server_subcommand_prints_address_and_rejects_bad_data_dir() {
    // A data folder that is a file cannot be opened.
    let f = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["server", "--port", "0", "--data"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: cannot") && err.contains(&f.path().display().to_string()),
        "{err}"
    );

    // Port 0: the real address is printed, then SIGTERM stops it cleanly.
    let data = tempfile::tempdir().unwrap();
    let (mut child, mut stdout, line) = server_on_port_zero(data.path());
    assert!(
        line.starts_with("flightlog server listening on http://127.0.0.1:"),
        "{line}"
    );
    let uri = line.trim().rsplit(' ').next().unwrap().to_string();
    let mut portal = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut portal).unwrap();
    assert_eq!(portal.trim(), format!("portal: {uri}/"));
    let c = Client::new(ClientConfig {
        uri: uri.clone(),
        replay_on_start: false,
        ..Default::default()
    });
    assert_eq!(c.health().unwrap()["status"], "ok");
    let status = sigterm(&mut child);
    assert!(status.success(), "{status:?}");

    // --json: one JSON line with the address, for supervisors.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["--json", "server", "--port", "0", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let url = v["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && v["portal"] == format!("{url}/"),
        "{v}"
    );
    assert!(sigterm(&mut child).success());
}

#[test]
fn sigterm_right_after_the_address_is_printed_stops_the_server_cleanly() {
    // A supervisor may stop the server the moment it reports its address; the handlers must be in place by
    // then, or the default action kills it (exit by signal 15, seen 1 time in 10 on a busy machine).
    for _ in 0..10 {
        let data = tempfile::tempdir().unwrap();
        let (mut child, _stdout, _address) = server_on_port_zero(data.path());
        let status = sigterm(&mut child);
        assert!(status.success(), "{status:?}");
    }
}

/// `flightlog server --port 0` on `data`, once it has printed its first line (the address): the process, the
/// rest of its stdout, and that line.
fn server_on_port_zero(
    data: &std::path::Path,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["server", "--port", "0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    (child, stdout, line)
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    unsafe { libc_kill(child.id() as i32, 15) };
    child.wait().unwrap()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn logs_follow_streams_until_the_run_ends() {
    let s = TestServer::start();
    let cli = Cli { server: &s };
    let c = client(&s);
    let run = c.create_run(&NewRun::default()).unwrap().id;
    c.append_log(&run, "stdout", b"before\n").unwrap();
    let child = cli
        .cmd(&["logs", run.as_str(), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let mut expected = String::from("before\n");
    for i in 0..20 {
        let line = format!("live {i}\n");
        c.append_log(&run, "stdout", line.as_bytes()).unwrap();
        expected.push_str(&line);
        std::thread::sleep(Duration::from_millis(20));
    }
    c.update_run(
        &run,
        &RunPatch {
            status: Some(RunStatus::Completed),
            ..Default::default()
        },
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("logs --follow did not exit when the run completed")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    // On a finished run, --follow prints everything and exits.
    assert_eq!(cli.ok(&["logs", run.as_str(), "-f"]), expected);
}

/// Audit K's findings on input the commands panicked on or misread: a download to a path that is not UTF-8,
/// folder uploads through symbolic links, an all-digit experiment name that is also another experiment's id,
/// empty and out-of-range arguments, names that do not exist, and another web server where the server should be.
#[test]
fn odd_input_is_refused_or_handled_not_misread() {
    let s = TestServer::start();
    let cli = Cli { server: &s };
    let (c, run) = fixture(&s);
    let run = run.as_str();
    let dir = tempfile::tempdir().unwrap();

    // -o with bytes that are not UTF-8: written, no panic.
    use std::os::unix::ffi::OsStrExt;
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
    let out = cli
        .cmd(&["artifacts", "get", run, "outputs/model.txt", "-o"])
        .arg(&odd)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&odd).unwrap(), b"weights");

    // A folder with a link back to itself and one out of it: the real files once, the links left out.
    let up = dir.path().join("up");
    std::fs::create_dir_all(up.join("sub")).unwrap();
    std::fs::write(up.join("a.txt"), "a").unwrap();
    std::fs::write(up.join("sub/b.txt"), "b").unwrap();
    std::os::unix::fs::symlink(&up, up.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", up.join("outside")).unwrap();
    let out = cli.run(&["artifacts", "put", run, up.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("left out 2 symbolic link(s)"));
    let mut listed: Vec<String> = c
        .list_artifacts(&run.parse().unwrap(), Some("up"), true)
        .unwrap()
        .into_iter()
        .map(|a| a.path)
        .collect();
    listed.sort();
    assert_eq!(listed, ["up/a.txt", "up/sub/b.txt"]);
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out = cli.run(&[
        "artifacts",
        "put",
        run,
        dir.path().join("empty").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to upload in"));

    // "1" names an experiment, and 1 is another one's id: refused, and either can be asked for.
    let named = c.get_or_create_experiment("1").unwrap();
    let by_id = c.get_experiment(ExperimentId(1)).unwrap();
    assert_ne!(named.id, by_id.id);
    let err = cli.fails(&["runs", "ls", "-e", "1"], 4);
    assert!(
        err.contains(&format!(
            "'1' is both experiment 1 ({}) and the name of experiment {}",
            by_id.name, named.id
        )),
        "{err}"
    );
    cli.ok(&["runs", "ls", "-e", "name:1"]);
    cli.ok(&["runs", "ls", "-e", "id:1"]);

    // Empty or out-of-range arguments, and names that are not there.
    assert!(cli.fails(&["metrics", run, ""], 4).contains("metric name"));
    assert!(cli
        .fails(&["runs", "ls", "--limit", "0"], 2)
        .contains("--limit"));
    let err = cli.fails(
        &[
            "import",
            "tensorboard",
            ".",
            "--follow",
            "--interval",
            "NaN",
        ],
        2,
    );
    assert!(err.contains("0.05 to 3600"), "{err}");
    let err = cli.fails(&["logs", run, "--stream", "sdtout"], 3);
    assert!(
        err.contains("has no log stream 'sdtout' (its streams: ") && err.contains("stdout"),
        "{err}"
    );
    cli.fails(&["artifacts", "ls", run, "nosuch"], 3);

    // Something else answering on the server's port is not a missing run.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_url = format!("http://{}", other.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in other.incoming().flatten().take(4) {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let page = "<!DOCTYPE HTML>\n<html><body>Nothing matches the given URI</body></html>";
            let _ = std::io::Write::write_all(
                &mut conn,
                format!("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len()).as_bytes(),
            );
        }
    });
    let err = cli.fails(&["--server", &other_url, "runs", "show", run], 5);
    assert!(
        err.contains("HTTP 404: <!DOCTYPE HTML>); is it a flightlog server?")
            && !err.contains("<body>"),
        "{err}"
    );
}
