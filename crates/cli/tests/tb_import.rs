//! `flightlog import tensorboard` against a real server: runs per folder (children nested), every value form,
//! idempotent re-import, a grown file, damaged and truncated files.

mod common;
mod tb_common;

use common::TestServer;
use flightlog_tensorboard::proto::summary::value::Value as V;
use flightlog_tensorboard::proto::summary::Value;
use flightlog_tensorboard::proto::{
    dtype, tensor_shape_proto::Dim, PluginData, SummaryMetadata, TensorProto, TensorShapeProto,
};
use flightlog_tensorboard::summary::{self, event};
use flightlog_tensorboard::EventWriter;
use serde_json::Value as Json;
use std::io::Write;
use std::path::{Path, PathBuf};
use tb_common::*;

fn plugin(name: &str) -> Option<Box<SummaryMetadata>> {
    Some(Box::new(SummaryMetadata {
        plugin_data: Some(PluginData {
            plugin_name: name.into(),
            content: vec![],
        }),
        ..Default::default()
    }))
}

fn shape(d: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: d
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn tensor(tag: &str, meta: Option<Box<SummaryMetadata>>, t: TensorProto) -> Value {
    Value {
        tag: tag.into(),
        metadata: meta,
        value: Some(V::Tensor(Box::new(t))),
        ..Default::default()
    }
}

/// A file with every form: simple_value, f32/f64 tensors, legacy and tensor images, text, both histograms.
fn write_all_forms(dir: &Path) -> std::path::PathBuf {
    let mut w = EventWriter::create(dir, "", 100.0).unwrap();
    for step in 0..3i64 {
        let t = 100.0 + step as f64 + 0.25;
        w.write(&event(
            t,
            step,
            summary::scalar("loss", 1.0 / (step + 1) as f32),
        ))
        .unwrap();
        let f32t = TensorProto {
            dtype: dtype::FLOAT,
            tensor_shape: shape(&[]),
            tensor_content: (step as f32 * 0.5).to_le_bytes().to_vec(),
            ..Default::default()
        };
        w.write(&event(
            t,
            step,
            tensor(
                "tf2/acc",
                if step == 0 { plugin("scalars") } else { None },
                f32t,
            ),
        ))
        .unwrap();
        let f64t = TensorProto {
            dtype: dtype::DOUBLE,
            tensor_shape: shape(&[]),
            double_val: vec![0.1 * step as f64],
            ..Default::default()
        };
        w.write(&event(t, step, tensor("double", plugin("scalars"), f64t)))
            .unwrap();
    }
    w.write(&event(200.0, 7, summary::image("legacy_img", png())))
        .unwrap();
    let img = TensorProto {
        dtype: dtype::STRING,
        tensor_shape: shape(&[3]),
        string_val: vec![b"2".to_vec(), b"3".to_vec(), png()],
        ..Default::default()
    };
    w.write(&event(
        201.0,
        8,
        tensor("tensor_img", plugin("images"), img),
    ))
    .unwrap();
    w.write(&event(202.0, 1, summary::text("notes", "**bold**")))
        .unwrap();
    w.write(&event(
        203.0,
        2,
        summary::histogram("w", &[1.0, 2.0], &[3.0, 4.0], Some(0.5)),
    ))
    .unwrap();
    let h = TensorProto {
        dtype: dtype::DOUBLE,
        tensor_shape: shape(&[2, 3]),
        double_val: vec![0.0, 1.0, 5.0, 1.0, 2.0, 6.0],
        ..Default::default()
    };
    w.write(&event(204.0, 3, tensor("h2", plugin("histograms"), h)))
        .unwrap();
    w.close().unwrap()
}

fn runs(s: &TestServer, experiment: &str) -> Vec<Json> {
    let (_, v) = s.get(&format!("/api/v1/experiments/by-name/{experiment}"));
    let id = v["id"].as_str().unwrap().to_string();
    let (_, page) = s.get(&format!("/api/v1/runs?experiment_id={id}"));
    let mut items = page["items"].as_array().unwrap().clone();
    items.sort_by_key(|r| r["display_name"].as_str().unwrap().to_string());
    items
}

fn metric(s: &TestServer, run: &Json, name: &str) -> Json {
    let id = run["id"].as_str().unwrap();
    let (st, v) = s.get(&format!("/api/v1/runs/{id}/metrics/{name}"));
    assert_eq!(st, 200, "{name}: {v}");
    v
}

#[test]
fn folders_become_runs_and_every_form_is_read() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("logs");
    write_all_forms(&root);
    write_all_forms(&root.join("child"));
    write_all_forms(&root.join("a/b")); // "a" holds no event files: "a/b" is a child of the root run
    let out = ok(
        &s.base(),
        &["import", "tensorboard", root.to_str().unwrap(), "-e", "imp"],
    );
    assert!(out.contains("imported 3 run(s)"), "{out}");
    let r = runs(&s, "imp");
    let names: Vec<&str> = r
        .iter()
        .map(|x| x["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a/b", "child", "logs"]);
    assert_eq!(r[0]["parent_id"], r[2]["id"]);
    assert_eq!(r[1]["parent_id"], r[2]["id"]);
    assert_eq!(r[2]["status"], "Completed");
    let root_run = &r[2];
    let loss = metric(&s, root_run, "loss");
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2]));
    assert_eq!(
        loss["times"],
        serde_json::json!([100_250_000, 101_250_000, 102_250_000])
    );
    assert_eq!(
        loss["values"],
        serde_json::json!([1.0, 0.5, (1.0f32 / 3.0) as f64])
    );
    assert_eq!(
        metric(&s, root_run, "tf2/acc")["values"],
        serde_json::json!([0.0, 0.5, 1.0])
    );
    assert_eq!(
        metric(&s, root_run, "double")["values"],
        serde_json::json!([0.0, 0.1, 0.2])
    );
    let notes = metric(&s, root_run, "notes");
    assert_eq!(notes["records"][0]["value"], "**bold**");
    let w = metric(&s, root_run, "w");
    assert_eq!(
        w["records"][0]["value"],
        serde_json::json!({"limits": [1.0, 2.0], "counts": [3.0, 4.0], "lower": 0.5})
    );
    assert_eq!(w["records"][0]["step"], 2);
    let h2 = metric(&s, root_run, "h2");
    assert_eq!(
        h2["records"][0]["value"],
        serde_json::json!({"limits": [1.0, 2.0], "counts": [5.0, 6.0], "lower": 0.0})
    );
    for img in ["legacy_img", "tensor_img"] {
        let v = metric(&s, root_run, img);
        let rec = &v["records"][0];
        let path = rec["value"]["path"].as_str().unwrap();
        let id = root_run["id"].as_str().unwrap();
        let (st, bytes, _) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/{path}"));
        assert_eq!((st, bytes), (200, png()), "{img}");
    }
}

#[test]
fn re_import_is_idempotent_and_a_grown_file_adds_only_the_new_part() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_all_forms(dir.path());
    let logdir = dir.path().to_str().unwrap();
    ok(&s.base(), &["import", "tensorboard", logdir, "-e", "again"]);
    ok(&s.base(), &["import", "tensorboard", logdir, "-e", "again"]);
    let r = runs(&s, "again");
    assert_eq!(r.len(), 1);
    let count = |name: &str| {
        let v = metric(&s, &r[0], name);
        v["values"]
            .as_array()
            .or(v["records"].as_array())
            .unwrap()
            .len()
    };
    assert_eq!(
        (
            count("loss"),
            count("legacy_img"),
            count("notes"),
            count("w")
        ),
        (3, 1, 1, 1)
    );
    // The writer appends more: only that is added.
    let mut more = Vec::new();
    flightlog_tensorboard::record::encode_record(
        &prost::Message::encode_to_vec(&event(300.0, 3, summary::scalar("loss", 0.125))),
        &mut more,
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&more)
        .unwrap();
    ok(&s.base(), &["import", "tensorboard", logdir, "-e", "again"]);
    assert_eq!(
        metric(&s, &r[0], "loss")["steps"],
        serde_json::json!([0, 1, 2, 3])
    );
    assert_eq!(count("legacy_img"), 1);
}

#[test]
fn damaged_and_truncated_files_are_reported_and_the_rest_imported() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_all_forms(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Damage the data of the second record (the first "loss" point), and cut the last record short.
    let first = 16 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[first + 14] ^= 0x55;
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).unwrap();
    let out = flightlog(
        &s.base(),
        &[
            "import",
            "tensorboard",
            dir.path().to_str().unwrap(),
            "-e",
            "bad",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let file = path.display().to_string();
    assert!(
        err.contains(&format!(
            "warning: {file}: offset {first}: record data checksum mismatch"
        )),
        "{err}"
    );
    assert!(err.contains("file ends inside a record"), "{err}");
    let r = runs(&s, "bad");
    assert_eq!(
        metric(&s, &r[0], "loss")["steps"],
        serde_json::json!([1, 2])
    );
    let (st, _) = s.get(&format!(
        "/api/v1/runs/{}/metrics/h2",
        r[0]["id"].as_str().unwrap()
    ));
    assert_eq!(st, 404);
}

#[test]
fn a_logdir_without_event_files_is_an_error() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = flightlog(
        &s.base(),
        &["import", "tensorboard", dir.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TensorBoard event files"));
    let out = flightlog(&s.base(), &["import", "tensorboard", "/nonexistent/logdir"]);
    assert_eq!(out.status.code(), Some(3));
}

/// One scalar record of tag `live` at `step`, framed as a writer appends it.
fn live_record(step: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let e = event(
        1000.0 + step as f64,
        step,
        summary::scalar("live", step as f32),
    );
    flightlog_tensorboard::record::encode_record(&prost::Message::encode_to_vec(&e), &mut out);
    out
}

/// `flightlog import tensorboard DIR -e live --follow --interval SECS`, its output piped.
fn follow(s: &TestServer, dir: &Path, interval: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["import", "tensorboard", dir.to_str().unwrap(), "-e", "live"])
        .args(["--follow", "--interval", interval])
        .env("FLIGHTLOG_TRACKING_URI", s.base())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The steps of metric `live` of the first run of experiment `live`, once it exists.
fn live_steps(s: &TestServer) -> Option<Json> {
    let (st, v) = s.get("/api/v1/experiments/by-name/live");
    if st != 200 {
        return None;
    }
    let (_, page) = s.get(&format!("/api/v1/runs?experiment_id={}", v["id"].as_str()?));
    let id = page["items"][0]["id"].as_str()?.to_string();
    let (st, m) = s.get(&format!("/api/v1/runs/{id}/metrics/live"));
    (st == 200).then(|| m["steps"].clone())
}

/// Waits up to 30 s for [`live_steps`] to be `want`.
fn wait_for_live_steps(s: &TestServer, want: Json) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while live_steps(s) != Some(want.clone()) {
        let now = live_steps(s);
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {want}: {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn follow_imports_what_a_running_writer_appends() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.host.1.0");
    let record = live_record;
    std::fs::write(&path, record(0)).unwrap();
    let mut child = follow(&s, dir.path(), "0.05");
    wait_for_live_steps(&s, serde_json::json!([0]));
    let (_, v) = s.get("/api/v1/experiments/by-name/live");
    let (_, page) = s.get(&format!(
        "/api/v1/runs?experiment_id={}",
        v["id"].as_str().unwrap()
    ));
    assert_eq!(page["items"][0]["status"], "Running");
    // Half a record, then the rest and one more: nothing is lost or read twice.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let one = record(1);
    f.write_all(&one[..10]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    f.write_all(&one[10..]).unwrap();
    f.write_all(&record(2)).unwrap();
    f.flush().unwrap();
    wait_for_live_steps(&s, serde_json::json!([0, 1, 2]));
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let (_, page) = s.get(&format!(
        "/api/v1/runs?experiment_id={}",
        v["id"].as_str().unwrap()
    ));
    assert_eq!(page["items"][0]["status"], "Completed");
}

/// Following while the server hangs (here: stopped with SIGSTOP mid-import): the first Ctrl-C asks for a clean
/// stop, which waits on the hung request; a second one quits at once (before, it was ignored as well, for as long
/// as the request's timeout).
#[test]
fn a_second_ctrl_c_quits_an_import_waiting_on_a_hung_server() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.host.1.0");
    std::fs::write(&path, live_record(0)).unwrap();
    let mut child = follow(&s, dir.path(), "0.05");
    wait_for_live_steps(&s, serde_json::json!([0]));
    let server = s.pid().unwrap() as libc::pid_t;
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&live_record(1)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500)); // the import's request is now waiting
    let pid = child.id() as libc::pid_t;
    let sigint = || unsafe { libc::kill(pid, libc::SIGINT) };
    sigint();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C stops cleanly, after the request"
    );
    sigint();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a second Ctrl-C did not quit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    unsafe { libc::kill(server, libc::SIGCONT) };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT));
}

/// Values the store refuses (a histogram with more limits than counts, a text point over 1 MiB) are skipped
/// one by one and named in a warning, as are values of a plugin flightlog has no kind for (hparams): every
/// other point of their file is imported. (Before, one such value lost every point of its file.)
#[test]
fn values_the_store_refuses_are_skipped_alone() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path(), "", 100.0).unwrap();
    let hparams = Value {
        tag: "_hparams_/session_start_info".into(),
        metadata: plugin("hparams"),
        ..Default::default()
    };
    let big = "x".repeat((1 << 20) + 1);
    let values = [
        summary::histogram("h", &[1.0, 2.0, 3.0], &[1.0, 2.0], None),
        summary::text("notes", &big),
        hparams,
        summary::text("notes", "fits"),
        summary::histogram("h", &[1.0, 2.0], &[1.0, 2.0], None),
    ];
    for (step, v) in values.into_iter().enumerate() {
        w.write(&event(100.5, step as i64, v)).unwrap();
        let loss = summary::scalar("loss", step as f32);
        w.write(&event(101.0, step as i64, loss)).unwrap();
    }
    w.flush().unwrap();
    let logdir = dir.path().to_str().unwrap();
    let out = flightlog(
        &s.base(),
        &["import", "tensorboard", logdir, "-e", "refused"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for why in [
        "skipped 1 value(s): invalid counts: histogram 'h' has 3 limits and 2 counts",
        "skipped 1 value(s): a text point of metric 'notes' over the store's limit of 1048576 bytes",
        "skipped 1 value(s): hparams plugin",
    ] {
        assert!(err.contains(why), "{why} not in: {err}");
    }
    let r = &runs(&s, "refused")[0];
    assert_eq!(r["status"], "Completed");
    let loss = metric(&s, r, "loss");
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2, 3, 4]));
    let notes = metric(&s, r, "notes");
    let records = notes["records"].as_array().unwrap();
    assert_eq!(
        (records.len(), &records[0]["value"]),
        (1, &serde_json::json!("fits"))
    );
    assert_eq!(metric(&s, r, "h")["records"].as_array().unwrap().len(), 1);
}

/// A run the server refuses (deleted since the last import) fails alone: every other run of the logdir is
/// imported and ended, the failure is reported, and the exit code says so.
#[test]
fn one_runs_failure_does_not_stop_the_other_runs() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let names = ["a_gone", "b", "c", "d", "e", "f"];
    let write = |step: i64| {
        for name in names {
            let sub = dir.path().join(name);
            std::fs::create_dir_all(&sub).unwrap();
            let mut w = EventWriter::create(&sub, &format!(".{step}"), 100.0).unwrap();
            let v = summary::scalar("v", step as f32);
            w.write(&event(101.0 + step as f64, step, v)).unwrap();
            w.flush().unwrap();
        }
    };
    write(0);
    let logdir = dir.path().to_str().unwrap();
    ok(&s.base(), &["import", "tensorboard", logdir, "-e", "many"]);
    let gone = runs(&s, "many")[0].clone();
    assert_eq!(gone["display_name"], "a_gone");
    let patch = serde_json::json!({"lifecycle": "deleted"});
    let (st, v) = s.patch(
        &format!("/api/v1/runs/{}", gone["id"].as_str().unwrap()),
        &patch,
    );
    assert_eq!(st, 200, "{v}");
    write(1);
    let out = flightlog(&s.base(), &["import", "tensorboard", logdir, "-e", "many"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(gone["id"].as_str().unwrap()), "{err}");
    let rs = runs(&s, "many");
    assert_eq!(rs.len(), 5);
    for r in rs {
        assert_eq!(r["status"], "Completed", "{r}");
        assert_eq!(metric(&s, &r, "v")["steps"], serde_json::json!([0, 1]));
    }
}

/// Writes scalar `v` at `steps` into a new event file whose first record says it was created at `created`, and
/// copies it over `target` (replacing what is there in place, as a re-run that reuses the name would).
fn replace_file(target: &Path, created: f64, steps: std::ops::Range<i64>) {
    let scratch = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(scratch.path(), "", created).unwrap();
    for step in steps {
        let v = summary::scalar("v", step as f32);
        w.write(&event(created + step as f64, step, v)).unwrap();
    }
    std::fs::copy(w.close().unwrap(), target).unwrap();
}

/// A file replaced by another under its name is imported again from its start, with a warning, whether the new
/// one is shorter than what was imported of the old (before: missed) or longer (before: read from the
/// middle, as if it were the old one grown).
#[test]
fn a_replaced_file_is_imported_again_from_its_start() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.out.tfevents.1.host.1.0");
    let logdir = dir.path().to_str().unwrap();
    let import = || {
        let out = flightlog(&s.base(), &["import", "tensorboard", logdir, "-e", "re"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        let steps = metric(&s, &runs(&s, "re")[0], "v")["steps"].clone();
        let steps: Vec<i64> = serde_json::from_value(steps).unwrap();
        (steps, err)
    };
    replace_file(&file, 100.0, 0..10);
    assert_eq!(import().0, (0..10).collect::<Vec<_>>());
    replace_file(&file, 200.0, 20..23);
    let (steps, err) = import();
    assert!(
        err.contains("is shorter than what was read of it: importing it again from its start"),
        "{err}"
    );
    assert_eq!(steps, (0..10).chain(20..23).collect::<Vec<_>>());
    replace_file(&file, 300.0, 30..50);
    let (steps, err) = import();
    assert!(err.contains("was replaced by another file"), "{err}");
    assert_eq!(
        steps,
        (0..10).chain(20..23).chain(30..50).collect::<Vec<_>>()
    );
    let (steps, err) = import();
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(steps.len(), 33, "a file imported whole adds nothing again");
}

/// Links are followed as TensorBoard follows them: a linked run folder and a linked event file are imported;
/// a link back up (a cycle) is read once and a broken link is left out.
#[test]
fn symlinked_folders_and_files_are_followed() {
    let s = TestServer::start();
    let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let write = |folder: &Path, step: i64| {
        let mut w = EventWriter::create(folder, "", 100.0).unwrap();
        w.write(&event(101.0, step, summary::scalar("v", step as f32)))
            .unwrap();
        w.close().unwrap()
    };
    let linked_run = elsewhere.path().join("run_a");
    write(&linked_run, 1);
    let lone_file = write(&elsewhere.path().join("b"), 2);
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let link = |to: &Path, at: PathBuf| std::os::unix::fs::symlink(to, at).unwrap();
    link(&linked_run, dir.path().join("linked"));
    link(&lone_file, plain.join(lone_file.file_name().unwrap()));
    link(dir.path(), plain.join("loop"));
    link(
        Path::new("/nonexistent/flightlog"),
        dir.path().join("broken"),
    );
    let logdir = dir.path().to_str().unwrap();
    ok(&s.base(), &["import", "tensorboard", logdir, "-e", "links"]);
    let rs = runs(&s, "links");
    let names: Vec<&str> = rs
        .iter()
        .map(|r| r["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["linked", "plain"]);
    assert_eq!(metric(&s, &rs[0], "v")["steps"], serde_json::json!([1]));
    assert_eq!(metric(&s, &rs[1], "v")["steps"], serde_json::json!([2]));
}

/// A logdir that is a file is refused with a message that names it and says what to give instead.
#[test]
fn a_file_given_as_the_logdir_is_refused_by_name() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path(), "", 100.0).unwrap();
    w.write(&event(101.0, 0, summary::scalar("v", 1.0)))
        .unwrap();
    let file = w.close().unwrap();
    let out = flightlog(
        &s.base(),
        &["import", "tensorboard", file.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} is a file, not a logdir", file.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "flightlog import tensorboard {}",
            dir.path().canonicalize().unwrap().display()
        )),
        "{err}"
    );
}

/// `--follow` rides out a server outage: it warns once, keeps following, and what the writer appended
/// meanwhile arrives when the server is back (before: exit 5 after a 2.5 s outage).
#[test]
fn follow_rides_out_a_server_outage() {
    let mut s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.host.1.0");
    let record = live_record;
    std::fs::write(&path, record(0)).unwrap();
    let child = follow(&s, dir.path(), "0.1");
    wait_for_live_steps(&s, serde_json::json!([0]));
    s.kill_9();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&record(1)).unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    s.restart();
    f.write_all(&record(2)).unwrap();
    f.flush().unwrap();
    wait_for_live_steps(&s, serde_json::json!([0, 1, 2]));
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("retrying every 0.1 s").count(), 1, "{err}");
    assert!(err.contains("the server answers again"), "{err}");
}
