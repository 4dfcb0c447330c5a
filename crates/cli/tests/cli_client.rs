//! End-to-end tests of the Rust client (`flightlog_client`) against the real server binary: batching, retries
//! across a kill -9 of the server, the on-disk journal, `flightlog sync`, torn records, ordering, exactly-once.

mod common;

use common::TestServer;
use flightlog_client::{journal, Client, ClientConfig};
use flightlog_model::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn client(uri: &str, spool: &Path) -> Client {
    Client::new(ClientConfig {
        uri: uri.to_string(),
        spool_dir: spool.to_path_buf(),
        flush_interval: Duration::from_millis(50),
        max_batch_points: 20_000,
        request_timeout: Duration::from_secs(10),
        replay_on_start: false,
        ..Default::default()
    })
}

fn journals(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "journal"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn flightlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(args)
        .env_remove("FLIGHTLOG_TRACKING_URI")
        .output()
        .expect("run flightlog")
}

/// Every point of a scalar series, in logging order.
fn scalars(c: &Client, run: &RunId, name: &str) -> ScalarSeries {
    c.read_scalars(run, name, &ReadRange::default())
        .expect("read scalars")
}

#[test]
fn batching_delivers_everything_exactly_once() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let exp = c.get_or_create_experiment("client-batching").unwrap();
    assert_eq!(
        c.get_or_create_experiment("client-batching").unwrap().id,
        exp.id
    );
    let run = c
        .create_run(&NewRun {
            experiment_id: exp.id,
            display_name: Some("batching".into()),
            ..Default::default()
        })
        .unwrap();
    let n = 120_000i64;
    let t0 = Instant::now();
    for i in 0..n {
        c.log_scalar(&run.id, "loss", Some(i), 1.0 / (i + 1) as f64, None)
            .unwrap();
        if i % 3 == 0 {
            c.log_scalar(&run.id, "acc", None, i as f64, None).unwrap();
        }
    }
    let enqueue = t0.elapsed();
    c.log(
        &run.id,
        MetricWrite::Text {
            name: "note".into(),
            description: None,
            steps: None,
            times: None,
            values: vec!["a".into(), "b".into()],
        },
    )
    .unwrap();
    for i in 0..100 {
        c.log_text_to_stream(&run.id, "stdout", &format!("line {i}\n"))
            .unwrap();
    }
    c.log_scalar(&run.id, "special", Some(0), f64::NAN, None)
        .unwrap();
    c.log_scalar(&run.id, "special", Some(1), f64::NEG_INFINITY, None)
        .unwrap();
    let report = c.flush(Duration::from_secs(60)).unwrap();
    let total = t0.elapsed();
    assert!(report.complete, "{report:?}");
    eprintln!(
        "enqueued {} points in {enqueue:?} ({:.0} ns/point), delivered in {total:?}",
        n + n / 3,
        enqueue.as_nanos() as f64 / (n + n / 3) as f64
    );

    let loss = scalars(&c, &run.id, "loss");
    assert_eq!(loss.len(), n as usize);
    assert_eq!(loss.steps, (0..n).collect::<Vec<_>>());
    assert_eq!(loss.values[10], F64(1.0 / 11.0));
    let acc = scalars(&c, &run.id, "acc");
    assert_eq!(acc.len(), (n as usize).div_ceil(3));
    assert_eq!(
        acc.steps,
        (0..acc.len() as i64).collect::<Vec<_>>(),
        "auto steps count up"
    );
    // Times are the logging times, in order.
    assert!(loss.times.windows(2).all(|w| w[0] <= w[1]));
    let special = scalars(&c, &run.id, "special");
    assert!(special.values[0].0.is_nan());
    assert_eq!(special.values[1].0, f64::NEG_INFINITY);
    let bin = c
        .read_scalars_binary(
            &run.id,
            "loss",
            &ReadRange {
                start_index: 5,
                limit: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(bin.steps, (5..15).collect::<Vec<_>>());
    assert_eq!(bin.values, loss.values[5..15].to_vec());
    let down = c
        .read_downsampled(&run.id, "loss", &ReadRange::default(), 50)
        .unwrap();
    assert!(down.len() <= 100 && !down.is_empty());
    let text = c
        .read_records(&run.id, "note", &ReadRange::default())
        .unwrap();
    assert_eq!(
        text.iter()
            .map(|r| r.value.as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let log = c.read_log(&run.id, "stdout", 0, None).unwrap();
    assert_eq!(
        log.data,
        (0..100).map(|i| format!("line {i}\n")).collect::<String>()
    );
    let metrics = c.list_metrics(&run.id).unwrap();
    assert_eq!(
        metrics.iter().find(|m| m.name == "loss").unwrap().count,
        n as u64
    );

    let st = c.status();
    assert_eq!(st.duplicate_batches, 0);
    assert_eq!(st.rejected_entries, 0);
    assert_eq!(st.spooled_total, 0);
    assert!(
        st.sent_batches >= (n as u64 + n as u64 / 3) / 20_000,
        "{st:?}"
    );
    // A caller mistake fails at once, and nothing is queued for it.
    assert!(matches!(
        c.log_scalar(&run.id, "bad\nname", None, 1.0, None),
        Err(Error::InvalidArgument { .. })
    ));
    // Errors map back to their variants.
    assert!(matches!(
        c.get_run(&RunId::new()),
        Err(Error::NotFound {
            entity: Entity::Run,
            ..
        })
    ));
    let e = c
        .update_run(
            &run.id,
            &RunPatch {
                status: Some(RunStatus::Completed),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(e.status, RunStatus::Completed);
    let err = c
        .update_run(
            &run.id,
            &RunPatch {
                status: Some(RunStatus::Running),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::IllegalTransition {
            from: "Completed".into(),
            to: "Running".into()
        }
    );
    c.close(Duration::from_secs(5)).unwrap();
    assert!(journals(spool.path()).is_empty());
}

#[test]
fn server_killed_and_restarted_mid_logging_loses_and_doubles_nothing() {
    let mut s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run(&NewRun::default()).unwrap();
    let n = 60_000i64;
    let mut lines = String::new();
    for i in 0..n {
        c.log_scalar(&run.id, "x", Some(i), i as f64, None).unwrap();
        if i % 1000 == 0 {
            let line = format!("step {i}\n");
            c.log_text_to_stream(&run.id, "stdout", &line).unwrap();
            lines.push_str(&line);
            std::thread::sleep(Duration::from_millis(5));
        }
        if i == n / 3 {
            s.kill_9();
        }
        if i == 2 * n / 3 {
            // Down long enough for the client to spool to disk.
            std::thread::sleep(Duration::from_millis(1200));
            s.restart();
        }
    }
    let report = c.flush(Duration::from_secs(90)).unwrap();
    assert!(report.complete, "{report:?}\n{}", s.server_log());
    let x = scalars(&c, &run.id, "x");
    assert_eq!(x.len(), n as usize, "every point exactly once");
    assert_eq!(x.steps, (0..n).collect::<Vec<_>>(), "in logging order");
    assert_eq!(c.read_log(&run.id, "stdout", 0, None).unwrap().data, lines);
    let st = c.status();
    assert!(st.send_failures > 0, "the outage was noticed: {st:?}");
    assert_eq!(st.rejected_entries, 0);
    c.close(Duration::from_secs(5)).unwrap();
    assert!(
        journals(spool.path()).is_empty(),
        "a delivered journal is removed"
    );
}

/// Server down from the start: the run creation, points and final status go to the journal; `flightlog sync`
/// delivers them in order once the server is back, and a second sync of the same journal stores nothing twice.
#[test]
fn server_down_at_start_then_sync_delivers_in_order_exactly_once() {
    let mut s = TestServer::start();
    s.kill_9();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c
        .create_run_async(NewRun {
            display_name: Some("offline".into()),
            ..Default::default()
        })
        .unwrap();
    let other = c.create_run_async(NewRun::default()).unwrap();
    for i in 0..5000 {
        c.log_scalar(&run, "y", Some(i), i as f64 * 2.0, None)
            .unwrap();
        c.log_scalar(&other, "z", None, i as f64, None).unwrap();
    }
    c.log_text_to_stream(&run, "stdout", "hello offline\n")
        .unwrap();
    c.update_run_async(
        &run,
        RunPatch {
            status: Some(RunStatus::Completed),
            set_tags: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        },
    )
    .unwrap();
    let report = c.close(Duration::from_millis(500)).unwrap();
    assert!(!report.complete);
    assert!(report.spooled_entries >= 4, "{report:?}");
    drop(c);
    let files = journals(spool.path());
    assert_eq!(files.len(), 1);
    let saved = std::fs::read(&files[0]).unwrap();

    // Sync with the server still down: exit 5, nothing lost.
    let out = flightlog(&[
        "sync",
        "--spool",
        spool.path().to_str().unwrap(),
        "--server",
        &s.base(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(journals(spool.path()).len(), 1);

    s.restart();
    let out = flightlog(&[
        "sync",
        "--spool",
        spool.path().to_str().unwrap(),
        "--server",
        &s.base(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["files_completed"], 1);
    assert!(rep["points_sent"].as_u64().unwrap() >= 10_000, "{rep}");
    assert!(journals(spool.path()).is_empty());

    let c = client(&s.base(), spool.path());
    let r = c.get_run(&run).unwrap();
    assert_eq!(r.display_name, "offline");
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "the final status came after the data"
    );
    assert_eq!(r.tags.get("k").map(String::as_str), Some("v"));
    let y = scalars(&c, &run, "y");
    assert_eq!(y.steps, (0..5000).collect::<Vec<_>>());
    assert_eq!(y.values[4999], F64(9998.0));
    assert_eq!(scalars(&c, &other, "z").len(), 5000);
    assert_eq!(
        c.read_log(&run, "stdout", 0, None).unwrap().data,
        "hello offline\n"
    );

    // The same journal again (as if the process died before recording progress): all duplicates.
    std::fs::write(&files[0], &saved).unwrap();
    let out = flightlog(&[
        "sync",
        "--spool",
        spool.path().to_str().unwrap(),
        "--server",
        &s.base(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rep["duplicate_batches"].as_u64().unwrap() >= 2, "{rep}");
    assert_eq!(scalars(&c, &run, "y").len(), 5000);
    assert_eq!(scalars(&c, &other, "z").len(), 5000);
    assert_eq!(
        c.read_log(&run, "stdout", 0, None).unwrap().data,
        "hello offline\n"
    );
}

#[test]
fn torn_journal_record_is_ignored_and_locked_journals_are_skipped() {
    let mut s = TestServer::start();
    s.kill_9();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run_async(NewRun::default()).unwrap();
    for i in 0..100 {
        c.log_scalar(&run, "t", Some(i), 1.0, None).unwrap();
    }
    let _ = c.close(Duration::from_millis(300)).unwrap();
    drop(c);
    let file = journals(spool.path()).pop().unwrap();
    let good = journal::read_journal(&mut std::fs::File::open(&file).unwrap())
        .unwrap()
        .records
        .len();
    // Half a record at the end, as a process killed mid-write leaves it.
    let mut tail = Vec::new();
    journal::encode_record(br#"{"seq":999,"entry":{"op":"update_run","run":"00000000000000000000000000000000","patch":{}}}"#, &mut tail);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, &tail[..tail.len() - 7]).unwrap();
    drop(f);

    s.restart();
    // A journal held by a live process is not touched.
    let held = std::fs::File::open(&file).unwrap();
    assert!(journal::try_lock(&held).unwrap());
    let report = Client::replay_spool(spool.path(), Some(&s.base())).unwrap();
    assert_eq!(report.files_locked, 1);
    assert_eq!(report.entries_sent, 0);
    drop(held);

    let report = Client::replay_spool(spool.path(), Some("http://elsewhere:1")).unwrap();
    assert_eq!(report.files_other_server, 1);
    let report = Client::replay_spool(spool.path(), Some(&s.base())).unwrap();
    assert_eq!(report.torn_records, 1, "{report:?}");
    assert_eq!(report.entries_sent as usize, good);
    assert_eq!(report.entries_rejected, 0, "{report:?}");
    assert!(journals(spool.path()).is_empty());
    let c = client(&s.base(), spool.path());
    assert_eq!(scalars(&c, &run, "t").len(), 100);
}

#[test]
fn client_start_replays_old_journals_in_the_background() {
    let mut s = TestServer::start();
    s.kill_9();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run_async(NewRun::default()).unwrap();
    c.log_scalar(&run, "a", None, 1.0, None).unwrap();
    drop(c); // unsent data goes to the journal on drop
    assert_eq!(journals(spool.path()).len(), 1);
    s.restart();
    let c = Client::new(ClientConfig {
        uri: s.base(),
        spool_dir: spool.path().to_path_buf(),
        replay_on_start: true,
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !journals(spool.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(journals(spool.path()).is_empty());
    assert_eq!(scalars(&c, &run, "a").len(), 1);
}

#[test]
fn artifacts_and_images_round_trip() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run(&NewRun::default()).unwrap().id;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let info = c.put_artifact(&run, "outputs/model.bin", &src).unwrap();
    assert_eq!(info.size, Some(data.len() as u64));
    c.put_artifact_bytes(&run, "outputs/sub/notes.txt", b"hi")
        .unwrap();
    let ls = c.list_artifacts(&run, None, false).unwrap();
    assert!(ls.iter().any(|a| a.path == "outputs" && a.is_dir), "{ls:?}");
    let all = c.list_artifacts(&run, Some("outputs"), true).unwrap();
    let mut paths: Vec<_> = all.iter().map(|a| a.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, vec!["outputs/model.bin", "outputs/sub/notes.txt"]);
    let dest = dir.path().join("down/model.bin");
    assert_eq!(
        c.download_artifact(&run, "outputs/model.bin", &dest)
            .unwrap(),
        data.len() as u64
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(matches!(
        c.download_artifact(&run, "nope.txt", &dest),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        c.put_artifact_bytes(&run, "../x", b""),
        Err(Error::InvalidPath { .. })
    ));
    c.delete_artifact(&run, "outputs/sub").unwrap();
    assert_eq!(
        c.list_artifacts(&run, Some("outputs"), true).unwrap().len(),
        1
    );
    // A 1x1 PNG.
    let png: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00,
        0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    let rec = c
        .write_image(
            &run,
            &ImageWrite {
                name: "img".into(),
                description: None,
                step: Some(3),
                time: None,
                media_type: "image/png".into(),
                batch_id: None,
            },
            png,
        )
        .unwrap();
    assert_eq!(rec.step, 3);
    // With a batch id, a write sent again (a retry after a timeout) is stored once.
    let keyed = ImageWrite {
        name: "keyed".into(),
        description: None,
        step: Some(1),
        time: None,
        media_type: "image/png".into(),
        batch_id: Some("img-1".into()),
    };
    let first = c.write_image(&run, &keyed, png).unwrap();
    assert_eq!(c.write_image(&run, &keyed, png).unwrap(), first);
    assert_eq!(first.value["batch_id"], "img-1");
    assert_eq!(
        c.list_metrics(&run)
            .unwrap()
            .iter()
            .find(|m| m.name == "keyed")
            .unwrap()
            .count,
        1
    );
    assert_eq!(c.append_log(&run, "stderr", b"abc").unwrap(), 3);
    assert_eq!(c.list_logs(&run).unwrap()[0].name, "stderr");
}

#[test]
fn a_bad_entry_does_not_sink_the_valid_data_of_its_batch() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run(&NewRun::default()).unwrap().id;
    for i in 0..100 {
        c.log_scalar(&run, "fine", Some(i), 1.0, None).unwrap();
    }
    c.log_scalar(&run, "dual", Some(0), 1.0, None).unwrap();
    // Same name as another kind, in the same batch: the server refuses the batch as a whole.
    c.log(
        &run,
        MetricWrite::Text {
            name: "dual".into(),
            description: None,
            steps: None,
            times: None,
            values: vec!["x".into()],
        },
    )
    .unwrap();
    c.log_text_to_stream(&run, "stdout", "kept\n").unwrap();
    let report = c.flush(Duration::from_secs(30)).unwrap();
    assert!(report.complete);
    assert_eq!(scalars(&c, &run, "fine").len(), 100);
    assert_eq!(scalars(&c, &run, "dual").len(), 1);
    assert_eq!(c.read_log(&run, "stdout", 0, None).unwrap().data, "kept\n");
    let st = c.status();
    assert_eq!(st.rejected_points, 1, "{st:?}");
    assert!(st.last_error.unwrap().contains("dual"));
}

/// While the server is down, memory stays bounded (the excess goes to the journal); once it is back, the
/// journal is sent before newer in-memory data, so every series arrives whole and in order.
#[test]
fn memory_stays_bounded_during_an_outage_and_order_survives_the_journal() {
    let mut s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = Client::new(ClientConfig {
        uri: s.base(),
        spool_dir: spool.path().to_path_buf(),
        flush_interval: Duration::from_millis(20),
        max_batch_points: 2_000,
        max_memory_points: 10_000,
        request_timeout: Duration::from_secs(10),
        replay_on_start: false,
        ..Default::default()
    });
    let runs: Vec<RunId> = (0..3)
        .map(|_| c.create_run(&NewRun::default()).unwrap().id)
        .collect();
    s.kill_9();
    let n = 60_000i64;
    let mut max_pending = 0;
    for i in 0..n {
        for r in &runs {
            c.log_scalar(r, "v", Some(i), i as f64, None).unwrap();
        }
        if i % 1000 == 0 {
            max_pending = max_pending.max(c.status().pending_points);
        }
        if i == n / 2 {
            assert!(
                !journals(spool.path()).is_empty(),
                "the outage spilled to disk"
            );
        }
        if i == 3 * n / 4 {
            s.restart();
        }
    }
    assert!(
        max_pending <= 10_000 + 3,
        "memory bound exceeded: {max_pending}"
    );
    let report = c.flush(Duration::from_secs(120)).unwrap();
    assert!(report.complete, "{report:?}");
    for r in &runs {
        let v = scalars(&c, r, "v");
        assert_eq!(
            v.steps,
            (0..n).collect::<Vec<_>>(),
            "run {r}: whole, once, in order"
        );
    }
    let st = c.status();
    assert!(st.spooled_total > 0 && st.rejected_entries == 0, "{st:?}");
    c.close(Duration::from_secs(5)).unwrap();
    assert!(journals(spool.path()).is_empty());
}

/// A server that accepts connections and never answers (overloaded, or a black-holed path): what is logged
/// is journaled once a send has gone unanswered for 2 s, and so is what is logged after, instead of staying in
/// memory for three request timeouts (90 s by default), which a crash meanwhile lost whole.
#[test]
fn a_server_that_never_answers_has_the_data_journaled_within_seconds() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let spool = tempfile::tempdir().unwrap();
    let c = Client::new(ClientConfig {
        uri,
        spool_dir: spool.path().to_path_buf(),
        flush_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(60),
        replay_on_start: false,
        ..Default::default()
    });
    let run = RunId::new();
    for i in 0..1000 {
        c.log_scalar(&run, "loss", Some(i), i as f64, None).unwrap();
    }
    let journaled = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = c.status();
            if st.pending_points == 0 && st.spooled_total > 0 {
                return st.spooled_total;
            }
            assert!(Instant::now() < deadline, "{what} stayed in memory: {st:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = journaled("the points logged before the hang");
    assert!(!journals(spool.path()).is_empty());
    for i in 1000..1500 {
        c.log_scalar(&run, "loss", Some(i), i as f64, None).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(journaled("the points logged during the hang") > first);
    std::mem::forget(c);
}

/// Journals an earlier process left are replayed when the server answers again after an outage, not only when
/// the client starts: a client started while the server was down gave up on them, and they waited for another
/// process or `flightlog sync` for as long as this one lived, while its flush said everything was delivered.
#[test]
fn journals_left_by_others_are_replayed_when_the_server_is_back() {
    let mut s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let uri = s.base();
    let config = |replay_on_start| ClientConfig {
        uri: uri.clone(),
        spool_dir: spool.path().to_path_buf(),
        flush_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
        replay_on_start,
        ..Default::default()
    };
    let earlier = Client::new(config(false));
    let run = earlier.create_run(&NewRun::default()).unwrap().id;
    s.kill_9();
    for i in 0..100 {
        earlier
            .log_scalar(&run, "earlier", Some(i), i as f64, None)
            .unwrap();
    }
    let _ = earlier.close(Duration::ZERO);
    drop(earlier);
    assert_eq!(
        journals(spool.path()).len(),
        1,
        "the earlier client's journal"
    );
    let later = Client::new(config(true));
    later.log_scalar(&run, "later", Some(0), 1.0, None).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.restart();
    let report = later.flush(Duration::from_secs(60)).unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        scalars(&later, &run, "earlier").steps,
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(scalars(&later, &run, "later").steps, vec![0]);
    later.close(Duration::from_secs(5)).unwrap();
    assert!(journals(spool.path()).is_empty());
}

#[test]
fn create_run_reporting_says_whether_the_call_created_the_run() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let new = NewRun {
        id: Some(RunId::new()),
        display_name: Some("reported".into()),
        ..Default::default()
    };
    let (first, created) = c.create_run_reporting(&new).unwrap();
    assert!(created, "the first call creates the run");
    let (again, created) = c.create_run_reporting(&new).unwrap();
    assert!(!created, "the second call finds it");
    assert_eq!(
        (again.id, again.created_time),
        (first.id, first.created_time)
    );
}

#[test]
fn a_file_that_shrinks_or_grows_while_it_uploads_never_hangs_the_upload() {
    let s = TestServer::start();
    let spool = tempfile::tempdir().unwrap();
    let c = client(&s.base(), spool.path());
    let run = c.create_run(&NewRun::default()).unwrap().id;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("rotated.log");
    std::fs::write(&src, vec![b'x'; 8 << 20]).unwrap();
    // Log rotation mid-upload: the file is cut to 1 KiB after the first bytes went (it spun for good).
    let (tx, rx) = std::sync::mpsc::channel();
    let (c2, run2, src2) = (&c, run.clone(), src.clone());
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut cut = false;
            let r = c2.put_artifact_with_progress(&run2, "logs/rotated.log", &src2, &mut |done| {
                if !cut && done > 0 {
                    cut = true;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&src2)
                        .unwrap()
                        .set_len(1024)
                        .unwrap();
                }
            });
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the upload of a shrunk file ended");
        assert!(r.as_ref().is_err_and(|e| e.contains("shrank")), "{r:?}");
    });
    // Growth mid-upload: the declared length is sent, and the upload succeeds.
    let grow = dir.path().join("growing.log");
    std::fs::write(&grow, vec![b'y'; 4 << 20]).unwrap();
    let mut grown = false;
    let info = c
        .put_artifact_with_progress(&run, "logs/growing.log", &grow, &mut |_| {
            if !grown {
                grown = true;
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&grow)
                    .unwrap();
                f.write_all(&vec![b'z'; 1 << 20]).unwrap();
            }
        })
        .unwrap();
    assert_eq!(info.size, Some(4 << 20));
}
