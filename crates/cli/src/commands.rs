//! Client subcommands (talk to a server through `flightlog_client`).
use crate::cli::Cli;
use crate::CliError;

pub fn run(_cli: Cli) -> Result<(), CliError> {
    Err(CliError::new(1, "not implemented yet"))
}
