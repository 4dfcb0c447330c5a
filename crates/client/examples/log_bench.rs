//! Measures the cost of a non-blocking `log_scalar` call and the end-to-end delivery rate.
//! `cargo run --release -p flightlog-client --example log_bench -- http://127.0.0.1:5000 [points]`

use flightlog_client::{Client, ClientConfig};
use flightlog_model::{NewRun, WallTime};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:5000".into());
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let spool = std::env::temp_dir().join(format!("flightlog-bench-spool-{}", std::process::id()));
    let client = Client::new(ClientConfig {
        uri,
        spool_dir: spool.clone(),
        replay_on_start: false,
        ..Default::default()
    });
    let run = client
        .create_run(&NewRun::default())
        .expect("create run (is the server running?)")
        .id;

    // Per-call latency: time chunks of 100 calls (Instant overhead amortized), take percentiles.
    let chunk = 100;
    let mut per_call = Vec::with_capacity(n / chunk);
    let start = Instant::now();
    let mut i = 0i64;
    while (i as usize) < n {
        let t = Instant::now();
        for _ in 0..chunk {
            client
                .log_scalar(&run, "loss", Some(i), i as f64 * 0.5, None)
                .unwrap();
            i += 1;
        }
        per_call.push(t.elapsed().as_nanos() as f64 / chunk as f64);
    }
    let enqueue = start.elapsed();
    let report = client.flush(Duration::from_secs(300)).unwrap();
    let total = start.elapsed();
    per_call.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| per_call[((per_call.len() as f64 - 1.0) * p) as usize];
    println!("points: {n}");
    println!("log_scalar per call (chunks of {chunk}): median {:.0} ns, p90 {:.0} ns, p99 {:.0} ns, max {:.0} ns", pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    println!(
        "enqueue: {:?} ({:.2} M points/s)",
        enqueue,
        n as f64 / enqueue.as_secs_f64() / 1e6
    );
    println!(
        "delivered (flush complete={}): {:?} ({:.2} M points/s end to end)",
        report.complete,
        total,
        n as f64 / total.as_secs_f64() / 1e6
    );
    let t = Instant::now();
    let s = client
        .read_scalars_binary(&run, "loss", &Default::default())
        .unwrap();
    println!("read back {} points (binary) in {:?}", s.len(), t.elapsed());
    let _ = WallTime::now();
    let st = client.status();
    println!(
        "batches sent: {}, duplicates: {}, spooled: {}",
        st.sent_batches, st.duplicate_batches, st.spooled_total
    );
    let _ = std::fs::remove_dir_all(spool);
}
