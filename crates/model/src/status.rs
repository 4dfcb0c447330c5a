//! The run lifecycle as a checked state machine: a run may only move forward, terminal states are final, and
//! re-asserting the current status is allowed (so retried requests are harmless).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum RunStatus {
    NotStarted,
    Queued,
    Preparing,
    Running,
    Finalizing,
    CancelRequested,
    Completed,
    Failed,
    Canceled,
}

use RunStatus::*;

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        NotStarted,
        Queued,
        Preparing,
        Running,
        Finalizing,
        CancelRequested,
        Completed,
        Failed,
        Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotStarted => "NotStarted",
            Queued => "Queued",
            Preparing => "Preparing",
            Running => "Running",
            Finalizing => "Finalizing",
            CancelRequested => "CancelRequested",
            Completed => "Completed",
            Failed => "Failed",
            Canceled => "Canceled",
        }
    }

    /// Completed, Failed and Canceled: nothing follows them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Completed | Failed | Canceled)
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: RunStatus) -> bool {
        if self == next {
            return true;
        }
        match self {
            NotStarted => true,
            Queued => matches!(
                next,
                Preparing | Running | CancelRequested | Completed | Failed | Canceled
            ),
            Preparing => matches!(
                next,
                Running | CancelRequested | Completed | Failed | Canceled
            ),
            Running => matches!(
                next,
                Finalizing | CancelRequested | Completed | Failed | Canceled
            ),
            Finalizing => matches!(next, Completed | Failed | Canceled),
            // A process asked to stop may still finish on its own before it is stopped.
            CancelRequested => matches!(next, Finalizing | Canceled | Completed | Failed),
            Completed | Failed | Canceled => false,
        }
    }

    /// `Ok(next)` when allowed, else the `IllegalTransition` error naming both states.
    pub fn transition(self, next: RunStatus) -> Result<RunStatus> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::IllegalTransition {
                from: self.to_string(),
                to: next.to_string(),
            })
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;
    /// Case-insensitive; "Cancelled" is accepted for "Canceled".
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let lower = if lower == "cancelled" {
            "canceled".to_string()
        } else {
            lower
        };
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().to_ascii_lowercase() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                Error::invalid(
                    "status",
                    format!(
                        "'{s}' is not a run status; expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only() {
        assert!(NotStarted.can_become(Running));
        assert!(Queued.can_become(Preparing));
        assert!(Running.can_become(Completed));
        assert!(Running.can_become(Running));
        assert!(!Running.can_become(Queued));
        assert!(!Completed.can_become(Running));
        assert!(!Failed.can_become(Completed));
        assert!(CancelRequested.can_become(Canceled));
        let err = Completed.transition(Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run status cannot change from Completed to Running"
        );
    }

    #[test]
    fn parses_names() {
        assert_eq!("completed".parse::<RunStatus>().unwrap(), Completed);
        assert_eq!("Cancelled".parse::<RunStatus>().unwrap(), Canceled);
        assert!("done"
            .parse::<RunStatus>()
            .unwrap_err()
            .to_string()
            .contains("expected one of NotStarted"));
    }
}
