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
use std::path::Path;
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

#[test]
fn follow_imports_what_a_running_writer_appends() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.host.1.0");
    let record = |step: i64| {
        let mut out = Vec::new();
        let e = event(
            1000.0 + step as f64,
            step,
            summary::scalar("live", step as f32),
        );
        flightlog_tensorboard::record::encode_record(&prost::Message::encode_to_vec(&e), &mut out);
        out
    };
    std::fs::write(&path, record(0)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args([
            "import",
            "tensorboard",
            dir.path().to_str().unwrap(),
            "-e",
            "live",
            "--follow",
            "--interval",
            "0.05",
        ])
        .env("FLIGHTLOG_TRACKING_URI", s.base())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let steps = |s: &TestServer| -> Option<Json> {
        let (st, v) = s.get("/api/v1/experiments/by-name/live");
        if st != 200 {
            return None;
        }
        let (_, page) = s.get(&format!("/api/v1/runs?experiment_id={}", v["id"].as_str()?));
        let id = page["items"][0]["id"].as_str()?.to_string();
        let (st, m) = s.get(&format!("/api/v1/runs/{id}/metrics/live"));
        (st == 200).then(|| m["steps"].clone())
    };
    let wait_for = |want: Json| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while steps(&s) != Some(want.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {want}: {:?}",
                steps(&s)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for(serde_json::json!([0]));
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
    wait_for(serde_json::json!([0, 1, 2]));
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

/// A value the store refuses in one run's file (a histogram with more limits than counts) fails that run,
/// but every other run is still imported and ended; the failure is reported and the exit code says so.
#[test]
fn one_runs_failure_does_not_stop_the_other_runs() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    for name in ["a_bad", "b", "c", "d", "e", "f"] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let mut w = EventWriter::create(&sub, "", 100.0).unwrap();
        if name == "a_bad" {
            let h = summary::histogram("h", &[1.0, 2.0, 3.0], &[1.0, 2.0], None);
            w.write(&event(100.5, 0, h)).unwrap();
        }
        for step in 0..3i64 {
            w.write(&event(
                101.0 + step as f64,
                step,
                summary::scalar("v", step as f32),
            ))
            .unwrap();
        }
        w.flush().unwrap();
    }
    let logdir = dir.path().to_str().unwrap();
    let out = flightlog(&s.base(), &["import", "tensorboard", logdir, "-e", "many"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("histogram 'h' has 3 limits and 2 counts"),
        "{err}"
    );
    let rs = runs(&s, "many");
    let good: Vec<&Json> = rs.iter().filter(|r| r["display_name"] != "a_bad").collect();
    assert_eq!(good.len(), 5);
    for r in good {
        assert_eq!(r["status"], "Completed", "{r}");
        assert_eq!(metric(&s, r, "v")["steps"], serde_json::json!([0, 1, 2]));
    }
}
