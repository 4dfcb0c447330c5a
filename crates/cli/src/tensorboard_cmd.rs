//! `flightlog export tensorboard`, `flightlog import tensorboard` and `flightlog tensorboard`: arguments, dispatch, and the few HTTP
//! calls the bridge makes beyond `flightlog_client` (batches with chosen ids, raw artifact bytes).

use crate::CliError;
use clap::{Args, Subcommand};
use flightlog_client::{Client, ClientConfig};
use flightlog_model::{Batch, BatchAck, Result, RunId};
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
    /// Seconds between looks for new data with --follow (0.05 to 3600).
    #[arg(long, default_value_t = 1.0, value_parser = follow_interval, requires = "follow")]
    pub interval: f64,
}

/// `--interval`: a number of seconds clap accepts as f64 but that NaN or a value out of range would make
/// unusable (NaN panicked when turned into a pause).
fn follow_interval(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds from 0.05 to 3600"
        )),
    }
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

/// Makes Ctrl-C, SIGTERM and SIGHUP ask for a clean stop (TensorBoard stopped, its temp folder removed, import
/// state saved) instead of killing the process; a second one quits at once, since the clean stop may be waiting
/// on a hung server.
pub(crate) fn stop_on_signals() {
    flightlog_runner::signals::install(true);
}

pub(crate) fn stop_requested() -> bool {
    flightlog_runner::signals::requested()
}

/// What both directions share: the client and the output mode.
pub(crate) struct Bridge {
    pub client: Client,
    pub json: bool,
    pub server: String,
}

impl Bridge {
    fn new(server: &str, json: bool) -> Bridge {
        let client = Client::new(ClientConfig {
            uri: server.to_string(),
            replay_on_start: false,
            // Import batches and image artifacts can be large (the wait counts from the whole body sent, so
            // this is the server's time to store one); a hung server is given up on within a minute.
            request_timeout: Duration::from_secs(60),
            ..Default::default()
        });
        Bridge {
            server: client.uri().to_string(),
            client,
            json,
        }
    }

    /// Sends one batch now; the server stores a `batch_id` once, so a repeated import adds nothing.
    pub fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck> {
        self.client.write_batch(run, batch)
    }

    /// An artifact's bytes.
    pub fn artifact_bytes(&self, run: &RunId, path: &str) -> Result<Vec<u8>> {
        self.client.read_artifact(run, path)
    }

    /// Adds the server URL to transport errors, as the other client commands do.
    fn explain(&self, e: CliError) -> CliError {
        crate::commands::explain_unreachable(&self.server, e)
    }
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
