//! API suite, durability against the real binary: kill -9 while batches (or log appends) stream in, restart
//! on the same data, and every acknowledged batch is there, whole; retried batches are not stored twice.

mod common;

use common::TestServer;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Sends request `b` = 0, 1, … from a thread of its own, one after the other, until `send` says it was not
/// acknowledged (the server died under it) or the returned flag is set. The thread returns the acknowledged
/// `b`s.
fn send_until_stopped(
    send: impl Fn(&ureq::Agent, u64) -> bool + Send + 'static,
) -> (JoinHandle<Vec<u64>>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let agent = common::agent();
        let mut acked = Vec::new();
        for b in 0u64.. {
            if flag.load(Ordering::SeqCst) || !send(&agent, b) {
                break;
            }
            acked.push(b);
        }
        acked
    });
    (thread, stop)
}

/// Lets the sender run, kills the server with SIGKILL mid-stream, and returns what was acknowledged.
fn kill_9_while_sending(
    s: &mut TestServer,
    sender: (JoinHandle<Vec<u64>>, Arc<AtomicBool>),
) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(1500));
    s.kill_9();
    sender.1.store(true, Ordering::SeqCst);
    let acked = sender.0.join().unwrap();
    assert!(
        acked.len() > 3,
        "only {} requests acknowledged before the kill",
        acked.len()
    );
    acked
}

#[test]
fn acknowledged_batches_survive_kill_9_when_synced_on_an_interval() {
    acknowledged_batches_survive_kill_9(TestServer::start());
}

#[test]
fn acknowledged_batches_survive_kill_9_when_every_commit_is_synced() {
    let s = TestServer::start_with(&["--fsync", "always"]);
    assert!(
        s.server_log().contains("fsync=always"),
        "{}",
        s.server_log()
    );
    acknowledged_batches_survive_kill_9(s);
}

/// The default policy syncs on an interval and says so at startup; a bad policy stops the server with a
/// usage error that says what is accepted.
#[test]
fn the_sync_policy_is_reported_and_checked() {
    let s = TestServer::start();
    assert!(s.server_log().contains("fsync=100ms"), "{}", s.server_log());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(["server", "--port", "0", "--fsync", "sometimes", "--data"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid sync policy: 'sometimes' is neither 'always'")
            && err.contains("'100ms' or '1s'"),
        "{err}"
    );
}

/// A second server on a data directory that one serves is refused (each announces only its own commits to its
/// live readers); once the first is gone, even by kill -9, the directory can be served again.
#[test]
fn a_data_directory_is_served_by_one_server_at_a_time() {
    let mut s = TestServer::start();
    let second = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_flightlog"))
            .args(["server", "--port", "0", "--data"])
            .arg(s.data_dir())
            .output()
            .unwrap()
    };
    let out = second();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = s.pid().unwrap();
    assert!(
        err.contains("is in use by another flightlog server")
            && err.contains(&format!("(pid {pid})"))
            && err.contains("another folder with --data"),
        "{err}"
    );
    let run = s.new_run();
    s.kill_9();
    s.restart();
    assert_eq!(s.get(&format!("/api/v1/runs/{run}")).0, 200);
}

fn acknowledged_batches_survive_kill_9(mut s: TestServer) {
    let run = s.new_run();
    let url = s.url(&format!("/api/v1/runs/{run}/batch"));
    const PER_BATCH: u64 = 500;

    let sender = send_until_stopped(move |agent, b| {
        let steps: Vec<u64> = (b * PER_BATCH..(b + 1) * PER_BATCH).collect();
        let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
        let body = json!({"batch_id": format!("b{b}"), "scalars": [{"name": "m", "steps": steps, "values": values}]});
        matches!(agent.post(&url).send_json(&body), Ok(resp) if resp.status() == 200)
    });
    let acked = kill_9_while_sending(&mut s, sender);

    s.restart();
    let (status, read) = s.get(&format!("/api/v1/runs/{run}/metrics/m"));
    assert_eq!(status, 200, "{read}");
    let steps: Vec<u64> = read["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let values = read["values"].as_array().unwrap();
    assert_eq!(steps.len(), values.len());
    // Batches are atomic: whole batches only, each step once.
    assert_eq!(
        steps.len() as u64 % PER_BATCH,
        0,
        "a batch was stored in part"
    );
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), steps.len(), "points stored twice");
    for b in &acked {
        for step in [b * PER_BATCH, (b + 1) * PER_BATCH - 1] {
            assert!(
                sorted.binary_search(&step).is_ok(),
                "acknowledged batch {b} lost (step {step})"
            );
        }
    }

    // A client retrying its last acknowledged batch after the restart is told it is a duplicate.
    let last = acked.last().unwrap();
    let steps: Vec<u64> = (last * PER_BATCH..(last + 1) * PER_BATCH).collect();
    let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
    let (status, ack) = s.post(
        &format!("/api/v1/runs/{run}/batch"),
        &json!({"batch_id": format!("b{last}"), "scalars": [{"name": "m", "steps": steps, "values": values}]}),
    );
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["duplicate"], true);
    let (_, again) = s.get(&format!("/api/v1/runs/{run}/metrics/m"));
    assert_eq!(
        again["steps"].as_array().unwrap().len(),
        read["steps"].as_array().unwrap().len()
    );

    // Everything else survives too.
    let (status, run_back) = s.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(status, 200);
    assert_eq!(run_back["id"], run.as_str());
}

/// The text of log append `b`: lines that name their append, so a part of one would show. Every third is
/// large (~21 kB: the store writes it to the stream's file), the others small (~3 kB: kept as rows).
fn append_text(b: u64) -> String {
    let lines = if b.is_multiple_of(3) { 250 } else { 40 };
    (0..lines)
        .map(|i| format!("append {b} line {i} {}\n", "x".repeat(60)))
        .collect()
}

/// A whole log stream, read slice by slice from its offsets.
fn read_stream(s: &TestServer, path: &str) -> String {
    let mut text = String::new();
    loop {
        let (status, slice) = s.get(&format!("{path}?offset={}", text.len()));
        assert_eq!(status, 200, "{slice}");
        text.push_str(slice["data"].as_str().unwrap());
        if slice["next_offset"] == slice["length"] {
            return text;
        }
    }
}

#[test]
fn acknowledged_log_appends_survive_kill_9_and_the_stream_goes_on() {
    let mut s = TestServer::start();
    let run = s.new_run();
    let path = format!("/api/v1/runs/{run}/logs/stdout");
    let url = s.url(&path);
    let sender = send_until_stopped(move |agent, b| {
        let sent = agent
            .post(&format!("{url}?batch_id=l{b}"))
            .header("Content-Type", "text/plain")
            .send(append_text(b).as_bytes());
        matches!(sent, Ok(resp) if resp.status() == 200)
    });
    let acked = kill_9_while_sending(&mut s, sender);

    s.restart();
    let text = read_stream(&s, &path);
    // Appends are atomic and in order: the stream is appends 0..n, whole, each once; every acknowledged one is
    // there (n may count one more, stored before the kill but not acknowledged).
    let (mut n, mut expected) = (0, String::new());
    while expected.len() < text.len() {
        expected.push_str(&append_text(n));
        n += 1;
    }
    assert!(text == expected, "the stream is not appends 0..{n}, whole");
    assert!(
        n == acked.len() as u64 || n == acked.len() as u64 + 1,
        "{n} appends stored, {} acknowledged",
        acked.len()
    );

    // A retry of the last acknowledged append is a duplicate; a new append goes on right after the stored text.
    let last = acked.last().unwrap();
    let again = s.send_raw(
        "POST",
        &format!("{path}?batch_id=l{last}"),
        "text/plain",
        append_text(*last).as_bytes(),
    );
    assert_eq!(again.1["duplicate"], true, "{again:?}");
    let (status, r) = s.send_raw("POST", &path, "text/plain", b"after the restart\n");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["length"], text.len() as u64 + 18);
    assert_eq!(read_stream(&s, &path), text + "after the restart\n");
}
