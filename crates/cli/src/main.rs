//! The `flightlog` command. See `flightlog --help`; exit codes are documented in [`flightlog_cli::EXIT_CODES`].
fn main() {
    std::process::exit(flightlog_cli::main());
}
