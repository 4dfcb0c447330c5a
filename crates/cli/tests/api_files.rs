//! API suite, logs and artifacts against the real binary: appends and offset reads, streamed uploads and
//! downloads, listings, deletes, and paths that try to leave the run's storage.

mod common;

use common::{assert_error, files_under, TestServer};
use serde_json::json;

#[test]
fn logs_append_and_read_by_offset() {
    let s = TestServer::start();
    let id = s.new_run();
    let path = format!("/api/v1/runs/{id}/logs/stdout");
    let (status, r) = s.send_raw("POST", &path, "text/plain", "line one\n".as_bytes());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["length"], 9);
    let (_, r) = s.send_raw(
        "POST",
        &path,
        "application/octet-stream",
        "zwei – ü\n".as_bytes(),
    );
    let total = r["length"].as_u64().unwrap();
    assert_eq!(total, 9 + "zwei – ü\n".len() as u64);

    let (status, slice) = s.get(&path);
    assert_eq!(status, 200);
    assert_eq!(slice["data"], "line one\nzwei – ü\n");
    assert_eq!(slice["next_offset"], total);
    let (_, slice) = s.get(&format!("{path}?offset=9&max_bytes=4"));
    assert_eq!(slice["data"], "zwei");
    assert_eq!(slice["next_offset"], 13);
    let (_, slice) = s.get(&format!("{path}?offset=1000"));
    assert_eq!(slice["data"], "");

    let (_, list) = s.get(&format!("/api/v1/runs/{id}/logs"));
    assert_eq!(list["items"][0]["name"], "stdout");
    assert_eq!(list["items"][0]["length"], total);

    assert_error(
        &s.get(&format!("{path}?offset=x")),
        400,
        "INVALID_ARGUMENT",
        "offset",
    );
    let r = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{id}/logs/bad%20name"),
        "text/plain",
        b"x",
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "stream");
    let r = s.get(&format!("/api/v1/runs/{id}/logs/missing"));
    assert_error(&r, 404, "NOT_FOUND", "missing");
}

#[test]
fn log_appends_with_a_batch_id_are_stored_once() {
    let s = TestServer::start();
    let id = s.new_run();
    let path = format!("/api/v1/runs/{id}/logs/stdout?batch_id=b1.log0");
    let (status, ack) = s.send_raw("POST", &path, "text/plain", "once – ü\n".as_bytes());
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["duplicate"], false);
    // A re-send (a retry after a lost answer, a journal replay) is dropped.
    let (status, ack) = s.send_raw("POST", &path, "text/plain", "once – ü\n".as_bytes());
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["duplicate"], true);
    let (_, slice) = s.get(&format!("/api/v1/runs/{id}/logs/stdout"));
    assert_eq!(slice["data"], "once – ü\n");
    // Deduplicated text must be UTF-8; plain appends take any bytes.
    let r = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{id}/logs/stdout?batch_id=b2"),
        "text/plain",
        b"\xff\n",
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "UTF-8");
}

#[test]
fn artifacts_upload_download_list_delete() {
    let s = TestServer::start();
    let id = s.new_run();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (status, info) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/model/weights.bin"),
        "application/octet-stream",
        &big,
    );
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["path"], "model/weights.bin");
    assert_eq!(info["size"], big.len());
    let (status, info) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/outputs/report.json"),
        "application/json",
        br#"{"ok":true}"#,
    );
    assert_eq!(status, 200, "{info}");
    let (status, _) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/notes%20%C3%BC.txt"),
        "text/plain",
        b"hi",
    );
    assert_eq!(status, 200);

    let (status, bytes, headers) =
        s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/model/weights.bin"));
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], big.len().to_string().as_str());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert!(bytes == big, "download differs");
    let (_, bytes, headers) =
        s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/outputs/report.json"));
    assert_eq!(bytes, br#"{"ok":true}"#);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let (_, bytes, _) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/notes%20%C3%BC.txt"));
    assert_eq!(bytes, b"hi");

    let (status, top) = s.get(&format!("/api/v1/runs/{id}/artifacts"));
    assert_eq!(status, 200);
    let top: Vec<(String, bool)> = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_string(),
                i["is_dir"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(top.contains(&("model".to_string(), true)), "{top:?}");
    assert!(top.contains(&("notes ü.txt".to_string(), false)), "{top:?}");
    let (_, all) = s.get(&format!("/api/v1/runs/{id}/artifacts?recursive=true"));
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all}");
    let (_, under) = s.get(&format!("/api/v1/runs/{id}/artifacts?prefix=model"));
    assert_eq!(under["items"][0]["path"], "model/weights.bin");

    let (status, body) = s.delete(&format!("/api/v1/runs/{id}/artifacts/model"));
    assert_eq!((status, body), (200, json!({})));
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/artifacts/model/weights.bin")),
        404,
        "NOT_FOUND",
        "weights.bin",
    );
    let (_, all) = s.get(&format!("/api/v1/runs/{id}/artifacts?recursive=true"));
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

#[test]
fn artifact_paths_cannot_escape() {
    let s = TestServer::start();
    let id = s.new_run();
    let (status, _) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/ok.txt"),
        "text/plain",
        b"ok",
    );
    assert_eq!(status, 200);
    let outside = tempfile::tempdir().unwrap();
    let before = files_under(s.data_dir());

    for bad in [
        "..%2F..%2Fescape.txt",
        "a/%2E%2E/%2E%2E/%2E%2E/escape.txt",
        "%2Fetc%2Fescape.txt",
        "/tmp/escape.txt",
        "a%5Cb.txt",
    ] {
        let r = s.send_raw(
            "PUT",
            &format!("/api/v1/runs/{id}/artifacts/{bad}"),
            "text/plain",
            b"evil",
        );
        assert_error(&r, 400, "INVALID_PATH", "");
    }

    // A symlink planted inside the run's folder that points outside: writing through it is refused.
    let run_dir = s.data_dir().join("artifacts").join(&id);
    assert!(
        run_dir.is_dir(),
        "expected artifacts under {}",
        run_dir.display()
    );
    std::os::unix::fs::symlink(outside.path(), run_dir.join("link")).unwrap();
    let before_link = files_under(s.data_dir());
    let r = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/link/escape.txt"),
        "text/plain",
        b"evil",
    );
    assert_error(&r, 400, "INVALID_PATH", "link");
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "something was written outside"
    );
    assert_eq!(files_under(s.data_dir()), before_link);
    assert!(!std::path::Path::new("/tmp/escape.txt").exists());
    assert!(before
        .iter()
        .all(|p| !p.to_string_lossy().contains("escape")));
}

#[test]
fn oversized_artifact_is_refused() {
    let s = TestServer::start_with(&["--max-artifact-size", "8MiB"]);
    let id = s.new_run();
    let huge = vec![7u8; 9 * 1024 * 1024];
    let r = s.raw_request(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/huge.bin"),
        "application/octet-stream",
        huge,
    );
    assert_error(&r, 413, "TOO_LARGE", "limit");
    // Without a Content-Length the server counts while streaming, and the partial file is discarded.
    let huge = vec![7u8; 9 * 1024 * 1024];
    let r = s.raw_chunked_request(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/huge.bin"),
        "application/octet-stream",
        huge,
    );
    assert_error(&r, 413, "TOO_LARGE", "limit");
    let (_, all) = s.get(&format!("/api/v1/runs/{id}/artifacts?recursive=true"));
    assert_eq!(all["items"], json!([]));
    let leftovers: Vec<_> = files_under(s.data_dir())
        .into_iter()
        .filter(|p| std::fs::metadata(s.data_dir().join(p)).is_ok_and(|m| m.len() > 4 << 20))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial upload left behind: {leftovers:?}"
    );
    // A chunked upload within the limit is stored whole.
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let (status, info) = s.raw_chunked_request(
        "PUT",
        &format!("/api/v1/runs/{id}/artifacts/chunked.bin"),
        "application/octet-stream",
        body.clone(),
    );
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["size"], body.len());
    let (_, back, _) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/chunked.bin"));
    assert!(back == body, "chunked upload differs");
}

/// Clients that stop sending an upload or stop reading a download hold none of the threads the store's calls
/// run on: 520 stalled uploads and 40 stalled downloads (each held a blocking thread, and past tokio's 512 every
/// request that reads the store waited for them), then a run is still read at once, and a new upload is stored
/// at once (while uploads held a thread each, at most 256 were read at a time and it waited for a free slot).
/// A JSON body declared larger than the limit is refused before it is sent.
#[test]
fn stalled_transfers_do_not_stall_other_requests() {
    use std::io::{Read, Write};
    let s = TestServer::start();
    let id = s.new_run();
    let big = vec![7u8; 8 << 20];
    let upload = |name: &str| {
        let put = s.send_raw(
            "PUT",
            &format!("/api/v1/runs/{id}/artifacts/{name}"),
            "application/octet-stream",
            &big,
        );
        assert_eq!(put.0, 200, "{}", put.1);
    };
    upload("big.bin");
    let connect = || std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let mut held = Vec::new();
    for i in 0..560 {
        let mut c = connect();
        let head = if i < 40 {
            format!("GET /api/v1/runs/{id}/artifacts/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        } else {
            format!(
                "PUT /api/v1/runs/{id}/artifacts/slow{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc"
            )
        };
        c.write_all(head.as_bytes()).unwrap();
        held.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (status, run) = s.get(&format!("/api/v1/runs/{id}"));
    assert_eq!((status, run["id"].as_str()), (200, Some(id.as_str())));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a run read took {:?} beside stalled transfers",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    upload("fresh.bin");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "an upload took {:?} beside stalled uploads",
        started.elapsed()
    );
    let (_, back, _) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/fresh.bin"));
    assert!(back == big, "the upload beside stalled ones differs");

    let mut c = connect();
    let head = format!(
        "POST /api/v1/runs/{id}/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 99999999999999\r\n\r\n{{}}"
    );
    c.write_all(head.as_bytes()).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = c.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("TOO_LARGE") || answer.contains("too large"),
        "{answer}"
    );
    drop(held);
}

/// A server started under a low soft limit on open files (1,024 is a common default, which a few hundred
/// uploads in flight use up) raises it to the hard limit, so connections are not refused for want of files.
#[test]
fn the_server_raises_its_open_file_limit() {
    let s = TestServer::start_with_open_file_limit(256);
    let pid = s.pid().expect("a running server");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-file limit");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_ne!(numbers[0], "256", "soft limit not raised: {line}");
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit not raised to the hard one: {line}"
    );
}

#[test]
fn a_logged_models_files_live_apart_from_runs_and_go_with_it() {
    let s = TestServer::start();
    let (status, created) = s.post(
        "/api/2.0/mlflow/logged-models",
        &json!({"experiment_id": "0", "name": "alone"}),
    );
    assert_eq!(status, 200, "{created}");
    let id = created["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = format!("/api/2.0/mlflow-artifacts/artifacts/0/models/{id}/artifacts/MLmodel");
    let (status, body) = s.send_raw("PUT", &file, "application/octet-stream", b"flavors");
    assert_eq!(status, 200, "{body}");
    let (status, bytes, _) = s.get_bytes(&file);
    assert_eq!((status, bytes.as_slice()), (200, &b"flavors"[..]));
    let folder = s.data_dir().join("artifacts/models").join(&id);
    assert_eq!(files_under(&folder).len(), 1, "the model's own storage");

    let (status, body) = s.delete(&format!("/api/2.0/mlflow/logged-models/{id}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        !folder.exists(),
        "a deleted model's files go with it, folder and all"
    );
    assert_eq!(s.get_bytes(&file).0, 404);
}

#[test]
fn uploads_racing_a_model_delete_leave_no_files_behind() {
    let s = TestServer::start();
    for round in 0..3 {
        let (_, created) = s.post(
            "/api/2.0/mlflow/logged-models",
            &json!({"experiment_id": "0", "name": format!("racy-{round}")}),
        );
        let id = created["model"]["info"]["model_id"]
            .as_str()
            .unwrap()
            .to_string();
        let base = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/0/models/{id}/artifacts",
            s.base()
        );
        std::thread::scope(|scope| {
            for w in 0..4 {
                let base = &base;
                scope.spawn(move || {
                    let agent = common::agent();
                    for i in 0..30 {
                        let url = format!("{base}/w{w}/f{i}");
                        let answer = agent.put(&url).send(&[7u8; 4096][..]);
                        let status = match answer {
                            Ok(r) => r.status().as_u16(),
                            Err(ureq::Error::StatusCode(code)) => code,
                            Err(e) => panic!("{e}"),
                        };
                        assert!(status == 200 || status == 404, "upload answered {status}");
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
            let (status, body) = s.delete(&format!("/api/2.0/mlflow/logged-models/{id}"));
            assert_eq!(status, 200, "{body}");
        });
        let folder = s.data_dir().join("artifacts/models").join(&id);
        assert!(
            !folder.exists(),
            "round {round}: {:?}",
            files_under(&folder)
        );
    }
}

/// An upload whose body breaks (shorter than its length, malformed chunks) is the client's fault: a 400 that
/// says so, with nothing stored, on both APIs; never a 500 "storage error", which clients retry and alerts fire
/// on.
#[test]
fn broken_upload_bodies_are_the_clients_errors() {
    use std::io::{Read, Write};
    let s = TestServer::start();
    let id = s.new_run();
    let (_, run) = s.post("/api/2.0/mlflow/runs/get", &json!({"run_id": id}));
    let exp = run["run"]["info"]["experiment_id"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let send = |path: &str, framing: &str, body: &[u8]| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    };
    for path in [
        format!("/api/v1/runs/{id}/artifacts/cut.bin"),
        format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{id}/artifacts/cut.bin"),
    ] {
        for (framing, body) in [
            ("Content-Length: 100", &b"abc"[..]),
            ("Transfer-Encoding: chunked", &b"5\r\nabcde\r\nzz\r\n"[..]),
        ] {
            let answer = send(&path, framing, body);
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{path} {framing}: {answer}"
            );
            assert!(answer.contains("nothing was stored"), "{answer}");
        }
    }
    let (status, listed) = s.get(&format!("/api/v1/runs/{id}/artifacts"));
    assert_eq!((status, listed["items"].clone()), (200, json!([])));
}
