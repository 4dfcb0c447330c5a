//! `flightlog export tensorboard` against a real server: every metric kind, steps and wall times kept, child
//! runs nested, re-export replacing what it wrote, exit codes.

mod common;
mod tb_common;

use common::TestServer;
use flightlog_tensorboard::Datum;
use serde_json::json;
use tb_common::*;

/// A run "train/a" with one point of every kind, and a child run "child"; returns (run, child).
fn fixture(s: &TestServer, experiment: Option<&str>) -> (String, String) {
    let mut body = json!({"display_name": "train/a"});
    if let Some(e) = experiment {
        body["experiment_id"] = json!(e);
    }
    let (_, run) = s.post("/api/v1/runs", &body);
    let run = run["id"].as_str().unwrap().to_string();
    let (_, kid) = s.post("/api/v1/runs", &json!({"display_name": "child", "parent_id": run, "experiment_id": body.get("experiment_id").cloned().unwrap_or(json!("0"))}));
    let kid = kid["id"].as_str().unwrap().to_string();
    let batch = json!({
        "scalars": [
            {"name": "loss", "steps": [0, 1, 2, 1, 5], "times": [1_000_000, 2_000_001, 3_000_000, 4_000_000, 5_123_456],
             "values": [1.0, 0.5, 0.25, 0.7, 0.1]},
            {"name": "lr", "steps": [3, 3], "times": [7_000_000, 8_000_000], "values": [0.1, 0.2]}
        ],
        "metrics": [
            {"kind": "text", "name": "notes", "steps": [0, 1], "times": [1_000_000, 2_000_000], "values": ["hello", "world"]},
            {"kind": "list", "name": "per_class", "values": [3.0, 2.5, 1.0], "step": 0, "time": 9_000_000},
            {"kind": "row", "name": "epochs", "rows": [{"epoch": 1, "acc": 0.5, "tag": "x"}, {"epoch": 2, "acc": 0.75, "tag": "y|z"}],
             "times": [10_000_000, 11_000_000]},
            {"kind": "table", "name": "preds", "columns": {"x": [1, 2], "label": ["a", "b"]}, "time": 12_000_000},
            {"kind": "json", "name": "cm", "schema": "confusion_matrix", "value": {"labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]},
             "step": 2, "time": 13_000_000},
            {"kind": "histogram", "name": "weights", "limits": [0.0, 1.0, 2.0], "counts": [1.0, 4.0, 2.0], "lower": -1.0, "step": 3, "time": 14_000_000}
        ]
    });
    let (st, ack) = s.post(&format!("/api/v1/runs/{run}/batch"), &batch);
    assert_eq!(st, 200, "{ack}");
    let (st, img) = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{run}/images?name=sample&step=4&time=15000000"),
        "image/png",
        &png(),
    );
    assert!(st < 300, "{img}");
    let (st, _) = s.post(&format!("/api/v1/runs/{kid}/batch"), &json!({"scalars": [{"name": "acc", "steps": [0, 1], "times": [1, 2], "values": [0.25, 0.5]}]}));
    assert_eq!(st, 200);
    (run, kid)
}

fn scalars(points: &[Point]) -> Vec<(i64, f64, f64)> {
    points
        .iter()
        .map(|(s, t, d)| match d {
            Datum::Scalar(v) => (*s, *t, *v),
            other => panic!("not a scalar: {other:?}"),
        })
        .collect()
}

fn text(points: &[Point]) -> Vec<(i64, String)> {
    points
        .iter()
        .map(|(s, _, d)| match d {
            Datum::Text(v) => (*s, v.clone()),
            other => panic!("not text: {other:?}"),
        })
        .collect()
}

#[test]
fn every_kind_with_its_steps_and_times() {
    let s = TestServer::start();
    let (run, _) = fixture(&s, None);
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().to_str().unwrap();
    ok(
        &s.base(),
        &["export", "tensorboard", &run, "--logdir", logdir],
    );
    let tags = read_dir_events(&dir.path().join("train_a"));
    // Steps strictly increasing: step 1 logged again replaces the 1 and 2 logged before it.
    assert_eq!(
        scalars(&tags["loss"]),
        vec![
            (0, 1.0, 1.0),
            (1, 4.0, 0.7f32 as f64),
            (5, 5.123456, 0.1f32 as f64)
        ]
    );
    assert_eq!(scalars(&tags["lr"]), vec![(3, 8.0, 0.2f32 as f64)]);
    assert_eq!(
        text(&tags["notes"]),
        vec![(0, "hello".into()), (1, "world".into())]
    );
    assert_eq!(
        scalars(&tags["per_class"]),
        vec![(0, 9.0, 3.0), (1, 9.0, 2.5), (2, 9.0, 1.0)]
    );
    assert_eq!(
        text(&tags["epochs"]),
        vec![(
            0,
            "| acc | epoch | tag |\n|---|---|---|\n| 0.5 | 1 | x |\n| 0.75 | 2 | y\\|z |".into()
        )]
    );
    assert_eq!(
        scalars(&tags["epochs/acc"]),
        vec![(0, 10.0, 0.5), (1, 11.0, 0.75)]
    );
    assert_eq!(
        scalars(&tags["epochs/epoch"]),
        vec![(0, 10.0, 1.0), (1, 11.0, 2.0)]
    );
    assert!(!tags.contains_key("epochs/tag"));
    assert_eq!(
        scalars(&tags["preds/x"]),
        vec![(0, 12.0, 1.0), (1, 12.0, 2.0)]
    );
    assert_eq!(
        text(&tags["cm"]),
        vec![(
            2,
            "|  | cat | dog |\n|---|---|---|\n| cat | 5 | 1 |\n| dog | 2 | 7 |".into()
        )]
    );
    assert_eq!(
        tags["weights"],
        vec![(
            3,
            14.0,
            Datum::Histogram {
                limits: vec![0.0, 1.0, 2.0],
                counts: vec![1.0, 4.0, 2.0],
                lower: Some(-1.0),
            }
        )]
    );
    assert_eq!(tags["sample"], vec![(4, 15.0, Datum::Images(vec![png()]))]);
    // The child run is nested in its parent's folder.
    let kid = read_dir_events(&dir.path().join("train_a").join("child"));
    assert_eq!(
        scalars(&kid["acc"]),
        vec![(0, 0.000001, 0.25), (1, 0.000002, 0.5)]
    );
}

#[test]
fn re_export_replaces_and_follows_renames() {
    let s = TestServer::start();
    let (run, _) = fixture(&s, None);
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().to_str().unwrap();
    // A file of someone else's stays.
    std::fs::create_dir_all(dir.path().join("train_a")).unwrap();
    std::fs::write(
        dir.path().join("train_a/events.out.tfevents.1.other.1.0"),
        b"",
    )
    .unwrap();
    for _ in 0..2 {
        ok(
            &s.base(),
            &["export", "tensorboard", &run, "--logdir", logdir],
        );
    }
    let files = event_files(&dir.path().join("train_a"));
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(event_files(&dir.path().join("train_a/child")).len(), 1);
    s.patch(
        &format!("/api/v1/runs/{run}"),
        &json!({"display_name": "renamed"}),
    );
    ok(
        &s.base(),
        &[
            "export",
            "tensorboard",
            &run,
            "--logdir",
            logdir,
            "--no-recursive",
        ],
    );
    assert_eq!(event_files(&dir.path().join("renamed")).len(), 1);
    assert!(!dir.path().join("train_a/child").exists());
    assert_eq!(
        event_files(&dir.path().join("train_a")),
        vec!["events.out.tfevents.1.other.1.0".to_string()]
    );
}

#[test]
fn experiment_export_names_runs_uniquely() {
    let s = TestServer::start();
    let exp = s.new_experiment("tb-exp");
    fixture(&s, Some(&exp));
    fixture(&s, Some(&exp));
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        &s.base(),
        &[
            "--json",
            "export",
            "tensorboard",
            "-e",
            "tb-exp",
            "--logdir",
            dir.path().to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dirs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dir"].as_str().unwrap())
        .collect();
    assert_eq!(dirs.len(), 4);
    assert_eq!(dirs[0], "train_a");
    assert!(
        dirs[2].starts_with("train_a-") && dirs[2].len() == "train_a-".len() + 8,
        "{dirs:?}"
    );
    assert_eq!(dirs[3], format!("{}/child", dirs[2]));
    assert_eq!(v["runs"][0]["replaced_points"], 3);
}

#[test]
fn exit_codes() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().to_str().unwrap();
    let out = flightlog(&s.base(), &["export", "tensorboard", "--logdir", logdir]);
    assert_eq!(out.status.code(), Some(2));
    let out = flightlog(
        &s.base(),
        &["export", "tensorboard", &"0".repeat(32), "--logdir", logdir],
    );
    assert_eq!(out.status.code(), Some(3));
    let out = flightlog(
        &s.base(),
        &["export", "tensorboard", "-e", "nope", "--logdir", logdir],
    );
    assert_eq!(out.status.code(), Some(3));
    let out = flightlog(
        "http://127.0.0.1:9",
        &["export", "tensorboard", "-e", "x", "--logdir", logdir],
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot reach the flightlog server at http://127.0.0.1:9"));
}
