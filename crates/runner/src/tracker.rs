//! What the lifecycle records a run through: the flightlog client in real use, a recorder in tests.

use crate::sse::SseReader;
use flightlog_client::{Client, ClientConfig};
use flightlog_model::{NewRun, Result, Run, RunId, RunPatch, RunStatus};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a submission's client sends captured output: short, so that a line is on the server within
/// milliseconds of being printed (the default 100 ms suits metrics, not a terminal). Under heavy output the
/// sender sends back to back anyway, in batches as large as what accumulated meanwhile.
pub const OUTPUT_FLUSH_INTERVAL: Duration = Duration::from_millis(5);

/// The client configuration of a submission to `uri`: output sent every [`OUTPUT_FLUSH_INTERVAL`], and no
/// replay of journals left by other processes (that is `flightlog sync`'s job, not a job's submitter's).
pub fn client_config(uri: &str) -> ClientConfig {
    ClientConfig {
        uri: uri.to_string(),
        flush_interval: OUTPUT_FLUSH_INTERVAL,
        replay_on_start: false,
        ..Default::default()
    }
}

/// The control- and data-plane calls a submission needs (a narrow seam, so the lifecycle is testable).
pub trait Tracker: Send + Sync {
    /// The server URL handed to the script.
    fn tracking_uri(&self) -> String;
    fn get_experiment_id(&self, name: &str, create: bool) -> Result<Option<String>>;
    fn create_run(&self, new: &NewRun) -> Result<Run>;
    fn update_run(&self, id: &RunId, patch: &RunPatch) -> Result<Run>;
    /// Queues a change for delivery after everything logged (journaled while the server is away), so a
    /// finished job's outcome is not lost to a network blip. The default sends it now.
    fn update_run_later(&self, id: &RunId, patch: RunPatch) -> Result<()> {
        self.update_run(id, &patch).map(|_| ())
    }
    fn get_run(&self, id: &RunId) -> Result<Run>;
    /// Queues text for a log stream (non-blocking).
    fn log_text(&self, id: &RunId, stream: &str, text: &str) -> Result<()>;
    fn put_file(&self, id: &RunId, path: &str, file: &Path) -> Result<()>;
    fn put_bytes(&self, id: &RunId, path: &str, bytes: &[u8]) -> Result<()>;
    /// Waits until queued text is delivered, `timeout` passes, or the server is found unreachable.
    fn flush(&self, timeout: Duration);
    /// Sets `flag` when the run's status becomes CancelRequested or Canceled (someone else's cancel), until
    /// `stop` is set. The default never does.
    fn watch_cancel(&self, _id: &RunId, _flag: Arc<AtomicBool>, _stop: Arc<AtomicBool>) {}
}

impl Tracker for Arc<Client> {
    fn tracking_uri(&self) -> String {
        self.uri().to_string()
    }

    fn get_experiment_id(&self, name: &str, create: bool) -> Result<Option<String>> {
        let found = if create {
            self.get_or_create_experiment(name)
        } else {
            self.get_experiment_by_name(name)
        };
        match found {
            Ok(e) => Ok(Some(e.id.to_string())),
            Err(flightlog_model::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_run(&self, new: &NewRun) -> Result<Run> {
        Client::create_run(self, new)
    }

    fn update_run(&self, id: &RunId, patch: &RunPatch) -> Result<Run> {
        Client::update_run(self, id, patch)
    }

    fn update_run_later(&self, id: &RunId, patch: RunPatch) -> Result<()> {
        self.update_run_async(id, patch)
    }

    fn get_run(&self, id: &RunId) -> Result<Run> {
        Client::get_run(self, id)
    }

    fn log_text(&self, id: &RunId, stream: &str, text: &str) -> Result<()> {
        self.log_text_to_stream(id, stream, text)
    }

    fn put_file(&self, id: &RunId, path: &str, file: &Path) -> Result<()> {
        self.put_artifact(id, path, file).map(|_| ())
    }

    fn put_bytes(&self, id: &RunId, path: &str, bytes: &[u8]) -> Result<()> {
        self.put_artifact_bytes(id, path, bytes).map(|_| ())
    }

    fn flush(&self, timeout: Duration) {
        // A server that is down is not waited for: what is unsent is journaled and replayed by `sync`.
        let _ = Client::deliver(self, timeout);
    }

    fn watch_cancel(&self, id: &RunId, flag: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
        let client = self.clone();
        let id = id.clone();
        let _ = std::thread::Builder::new()
            .name("flightlog-cancel-watch".into())
            .spawn(move || watch(&client, &id, &flag, &stop));
    }
}

fn wants_cancel(status: RunStatus) -> bool {
    matches!(status, RunStatus::CancelRequested | RunStatus::Canceled)
}

/// Follows the run's status through its experiment's pushed event stream (which carries run updates but no
/// log text: the run's own stream would send every captured line back to this process), reconnecting after
/// the last seen event; checks the status once after each connect, so a cancel that came before the stream
/// opened is not missed.
fn watch(client: &Client, id: &RunId, flag: &AtomicBool, stop: &AtomicBool) {
    let mut after = None;
    let mut experiment = None;
    while !stop.load(Ordering::Relaxed) {
        let exp = match experiment {
            Some(e) => e,
            None => match client.get_run(id) {
                Ok(r) => *experiment.insert(r.experiment_id),
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let reader = client.experiment_events(exp, after);
        if client.get_run(id).is_ok_and(|r| wants_cancel(r.status)) {
            flag.store(true, Ordering::SeqCst);
            return;
        }
        let Ok(reader) = reader else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let mut sse = SseReader::new(reader);
        while let Ok(Some(ev)) = sse.next_event() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if ev.id.is_some() {
                after = ev.id;
            }
            let ours = || ev.json()["run_id"].as_str() == Some(id.as_str());
            if ev.status().is_some_and(wants_cancel) && ours() {
                flag.store(true, Ordering::SeqCst);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
