//! The HTTP layer: one keep-alive `ureq` agent, URL building, and the mapping of the API's error bodies back
//! to [`flightlog_model::Error`] variants.

use flightlog_model::{validate, Entity, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::time::Duration;

/// Bytes of a response body read into memory at most (JSON answers; artifacts are streamed instead).
const MAX_JSON_RESPONSE: u64 = 1 << 30;

#[derive(Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
}

/// What a failed request means for a sender that would retry it.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Worth retrying: connection failure, timeout, 5xx, 429.
    Retry(Error),
    /// Retrying cannot help: the server rejected the request (4xx).
    Reject(Error),
}

impl SendError {
    pub fn into_error(self) -> Error {
        match self {
            SendError::Retry(e) | SendError::Reject(e) => e,
        }
    }
}

impl Http {
    pub fn new(uri: &str, request_timeout: Duration) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5).min(request_timeout)))
            .timeout_recv_response(Some(request_timeout))
            .max_idle_connections_per_host(8)
            .user_agent(concat!("flightlog-client/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            base: normalize_uri(uri),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        entity: Entity,
    ) -> Result<T> {
        self.try_get_json(path, query, entity)
            .map_err(SendError::into_error)
    }

    pub fn try_get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        entity: Entity,
    ) -> Result<T, SendError> {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let resp = req.call().map_err(transport)?;
        read_json(resp, entity)
    }

    pub fn get_raw(
        &self,
        path: &str,
        query: &[(&str, String)],
        entity: Entity,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let resp = req.call().map_err(|e| transport(e).into_error())?;
        check(resp, entity).map_err(SendError::into_error)
    }

    pub fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
        entity: Entity,
    ) -> Result<T> {
        self.try_send_json(method, path, body, entity)
            .map_err(SendError::into_error)
    }

    pub fn try_send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
        entity: Entity,
    ) -> Result<T, SendError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| SendError::Reject(Error::invalid("body", e.to_string())))?;
        // Refused here, not sent: the server would close the connection mid-body, which reads as an
        // outage, so the request would be retried for good. Refused, a batch is split and sent in parts.
        if bytes.len() > validate::MAX_REQUEST_JSON_BYTES {
            return Err(SendError::Reject(Error::TooLarge {
                what: "the request body".into(),
                size: bytes.len() as u64,
                limit: validate::MAX_REQUEST_JSON_BYTES as u64,
            }));
        }
        self.try_send_bytes(method, path, &[], &bytes, "application/json", entity)
    }

    pub fn try_send_bytes<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        bytes: &[u8],
        content_type: &str,
        entity: Entity,
    ) -> Result<T, SendError> {
        let url = self.url(path);
        let mut req = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            "PATCH" => self.agent.patch(&url),
            other => unreachable!("method {other}"),
        };
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let resp = req
            .header("Content-Type", content_type)
            .send(bytes)
            .map_err(transport)?;
        read_json(resp, entity)
    }

    /// POSTs a JSON body to a create endpoint and says whether the server created the entity (201) rather
    /// than found it already there (200: an idempotent create with a client-chosen id seen before).
    pub fn create_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        entity: Entity,
    ) -> Result<(T, bool)> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::invalid("body", e.to_string()))?;
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            .map_err(|e| transport(e).into_error())?;
        let created = resp.status() == ureq::http::StatusCode::CREATED;
        let value = read_json(resp, entity).map_err(SendError::into_error)?;
        Ok((value, created))
    }

    /// PUT with a streamed body (artifact upload).
    pub fn put_reader<T: DeserializeOwned>(
        &self,
        path: &str,
        reader: &mut dyn Read,
        len: u64,
        entity: Entity,
    ) -> Result<T> {
        let mut exact = ExactLen {
            inner: reader,
            left: len,
            len,
        };
        let body = ureq::SendBody::from_reader(&mut exact);
        let resp = self
            .agent
            .put(&self.url(path))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string())
            .send(body)
            .map_err(|e| transport(e).into_error())?;
        read_json(resp, entity).map_err(SendError::into_error)
    }

    pub fn delete(&self, path: &str, entity: Entity) -> Result<()> {
        let resp = self
            .agent
            .delete(&self.url(path))
            .call()
            .map_err(|e| transport(e).into_error())?;
        let _: serde_json::Value = read_json(resp, entity).map_err(SendError::into_error)?;
        Ok(())
    }
}

/// `http://host:port` without a trailing slash; a scheme is added if missing.
pub fn normalize_uri(uri: &str) -> String {
    let uri = uri.trim();
    let uri = if uri.contains("://") {
        uri.to_string()
    } else {
        format!("http://{uri}")
    };
    uri.trim_end_matches('/').to_string()
}

/// A body of exactly the length declared in its Content-Length: a file that grows while it uploads is cut
/// there, and one that shrinks (a log rotated, a checkpoint rewritten) ends the upload with an error. An early
/// end of the reader otherwise left the HTTP layer waiting for bytes that never came, spinning for good.
struct ExactLen<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    len: u64,
}

impl Read for ExactLen<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let room = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while it was uploaded ({} of {} bytes read); upload it again",
                    self.len - self.left,
                    self.len
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn transport(e: ureq::Error) -> SendError {
    SendError::Retry(Error::Transport(match &e {
        ureq::Error::Io(io) => format!("cannot reach the server: {io}"),
        ureq::Error::ConnectionFailed => "cannot reach the server: connection failed".to_string(),
        ureq::Error::HostNotFound => "cannot reach the server: host not found".to_string(),
        ureq::Error::Timeout(t) => format!("the server did not answer in time ({t})"),
        other => other.to_string(),
    }))
}

fn check(
    resp: ureq::http::Response<ureq::Body>,
    entity: Entity,
) -> Result<ureq::http::Response<ureq::Body>, SendError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let mut body = resp.into_body();
    let text = body
        .with_config()
        .limit(1 << 20)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let err = error_from_body(status, &text, entity);
    if retryable(status) {
        Err(SendError::Retry(err))
    } else {
        Err(SendError::Reject(err))
    }
}

/// Whether a request refused with `status` may succeed later unchanged: server failures, rate limits, time-outs,
/// and 403, which the server answers only when its Host check refuses the name the client reaches it by (no
/// API refuses data with it). That is the server's configuration (`--allowed-hosts`), not the data, so what
/// was logged stays in the spool until the server accepts it rather than being dropped.
fn retryable(status: u16) -> bool {
    status >= 500 || matches!(status, 403 | 408 | 429)
}

fn read_json<T: DeserializeOwned>(
    resp: ureq::http::Response<ureq::Body>,
    entity: Entity,
) -> Result<T, SendError> {
    let resp = check(resp, entity)?;
    let mut body = resp.into_body();
    let bytes = body
        .with_config()
        .limit(MAX_JSON_RESPONSE)
        .read_to_vec()
        .map_err(|e| {
            SendError::Retry(Error::Transport(format!(
                "reading the server's answer failed: {e}"
            )))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        SendError::Reject(Error::Transport(format!(
            "the server's answer is not what this client expects ({e}); is the server a flightlog server of the same version?"
        )))
    })
}

/// Maps an API error body `{"error":{"code","message"}}` back to the variant it was made from, keeping the
/// server's message (the variants' messages are parsed back into their fields).
pub(crate) fn error_from_body(status: u16, body: &str, entity: Entity) -> Error {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Wrapper>(body) {
        Ok(w) => error_from_code(&w.error.code, &w.error.message, entity),
        // Not the API's envelope: something else answered (a proxy, another web server on that port). Its
        // 404 or 400 says nothing about the run or the data, so it is not reported as if the API had said it.
        Err(_) => {
            let first = body
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            let first = &first[..first.floor_char_boundary_compat(120)];
            let msg = if first.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {first}")
            };
            match status {
                413 => Error::TooLarge {
                    what: "request".into(),
                    size: 0,
                    limit: 0,
                },
                _ => Error::Transport(format!(
                    "unexpected answer from the server ({msg}); is it a flightlog server?"
                )),
            }
        }
    }
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

fn parse_entity(s: &str) -> Option<Entity> {
    Some(match s {
        "experiment" => Entity::Experiment,
        "run" => Entity::Run,
        "metric" => Entity::Metric,
        "artifact" => Entity::Artifact,
        "log stream" => Entity::LogStream,
        "property" => Entity::Property,
        "param" => Entity::Param,
        "tag" => Entity::Tag,
        _ => return None,
    })
}

/// "<entity> '<id>'<suffix>" → (entity, id).
fn parse_entity_id(msg: &str, suffix: &str) -> Option<(Entity, String)> {
    let rest = msg.strip_suffix(suffix)?;
    let q = rest.find(" '")?;
    let entity = parse_entity(&rest[..q])?;
    let id = rest[q + 2..].strip_suffix('\'')?;
    Some((entity, id.to_string()))
}

pub(crate) fn error_from_code(code: &str, message: &str, entity: Entity) -> Error {
    let msg = message.to_string();
    match code {
        "NOT_FOUND" => match parse_entity_id(message, " not found") {
            Some((entity, id)) => Error::NotFound { entity, id },
            None => Error::NotFound { entity, id: msg },
        },
        "ALREADY_EXISTS" => match parse_entity_id(message, " already exists") {
            Some((entity, id)) => Error::AlreadyExists { entity, id },
            None => Error::AlreadyExists { entity, id: msg },
        },
        "DELETED" => match parse_entity_id(message, " is deleted; restore it before writing to it")
        {
            Some((entity, id)) => Error::Deleted { entity, id },
            None => Error::Deleted { entity, id: msg },
        },
        "INVALID_ARGUMENT" => match message
            .strip_prefix("invalid ")
            .and_then(|r| r.split_once(": "))
        {
            Some((field, m)) => Error::invalid(field, m),
            None => Error::invalid("request", msg),
        },
        "CONFLICT" => Error::conflict(msg),
        "ILLEGAL_TRANSITION" => {
            match message
                .strip_prefix("run status cannot change from ")
                .and_then(|r| r.split_once(" to "))
            {
                Some((from, to)) => Error::IllegalTransition {
                    from: from.into(),
                    to: to.into(),
                },
                None => Error::IllegalTransition {
                    from: "?".into(),
                    to: msg,
                },
            }
        }
        "INVALID_PATH" => {
            let parsed = message
                .strip_prefix("invalid artifact path '")
                .and_then(|r| r.rsplit_once("': "));
            match parsed {
                Some((path, reason)) => Error::InvalidPath {
                    path: path.into(),
                    reason: reason.into(),
                },
                None => Error::InvalidPath {
                    path: String::new(),
                    reason: msg,
                },
            }
        }
        "TOO_LARGE" => parse_too_large(message).unwrap_or(Error::TooLarge {
            what: msg,
            size: 0,
            limit: 0,
        }),
        "STORAGE_ERROR" => Error::Storage(
            message
                .strip_prefix("storage error: ")
                .unwrap_or(message)
                .to_string(),
        ),
        "TRANSPORT_ERROR" => Error::Transport(
            message
                .strip_prefix("transport error: ")
                .unwrap_or(message)
                .to_string(),
        ),
        _ => Error::Transport(format!("server error {code}: {message}")),
    }
}

fn parse_too_large(message: &str) -> Option<Error> {
    let (what, rest) = message.split_once(" is too large: ")?;
    let (size, rest) = rest.split_once(" bytes, the limit is ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(Error::TooLarge {
        what: what.into(),
        size: size.parse().ok()?,
        limit: limit.parse().ok()?,
    })
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a '/'-separated path, keeping the slashes (wildcard routes: metric names, artifact paths).
pub fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_map_back_to_variants() {
        let cases = vec![
            Error::not_found(Entity::Run, "0123"),
            Error::AlreadyExists {
                entity: Entity::Experiment,
                id: "exp 1".into(),
            },
            Error::invalid("metric", "must not be empty"),
            Error::conflict("metric 'loss' is a scalar, not text"),
            Error::IllegalTransition {
                from: "Completed".into(),
                to: "Running".into(),
            },
            Error::Deleted {
                entity: Entity::Run,
                id: "ab".into(),
            },
            Error::InvalidPath {
                path: "../x".into(),
                reason: "'..' is not allowed".into(),
            },
            Error::TooLarge {
                what: "body".into(),
                size: 10,
                limit: 5,
            },
            Error::Storage("disk full".into()),
        ];
        for e in cases {
            let body = serde_json::json!({"error": {"code": e.code(), "message": e.to_string()}})
                .to_string();
            let back = error_from_body(400, &body, Entity::Metric);
            assert_eq!(back, e, "{body}");
            assert_eq!(back.to_string(), e.to_string());
        }
        let e = error_from_body(
            404,
            r#"{"error":{"code":"NOT_FOUND","message":"no such endpoint: GET /x"}}"#,
            Entity::Run,
        );
        assert!(matches!(e, Error::NotFound { .. }));
        assert!(matches!(
            error_from_body(502, "Bad gateway", Entity::Run),
            Error::Transport(_)
        ));
        // Another web server's 404 page is not a missing run: the message names the answer's first line.
        let html = "<!DOCTYPE HTML>\n<html><head>\n<title>Error response</title>".repeat(20);
        let e = error_from_body(404, &html, Entity::Run);
        assert_eq!(
            e.to_string(),
            "transport error: unexpected answer from the server (HTTP 404: <!DOCTYPE HTML>); is it a flightlog server?"
        );
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path("train/loss é"), "train/loss%20%C3%A9");
        assert_eq!(normalize_uri("localhost:5000/"), "http://localhost:5000");
    }

    #[test]
    fn refusals_of_the_servers_configuration_are_retried_and_of_the_data_are_not() {
        for status in [403, 408, 429, 500, 503] {
            assert!(retryable(status), "{status}");
        }
        for status in [400, 404, 409, 413, 422] {
            assert!(!retryable(status), "{status}");
        }
    }
}
