//! Server-side ingest of TensorBoard event files uploaded under a run's `logs/` (the real binary): every form
//! becomes a metric, sub-folders become child runs, a grown file adds only its new records, the same upload
//! adds nothing (also after a restart), and damaged records are logged and skipped while the server stays up.

mod common;
mod tb_common;

use common::TestServer;
use flightlog_tensorboard::summary::{self, event};
use flightlog_tensorboard::{Event, EventWriter};
use serde_json::Value as Json;
use std::path::Path;
use std::time::{Duration, Instant};
use tb_common::png;

/// An event file with scalars (steps 0..n), text, a histogram and an image; returns its bytes.
fn event_file(dir: &Path, n: i64) -> Vec<u8> {
    let mut w = EventWriter::create(dir, "", 50.0).unwrap();
    for step in 0..n {
        let t = 100.0 + step as f64 + 0.5;
        w.write(&event(t, step, summary::scalar("loss", step as f32 * 0.5)))
            .unwrap();
    }
    w.write(&event(200.25, 1, summary::text("notes", "**hello**")))
        .unwrap();
    w.write(&event(
        201.0,
        2,
        summary::histogram("weights", &[0.0, 1.0, 2.0], &[1.0, 3.0, 0.0], Some(-1.0)),
    ))
    .unwrap();
    w.write(&event(202.0, 3, summary::image("sample", png())))
        .unwrap();
    let path = w.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(path).unwrap();
    bytes
}

/// One more scalar record, as a writer appends it.
fn record(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    flightlog_tensorboard::record::encode_record(&prost::Message::encode_to_vec(e), &mut out);
    out
}

fn upload(s: &TestServer, run: &str, path: &str, bytes: &[u8]) {
    let (st, v) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{run}/artifacts/{path}"),
        "application/octet-stream",
        bytes,
    );
    assert_eq!(st, 200, "{v}");
}

/// The metric once it exists (ingest runs in the background), else None after 15 s.
fn wait_metric(s: &TestServer, run: &str, name: &str, ready: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, v) = s.get(&format!("/api/v1/runs/{run}/metrics/{name}"));
        if st == 200 && ready(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "metric {name} of run {run} not ready: {v}\n{}",
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's log once it holds `needle` (the ingester logs a file's outcome after its points are stored),
/// else a failure after 15 s.
fn wait_log(s: &TestServer, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = s.server_log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn len(v: &Json) -> usize {
    v["values"]
        .as_array()
        .or(v["records"].as_array())
        .map_or(0, Vec::len)
}

/// Uploads a small marker file and waits for it: everything uploaded before it has been ingested.
fn barrier(s: &TestServer, run: &str, n: i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path(), "", 1.0).unwrap();
    w.write(&event(1.0, n, summary::scalar("marker", n as f32)))
        .unwrap();
    let bytes = std::fs::read(w.close().unwrap()).unwrap();
    upload(
        s,
        run,
        &format!("logs/events.out.tfevents.marker{n}"),
        &bytes,
    );
    wait_metric(s, run, "marker", |v| {
        v["steps"].as_array().is_some_and(|a| a.contains(&n.into()))
    });
}

#[test]
fn uploaded_event_files_become_metrics_with_child_runs_for_subfolders() {
    let s = TestServer::start();
    let run = s.new_run();
    let dir = tempfile::tempdir().unwrap();
    upload(
        &s,
        &run,
        "logs/events.out.tfevents.1.host.1.0",
        &event_file(dir.path(), 4),
    );
    upload(
        &s,
        &run,
        "logs/val/events.out.tfevents.1.host.1.1",
        &event_file(dir.path(), 2),
    );
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 4);
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(loss["values"], serde_json::json!([0.0, 0.5, 1.0, 1.5]));
    let times: Vec<f64> = loss["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 4, "{loss}");
    let notes = wait_metric(&s, &run, "notes", |v| len(v) == 1);
    assert_eq!(notes["records"][0]["value"], "**hello**", "{notes}");
    assert_eq!(notes["records"][0]["step"], 1);
    let h = wait_metric(&s, &run, "weights", |v| len(v) == 1);
    assert_eq!(
        h["records"][0]["value"]["counts"],
        serde_json::json!([1.0, 3.0, 0.0])
    );
    assert_eq!(
        h["records"][0]["value"]["lower"], -1.0,
        "the first bucket's lower edge"
    );
    let img = wait_metric(&s, &run, "sample", |v| len(v) == 1);
    assert_eq!(img["records"][0]["step"], 3);
    // The sub-folder is a child run named by its path.
    // (The second file may be ingested a moment after the first.)
    let deadline = Instant::now() + Duration::from_secs(15);
    let kids = loop {
        let (_, kids) = s.get(&format!("/api/v1/runs?parent_id={run}"));
        let kids = kids["items"].as_array().unwrap().clone();
        if !kids.is_empty() || Instant::now() > deadline {
            break kids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(kids[0]["display_name"], "val");
    let kid = kids[0]["id"].as_str().unwrap();
    let kl = wait_metric(&s, kid, "loss", |v| len(v) == 2);
    assert_eq!(kl["steps"], serde_json::json!([0, 1]));
}

#[test]
fn a_grown_file_adds_only_new_records_and_the_same_upload_adds_nothing_even_after_restart() {
    let mut s = TestServer::start();
    let run = s.new_run();
    let dir = tempfile::tempdir().unwrap();
    let path = "logs/events.out.tfevents.1.host.1.0";
    let mut bytes = event_file(dir.path(), 3);
    upload(&s, &run, path, &bytes);
    wait_metric(&s, &run, "loss", |v| len(v) == 3);
    upload(&s, &run, path, &bytes);
    barrier(&s, &run, 1);
    assert_eq!(
        len(&wait_metric(&s, &run, "loss", |_| true)),
        3,
        "same upload twice"
    );
    // The writer appended a point and half of another (still being written).
    bytes.extend(record(&event(300.0, 10, summary::scalar("loss", 9.0))));
    let next = record(&event(301.0, 11, summary::scalar("loss", 10.0)));
    bytes.extend(&next[..7]);
    upload(&s, &run, path, &bytes);
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 4);
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2, 10]));
    assert_eq!(
        len(&wait_metric(&s, &run, "notes", |_| true)),
        1,
        "text not repeated"
    );
    // A restart keeps the offsets: the same file again adds nothing, its completed record is added once.
    s.restart();
    upload(&s, &run, path, &bytes);
    barrier(&s, &run, 2);
    assert_eq!(len(&wait_metric(&s, &run, "loss", |_| true)), 4);
    bytes.extend(&next[7..]);
    upload(&s, &run, path, &bytes);
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 5);
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2, 10, 11]));
    assert_eq!(len(&wait_metric(&s, &run, "sample", |_| true)), 1);
}

#[test]
fn damaged_records_are_logged_and_skipped_and_the_server_stays_up() {
    let s = TestServer::start();
    let run = s.new_run();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = event_file(dir.path(), 4);
    // Damage the data of the second record (the step-0 loss point); append garbage that is no record.
    let first = 16 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[first + 14] ^= 0x55;
    upload(&s, &run, "logs/events.out.tfevents.bad", &bytes);
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 3);
    assert_eq!(loss["steps"], serde_json::json!([1, 2, 3]));
    wait_metric(&s, &run, "sample", |v| len(v) == 1);
    let log = wait_log(&s, "record data checksum mismatch");
    assert!(log.contains("tfevents.bad"), "{log}");
    // Random bytes and an empty file: nothing stored, nothing crashes.
    upload(&s, &run, "logs/events.out.tfevents.garbage", &[0xffu8; 100]);
    upload(&s, &run, "logs/events.out.tfevents.empty", &[]);
    upload(&s, &run, "logs/readme.txt", b"not an event file");
    barrier(&s, &run, 1);
    let (st, _) = s.get("/health");
    assert_eq!(st, 200);
    assert_eq!(len(&wait_metric(&s, &run, "loss", |_| true)), 3);
}

/// An event file created at `created` holding scalar `loss` at `steps`.
fn scalar_file(created: f64, steps: std::ops::Range<i64>, extra: &[Event]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path(), "", created).unwrap();
    for e in extra {
        w.write(e).unwrap();
    }
    for step in steps {
        let loss = summary::scalar("loss", step as f32);
        w.write(&event(created + step as f64, step, loss)).unwrap();
    }
    std::fs::read(w.close().unwrap()).unwrap()
}

fn wait_status(s: &TestServer, run: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = s.get(&format!("/api/v1/runs/{run}"));
        if v["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is not {want}: {v}\n{}",
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child runs made for `logs/` sub-folders end with their run, also when every file was ingested before
/// the run ended (before, they stayed Running: they were only ended when a file was ingested after).
#[test]
fn logs_child_runs_end_with_their_run() {
    let s = TestServer::start();
    let run = s.new_run();
    for (folder, created) in [("train", 10.0), ("val", 20.0)] {
        let path = format!("logs/{folder}/events.out.tfevents.1.host.1.0");
        upload(&s, &run, &path, &scalar_file(created, 0..3, &[]));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let kids = loop {
        let (_, kids) = s.get(&format!("/api/v1/runs?parent_id={run}"));
        let kids: Vec<String> = kids["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect();
        if kids.len() == 2 || Instant::now() > deadline {
            break kids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(kids.len(), 2);
    for kid in &kids {
        wait_metric(&s, kid, "loss", |v| len(v) == 3);
        wait_status(&s, kid, "Running");
    }
    let (st, v) = s.patch(
        &format!("/api/v1/runs/{run}"),
        &serde_json::json!({"status": "Failed"}),
    );
    assert_eq!(st, 200, "{v}");
    for kid in &kids {
        wait_status(&s, kid, "Failed");
    }
}

/// A value the store refuses (a histogram with more limits than counts) is skipped alone and logged: the
/// rest of its file is ingested (before, the file's every point was lost and each upload failed again).
#[test]
fn a_value_the_store_refuses_is_skipped_alone() {
    let s = TestServer::start();
    let run = s.new_run();
    let bad = event(
        5.0,
        0,
        summary::histogram("h", &[1.0, 2.0, 3.0], &[1.0], None),
    );
    upload(
        &s,
        &run,
        "logs/events.out.tfevents.1.h.1.0",
        &scalar_file(1.0, 0..5, &[bad]),
    );
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 5);
    assert_eq!(loss["steps"], serde_json::json!([0, 1, 2, 3, 4]));
    wait_log(&s, "histogram 'h' has 3 limits and 1 counts");
    let (st, _) = s.get(&format!("/api/v1/runs/{run}/metrics/h"));
    assert_eq!(st, 404);
}

/// A file uploaded again under its path but replaced by another (a re-run that reuses the name), longer than
/// what was ingested of the old one, is read anew from its start, not from the old one's offset.
#[test]
fn a_replaced_file_is_read_anew() {
    let s = TestServer::start();
    let run = s.new_run();
    let path = "logs/events.out.tfevents.1.host.1.0";
    upload(&s, &run, path, &scalar_file(100.0, 0..3, &[]));
    wait_metric(&s, &run, "loss", |v| len(v) == 3);
    upload(&s, &run, path, &scalar_file(200.0, 10..20, &[]));
    let loss = wait_metric(&s, &run, "loss", |v| len(v) == 13);
    let want: Vec<i64> = (0..3).chain(10..20).collect();
    assert_eq!(loss["steps"], serde_json::json!(want));
    assert!(s.server_log().contains("was replaced by another file"));
}

/// Hyperparameters in an uploaded file (the hparams plugin's session start) become the run's params, once:
/// the same file uploaded again changes nothing.
#[test]
fn uploaded_hyperparameters_become_the_runs_params() {
    use flightlog_tensorboard::proto::{self, proto_value::Kind, summary::Value};
    let s = TestServer::start();
    let run = s.new_run();
    let hparams = [
        ("lr", Kind::NumberValue(0.5)),
        ("opt", Kind::StringValue("sgd".into())),
    ];
    let start = proto::HParamsPluginData {
        version: 0,
        session_start_info: Some(proto::SessionStartInfo {
            hparams: hparams
                .into_iter()
                .map(|(k, v)| (k.to_string(), proto::ProtoValue { kind: Some(v) }))
                .collect(),
            start_time_secs: 1.0,
        }),
    };
    let value = Value {
        tag: "_hparams_/session_start_info".into(),
        metadata: Some(Box::new(proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData {
                plugin_name: "hparams".into(),
                content: prost::Message::encode_to_vec(&start),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let bytes = scalar_file(1.0, 0..2, &[event(1.0, 0, value)]);
    for _ in 0..2 {
        upload(&s, &run, "logs/events.out.tfevents.1.h.1.0", &bytes);
        wait_metric(&s, &run, "loss", |v| len(v) == 2);
        let (_, r) = s.get(&format!("/api/v1/runs/{run}"));
        assert_eq!(
            r["params"],
            serde_json::json!({"lr": "0.5", "opt": "sgd"}),
            "{r}"
        );
    }
    // The file's outcome, logged after it was ingested, skipped nothing.
    let log = wait_log(&s, "logs/events.out.tfevents.1.h.1.0: 2 scalar");
    assert!(!log.contains("hparams: "), "{log}");
}
