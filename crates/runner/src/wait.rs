//! Attaching to a run from anywhere: its output and outcome through the pushed event stream, resumed after
//! the last event seen when the connection drops (nothing is polled or downloaded twice).

use crate::sse::{SseEvent, SseReader};
use flightlog_client::Client;
use flightlog_model::{log_news, Error, LogNews, Result, Run, RunId, RunPatch, RunStatus};
use std::collections::HashMap;
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
    let submitted = client
        .get_run(id)?
        .properties
        .contains_key(crate::lifecycle::TARGET_PROPERTY);
    let mut at = Position::default();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match follow(client, id, submitted, &mut at, on_output) {
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

/// Where following a run has got to, kept across connections.
#[derive(Default)]
struct Position {
    /// The last event seq read.
    after: u64,
    /// How far each log stream's text has been passed on. A connection that resumes from before a merged
    /// `log_appended` event gets bytes that were passed on already (see docs/api.md, live streams).
    passed: HashMap<String, u64>,
}

/// Reads one connection's events after `at.after` (advancing it); `Ok(true)` once the run has ended.
fn follow(
    client: &Client,
    id: &RunId,
    submitted: bool,
    at: &mut Position,
    on_output: &mut dyn FnMut(&str, &str),
) -> Result<bool> {
    let reader = client.run_events(id, Some(at.after))?;
    let mut sse = SseReader::new(reader);
    loop {
        let ev = match sse.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(false),
            Err(e) => return Err(Error::Transport(format!("event stream broke: {e}"))),
        };
        if handle(client, id, submitted, &ev, &mut at.passed, on_output)? {
            return Ok(true);
        }
        if let Some(seq) = ev.id {
            at.after = seq;
        }
    }
}

/// One event: output is passed on; `true` when the run reached its final status. A submitted run whose job
/// ended the run itself (MLflow's `end_run`) is followed on until its submitter recorded the outcome (the
/// exit code property, set with the final status), unless it was canceled.
fn handle(
    client: &Client,
    id: &RunId,
    submitted: bool,
    ev: &SseEvent,
    passed: &mut HashMap<String, u64>,
    on_output: &mut dyn FnMut(&str, &str),
) -> Result<bool> {
    if ev.kind() == "log_appended" {
        let v = ev.json();
        let stream = v["stream"].as_str().unwrap_or_default();
        let offset = v["offset"].as_u64().unwrap_or(0);
        let end = offset.saturating_add(v["length"].as_u64().unwrap_or(0));
        let have = passed.get(stream).copied().unwrap_or(0);
        match log_news(have, offset..end, v["data"].as_str()) {
            LogNews::Nothing => return Ok(false),
            LogNews::Text(text) => on_output(stream, text),
            LogNews::Read(range) => {
                let slice =
                    client.read_log(id, stream, range.start, Some(range.end - range.start))?;
                on_output(stream, &slice.data);
            }
        }
        passed.insert(stream.to_string(), end);
        return Ok(false);
    }
    match ev.status() {
        Some(s) if s.is_terminal() && submitted && s != RunStatus::Canceled => Ok(client
            .get_run(id)?
            .properties
            .contains_key(crate::lifecycle::EXIT_CODE_PROPERTY)),
        Some(s) => Ok(s.is_terminal()),
        None => Ok(false),
    }
}

/// Cancels a run. A submitted run that is still active is asked to stop (CancelRequested): its submitter
/// stops the process group and records Canceled, which this waits up to `within` for. A run still
/// CancelRequested then has no submitter that listens (it died, or the run only looked submitted): it is
/// marked Canceled here, rather than left active for good. A submitted run already Finalizing has no job left
/// to stop: its end is waited for as it is. Any other run (an interactive one, or a submitted one asked
/// before) is marked Canceled at once.
pub fn cancel_run(client: &Client, id: &RunId, within: Duration) -> Result<Run> {
    let current = client.get_run(id)?;
    let submitted = current
        .properties
        .contains_key(crate::lifecycle::TARGET_PROPERTY);
    let finishing = submitted && current.status == RunStatus::Finalizing;
    let ask =
        submitted && !current.status.is_terminal() && current.status != RunStatus::CancelRequested;
    let mut r = match (finishing, ask) {
        (true, _) => current,
        (false, true) => client.update_run(id, &RunPatch::to_status(RunStatus::CancelRequested))?,
        (false, false) => client.update_run(id, &RunPatch::to_status(RunStatus::Canceled))?,
    };
    let deadline = Instant::now() + within;
    while (ask || finishing) && !r.status.is_terminal() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        r = client.get_run(id)?;
    }
    if ask && r.status == RunStatus::CancelRequested {
        r = client.update_run(id, &RunPatch::to_status(RunStatus::Canceled))?;
    }
    Ok(r)
}
