//! Helpers of the TensorBoard bridge suites: running the `flightlog` binary, a real 2×3 PNG, and reading a
//! folder of event files back tag by tag.
#![allow(dead_code)]

use flightlog_tensorboard::proto::event::What;
use flightlog_tensorboard::{Datum, EventFileReader, ValueDecoder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A valid 2×3 RGBA PNG.
pub fn png() -> Vec<u8> {
    let hex = "89504e470d0a1a0a0000000d4948445200000002000000030806000000b9eade810000001249444154789c63f80f050c0250c0d0000500cc270c7979a5111d0000000049454e44ae426082";
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

pub fn flightlog(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flightlog"))
        .args(args)
        .env("FLIGHTLOG_TRACKING_URI", server)
        .env("FLIGHTLOG_SPOOL", "/nonexistent-flightlog-spool")
        .output()
        .expect("run flightlog")
}

/// Runs and expects exit 0; returns stdout.
#[track_caller]
pub fn ok(server: &str, args: &[&str]) -> String {
    let out = flightlog(server, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "flightlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One decoded value: step, wall time (s), what.
pub type Point = (i64, f64, Datum);

/// Every event file directly in `dir`, read in name order: tag → points, in file order.
pub fn read_dir_events(dir: &Path) -> BTreeMap<String, Vec<Point>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().contains("tfevents"))
        .collect();
    files.sort();
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for f in files {
        let mut r = EventFileReader::new(&f);
        let parsed = r.poll().unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert!(r.trailing_error().is_none());
        let mut d = ValueDecoder::default();
        for (_, e) in parsed.events {
            if let Some(What::Summary(s)) = &e.what {
                for v in &s.value {
                    out.entry(v.tag.clone())
                        .or_default()
                        .push((e.step, e.wall_time, d.decode(v)));
                }
            }
        }
    }
    out
}

/// Event files directly in `dir`.
pub fn event_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("tfevents"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
