//! A minimal Server-Sent Events reader for the run event stream (`id:`, `event:`, `data:` lines).

use flightlog_model::RunStatus;
use std::io::BufRead;

/// One SSE message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseEvent {
    /// The store's event seq: where a reconnecting reader resumes.
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_default()
    }

    /// The run's status after a `run_updated` or `run_created` event.
    pub fn status(&self) -> Option<RunStatus> {
        if !matches!(self.kind(), "run_updated" | "run_created") {
            return None;
        }
        self.json()["status"].as_str()?.parse().ok()
    }

    /// The event type (`event:` line, else the JSON's `type`).
    pub fn kind(&self) -> &str {
        &self.event
    }
}

/// Parses messages off a line reader; comments (`: keepalive`) are skipped.
pub struct SseReader<R> {
    inner: R,
    line: String,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(inner: R) -> Self {
        SseReader {
            inner,
            line: String::new(),
        }
    }

    /// The next message; `Ok(None)` when the stream ends.
    pub fn next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        let mut ev = SseEvent::default();
        let mut has_data = false;
        loop {
            self.line.clear();
            if self.inner.read_line(&mut self.line)? == 0 {
                return Ok(None);
            }
            let l = self.line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if has_data {
                    if ev.event.is_empty() {
                        ev.event = ev.json()["type"].as_str().unwrap_or_default().to_string();
                    }
                    return Ok(Some(ev));
                }
                continue;
            }
            let (field, value) = l.split_once(':').unwrap_or((l, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => ev.id = value.trim().parse().ok(),
                "event" => ev.event = value.to_string(),
                "data" => {
                    if has_data {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_and_skips_comments() {
        let text =
            ": keepalive\n\nid: 7\nevent: run_updated\ndata: {\"status\":\"CancelRequested\"}\n\n\
                    id: 8\ndata: {\"type\":\"log_appended\",\ndata: \"x\":1}\n\n";
        let mut r = SseReader::new(text.as_bytes());
        let a = r.next_event().unwrap().unwrap();
        assert_eq!(a.id, Some(7));
        assert_eq!(a.status(), Some(RunStatus::CancelRequested));
        let b = r.next_event().unwrap().unwrap();
        assert_eq!(b.id, Some(8));
        assert_eq!(b.kind(), "log_appended");
        assert_eq!(b.status(), None);
        assert!(r.next_event().unwrap().is_none());
    }
}
