//! `flightlog submit` (a command as a tracked run) and `flightlog runs wait` (attach to a run until it ends).

use crate::{CliError, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_USAGE};
use flightlog_client::Client;
use flightlog_model::{Run, RunId, RunStatus};
use flightlog_runner::lifecycle::{EXIT_CANCELED, EXIT_TIMEOUT};
use flightlog_runner::{
    capture, signals, sweep, sweep::ChildOutcome, wait, Finished, LocalProcess, RunnerError,
    Submission,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Exit codes of `flightlog submit`, shown in its help.
pub const SUBMIT_EXIT_CODES: &str = "\
Exit code: the command's own exit code (128+N if it was killed by signal N); 124 when --timeout stopped it;
130 when it was canceled (Ctrl-C, SIGTERM, `flightlog runs cancel`); 126/127 when it could not be executed.
Before the run exists: 2 no command, 3 unknown experiment (--no-create), 4 bad source dir or too large a
snapshot, 5 server unreachable.";

/// Exit codes of `flightlog runs wait`, shown in its help.
pub const WAIT_EXIT_CODES: &str = "\
Exit code: 0 Completed, 1 Failed, 130 Canceled; 3 unknown run, 5 server unreachable (for over a minute).";

#[derive(clap::Args, Debug)]
#[command(after_help = SUBMIT_EXIT_CODES)]
pub struct SubmitArgs {
    /// Experiment name (created if missing, unless --no-create); default: the Default experiment.
    #[arg(long, short = 'e')]
    pub experiment: Option<String>,
    /// Display name of the run.
    #[arg(long)]
    pub name: Option<String>,
    /// Folder snapshotted into the run's artifacts (`snapshot/`) and the command's working directory.
    #[arg(long, default_value = ".")]
    pub source_dir: PathBuf,
    /// A tag for the run, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Also print the command's stdout and stderr here as they come.
    #[arg(long)]
    pub show_output: bool,
    /// Stop the command after this many seconds; the run is Failed (timed out).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when the command is stopped.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub grace: f64,
    /// Fail if the experiment does not exist instead of creating it.
    #[arg(long)]
    pub no_create: bool,
    /// Run one child per combination of values, NAME=V1,V2,... (repeatable); `{NAME}` in the command is
    /// replaced by the value. The parent run fails if any child fails.
    #[arg(long = "sweep", value_name = "NAME=V1,V2,...")]
    pub sweeps: Vec<String>,
    /// How many children of a sweep run at once.
    #[arg(long, default_value_t = 1, requires = "sweeps", value_parser = at_least_one)]
    pub parallel: usize,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = WAIT_EXIT_CODES)]
pub struct WaitArgs {
    pub run: String,
    /// Print the run's stdout and stderr (all of it, then live) while waiting.
    #[arg(long)]
    pub show_output: bool,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn seconds(what: &str, s: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        CliError::new(
            EXIT_USAGE,
            format!("--{what} must be a number of seconds ≥ 0, not {s}"),
        )
    })
}

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::new(
                EXIT_USAGE,
                format!("--tag '{t}' is not KEY=VALUE"),
            )),
        })
        .collect()
}

fn submission(a: SubmitArgs) -> Result<Submission, CliError> {
    let a = SubmitArgs {
        sweeps: Vec::new(),
        ..a
    };
    let mut s = Submission::new(a.command);
    s.experiment = a.experiment;
    s.create_experiment = !a.no_create;
    s.display_name = a.name;
    s.source_dir = a.source_dir;
    s.tags = parse_tags(&a.tags)?;
    s.show_output = a.show_output;
    s.timeout = match a.timeout {
        Some(t) if t <= 0.0 => {
            return Err(CliError::new(
                EXIT_USAGE,
                format!(
                    "--timeout must be more than 0 seconds (leave it out for no limit), not {t}"
                ),
            ))
        }
        t => t.map(|t| seconds("timeout", t)).transpose()?,
    };
    s.grace = seconds("grace", a.grace)?;
    Ok(s)
}

fn runner_error(e: RunnerError) -> CliError {
    let code = match &e {
        RunnerError::NoCommand => EXIT_USAGE,
        RunnerError::UnknownExperiment(_) => EXIT_NOT_FOUND,
        RunnerError::BadSweep(_) => EXIT_USAGE,
        RunnerError::SourceDir { .. }
        | RunnerError::SnapshotTooLarge { .. }
        | RunnerError::SnapshotName { .. } => EXIT_INVALID,
        RunnerError::Model(m) => return CliError::from(m.clone()),
    };
    CliError::new(code, e.to_string())
}

/// `eprintln!` that does not panic when stderr is gone (a closed terminal after SIGHUP): the run's outcome is
/// recorded by then, and a panic would only change the exit code.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `flightlog submit`: exits with the command's exit code (see [`SUBMIT_EXIT_CODES`]).
pub fn submit(server: &str, json: bool, args: SubmitArgs) -> Result<(), CliError> {
    let axes = args
        .sweeps
        .iter()
        .map(|s| sweep::parse_axis(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(runner_error)?;
    let parallel = args.parallel;
    let sub = submission(args)?;
    let client = Arc::new(Client::new(flightlog_runner::tracker::client_config(
        server,
    )));
    crate::server_cmd::init_warnings();
    signals::install(false);
    // The runner's errors say what failed; a server that cannot be reached is named, as other commands do.
    let failed = |e| crate::commands::explain_unreachable(server, runner_error(e));
    if !axes.is_empty() {
        return submit_sweep(client, json, &sub, &axes, parallel, &failed);
    }
    let mut announce = |r: &Run| announce(r);
    let finished =
        flightlog_runner::submit(Arc::new(client.clone()), &LocalProcess, &sub, &mut announce)
            .map_err(failed)?;
    let unsent = unsent_entries(&client);
    report(&finished, json, unsent)?;
    match finished.exit_code {
        0 => Ok(()),
        code => Err(CliError::new(code, String::new())),
    }
}

fn announce(r: &Run) {
    match &r.parent_id {
        None => say!("flightlog: run {} submitted ({})", r.id, r.status),
        Some(p) => say!(
            "flightlog: run {} submitted ({}, child of {p}: {})",
            r.id,
            r.status,
            r.display_name
        ),
    }
}

fn submit_sweep(
    client: Arc<Client>,
    json: bool,
    sub: &Submission,
    axes: &[sweep::Axis],
    parallel: usize,
    failed: &dyn Fn(RunnerError) -> CliError,
) -> Result<(), CliError> {
    let outcome = sweep::run_sweep(
        Arc::new(client.clone()),
        &LocalProcess,
        sub,
        axes,
        parallel,
        &announce,
    )
    .map_err(failed)?;
    let unsent = unsent_entries(&client);
    if json {
        let v = serde_json::json!({
            "run_id": outcome.parent.run_id, "status": outcome.parent.status,
            "exit_code": outcome.parent.exit_code, "unsent_entries": unsent,
            "children": outcome.children.iter().map(|c| match c {
                ChildOutcome::Ran(f) => serde_json::json!({"run_id": f.run_id, "status": f.status, "exit_code": f.exit_code}),
                ChildOutcome::NotStarted | ChildOutcome::Failed(_) => serde_json::json!({"error": c.error()}),
            }).collect::<Vec<_>>(),
        });
        let _ = writeln!(std::io::stdout(), "{v}");
    } else {
        let _ = write!(std::io::stderr(), "{}", outcome.summary);
        report(&outcome.parent, false, unsent)?;
    }
    match outcome.parent.exit_code {
        0 => Ok(()),
        code => Err(CliError::new(code, String::new())),
    }
}

/// Closes the client and says how many entries (output, the outcome) the server has not taken: they stay in
/// the local spool until `flightlog sync` sends them.
fn unsent_entries(client: &Client) -> u64 {
    client.deliver(Duration::from_secs(10));
    match client.close(Duration::ZERO) {
        Ok(r) if r.complete => 0,
        Ok(r) => r.spooled_entries.max(1),
        Err(_) => 1,
    }
}

fn report(f: &Finished, json: bool, unsent: u64) -> Result<(), CliError> {
    if json {
        let v = serde_json::json!({
            "run_id": f.run_id, "status": f.status, "exit_code": f.exit_code, "error": f.error,
            "unsent_entries": unsent,
        });
        let _ = writeln!(std::io::stdout(), "{v}");
        return Ok(());
    }
    let how = match f.exit_code {
        EXIT_TIMEOUT if f.status == RunStatus::Failed => "timed out".to_string(),
        code => format!("exit code {code}"),
    };
    say!("flightlog: run {} {} ({how})", f.run_id, f.status);
    if let Some(e) = &f.error {
        say!("flightlog: {}", e.message);
    }
    if unsent > 0 {
        say!(
            "flightlog: the server has not recorded all of this yet ({unsent} entries of output or \
             outcome wait in the local spool): run `flightlog sync` once it is reachable"
        );
    }
    Ok(())
}

/// `flightlog runs wait`: follows the run's event stream until it ends; exits 0/1/130 by outcome.
pub fn wait(client: &Client, json: bool, args: WaitArgs) -> Result<(), CliError> {
    let id: RunId = args.run.trim().parse()?;
    let mut out = |stream: &str, text: &str| {
        if args.show_output {
            print_output(stream, text);
        }
    };
    let run = wait::wait_for_run(client, &id, &mut out)?;
    if json {
        crate::output::print_json(&run)?;
    } else {
        say!("flightlog: run {} {}", run.id, run.status);
        if let Some(e) = &run.error {
            say!("flightlog: {}", e.message);
        }
    }
    match run.status {
        RunStatus::Completed => Ok(()),
        RunStatus::Canceled => Err(CliError::new(EXIT_CANCELED, String::new())),
        _ => Err(CliError::new(crate::EXIT_ERROR, String::new())),
    }
}

/// Prints stored lines without their time stamps, stdout to stdout and anything else to stderr.
fn print_output(stream: &str, text: &str) {
    let plain = capture::strip_stamps(text);
    let _ = if stream == "stdout" {
        let mut o = std::io::stdout().lock();
        o.write_all(plain.as_bytes()).and_then(|_| o.flush())
    } else {
        std::io::stderr().lock().write_all(plain.as_bytes())
    };
}
