//! API suite, what protects a server without login from web pages, against the real binary: Host headers
//! (DNS rebinding), writes from pages of other origins (CSRF), and the headers that keep uploaded files from
//! running as pages of the portal.

mod common;

use common::TestServer;
use std::io::{Read, Write};

/// A request with the headers given (Host included), over a raw socket: its status, headers and body.
fn exchange(s: &TestServer, head: &str, body: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let request = format!(
        "{head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, headers.to_ascii_lowercase(), body.to_string())
}

#[test]
fn hosts_that_are_not_local_private_or_allowed_are_refused() {
    let s = TestServer::start();
    let (status, _, body) = exchange(
        &s,
        "GET /api/v1/experiments HTTP/1.1\r\nHost: evil.example:5000",
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Invalid Host header 'evil.example:5000'"),
        "{body}"
    );
    assert!(body.contains("--allowed-hosts evil.example"), "{body}");
    for host in ["127.0.0.1:1", "localhost", "10.1.2.3:5000", "[::1]:5000"] {
        let (status, _, body) = exchange(
            &s,
            &format!("GET /api/v1/experiments HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, _, _) = exchange(&s, "GET /health HTTP/1.1\r\nHost: probe.internal", "");
    assert_eq!(status, 200, "health answers any host");

    let open = TestServer::start_with(&["--allowed-hosts", "*.lab.example,evil.example"]);
    for host in ["gpu.lab.example:5000", "evil.example:5000"] {
        let (status, _, body) = exchange(
            &open,
            &format!("GET /api/v1/experiments HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn writes_from_pages_of_other_origins_are_refused() {
    let s = TestServer::start();
    let create = |origin: &str, name: &str| {
        let origin = if origin.is_empty() {
            String::new()
        } else {
            format!("\r\nOrigin: {origin}")
        };
        let head = format!(
            "POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1:{}{origin}",
            s.port
        );
        exchange(&s, &head, &format!(r#"{{"name": "{name}"}}"#))
    };
    let (status, _, body) = create("https://evil.example", "forged");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Cross-origin request blocked") && body.contains("--allowed-origins"),
        "{body}"
    );
    assert_eq!(create("null", "sandboxed").0, 403);
    assert_eq!(
        s.get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=forged")
            .0,
        404,
        "nothing stored"
    );
    for (origin, name) in [
        ("", "program"),
        (&format!("http://127.0.0.1:{}", s.port)[..], "portal"),
        ("http://localhost:8888", "notebook"),
    ] {
        let (status, _, body) = create(origin, name);
        assert_eq!(status, 200, "{origin}: {body}");
    }
    // Reads carry no risk of change: a page of another origin may send them (it cannot read the answer).
    let head = format!(
        "GET /api/v1/experiments HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: https://evil.example",
        s.port
    );
    assert_eq!(exchange(&s, &head, "").0, 200);

    let open = TestServer::start_with(&["--allowed-origins", "https://dash.example"]);
    let head = format!(
        "POST /api/v1/experiments HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: https://dash.example",
        open.port
    );
    let (status, _, body) = exchange(&open, &head, r#"{"name": "from-the-dashboard"}"#);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn stored_files_are_sandboxed_and_answers_are_not_sniffed() {
    let s = TestServer::start();
    let run = s.new_run();
    let page = b"<html><script>fetch('/api/v1/experiments', {method: 'POST'})</script></html>";
    let (status, body) = s.send_raw(
        "PUT",
        &format!("/api/v1/runs/{run}/artifacts/report.html"),
        "text/html",
        page,
    );
    assert_eq!(status, 200, "{body}");
    let (_, created) = s.post(
        "/api/2.0/mlflow/runs/get",
        &serde_json::json!({"run_id": run}),
    );
    let exp = created["run"]["info"]["experiment_id"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    for path in [
        format!("/api/v1/runs/{run}/artifacts/report.html"),
        format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/report.html"),
    ] {
        let (status, headers, body) =
            exchange(&s, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1"), "");
        assert_eq!((status, body.as_bytes()), (200, &page[..]), "{path}");
        assert!(
            headers.contains("content-security-policy: sandbox"),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("x-content-type-options: nosniff"),
            "{path}: {headers}"
        );
    }
    let (_, headers, _) = exchange(&s, "GET / HTTP/1.1\r\nHost: 127.0.0.1", "");
    assert!(headers.contains("x-frame-options: sameorigin"), "{headers}");
}
