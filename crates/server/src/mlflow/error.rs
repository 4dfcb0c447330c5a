//! MLflow error bodies `{"error_code", "message"}` with the HTTP status MLflow's own server gives each code.

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flightlog_model::Error;

/// A failure as an MLflow client expects it. Only `INTERNAL_ERROR` and `TEMPORARILY_UNAVAILABLE` are 5xx:
/// the client retries 5xx, so a deterministic rejection must never be one.
#[derive(Debug, Clone, PartialEq)]
pub struct MlError {
    pub code: &'static str,
    pub message: String,
}

pub type MlResult<T> = Result<T, MlError>;

impl MlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        MlError {
            code,
            message: message.into(),
        }
    }
    /// 400 INVALID_PARAMETER_VALUE, the common case for bad input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("INVALID_PARAMETER_VALUE", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("RESOURCE_DOES_NOT_EXIST", message)
    }
    /// A required field that is absent, worded as MLflow words it.
    pub fn missing(field: &str) -> Self {
        Self::invalid(format!("Missing value for required parameter '{field}'."))
    }
    /// A required text field: MLflow's server reads an empty one as absent (proto3 leaves no difference).
    pub fn required(value: Option<String>, field: &str) -> MlResult<String> {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Self::missing(field))
    }
    pub fn status(&self) -> StatusCode {
        status_of_code(self.code)
    }
}

/// The status table of the MLflow REST contract.
pub fn status_of_code(code: &str) -> StatusCode {
    match code {
        "INVALID_PARAMETER_VALUE" | "RESOURCE_ALREADY_EXISTS" | "BAD_REQUEST" => {
            StatusCode::BAD_REQUEST
        }
        "RESOURCE_DOES_NOT_EXIST" | "ENDPOINT_NOT_FOUND" => StatusCode::NOT_FOUND,
        "METHOD_NOT_ALLOWED" => StatusCode::METHOD_NOT_ALLOWED,
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        "ABORTED" | "ALREADY_EXISTS" | "RESOURCE_CONFLICT" => StatusCode::CONFLICT,
        "REQUEST_LIMIT_EXCEEDED" | "RESOURCE_EXHAUSTED" => StatusCode::TOO_MANY_REQUESTS,
        "NOT_IMPLEMENTED" => StatusCode::NOT_IMPLEMENTED,
        "TEMPORARILY_UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The MLflow code of each flightlog error. Exhaustive on purpose: a new variant must be given a code here.
/// Conflicts, illegal transitions, deleted targets and oversized values are the caller's mistakes (400), as
/// in MLflow; only storage trouble is a 500.
pub fn code_of(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument { .. } => "INVALID_PARAMETER_VALUE",
        Error::InvalidPath { .. } => "INVALID_PARAMETER_VALUE",
        Error::NotFound { .. } => "RESOURCE_DOES_NOT_EXIST",
        Error::AlreadyExists { .. } => "RESOURCE_ALREADY_EXISTS",
        Error::Conflict { .. } => "INVALID_PARAMETER_VALUE",
        Error::IllegalTransition { .. } => "INVALID_PARAMETER_VALUE",
        Error::Deleted { .. } => "INVALID_PARAMETER_VALUE",
        Error::TooLarge { .. } => "INVALID_PARAMETER_VALUE",
        Error::Storage(_) => "INTERNAL_ERROR",
        Error::Transport(_) => "TEMPORARILY_UNAVAILABLE",
    }
}

impl From<Error> for MlError {
    fn from(e: Error) -> Self {
        MlError::new(code_of(&e), e.to_string())
    }
}

/// Native request-plumbing errors (body too large, bad JSON, wrong media type) become MLflow errors; none of
/// them is worth a retry, so all are 400s but a server too busy to take the body (503, retried) and storage
/// failures.
impl From<ApiError> for MlError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Model(m) => m.into(),
            ApiError::Http {
                status, message, ..
            } => {
                let code = match status {
                    StatusCode::SERVICE_UNAVAILABLE => "TEMPORARILY_UNAVAILABLE",
                    s if s.is_server_error() => "INTERNAL_ERROR",
                    _ => "BAD_REQUEST",
                };
                MlError::new(code, message)
            }
        }
    }
}

impl IntoResponse for MlError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "{}", self.message);
        }
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::Entity;

    #[test]
    fn codes_and_statuses_follow_mlflow() {
        let cases = [
            (Error::invalid("key", "x"), "INVALID_PARAMETER_VALUE", 400),
            (
                Error::not_found(Entity::Run, "a"),
                "RESOURCE_DOES_NOT_EXIST",
                404,
            ),
            (
                Error::AlreadyExists {
                    entity: Entity::Experiment,
                    id: "e".into(),
                },
                "RESOURCE_ALREADY_EXISTS",
                400,
            ),
            (Error::conflict("param"), "INVALID_PARAMETER_VALUE", 400),
            (
                Error::Deleted {
                    entity: Entity::Run,
                    id: "r".into(),
                },
                "INVALID_PARAMETER_VALUE",
                400,
            ),
            (Error::Storage("disk".into()), "INTERNAL_ERROR", 500),
            (Error::Transport("t".into()), "TEMPORARILY_UNAVAILABLE", 503),
        ];
        for (e, code, status) in cases {
            let m = MlError::from(e);
            assert_eq!((m.code, m.status().as_u16()), (code, status));
        }
        assert_eq!(status_of_code("ENDPOINT_NOT_FOUND").as_u16(), 404);
        assert_eq!(status_of_code("RESOURCE_CONFLICT").as_u16(), 409);
    }
}
