//! An MLflow tracking server that stores nothing: it reads each request whole and answers at once.
//!
//! The MLflow side by side (`scripts/mlflow-bench`) runs the ingest and latency workloads against it to measure
//! the ceiling of the benchmark's own client on this machine: where the client's work (building and encoding
//! batches in Python) is most of the time, no server can beat what this one gets, so a ratio target above the
//! ceiling is out of reach for any server. Standard library only, one thread per connection, HTTP/1.1
//! keep-alive; it answers the calls those workloads make and `{}` to anything else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids handed out by experiments/create and runs/create, unique for the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn main() {
    let port = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port else {
        eprintln!("usage: mlflow-noop <port>");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mlflow-noop: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            // A connection ends when the client closes it or sends something that is not HTTP/1.1.
            let _ = serve(stream);
        });
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let length = read_headers(&mut reader, &mut line)?;
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        let answer = answer(&path);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        writer.write_all(&[head.as_bytes(), answer.as_bytes()].concat())?;
    }
}

/// Reads header lines up to the blank one; returns the body's content-length (0 when absent).
fn read_headers(reader: &mut impl BufRead, line: &mut String) -> std::io::Result<usize> {
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(line)? == 0 || line == "\r\n" {
            return Ok(length);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
}

fn answer(path: &str) -> String {
    let endpoint = path.split('?').next().unwrap_or("");
    let id = || NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if endpoint.ends_with("/experiments/get") {
        r#"{"experiment":{"experiment_id":"0","name":"Default","lifecycle_stage":"active"}}"#
            .to_owned()
    } else if endpoint.ends_with("/experiments/create") {
        format!(r#"{{"experiment_id":"{}"}}"#, id())
    } else if endpoint.ends_with("/runs/create") {
        format!(r#"{{"run":{{"info":{{"run_id":"{:032x}"}}}}}}"#, id())
    } else {
        "{}".to_owned()
    }
}
