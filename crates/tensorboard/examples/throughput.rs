//! Writes and reads back N scalar events (default 1,000,000): `cargo run --release --example throughput [N]`.

use flightlog_tensorboard::{EventFileReader, EventWriter};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tb-throughput-{}", std::process::id()));
    let t0 = Instant::now();
    let mut w = EventWriter::create(&dir, "", 1.7e9)?;
    for i in 0..n {
        w.write_scalar(
            1.7e9 + i as f64 * 1e-3,
            i,
            "train/loss",
            1.0 / (i + 1) as f32,
        )?;
    }
    let path = w.close()?;
    let write = t0.elapsed();
    let t1 = Instant::now();
    let mut r = EventFileReader::new(&path);
    let mut events = 0u64;
    let errors = r.poll_each(|_, _| events += 1)?;
    let read = t1.elapsed();
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "{n} scalar events ({:.1} MB): write {:.3} s ({:.2} M/s), read+decode {:.3} s ({:.2} M/s); {events} events, {} errors",
        bytes as f64 / 1e6,
        write.as_secs_f64(),
        n as f64 / write.as_secs_f64() / 1e6,
        read.as_secs_f64(),
        n as f64 / read.as_secs_f64() / 1e6,
        errors.len()
    );
    std::fs::remove_dir_all(&dir)
}
