//! API suite, live streams against the real binary: replay from a seq, live delivery with the data itself,
//! resume with Last-Event-ID missing nothing, and the experiment stream's narrower view.

mod common;

use common::{assert_error, TestServer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Msg {
    id: u64,
    event: String,
    data: Value,
}

/// An open event stream read on its own thread; messages arrive on a channel so waits can time out.
struct Stream {
    rx: mpsc::Receiver<Msg>,
    /// The ids of messages with no data: the resume point a stream opens with.
    resume: mpsc::Receiver<u64>,
}

impl Stream {
    fn open(s: &TestServer, path: &str, last_event_id: Option<u64>) -> Stream {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let mut req = agent
            .get(&s.url(path))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", &id.to_string());
        }
        let resp = req.call().expect("stream request");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let reader = BufReader::new(resp.into_body().into_reader());
        let (tx, rx) = mpsc::channel();
        let (resume_tx, resume) = mpsc::channel();
        std::thread::spawn(move || read_events(reader, tx, resume_tx));
        Stream { rx, resume }
    }

    /// The id a reader that has seen no event would resume after (what a browser's Last-Event-ID holds).
    fn resume_point(&self) -> u64 {
        self.resume
            .recv_timeout(Duration::from_secs(10))
            .expect("no resume point within 10 s")
    }

    fn next(&self) -> Msg {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no event within 10 s")
    }

    /// Messages until `n` have come (each within 10 s).
    fn take(&self, n: usize) -> Vec<Msg> {
        (0..n).map(|_| self.next()).collect()
    }

    fn quiet(&self, wait: Duration) -> bool {
        self.rx.recv_timeout(wait).is_err()
    }
}

fn read_events(reader: impl BufRead, tx: mpsc::Sender<Msg>, resume: mpsc::Sender<u64>) {
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            // A message with no data (the resume point a stream opens with) is not an event.
            match id.take() {
                Some(id) if data.is_empty() => {
                    let _ = resume.send(id);
                }
                Some(id) => {
                    let msg = Msg {
                        id,
                        event: std::mem::take(&mut event),
                        data: serde_json::from_str(&data).unwrap(),
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                None => {}
            }
            data.clear();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
}

fn batch(s: &TestServer, run: &str, name: &str, values: Value) {
    let (status, ack) = s.post(
        &format!("/api/v1/runs/{run}/batch"),
        &json!({"scalars": [{"name": name, "values": values}]}),
    );
    assert_eq!(status, 200, "{ack}");
}

#[test]
fn run_stream_replays_and_carries_the_data() {
    let s = TestServer::start();
    let run = s.new_run();
    batch(&s, &run, "loss", json!([0.5, 0.25]));
    let (status, _) = s.post(
        &format!("/api/v1/runs/{run}/batch"),
        &json!({"metrics": [{"kind": "text", "name": "note", "values": ["hi"]}]}),
    );
    assert_eq!(status, 200);
    let (status, _) = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{run}/logs/stdout"),
        "text/plain",
        b"hello\n",
    );
    assert_eq!(status, 200);
    let (status, _) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{run}/artifacts/a.txt"),
        "text/plain",
        b"a",
    );
    assert_eq!(status, 200);

    let stream = Stream::open(&s, &format!("/api/v1/runs/{run}/events?after=0"), None);
    let msgs = stream.take(5);
    let kinds: Vec<&str> = msgs.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "run_created",
            "points",
            "points",
            "log_appended",
            "artifact_written"
        ]
    );
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));
    for m in &msgs {
        assert_eq!(m.data["seq"], m.id);
        assert_eq!(m.data["type"], m.event);
        assert_eq!(m.data["run_id"], run.as_str());
    }
    assert_eq!(msgs[1].data["values"], json!([0.5, 0.25]));
    assert_eq!(msgs[1].data["steps"], json!([0, 1]));
    assert_eq!(msgs[2].data["records"][0]["value"], "hi");
    assert_eq!(msgs[3].data["data"], "hello\n");
    assert_eq!(msgs[4].data["path"], "a.txt");

    // Live: a new batch arrives with its points.
    batch(&s, &run, "loss", json!([0.125]));
    let live = stream.next();
    assert_eq!(live.event, "points");
    assert_eq!(live.data["from_index"], 2);
    assert_eq!(live.data["values"], json!([0.125]));
    assert_eq!(live.data["steps"], json!([2]));
}

#[test]
fn a_reader_that_saw_no_event_resumes_from_where_it_started() {
    let s = TestServer::start();
    let run = s.new_run();
    batch(&s, &run, "x", json!([1]));
    let quiet = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), None);
    let start = quiet.resume_point();
    assert!(
        quiet.quiet(Duration::from_millis(200)),
        "old events replayed"
    );
    drop(quiet); // the connection drops (a server restart, a proxy timeout) before any event came

    batch(&s, &run, "x", json!([2]));
    let back = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), Some(start));
    assert_eq!(back.resume_point(), start);
    let missed = back.next();
    assert_eq!(missed.event, "points");
    assert_eq!(missed.data["from_index"], 1);
    assert_eq!(missed.data["values"], json!([2.0]));
}

#[test]
fn new_readers_start_now_and_resume_misses_nothing() {
    let s = TestServer::start();
    let run = s.new_run();
    batch(&s, &run, "x", json!([1]));

    // Without after/Last-Event-ID: only what happens from now on.
    let stream = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), None);
    assert!(
        stream.quiet(Duration::from_millis(300)),
        "old events replayed"
    );
    batch(&s, &run, "x", json!([2]));
    let first = stream.next();
    assert_eq!(first.data["from_index"], 1);
    drop(stream);

    // While nobody listens, more happens.
    for v in 3..=12 {
        batch(&s, &run, "x", json!([v]));
    }
    let (status, _) = s.patch(
        &format!("/api/v1/runs/{run}"),
        &json!({"set_tags": {"k": "v"}}),
    );
    assert_eq!(status, 200);

    // The ten appends were merged into x's one points event; it may repeat points the reader had (here the
    // first two), and `from_index` says which.
    let resumed = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), Some(first.id));
    let msgs = resumed.take(2);
    let kinds: Vec<&str> = msgs.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(kinds, ["points", "run_updated"]);
    let had = 2;
    assert!(msgs[0].data["from_index"].as_u64().unwrap() <= had);
    assert_eq!(new_values(&msgs[0].data, had), (3..=12).collect::<Vec<_>>());
    assert!(msgs.iter().all(|m| m.id > first.id));
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        resumed.quiet(Duration::from_millis(300)),
        "duplicate events"
    );

    // ?after= works like the header.
    let again = Stream::open(
        &s,
        &format!("/api/v1/runs/{run}/events?after={}", msgs[0].id),
        None,
    );
    assert_eq!(again.next().event, "run_updated");
}

/// The values of a points message from index `had` on (the ones a reader holding `had` points lacks).
fn new_values(data: &Value, had: u64) -> Vec<i64> {
    let from = data["from_index"].as_u64().unwrap();
    let values = data["values"].as_array().unwrap();
    assert_eq!(data["count"].as_u64().unwrap(), values.len() as u64);
    let skip = had.saturating_sub(from) as usize;
    values[skip..]
        .iter()
        .map(|v| v.as_f64().unwrap() as i64)
        .collect()
}

#[test]
fn points_logged_one_at_a_time_reach_a_live_reader_once_each() {
    let s = TestServer::start();
    let run = s.new_run();
    for v in 0..5 {
        batch(&s, &run, "a", json!([v]));
    }
    // A reader from now gets none of the five old points, though each new event of `a` covers them too.
    let stream = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), None);
    let mut got: std::collections::BTreeMap<String, Vec<(u64, i64)>> = Default::default();
    let mut last_id = 0;
    for v in 5..45 {
        batch(&s, &run, "a", json!([v]));
        batch(&s, &run, "b", json!([v]));
        if v % 10 == 0 {
            // Let a few appends merge before the reader looks.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    while got.values().map(Vec::len).sum::<usize>() < 80 {
        let m = stream.next();
        assert_eq!(m.event, "points");
        let from = m.data["from_index"].as_u64().unwrap();
        let values = m.data["values"].as_array().unwrap();
        let name = m.data["name"].as_str().unwrap().to_string();
        let series = got.entry(name).or_default();
        for (i, v) in values.iter().enumerate() {
            series.push((from + i as u64, v.as_f64().unwrap() as i64));
        }
        last_id = m.id;
    }
    let expect = |first_index: u64| -> Vec<(u64, i64)> {
        (5..45).map(|v| (first_index + v as u64 - 5, v)).collect()
    };
    assert_eq!(
        got["a"],
        expect(5),
        "a: each new point once, old ones not at all"
    );
    assert_eq!(got["b"], expect(0), "b: each point once");
    assert!(
        stream.quiet(Duration::from_millis(300)),
        "points sent twice"
    );

    // A reader resuming from the newest id it read gets exactly the points logged since.
    batch(&s, &run, "a", json!([45]));
    let resumed = Stream::open(&s, &format!("/api/v1/runs/{run}/events"), Some(last_id));
    let m = resumed.next();
    assert_eq!(
        (m.data["from_index"].as_u64(), m.data["count"].as_u64()),
        (Some(45), Some(1))
    );
    assert_eq!(m.data["values"], json!([45.0]));
}

#[test]
fn experiment_stream_carries_run_events_without_data() {
    let s = TestServer::start();
    let exp = s.new_experiment("watched");
    let stream = Stream::open(&s, &format!("/api/v1/experiments/{exp}/events"), None);
    let (status, run) = s.post(
        "/api/v1/runs",
        &json!({"experiment_id": exp, "display_name": "r1"}),
    );
    assert_eq!(status, 201);
    let run = run["id"].as_str().unwrap().to_string();
    batch(&s, &run, "loss", json!([0.5, 0.75]));
    let (status, _) = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{run}/logs/stdout"),
        "text/plain",
        b"x\n",
    );
    assert_eq!(status, 200);
    let (status, _) = s.patch(
        &format!("/api/v1/runs/{run}"),
        &json!({"status": "Completed"}),
    );
    assert_eq!(status, 200);

    let msgs = stream.take(3);
    let kinds: Vec<&str> = msgs.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(kinds, ["run_created", "points", "run_updated"]);
    assert_eq!(msgs[1].data["last_value"], 0.75);
    assert!(
        msgs[1].data.get("values").is_none(),
        "experiment stream must not carry the data"
    );
    assert_eq!(msgs[2].data["status"], "Completed");

    // Another experiment's stream sees none of it.
    let other = s.new_experiment("other");
    let quiet = Stream::open(
        &s,
        &format!("/api/v1/experiments/{other}/events?after=0"),
        None,
    );
    assert!(
        quiet.quiet(Duration::from_millis(500)),
        "another experiment's events leaked"
    );
}

#[test]
fn streams_of_unknown_things_are_404() {
    let s = TestServer::start();
    let missing = "ffffffffffffffffffffffffffffffff";
    assert_error(
        &s.get(&format!("/api/v1/runs/{missing}/events")),
        404,
        "NOT_FOUND",
        missing,
    );
    assert_error(
        &s.get("/api/v1/experiments/777/events"),
        404,
        "NOT_FOUND",
        "777",
    );
    let run = s.new_run();
    assert_error(
        &s.get(&format!("/api/v1/runs/{run}/events?after=x")),
        400,
        "INVALID_ARGUMENT",
        "after",
    );
}

#[test]
fn shutdown_closes_open_streams() {
    let mut s = TestServer::start();
    let run = s.new_run();
    let stream = Stream::open(&s, &format!("/api/v1/runs/{run}/events?after=0"), None);
    assert_eq!(stream.next().event, "run_created");
    assert!(
        s.terminate(Duration::from_secs(10)),
        "server did not stop with a stream open:\n{}",
        s.server_log()
    );
}
