//! The `flightlog` command (placeholder until the CLI lands).
fn main() {}
