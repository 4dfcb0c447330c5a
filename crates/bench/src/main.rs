//! `flightlog-bench`: starts the real `flightlog server` binary on a free loopback port with a temp data dir and
//! prints the tracking-core figures: batch ingest rate, durable single-call latency, whole and downsampled
//! history reads of a 1M-point series, disk bytes per point, and server memory idle, under load and while a
//! slow client reads a series too big to hold.
//!
//! Run with `cargo build --release && cargo run --release -p flightlog-bench` (or `scripts/bench`).

mod submit;

use clap::Parser;
use flightlog_model::{Batch, ScalarWrite, WallTime, F64};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Benchmark the flightlog server (starts the real binary)")]
struct Args {
    /// The flightlog binary to benchmark.
    #[arg(long, default_value = "target/release/flightlog")]
    bin: PathBuf,
    /// Points to ingest in the ingest scenario (also the "while ingesting" memory figure).
    #[arg(long, default_value_t = 10_000_000)]
    ingest_points: u64,
    /// Points of the series read back in the history scenario.
    #[arg(long, default_value_t = 1_000_000)]
    history_points: u64,
    /// Points of the series read by a slow client in the huge-read scenario (over 2M: streamed).
    #[arg(long, default_value_t = 5_000_000)]
    huge_read_points: u64,
    /// MiB of the file uploaded (three times) in the artifact-upload scenario.
    #[arg(long, default_value_t = 1024)]
    upload_mb: usize,
    /// Sequential one-point log calls in the latency scenario.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Client threads posting batches concurrently.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Points per batch request in the ingest scenario.
    #[arg(long, default_value_t = 20_000)]
    batch_points: usize,
    /// Run only these figures: `core` (the tracking server) or `submit` (script runs).
    #[arg(long, value_parser = ["core", "submit"])]
    only: Option<String>,
    /// `flightlog submit` starts timed in the first-line scenario.
    #[arg(long, default_value_t = 7)]
    submit_runs: usize,
    /// MB of 100-byte lines the script writes in the capture scenario.
    #[arg(long, default_value_t = 50)]
    submit_mb: u64,
    /// The Python interpreter of the capture scenario's script.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn main() {
    let args = Args::parse();
    if !args.bin.exists() {
        eprintln!(
            "error: {} not found; build it first with `cargo build --release`",
            args.bin.display()
        );
        std::process::exit(2);
    }
    let mut figures = serde_json::Map::new();
    let mut record = |key: &str, value: f64, text: String| {
        println!("{text}");
        figures.insert(key.to_string(), serde_json::json!(value));
    };

    if args.only.as_deref() != Some("submit") {
        let server = Server::start(&args.bin);
        std::thread::sleep(Duration::from_millis(500));
        let idle = server.memory_kb().0 as f64 / 1024.0;
        record(
            "rss_idle_mb",
            idle,
            format!("server RSS idle:                 {idle:8.1} MB   (target ≤ 50 MB)"),
        );

        let (p50, p99) = latency(&server, args.calls);
        record(
            "log_call_p50_ms",
            p50,
            format!(
                "durable log call p50:            {p50:8.3} ms   (target ≤ 1 ms; MLflow 60 ms)"
            ),
        );
        record(
            "log_call_p99_ms",
            p99,
            format!("durable log call p99:            {p99:8.3} ms"),
        );

        let rate = ingest(&server, args.ingest_points, args.threads, args.batch_points);
        let peak = server.memory_kb().1 as f64 / 1024.0;
        record("ingest_points_per_s", rate, format!("batch ingest:                    {rate:8.0} points/s   (target ≥ 1,000,000; MLflow ~6,700)"));
        record(
            "rss_peak_ingest_mb",
            peak,
            format!(
                "server peak RSS over {}M points: {peak:8.1} MB   (target ≤ 250 MB)",
                args.ingest_points / 1_000_000
            ),
        );
        drop(server);

        let mut server = Server::start(&args.bin);
        let h = history(&mut server, args.history_points);
        let n = args.history_points / 1000;
        record(
            "history_json_ms",
            h.json_ms,
            format!(
                "read {n}k-point series, JSON:     {:8.1} ms   (target ≤ 150 ms; MLflow 5 s for 100k)",
                h.json_ms
            ),
        );
        record(
            "history_binary_ms",
            h.binary_ms,
            format!("read {n}k-point series, binary:   {:8.1} ms", h.binary_ms),
        );
        record(
            "downsampled_ms",
            h.downsampled_ms,
            format!(
                "downsampled read (≤2,000 pts):   {:8.2} ms   (target ≤ 10 ms)",
                h.downsampled_ms
            ),
        );
        record(
            "bytes_per_point",
            h.bytes_per_point,
            format!(
                "disk per point:                  {:8.2} bytes (target ≤ 16; MLflow ~240)",
                h.bytes_per_point
            ),
        );

        let server = Server::start(&args.bin);
        let growth = huge_read_growth_mb(&server, args.huge_read_points);
        record(
            "rss_growth_huge_read_mb",
            growth,
            format!(
                "RSS growth, {}M-point read, slow client: {growth:6.1} MB   (the series would be {:.0} MB)",
                args.huge_read_points / 1_000_000,
                args.huge_read_points as f64 * 24.0 / 1e6
            ),
        );

        let server = Server::start(&args.bin);
        let up = upload(&server, args.upload_mb);
        record(
            "upload_mb_per_s",
            up.mb_per_s,
            format!(
                "artifact upload, {} MiB file:   {:8.0} MiB/s",
                args.upload_mb, up.mb_per_s
            ),
        );
        record(
            "rss_growth_upload_mb",
            up.rss_growth_mb,
            format!(
                "RSS growth while uploading:      {:8.1} MB   (streamed to disk, not held)",
                up.rss_growth_mb
            ),
        );
    }
    if args.only.as_deref() != Some("core") {
        submit_figures(&args, &mut record);
    }
    println!("{}", serde_json::Value::Object(figures));
}

/// The script-run figures (see [`submit`]), on a server of their own.
fn submit_figures(args: &Args, record: &mut dyn FnMut(&str, f64, String)) {
    let server = Server::start(&args.bin);
    let starts = submit::first_line(&args.bin, &server, args.submit_runs);
    let mut firsts: Vec<f64> = starts.iter().map(|s| s.first_line_ms).collect();
    let mut created: Vec<f64> = starts.iter().map(|s| s.created_ms).collect();
    let all = firsts
        .iter()
        .map(|f| format!("{f:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    firsts.sort_by(f64::total_cmp);
    created.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    record(
        "submit_created_ms",
        median(&created),
        format!(
            "submit start → run created:      {:8.1} ms   (median of {})",
            median(&created),
            created.len()
        ),
    );
    record(
        "submit_first_line_ms",
        median(&firsts),
        format!(
            "submit start → first line stored:{:8.1} ms   (median; all: {all}; target ≤ 100 ms + snapshot)",
            median(&firsts)
        ),
    );
    let t = submit::throughput(&args.bin, &server, &args.python, args.submit_mb);
    let mb = t.bytes as f64 / 1e6;
    let (bare_wall, bare_cpu) = t.bare;
    let (cap_wall, cap_cpu) = t.captured;
    let (pipe_wall, pipe_cpu) = t.piped;
    record(
        "script_bare_s",
        bare_wall,
        format!(
            "script writing {mb:.0} MB of lines alone:  {bare_wall:6.3} s wall, {bare_cpu:.3} s CPU ({:.0} MB/s; {})",
            mb / bare_wall,
            t.interpreter
        ),
    );
    record(
        "script_piped_s",
        pipe_wall,
        format!(
            "same script into `| cat > /dev/null`: {pipe_wall:6.3} s wall, {pipe_cpu:.3} s CPU ({:.0} MB/s; what any pipe costs it)",
            mb / pipe_wall
        ),
    );
    record(
        "script_captured_s",
        cap_wall,
        format!(
            "same script under submit:          {cap_wall:6.3} s wall, {cap_cpu:.3} s CPU ({:.0} MB/s; ×{:.2} wall, ×{:.2} CPU of alone; ×{:.2} wall, ×{:.2} CPU of piped)",
            mb / cap_wall,
            cap_wall / bare_wall,
            cap_cpu / bare_cpu,
            cap_wall / pipe_wall,
            cap_cpu / pipe_cpu
        ),
    );
    record(
        "submit_capture_mb_per_s",
        mb / t.submit_wall_s,
        format!(
            "submit end to end (all stored):    {:6.3} s  ({:.0} MB/s; {:.1} MB stored with time stamps; target ≥ 50 MB/s)",
            t.submit_wall_s,
            mb / t.submit_wall_s,
            t.stored_bytes as f64 / 1e6
        ),
    );
    let cpu = t.submit_cpu_s + t.server_cpu_s;
    record(
        "capture_cpu_mb_per_s",
        mb / cpu,
        format!(
            "capture CPU: submit {:.3} s + server {:.3} s → {:.0} MB per CPU-second",
            t.submit_cpu_s,
            t.server_cpu_s,
            mb / cpu
        ),
    );
}

/// A `flightlog server` child process on a free port with its own temp data dir; killed on drop.
struct Server {
    child: Child,
    url: String,
    data: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Server {
    fn start(bin: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let data = tempfile::tempdir().expect("temp dir");
        let child = Command::new(bin)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--data",
            ])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start flightlog server");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data,
            agent: ureq::Agent::new_with_defaults(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .agent
            .get(&format!("{}/health", server.url))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "server did not become healthy in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// (current RSS, peak RSS) in KiB, from /proc.
    fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn post(&self, path: &str, body: &[u8]) -> Vec<u8> {
        let mut resp = self
            .agent
            .post(&format!("{}{path}", self.url))
            .content_type("application/json")
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        resp.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("read body")
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let mut resp = self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        resp.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("read body")
    }

    fn new_run(&self) -> String {
        let body = self.post(
            "/api/v1/runs",
            br#"{"experiment_id":"0","display_name":"bench"}"#,
        );
        let run: serde_json::Value = serde_json::from_slice(&body).expect("run JSON");
        run["id"].as_str().expect("run id").to_string()
    }

    /// SIGTERM, then wait: the store checkpoints its write-ahead log on a clean stop, so the data dir then
    /// holds exactly what is kept.
    fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: server did not stop within 20 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A cheap deterministic pseudo-random source (xorshift), so values are incompressible like real losses.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A batch of `series` scalar series with `per_series` points each, steps from `first_step`, encoded to JSON
/// the way a client would send it.
fn scalar_batch(series: usize, per_series: usize, first_step: i64, noise: &mut Noise) -> Vec<u8> {
    let now = WallTime::now().0;
    let scalars = (0..series)
        .map(|s| ScalarWrite {
            name: format!("metric_{s}"),
            description: None,
            steps: Some(
                (0..per_series as i64)
                    .map(|i| Some(first_step + i))
                    .collect(),
            ),
            times: Some((0..per_series as i64).map(|i| WallTime(now + i)).collect()),
            values: (0..per_series).map(|_| F64(noise.next())).collect(),
        })
        .collect();
    let batch = Batch {
        batch_id: Some(format!("b{first_step}-{}", noise.0)),
        scalars,
        ..Default::default()
    };
    serde_json::to_vec(&batch).expect("encode batch")
}

/// p50 and p99 in ms of sequential one-point batch calls, each acknowledged (durable) before the next.
fn latency(server: &Server, calls: usize) -> (f64, f64) {
    let run = server.new_run();
    let path = format!("/api/v1/runs/{run}/batch");
    let mut noise = Noise(42);
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + calls / 10 {
        let body = scalar_batch(1, 1, i as i64, &mut noise);
        let t = Instant::now();
        server.post(&path, &body);
        if i >= calls / 10 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// Points per second through the batch API with `threads` clients, each encoding and posting its own batches
/// of 10 series to its own run.
fn ingest(server: &Server, total: u64, threads: usize, batch_points: usize) -> f64 {
    let per_thread = total / threads as u64;
    let per_series = (batch_points / 10).max(1);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let run = server.new_run();
                let path = format!("/api/v1/runs/{run}/batch");
                let mut noise = Noise(7 + t as u64);
                let mut sent = 0u64;
                while sent < per_thread {
                    let body = scalar_batch(10, per_series, (sent / 10) as i64, &mut noise);
                    server.post(&path, &body);
                    sent += (10 * per_series) as u64;
                }
            });
        }
    });
    (per_thread * threads as u64) as f64 / start.elapsed().as_secs_f64()
}

/// The columns of a scalar read, parsed typed (a generic `Value` would time the parser, not the server).
#[derive(serde::Deserialize)]
struct ScalarBody {
    steps: Vec<i64>,
    times: Vec<i64>,
    values: Vec<F64>,
}

struct History {
    json_ms: f64,
    binary_ms: f64,
    downsampled_ms: f64,
    bytes_per_point: f64,
}

/// Logs one `points`-long series, then times whole reads (JSON, binary) and a 1,000-bucket downsampled read.
/// Disk per point is the whole data dir after a clean stop, divided by the points: every overhead counted.
fn history(server: &mut Server, points: u64) -> History {
    let run = server.new_run();
    let mut noise = Noise(99);
    let chunk = 50_000u64;
    for first in (0..points).step_by(chunk as usize) {
        let n = chunk.min(points - first) as usize;
        server.post(
            &format!("/api/v1/runs/{run}/batch"),
            &scalar_batch(1, n, first as i64, &mut noise),
        );
    }
    let base = format!("/api/v1/runs/{run}/metrics/metric_0");
    // Timed: request to last byte received. Checked after the clock stops: the body parses into the full series.
    let mut body = Vec::new();
    let json_ms = median_ms(5, || body = server.get(&base));
    let series: ScalarBody = serde_json::from_slice(&body).expect("history JSON");
    assert_eq!(
        series.values.len(),
        points as usize,
        "whole series returned"
    );
    assert_eq!(
        (series.steps.len(), series.times.len()),
        (points as usize, points as usize)
    );
    let binary_ms = median_ms(5, || body = server.get(&format!("{base}?format=binary")));
    let mut count = [0u8; 8];
    (&body[..]).read_exact(&mut count).expect("count");
    assert_eq!(u64::from_le_bytes(count), points, "whole series returned");
    assert_eq!(
        body.len() as u64,
        8 + 24 * points,
        "binary body is count + three columns"
    );
    let downsampled_ms = median_ms(21, || {
        let body = server.get(&format!("{base}?buckets=1000"));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("downsampled JSON");
        let n = v["values"].as_array().map_or(0, Vec::len);
        assert!(n > 0 && n <= 2000, "downsampled to {n} points");
    });
    server.stop_gracefully();
    let bytes_per_point = dir_size(server.data.path()) as f64 / points as f64;
    History {
        json_ms,
        binary_ms,
        downsampled_ms,
        bytes_per_point,
    }
}

/// Logs one `points`-long series, then reads it whole with a client that takes a 1 MiB piece every 2 ms:
/// how far the server's RSS rises above where it was before the read, at most. A read that held the series
/// would rise by at least 24 bytes a point; a streamed one holds a 65,536-point chunk per column piece, plus
/// what the allocator and SQLite's page cache keep.
fn huge_read_growth_mb(server: &Server, points: u64) -> f64 {
    let run = server.new_run();
    let mut noise = Noise(7);
    for first in (0..points).step_by(50_000) {
        let n = 50_000.min(points - first) as usize;
        server.post(
            &format!("/api/v1/runs/{run}/batch"),
            &scalar_batch(1, n, first as i64, &mut noise),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = server.memory_kb().0;
    let url = format!("{}/api/v1/runs/{run}/metrics/metric_0", server.url);
    let resp = server
        .agent
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut body = resp.into_body().into_reader();
    let (mut peak, mut read, mut piece) = (before, 0usize, vec![0u8; 1 << 20]);
    loop {
        let n = body.read(&mut piece).expect("read the series");
        if n == 0 {
            break;
        }
        read += n;
        peak = peak.max(server.memory_kb().0);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        read as u64 > points * 20,
        "the whole series came: {read} bytes"
    );
    peak.saturating_sub(before) as f64 / 1024.0
}

struct Upload {
    mb_per_s: f64,
    rss_growth_mb: f64,
}

/// Uploads an `mb`-MiB file as a run artifact three times: the median rate, and how far the server's peak
/// RSS rose above its idle RSS (an upload is written to disk as it arrives, a piece at a time).
fn upload(server: &Server, mb: usize) -> Upload {
    let run = server.new_run();
    let body: Vec<u8> = (0..mb << 20).map(|i| (i % 251) as u8).collect();
    std::thread::sleep(Duration::from_millis(500));
    let idle = server.memory_kb().0;
    let url = format!("{}/api/v1/runs/{run}/artifacts/bench.bin", server.url);
    let ms = median_ms(3, || {
        let resp = server
            .agent
            .put(&url)
            .content_type("application/octet-stream")
            .send(&body[..])
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert_eq!(resp.status(), 200, "upload refused");
    });
    Upload {
        mb_per_s: mb as f64 / (ms / 1e3),
        rss_growth_mb: server.memory_kb().1.saturating_sub(idle) as f64 / 1024.0,
    }
}

fn median_ms(repeat: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..repeat)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeat / 2]
}
