//! `ApiError`: every failure a handler can report, rendered as `{"error": {"code", "message"}}` with its status.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flightlog_model::Error;

/// A handler's failure. Store errors keep their variant (so the status follows from it); the few failures that
/// only exist at the HTTP layer (unknown route, wrong method or media type) carry their own status.
#[derive(Debug)]
pub enum ApiError {
    Model(Error),
    Http {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Model(e)
    }
}

impl ApiError {
    /// A 400 naming the offending field or query parameter, the common case for bad input.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Model(Error::invalid(field, message))
    }

    pub fn http(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Http {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Model(e) => status_of(e),
            ApiError::Http { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Model(e) => e.code(),
            ApiError::Http { code, .. } => code,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Model(e) => e.to_string(),
            ApiError::Http { message, .. } => message.clone(),
        }
    }
}

/// The status of each model error. Exhaustive on purpose: a new variant must be given a status here.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        Error::InvalidPath { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } => StatusCode::CONFLICT,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::IllegalTransition { .. } => StatusCode::CONFLICT,
        Error::Deleted { .. } => StatusCode::CONFLICT,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Transport(_) => StatusCode::BAD_GATEWAY,
    }
}

/// The stable code for a status when a response was made by the HTTP layer rather than a handler.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::CONFLICT => "CONFLICT",
        s if s.is_server_error() => "INTERNAL",
        _ => "ERROR",
    }
}

/// The JSON error body; built by hand-free serde so any message is escaped correctly.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    serde_json::to_vec(&body).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "{}", self.message());
        }
        let mut resp = Response::new(Body::from(error_body(self.code(), &self.message())));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::Entity;

    #[test]
    fn statuses_follow_the_contract() {
        let cases = [
            (Error::invalid("name", "x"), 400),
            (
                Error::InvalidPath {
                    path: "../x".into(),
                    reason: "no".into(),
                },
                400,
            ),
            (Error::not_found(Entity::Run, "abc"), 404),
            (
                Error::AlreadyExists {
                    entity: Entity::Experiment,
                    id: "e".into(),
                },
                409,
            ),
            (Error::conflict("c"), 409),
            (
                Error::IllegalTransition {
                    from: "Completed".into(),
                    to: "Running".into(),
                },
                409,
            ),
            (
                Error::Deleted {
                    entity: Entity::Run,
                    id: "r".into(),
                },
                409,
            ),
            (
                Error::TooLarge {
                    what: "body".into(),
                    size: 2,
                    limit: 1,
                },
                413,
            ),
            (Error::Storage("disk".into()), 500),
            (Error::Transport("t".into()), 502),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status().as_u16(), status);
        }
    }

    #[test]
    fn body_names_code_and_message() {
        let e = ApiError::from(Error::not_found(Entity::Run, "abc"));
        let body: serde_json::Value =
            serde_json::from_slice(&error_body(e.code(), &e.message())).unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert_eq!(body["error"]["message"], "run 'abc' not found");
    }
}
