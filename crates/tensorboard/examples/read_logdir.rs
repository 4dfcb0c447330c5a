//! Reads every event file under a logdir and decodes every summary value, timing it (to compare with
//! TensorBoard's data server on the same folder): `cargo run --release --example read_logdir DIR`.

use flightlog_tensorboard::proto::event::What;
use flightlog_tensorboard::{is_event_file_name, EventFileReader, ValueDecoder};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn event_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if e.file_type()?.is_dir() {
            event_files(&p, out)?;
        } else if is_event_file_name(&e.file_name().to_string_lossy()) {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let t = Instant::now();
    let mut files = Vec::new();
    event_files(&dir, &mut files)?;
    let (mut events, mut values, mut errors) = (0u64, 0u64, 0usize);
    for f in &files {
        let mut decoder = ValueDecoder::default();
        let mut r = EventFileReader::new(f);
        errors += r
            .poll_each(|_, e| {
                events += 1;
                if let Some(What::Summary(s)) = &e.what {
                    for v in &s.value {
                        let _ = decoder.decode(v);
                        values += 1;
                    }
                }
            })?
            .len();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} files, {events} events, {values} values, {errors} errors in {:.3} s ({:.2} M events/s)",
        files.len(),
        s,
        events as f64 / s / 1e6
    );
    Ok(())
}
