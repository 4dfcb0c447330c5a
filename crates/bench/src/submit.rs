//! The script-run figures: time from starting `flightlog submit` to the script's first output line being
//! stored on the server, and output capture throughput (a script writing lines to /dev/null vs under submit).

use crate::Server;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One `flightlog submit` start: when the run existed and when the first line was readable on the server.
pub struct FirstLine {
    pub created_ms: f64,
    pub first_line_ms: f64,
}

/// The script that writes `n` lines of 100 bytes, timing itself: wall and CPU seconds (printed last, on
/// stderr). Its CPU time shows what capture costs the script even on a busy machine, where wall time is noisy.
const WRITER: &str = "import os, sys, time\n\
n = int(sys.argv[1])\n\
line = 'x' * 99 + '\\n'\n\
w = sys.stdout.write\n\
t, c = time.perf_counter(), os.times()\n\
for _ in range(n):\n    w(line)\n\
sys.stdout.flush()\n\
e = os.times()\n\
sys.stderr.write('elapsed=%f cpu=%f\\n' % (time.perf_counter() - t, e.user + e.system - c.user - c.system))\n";

fn submit_cmd(bin: &Path, server: &Server, source: &Path, spool: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(["--server", &server.url, "submit", "-e", "bench-submit"])
        .arg("--source-dir")
        .arg(source)
        .env("FLIGHTLOG_SPOOL", spool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The run id announced on the submitter's stderr (`flightlog: run <id> submitted (Queued)`).
fn announced(line: &str) -> Option<String> {
    let rest = line.strip_prefix("flightlog: run ")?;
    let (id, tail) = rest.split_once(' ')?;
    tail.starts_with("submitted").then(|| id.to_string())
}

fn log_length(server: &Server, run: &str, stream: &str) -> u64 {
    let body = server.get(&format!("/api/v1/runs/{run}/logs"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == stream)
        .and_then(|s| s["length"].as_u64())
        .unwrap_or(0)
}

/// Starts `flightlog submit -- sh -c 'echo first; sleep 0.2'` on a one-file source dir `runs` times and
/// measures, from the moment the submitter is spawned, when the run is announced and when the first stdout
/// line can be read from the server (polled every millisecond).
pub fn first_line(bin: &Path, server: &Server, runs: usize) -> Vec<FirstLine> {
    let source = tempfile::tempdir().expect("temp dir");
    std::fs::write(source.path().join("train.sh"), "echo first\nsleep 0.2\n")
        .expect("write script");
    let spool = tempfile::tempdir().expect("temp dir");
    let mut out = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut child = submit_cmd(bin, server, source.path(), spool.path())
            .args(["--", "sh", "train.sh"])
            .spawn()
            .expect("start flightlog submit");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let run = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("flightlog submit ended without announcing its run");
            }
            if let Some(id) = announced(line.trim_end()) {
                break id;
            }
        };
        let created_ms = t0.elapsed().as_secs_f64() * 1e3;
        let deadline = Instant::now() + Duration::from_secs(30);
        while log_length(server, &run, "stdout") == 0 {
            assert!(Instant::now() < deadline, "no output stored within 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let first_line_ms = t0.elapsed().as_secs_f64() * 1e3;
        std::io::copy(&mut stderr, &mut std::io::sink()).ok();
        let status = child.wait().expect("wait for flightlog submit");
        assert!(status.success(), "flightlog submit failed: {status}");
        out.push(FirstLine {
            created_ms,
            first_line_ms,
        });
    }
    out
}

/// Output capture of a Python script writing `mb` MB of 100-byte lines (one write per line, as an unbuffered
/// script prints): its own run time alone (stdout to /dev/null) and under `flightlog submit`.
pub struct Throughput {
    pub bytes: u64,
    /// The interpreter that ran the script (see [`real_interpreter`]).
    pub interpreter: String,
    /// The script's own time writing, alone: (wall, CPU) seconds.
    pub bare: (f64, f64),
    /// The same into a pipe read by `cat > /dev/null`: what writing to any reader costs the script, the
    /// fair reference for its slowdown under capture.
    pub piped: (f64, f64),
    /// The script's own time writing, captured: (wall, CPU) seconds.
    pub captured: (f64, f64),
    /// `flightlog submit` from start to exit (everything stored).
    pub submit_wall_s: f64,
    /// CPU seconds of `flightlog submit` itself (capture, stamping, sending), the script's excluded.
    pub submit_cpu_s: f64,
    /// CPU seconds the server spent meanwhile (receiving and storing the output).
    pub server_cpu_s: f64,
    /// Bytes of the stdout log on the server (time stamps included).
    pub stored_bytes: u64,
}

/// The writer's `elapsed=W cpu=C` line: (wall, CPU) seconds.
fn times_of(text: &str) -> (f64, f64) {
    let line = text
        .lines()
        .rfind(|l| l.contains("elapsed="))
        .expect("the writer's elapsed= line");
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    (field("elapsed="), field("cpu="))
}

/// CPU seconds of this process's waited-for children (and theirs) so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass; nothing else is touched.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds a live process has used (`/proc/PID/stat` utime + stime).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The interpreter's own executable (its `sys.executable`), so that a launcher in front of it is not timed as
/// part of the capture: a pyenv shim is a shell script that takes ~0.25 s to start the real interpreter, a
/// third of the whole end-to-end figure. `python` itself if it cannot say.
fn real_interpreter(python: &str) -> String {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output();
    let path = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if path.is_empty() {
        python.to_string()
    } else {
        path
    }
}

pub fn throughput(bin: &Path, server: &Server, python: &str, mb: u64) -> Throughput {
    let python = &real_interpreter(python);
    let source = tempfile::tempdir().expect("temp dir");
    std::fs::write(source.path().join("writer.py"), WRITER).expect("write script");
    let spool = tempfile::tempdir().expect("temp dir");
    let lines = (mb * 1_000_000 / 100).to_string();
    let bare = Command::new(python)
        .args(["writer.py", &lines])
        .current_dir(source.path())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::null())
        .output()
        .expect("run the writer alone");
    assert!(bare.status.success(), "the writer failed alone");
    let bare = times_of(&String::from_utf8_lossy(&bare.stderr));
    let piped = Command::new("sh")
        .args([
            "-c",
            "\"$0\" writer.py \"$1\" | cat > /dev/null",
            python,
            &lines,
        ])
        .current_dir(source.path())
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("run the writer into a pipe");
    assert!(piped.status.success(), "the writer failed into a pipe");
    let piped = times_of(&String::from_utf8_lossy(&piped.stderr));

    let (cpu0, server0) = (children_cpu(), process_cpu(server.child.id()));
    let t0 = Instant::now();
    let out = submit_cmd(bin, server, source.path(), spool.path())
        .args(["--", python, "writer.py", &lines])
        .output()
        .expect("run flightlog submit");
    let submit_wall_s = t0.elapsed().as_secs_f64();
    let (cpu1, server1) = (children_cpu(), process_cpu(server.child.id()));
    assert!(
        out.status.success(),
        "flightlog submit of the writer failed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = stderr
        .lines()
        .find_map(announced)
        .expect("announced run id");
    let body = server.get(&format!("/api/v1/runs/{run}/logs/stderr"));
    let slice: serde_json::Value = serde_json::from_slice(&body).expect("log slice");
    let captured = times_of(slice["data"].as_str().unwrap_or_default());
    Throughput {
        bytes: mb * 1_000_000,
        interpreter: python.clone(),
        bare,
        piped,
        captured,
        submit_wall_s,
        // The writer's CPU outside its timed loop (interpreter start) is small and counted here.
        submit_cpu_s: (cpu1 - cpu0 - captured.1).max(0.0),
        server_cpu_s: server1 - server0,
        stored_bytes: log_length(server, &run, "stdout"),
    }
}
