//! The one error type of flightlog: every failure a caller can see, each variant mapped to an HTTP status and a
//! CLI exit code by an exhaustive `match` in the layer that shows it, so a new variant forces a decision.

use std::fmt;

/// What kind of thing an error is about, so a message can say "run 0123… not found" rather than "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Experiment,
    Run,
    Metric,
    Artifact,
    LogStream,
    Property,
    Param,
    Tag,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Experiment => "experiment",
            Entity::Run => "run",
            Entity::Metric => "metric",
            Entity::Artifact => "artifact",
            Entity::LogStream => "log stream",
            Entity::Property => "property",
            Entity::Param => "param",
            Entity::Tag => "tag",
        })
    }
}

/// Every error flightlog reports. Messages name the problem and, where there is one, the fix.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// The caller sent a value that breaks a rule (bad name, too long, wrong type...).
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },

    /// The thing asked for does not exist.
    #[error("{entity} '{id}' not found")]
    NotFound { entity: Entity, id: String },

    /// A create collided with an existing thing of the same name or id.
    #[error("{entity} '{id}' already exists")]
    AlreadyExists { entity: Entity, id: String },

    /// A write that contradicts what is stored: a property or param rewritten, a metric logged as another kind.
    #[error("{message}")]
    Conflict { message: String },

    /// A run status change the lifecycle does not allow.
    #[error("run status cannot change from {from} to {to}")]
    IllegalTransition { from: String, to: String },

    /// A write to a run or experiment that is deleted (restore it first).
    #[error("{entity} '{id}' is deleted; restore it before writing to it")]
    Deleted { entity: Entity, id: String },

    /// An artifact path that is absolute, has `..`, or would leave the run's storage.
    #[error("invalid artifact path '{path}': {reason}")]
    InvalidPath { path: String, reason: String },

    /// A request body or value bigger than allowed.
    #[error("{what} is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },

    /// The storage layer failed (disk full, corrupt file...). Not the caller's fault.
    #[error("storage error: {0}")]
    Storage(String),

    /// The server could not be reached or answered unexpectedly (client side only).
    #[error("transport error: {0}")]
    Transport(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
    /// An invalid argument said of `field` instead (an id read from `parent_id` is refused as a run id, but
    /// the client sent it as `parent_id`); other errors are kept.
    pub fn for_field(self, field: &str) -> Self {
        match self {
            Error::InvalidArgument { message, .. } => Error::invalid(field, message),
            other => other,
        }
    }
    /// What is wrong, without the field: for a caller that names the field itself (serde's path).
    pub fn reason(self) -> String {
        match self {
            Error::InvalidArgument { message, .. } => message,
            other => other.to_string(),
        }
    }
    pub fn not_found(entity: Entity, id: impl fmt::Display) -> Self {
        Error::NotFound {
            entity,
            id: id.to_string(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }
    pub fn storage(e: impl fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
    /// A stable machine-readable code for the variant, used in API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::Conflict { .. } => "CONFLICT",
            Error::IllegalTransition { .. } => "ILLEGAL_TRANSITION",
            Error::Deleted { .. } => "DELETED",
            Error::InvalidPath { .. } => "INVALID_PATH",
            Error::TooLarge { .. } => "TOO_LARGE",
            Error::Storage(_) => "STORAGE_ERROR",
            Error::Transport(_) => "TRANSPORT_ERROR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            Error::not_found(Entity::Run, "abc").to_string(),
            "run 'abc' not found"
        );
        assert_eq!(
            Error::IllegalTransition {
                from: "Completed".into(),
                to: "Running".into()
            }
            .to_string(),
            "run status cannot change from Completed to Running"
        );
        assert_eq!(
            Error::Deleted {
                entity: Entity::Experiment,
                id: "3".into()
            }
            .to_string(),
            "experiment '3' is deleted; restore it before writing to it"
        );
        assert_eq!(
            Error::invalid("name", "must not be empty").to_string(),
            "invalid name: must not be empty"
        );
    }
}
