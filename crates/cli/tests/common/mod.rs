//! Shared harness of the API suites: a real `flightlog server` child process on a free loopback port with its
//! own data folder, plus small HTTP helpers (ureq) that return status and JSON without treating 4xx as errors.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `flightlog server`; killed when dropped. Its data folder outlives restarts.
pub struct TestServer {
    pub port: u16,
    child: Option<Child>,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
    agent: ureq::Agent,
    /// Extra `flightlog server` arguments, kept for restarts.
    extra_args: Vec<String>,
    /// The soft limit on open files the server starts with, if not the test's own.
    open_file_limit: Option<u64>,
}

/// Makes `command`'s process start with a soft limit of `soft` open files (its hard limit unchanged).
fn lower_open_file_limit(command: &mut Command, soft: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and only calls getrlimit/setrlimit, which are
    // async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with `extra_args` after the usual host, port and data (also on restarts).
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::launch(extra_args, None)
    }

    /// A server that starts with a soft limit of `soft` open files (many systems default to 1,024).
    pub fn start_with_open_file_limit(soft: u64) -> Self {
        Self::launch(&[], Some(soft))
    }

    fn launch(extra_args: &[&str], open_file_limit: Option<u64>) -> Self {
        let mut s = TestServer {
            port: free_port(),
            child: None,
            data: tempfile::tempdir().expect("tempdir"),
            logs: tempfile::tempdir().expect("tempdir"),
            agent: agent(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            open_file_limit,
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("server.log"))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_flightlog"));
        if let Some(soft) = self.open_file_limit {
            lower_open_file_limit(&mut command, soft);
        }
        let child = command
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--data",
            ])
            .arg(self.data.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start flightlog server");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let quick: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        while Instant::now() < deadline {
            if let Ok(resp) = quick.get(&self.url("/health")).call() {
                if resp.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "flightlog server exited with {status}:\n{}",
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "flightlog server did not become healthy:\n{}",
            self.server_log()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's stdout and stderr so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for a graceful exit; true if it exited in time.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Kills the server (if running) and starts it again on the same port and data folder.
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    // --- HTTP helpers: (status, JSON body; Null when the body is not JSON) -----------------------------------

    pub fn get(&self, path: &str) -> (u16, Value) {
        into_json(self.agent.get(&self.url(path)).call())
    }

    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>, ureq::http::HeaderMap) {
        let mut resp = self
            .agent
            .get(&self.url(path))
            .call()
            .expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("body");
        (status, body, headers)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        into_json(self.agent.post(&self.url(path)).send_json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        into_json(self.agent.patch(&self.url(path)).send_json(body))
    }

    /// A body of raw bytes with the given Content-Type.
    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let url = self.url(path);
        let resp = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", content_type)
                .send(body),
            "PUT" => self
                .agent
                .put(&url)
                .header("Content-Type", content_type)
                .send(body),
            "PATCH" => self
                .agent
                .patch(&url)
                .header("Content-Type", content_type)
                .send(body),
            other => panic!("send_raw: {other}"),
        };
        into_json(resp)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        into_json(self.agent.delete(&self.url(path)).call())
    }

    // --- fixtures -------------------------------------------------------------------------------------------

    /// A fresh run in the Default experiment; returns its id.
    pub fn new_run(&self) -> String {
        let (status, run) = self.post("/api/v1/runs", &serde_json::json!({}));
        assert_eq!(status, 201, "{run}");
        run["id"].as_str().expect("run id").to_string()
    }

    pub fn new_experiment(&self, name: &str) -> String {
        let (status, exp) = self.post("/api/v1/experiments", &serde_json::json!({ "name": name }));
        assert_eq!(status, 201, "{exp}");
        exp["id"].as_str().expect("experiment id").to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

pub fn into_json(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = resp.expect("request failed");
    let status = resp.status().as_u16();
    let mut text = String::new();
    let _ = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .reader()
        .read_to_string(&mut text);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Percent-encodes everything but unreserved characters, for names in paths and queries.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asserts an API error: status, code, and that the message mentions `needle` (the field or id at fault).
#[track_caller]
pub fn assert_error(resp: &(u16, Value), status: u16, code: &str, needle: &str) {
    let (s, body) = resp;
    assert_eq!(*s, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
}

/// Every file under a folder, relative paths (to prove a rejected request wrote nothing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out.sort();
    out
}

impl TestServer {
    /// A request over a raw socket whose body is written from another thread while the response is read,
    /// for bodies the server refuses before reading them all (an HTTP client would fail on the broken pipe).
    pub fn raw_request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        self.raw_exchange(method, path, content_type, body, false)
    }

    /// Like [`raw_request`](Self::raw_request) but with `Transfer-Encoding: chunked`, so the server cannot
    /// know the size in advance.
    pub fn raw_chunked_request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        self.raw_exchange(method, path, content_type, body, true)
    }

    fn raw_exchange(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: Vec<u8>,
        chunked: bool,
    ) -> (u16, Value) {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", body.len())
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\n{framing}\r\nConnection: close\r\n\r\n"
        );
        let mut writer = stream.try_clone().expect("clone");
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            for chunk in body.chunks(1 << 20) {
                let ok = if chunked {
                    writer
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .is_ok()
                        && writer.write_all(chunk).is_ok()
                        && writer.write_all(b"\r\n").is_ok()
                } else {
                    writer.write_all(chunk).is_ok()
                };
                if !ok {
                    return;
                }
            }
            if chunked {
                let _ = writer.write_all(b"0\r\n\r\n");
            }
        });
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if let Some(resp) = parse_response(&raw) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                let _ = sender.join();
                return resp;
            }
        }
        let _ = sender.join();
        parse_response(&raw)
            .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&raw)))
    }
}

/// Status and JSON body of a complete HTTP/1.1 response with a Content-Length; None if incomplete.
fn parse_response(raw: &[u8]) -> Option<(u16, Value)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    let body = raw.get(end + 4..end + 4 + len)?;
    Some((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}
