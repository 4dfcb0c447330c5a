//! Attaching to a run from anywhere: its output and outcome through the pushed event stream, resumed after
//! the last event seen when the connection drops (nothing is polled or downloaded twice).

use crate::sse::{SseEvent, SseReader};
use flightlog_client::Client;
use flightlog_model::{Error, Result, Run, RunId};
use std::time::{Duration, Instant};

/// How long the server may stay unreachable before waiting gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Follows the run from its first event until it ends, calling `on_output(stream, text)` for every piece of
/// log text in order; returns the finished run.
pub fn wait_for_run(
    client: &Client,
    id: &RunId,
    on_output: &mut dyn FnMut(&str, &str),
) -> Result<Run> {
    client.get_run(id)?;
    let mut after = 0;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match follow(client, id, &mut after, on_output) {
            Ok(true) => return client.get_run(id),
            Ok(false) => unreachable_since = None,
            Err(Error::Transport(e)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(Error::Transport(e));
                }
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reads one connection's events after `after` (advancing it); `Ok(true)` once the run has ended.
fn follow(
    client: &Client,
    id: &RunId,
    after: &mut u64,
    on_output: &mut dyn FnMut(&str, &str),
) -> Result<bool> {
    let reader = client.run_events(id, Some(*after))?;
    let mut sse = SseReader::new(reader);
    loop {
        let ev = match sse.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(false),
            Err(e) => return Err(Error::Transport(format!("event stream broke: {e}"))),
        };
        if handle(client, id, &ev, on_output)? {
            return Ok(true);
        }
        if let Some(seq) = ev.id {
            *after = seq;
        }
    }
}

/// One event: output is passed on; `true` when the run reached a terminal status.
fn handle(
    client: &Client,
    id: &RunId,
    ev: &SseEvent,
    on_output: &mut dyn FnMut(&str, &str),
) -> Result<bool> {
    if ev.kind() == "log_appended" {
        let v = ev.json();
        let stream = v["stream"].as_str().unwrap_or_default();
        match v["data"].as_str() {
            Some(text) => on_output(stream, text),
            None => {
                // The server could not attach the text: read exactly the announced range.
                let offset = v["offset"].as_u64().unwrap_or(0);
                let length = v["length"].as_u64().unwrap_or(0);
                let slice = client.read_log(id, stream, offset, Some(length))?;
                on_output(stream, &slice.data);
            }
        }
        return Ok(false);
    }
    Ok(ev.status().is_some_and(|s| s.is_terminal()))
}
