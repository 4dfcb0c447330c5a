//! What can stop a submission before (or instead of) a run outcome.

use thiserror::Error;

/// Errors of a submission. Bad input is reported before any process starts; a command that starts and
/// fails is not an error here but a Failed run (see [`crate::Finished`]).
#[derive(Debug, Error)]
pub enum RunnerError {
    #[error("no command given: put it after `--`, e.g. `flightlog submit -- python train.py`")]
    NoCommand,
    #[error("cannot read the source directory '{path}': {reason}")]
    SourceDir { path: String, reason: String },
    #[error("experiment '{0}' does not exist (and --no-create forbids creating it)")]
    UnknownExperiment(String),
    #[error("the snapshot of '{dir}' is too large: {what}; biggest: {offenders}. List what the run does not need in .flightlogignore (or .gitignore)")]
    SnapshotTooLarge {
        dir: String,
        what: String,
        offenders: String,
    },
    #[error(
        "the snapshot cannot hold '{path}': {reason}. Rename it, or list it in .flightlogignore"
    )]
    SnapshotName { path: String, reason: String },
    #[error("bad --sweep: {0}")]
    BadSweep(String),
    #[error(transparent)]
    Model(#[from] flightlog_model::Error),
}

impl RunnerError {
    /// Bad input from the user (as opposed to a server or network failure).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, RunnerError::Model(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert!(RunnerError::NoCommand.to_string().contains("after `--`"));
        let e = RunnerError::UnknownExperiment("x".into());
        assert_eq!(
            e.to_string(),
            "experiment 'x' does not exist (and --no-create forbids creating it)"
        );
        assert!(e.is_bad_input());
    }
}
