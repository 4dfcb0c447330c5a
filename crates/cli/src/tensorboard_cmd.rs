//! `flightlog export tensorboard`, `flightlog import tensorboard` and `flightlog tensorboard`: arguments, dispatch, and the few HTTP
//! calls the bridge makes beyond `flightlog_client` (batches with chosen ids, raw artifact bytes).

use crate::{CliError, EXIT_UNREACHABLE};
use clap::{Args, Subcommand};
use flightlog_client::{Client, ClientConfig};
use flightlog_model::{Batch, BatchAck, Entity, Error, Result, RunId};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ExportCmd {
    /// Write runs as TensorBoard event files: one folder per run (children inside their parent's folder).
    Tensorboard(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run to export (its id).
    #[arg(required_unless_present = "experiment", conflicts_with = "experiment")]
    pub run: Option<String>,
    /// Export every top-level run of this experiment (name or id) instead.
    #[arg(long, short = 'e')]
    pub experiment: Option<String>,
    /// The TensorBoard log folder (created if missing). Event files flightlog wrote there before are replaced.
    #[arg(long)]
    pub logdir: PathBuf,
    /// Leave child runs out.
    #[arg(long)]
    pub no_recursive: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImportCmd {
    /// Turn TensorBoard event files into runs: every folder holding event files becomes a run.
    Tensorboard(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The TensorBoard log folder.
    pub logdir: PathBuf,
    /// The experiment to import into (created if missing; default: Default).
    #[arg(long, short = 'e')]
    pub experiment: Option<String>,
    /// Keep importing what is appended (a script still writing) until Ctrl-C; runs stay Running until then.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Seconds between looks for new data with --follow.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Runs to show (ids).
    #[arg(required_unless_present = "experiment", conflicts_with = "experiment")]
    pub runs: Vec<String>,
    /// Show every top-level run of this experiment (name or id) instead.
    #[arg(long, short = 'e')]
    pub experiment: Option<String>,
    /// Port TensorBoard listens on (0: any free port).
    #[arg(long, default_value_t = 6006)]
    pub port: u16,
    /// Folder to export into (default: a temporary folder, removed on exit).
    #[arg(long)]
    pub logdir: Option<PathBuf>,
    /// Leave child runs out.
    #[arg(long)]
    pub no_recursive: bool,
    /// Seconds between checks for new data while runs are active.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}

/// Set by SIGINT/SIGTERM once [`stop_on_signals`] ran: long-running commands end cleanly.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes Ctrl-C (and SIGTERM) set a flag instead of killing the process, so cleanup runs.
pub(crate) fn stop_on_signals() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub(crate) fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// What both directions share: the client, the output mode, and a plain HTTP agent for the extra calls.
pub(crate) struct Bridge {
    pub client: Client,
    pub json: bool,
    pub server: String,
    agent: ureq::Agent,
}

impl Bridge {
    fn new(server: &str, json: bool) -> Bridge {
        let client = Client::new(ClientConfig {
            uri: server.to_string(),
            replay_on_start: false,
            ..Default::default()
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Bridge {
            server: client.uri().to_string(),
            client,
            json,
            agent,
        }
    }

    /// Sends one batch now; the server stores a `batch_id` once, so a repeated import adds nothing.
    pub fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck> {
        let url = format!("{}/api/v1/runs/{run}/batch", self.server);
        let resp = self
            .agent
            .post(&url)
            .send_json(batch)
            .map_err(|e| Error::Transport(e.to_string()))?;
        let bytes = answer(resp, Entity::Run, run.as_str())?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Transport(e.to_string()))
    }

    /// An artifact's bytes.
    pub fn artifact_bytes(&self, run: &RunId, path: &str) -> Result<Vec<u8>> {
        let url = format!(
            "{}/api/v1/runs/{run}/artifacts/{}",
            self.server,
            encode_path(path)
        );
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| Error::Transport(e.to_string()))?;
        answer(resp, Entity::Artifact, path)
    }

    /// Adds the server URL to transport errors, as the other client commands do.
    fn explain(&self, e: CliError) -> CliError {
        if e.code == EXIT_UNREACHABLE && !e.message.contains(&self.server) {
            CliError {
                message: format!(
                    "cannot reach the flightlog server at {}: {}",
                    self.server, e.message
                ),
                ..e
            }
        } else {
            e
        }
    }
}

/// The body of a successful answer; an error answer as the matching [`Error`] variant.
fn answer(resp: ureq::http::Response<ureq::Body>, entity: Entity, id: &str) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| Error::Transport(e.to_string()))?;
    if status < 300 {
        return Ok(body);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(match status {
        404 => Error::NotFound {
            entity,
            id: id.to_string(),
        },
        409 => Error::Conflict { message },
        400..=499 => Error::invalid("request", message),
        _ => Error::Storage(message),
    })
}

/// Percent-encodes each segment of a '/'-separated path.
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn export(server: &str, json: bool, cmd: ExportCmd) -> std::result::Result<(), CliError> {
    let bridge = Bridge::new(server, json);
    let ExportCmd::Tensorboard(args) = cmd;
    crate::tb_export::run(&bridge, args).map_err(|e| bridge.explain(e))
}

pub fn launch(server: &str, json: bool, args: LaunchArgs) -> std::result::Result<(), CliError> {
    let bridge = Bridge::new(server, json);
    crate::tb_launch::run(&bridge, args).map_err(|e| bridge.explain(e))
}

pub fn import(server: &str, json: bool, cmd: ImportCmd) -> std::result::Result<(), CliError> {
    let bridge = Bridge::new(server, json);
    let ImportCmd::Tensorboard(args) = cmd;
    crate::tb_import::run(&bridge, args).map_err(|e| bridge.explain(e))
}
