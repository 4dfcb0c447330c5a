//! Writing event files: named `events.out.tfevents.<secs>.<host>.<pid>.<n><suffix>`, opened by a
//! `file_version` event, records buffered and flushed on request and on drop.

use crate::proto::{event::What, Event};
use crate::record::encode_record;
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The version string TensorBoard expects in a file's first event.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Distinguishes files one process creates within the same second.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Appends events to a new event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    record: Vec<u8>,
    message: Vec<u8>,
}

/// The conventional file name; `suffix` (e.g. `.flightlog`) lets a writer recognise its own files later.
pub fn event_file_name(unix_secs: u64, host: &str, pid: u32, n: u64, suffix: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    format!("events.out.tfevents.{unix_secs:010}.{host}.{pid}.{n}{suffix}")
}

fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing) and writes the `file_version` event stamped
    /// `wall_time` (seconds).
    pub fn create(dir: &Path, suffix: &str, wall_time: f64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = event_file_name(secs, &host_name(), std::process::id(), n, suffix);
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = EventWriter {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            record: Vec::with_capacity(256),
            message: Vec::with_capacity(256),
        };
        w.write(&Event {
            wall_time,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.to_string())),
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (buffered).
    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.message.clear();
        event
            .encode(&mut self.message)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.record.clear();
        encode_record(&self.message, &mut self.record);
        self.out.write_all(&self.record)
    }

    /// Appends a scalar event (`simple_value`), encoded directly: the same bytes as [`Self::write`] of
    /// `summary::event(wall_time, step, summary::scalar(tag, value))`, several times faster.
    pub fn write_scalar(
        &mut self,
        wall_time: f64,
        step: i64,
        tag: &str,
        value: f32,
    ) -> std::io::Result<()> {
        self.message.clear();
        crate::summary::encode_scalar_event(&mut self.message, wall_time, step, tag, value);
        self.record.clear();
        encode_record(&self.message, &mut self.record);
        self.out.write_all(&self.record)
    }

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Flushes the file without syncing it to disk (for files that can be written again, like exports).
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        self.out.flush()?;
        Ok(self.path.clone())
    }

    /// Flushes and syncs the file to disk.
    pub fn close(mut self) -> std::io::Result<PathBuf> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.path.clone())
    }
}
