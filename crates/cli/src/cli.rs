//! Argument parsing (clap derive) and dispatch.

use crate::{server_cmd, submit_cmd, tensorboard_cmd, CliError, EXIT_CODES};
use clap::{CommandFactory, Parser, Subcommand};
use flightlog_store::embedded::Durability;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "flightlog", version, about = "Self-hosted ML run history: server, runs, metrics, logs, artifacts", after_help = EXIT_CODES)]
pub struct Cli {
    /// URL of the flightlog server.
    #[arg(
        long,
        global = true,
        env = "FLIGHTLOG_TRACKING_URI",
        default_value = "http://127.0.0.1:5000"
    )]
    pub server: String,
    /// Machine-readable output: the API's JSON objects.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the flightlog server (HTTP API and portal) on a data folder.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Data folder (created if missing).
        #[arg(long, env = "FLIGHTLOG_DATA", default_value = "./flightlog-data")]
        data: PathBuf,
        /// When acknowledged writes reach the disk: 'always' syncs every commit before answering (nothing is
        /// lost even on power loss); an interval such as '100ms' answers once the write is in the operating
        /// system and syncs within that interval (a crash of the server loses nothing, power loss at most the
        /// interval).
        #[arg(
            long,
            env = "FLIGHTLOG_FSYNC",
            default_value = "100ms",
            value_name = "always|INTERVAL"
        )]
        fsync: Durability,
        /// Host names (or `name:port`, `*` wildcards, `*` for any) accepted in the Host header beside loopback
        /// and private addresses, `localhost` and the --host address: the names people reach this server by
        /// when it listens on 0.0.0.0. Others are refused, which protects the server from DNS rebinding.
        #[arg(
            long,
            env = "FLIGHTLOG_ALLOWED_HOSTS",
            value_delimiter = ',',
            value_name = "HOSTS"
        )]
        allowed_hosts: Vec<String>,
        /// Origins of web pages that may change data (`https://dash.example`, `*` wildcards, `*` for any);
        /// the portal's own origin and localhost pages always may.
        #[arg(
            long,
            env = "FLIGHTLOG_ALLOWED_ORIGINS",
            value_delimiter = ',',
            value_name = "ORIGINS"
        )]
        allowed_origins: Vec<String>,
        /// Largest artifact upload (`512MiB`, `16GiB`, plain bytes). Uploads stream to disk, so this bounds
        /// disk use per file, not memory.
        #[arg(long, env = "FLIGHTLOG_MAX_ARTIFACT_SIZE", default_value = "16GiB", value_parser = byte_size, value_name = "SIZE")]
        max_artifact_size: usize,
    },
    /// Experiments.
    #[command(subcommand)]
    Experiments(ExperimentsCmd),
    /// Runs.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// A run's metrics: without NAME a table of metrics and their latest values; with NAME every point.
    Metrics {
        run: String,
        name: Option<String>,
        /// Points as CSV (step,time,value for scalars).
        #[arg(long)]
        csv: bool,
    },
    /// A run's logs.
    Logs {
        run: String,
        /// The log stream (default: every stream; stdout first).
        #[arg(long)]
        stream: Option<String>,
        /// Keep printing new output until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// A run's artifacts (files).
    #[command(subcommand)]
    Artifacts(ArtifactsCmd),
    /// Send data spooled while the server was unreachable.
    Sync {
        /// Spool folder (default: FLIGHTLOG_SPOOL or ~/.cache/flightlog/spool).
        #[arg(long)]
        spool: Option<PathBuf>,
        /// Replay every journal to the server it was written for, not only those for --server.
        #[arg(long)]
        all: bool,
    },
    /// Export runs to another tool's format (TensorBoard).
    #[command(subcommand)]
    Export(tensorboard_cmd::ExportCmd),
    /// Import runs from another tool's files (TensorBoard).
    #[command(subcommand)]
    Import(tensorboard_cmd::ImportCmd),
    /// Run a command as a tracked run: snapshot, live stdout/stderr, outputs, outcome.
    Submit(submit_cmd::SubmitArgs),
    /// Show runs in TensorBoard: export them, start `tensorboard` on the export, print its URL; Ctrl-C stops it.
    Tensorboard(tensorboard_cmd::LaunchArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum ExperimentsCmd {
    /// List experiments.
    Ls {
        /// Include deleted experiments.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List runs, newest first.
    Ls {
        /// Experiment name or id.
        #[arg(long, short = 'e')]
        experiment: Option<String>,
        /// Only runs with this status (repeatable).
        #[arg(long, short = 's')]
        status: Vec<String>,
        /// At most this many runs (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show one run: status, times, tags, properties, params, metrics.
    Show { run: String },
    /// Cancel a run (a submitted run is stopped by its submitter: CancelRequested, then Canceled).
    Cancel { run: String },
    /// Wait for a run to end, optionally printing its output; exits 0 Completed, 1 Failed, 130 Canceled.
    Wait(submit_cmd::WaitArgs),
}

#[derive(Subcommand, Debug)]
pub enum ArtifactsCmd {
    /// List a run's files (one level; folders end with '/').
    Ls {
        run: String,
        path: Option<String>,
        /// Every file below, not only one level.
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Upload a local file, or every file below a local folder.
    Put {
        run: String,
        /// The local file or folder.
        local: PathBuf,
        /// Artifact path to upload to (default: the local file's or folder's name).
        dest: Option<String>,
    },
    /// Download a file, or every file below a folder.
    Get {
        run: String,
        path: String,
        /// Where to write (default: the file's name, or the folder's name, in the current folder).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

pub fn run_from_args<I, T>(args: I) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return Err(CliError::new(code, String::new()));
        }
    };
    dispatch(cli)
}

/// Client commands die quietly on a closed pipe (`flightlog metrics RUN x | head`), as Unix tools do. Not the
/// server (a client hanging up mid-response must not kill it), nor the commands that supervise something and
/// must clean up or record an outcome when they end: `submit --show-output | head` would otherwise die
/// without recording its run's outcome (and take the job's output with it), `tensorboard` would leave
/// TensorBoard running, `import --follow` its state unsaved. Their writes to a closed pipe fail and are
/// ignored instead.
fn default_sigpipe() {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    let supervises = matches!(
        cli.command,
        Command::Server { .. } | Command::Submit(_) | Command::Tensorboard(_) | Command::Import(_)
    );
    if !supervises {
        default_sigpipe();
    }
    match cli.command {
        Command::Server {
            host,
            port,
            data,
            fsync,
            allowed_hosts,
            allowed_origins,
            max_artifact_size,
        } => server_cmd::run(server_cmd::ServerArgs {
            host,
            port,
            data,
            durability: fsync,
            max_artifact_size,
            json: cli.json,
            access: flightlog_server::AccessPolicy {
                allowed_hosts,
                allowed_origins,
            },
        }),
        Command::Export(c) => tensorboard_cmd::export(&cli.server, cli.json, c),
        Command::Import(c) => tensorboard_cmd::import(&cli.server, cli.json, c),
        Command::Tensorboard(a) => tensorboard_cmd::launch(&cli.server, cli.json, a),
        Command::Submit(a) => submit_cmd::submit(&cli.server, cli.json, a),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "flightlog", &mut std::io::stdout());
            Ok(())
        }
        _ => crate::commands::run(cli),
    }
}

/// A size in bytes: a whole number with an optional binary unit (`KiB`, `MiB`, `GiB`, `TiB`, or `K`, `M`, `G`,
/// `T`), e.g. `512MiB`.
fn byte_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown unit '{other}': use KiB, MiB, GiB or TiB (e.g. 512MiB)"
            ))
        }
    };
    let n: usize = number.parse().map_err(|_| {
        format!("'{text}' is not a size: give a whole number and a unit, e.g. 16GiB")
    })?;
    n.checked_mul(1usize << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("'{text}' is not a size this server can use (zero, or too large)"))
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_read_with_binary_units() {
        assert_eq!(super::byte_size("512MiB"), Ok(512 << 20));
        assert_eq!(super::byte_size("16G"), Ok(16 << 30));
        assert_eq!(super::byte_size("1000"), Ok(1000));
        assert!(super::byte_size("0").is_err());
        assert!(super::byte_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(super::byte_size("MiB").unwrap_err().contains("not a size"));
    }
}
