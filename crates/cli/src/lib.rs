//! The `flightlog` command line: the server, and a client for runs, metrics, logs, artifacts and the offline
//! spool.
//!
//! Exit codes (also in `flightlog --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | generic or server-side error (storage failure...) |
//! | 2 | usage error (bad arguments; printed by clap) |
//! | 3 | not found (run, experiment, metric, artifact...) |
//! | 4 | invalid input or conflict (bad name, illegal status change, already exists...) |
//! | 5 | cannot reach the server |

pub mod cli;
pub mod commands;
pub mod output;
pub mod server_cmd;
pub mod submit_cmd;
pub mod tb_export;
pub mod tb_import;
pub mod tb_launch;
pub mod tensorboard_cmd;

use std::fmt;

/// The exit codes, as shown at the end of `flightlog --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  generic or server-side error
  2  usage error (bad arguments)
  3  not found (run, experiment, metric, artifact...)
  4  invalid input or conflict (bad name, illegal status change, already exists...)
  5  cannot reach the server

Environment:
  FLIGHTLOG_TRACKING_URI  server URL (default http://127.0.0.1:5000)
  FLIGHTLOG_DATA          data folder of `flightlog server`
  FLIGHTLOG_SPOOL         folder of the offline journal (default ~/.cache/flightlog/spool)
  RUST_LOG                log filter of `flightlog server` (stderr)";

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_INVALID: i32 = 4;
pub const EXIT_UNREACHABLE: i32 = 5;

/// An error to show the user: a message, maybe a hint, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(code: i32, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit code and hint of each error variant (an exhaustive match: a new variant forces a decision).
pub fn exit_code(e: &flightlog_model::Error) -> (i32, Option<&'static str>) {
    use flightlog_model::Error::*;
    match e {
        NotFound { .. } => (
            EXIT_NOT_FOUND,
            Some("check the id or name (`flightlog runs ls`, `flightlog experiments ls`)"),
        ),
        InvalidArgument { .. } | InvalidPath { .. } | TooLarge { .. } => (EXIT_INVALID, None),
        AlreadyExists { .. } | Conflict { .. } | IllegalTransition { .. } | Deleted { .. } => {
            (EXIT_INVALID, None)
        }
        Storage(_) => (
            EXIT_ERROR,
            Some("the server failed to read or write its data; see its log"),
        ),
        Transport(_) => (
            EXIT_UNREACHABLE,
            Some("is `flightlog server` running? set --server or FLIGHTLOG_TRACKING_URI"),
        ),
    }
}

impl From<flightlog_model::Error> for CliError {
    fn from(e: flightlog_model::Error) -> Self {
        let (code, hint) = exit_code(&e);
        CliError {
            code,
            message: e.to_string(),
            hint: hint.map(str::to_string),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // `flightlog ... | head`: not an error worth a message.
            return CliError::new(0, String::new());
        }
        CliError::new(EXIT_ERROR, e.to_string())
    }
}

/// Parses the arguments, runs the command, prints any error, and returns the exit code.
pub fn main() -> i32 {
    let code = match cli::run_from_args(std::env::args_os()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
                if let Some(hint) = &e.hint {
                    eprintln!("hint: {hint}");
                }
            }
            e.code
        }
    };
    code
}
