//! Request plumbing shared by the handlers: JSON bodies with field-path errors, query strings with repeated
//! keys, id parsing, and the bridge from async handlers to the synchronous store.

use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use flightlog_model::{Batch, BatchAck, Error, ExperimentId, RunId};
use flightlog_store::Store;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::num::IntErrorKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A JSON request body. Unlike `axum::Json`, every rejection is a JSON error: a body that does not parse names
/// the field path that failed (`scalars[0].values[2]`), a non-JSON content type is a 415, an oversized body 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = json_bytes(req, state).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// The raw bytes of a JSON body, after the content-type check; for handlers that parse off the async runtime.
pub async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    check_json_content_type(req.headers())?;
    body_bytes(req, state).await
}

/// The whole body, with the body limit's rejection turned into a JSON 413, and a body the client stops
/// sending ([`BODY_STALL`]) or breaks off a 400.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    body_bytes_within(&BUFFERED_BODIES, req, state).await
}

/// [`body_bytes`], the body's bytes counted against `budget` (in KiB) for as long as they are held.
async fn body_bytes_within<S: Send + Sync>(
    budget: &'static Semaphore,
    req: Request,
    state: &S,
) -> ApiResult<Bytes> {
    let (parts, body) = req.into_parts();
    let limit = parts.extensions.get::<BodyLimit>().copied();
    let held = Arc::new(Mutex::new(None));
    let body = Body::from_stream(budgeted(body_chunks(body), budget, held.clone()));
    let req = Request::from_parts(parts, body);
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|rejection| rejection_error(rejection, limit))?;
    let permit = held.lock().ok().and_then(|mut held| held.take());
    Ok(match permit {
        // The budget is given back when the last reference to the bytes goes.
        Some(permit) => Bytes::from_owner(Budgeted {
            bytes,
            _permit: permit,
        }),
        None => bytes,
    })
}

/// Request-body bytes that may be held in memory at once, across all requests, in KiB (1 GiB). One JSON body
/// may be up to 64 MiB, and without a bound a crowd of them (clients replaying their spools at once after an
/// outage) could take all of the machine's memory; past it, bodies wait for room, then are refused with a 503
/// their clients retry.
static BUFFERED_BODIES: Semaphore = Semaphore::const_new(BUFFERED_BODIES_KIB);
const BUFFERED_BODIES_KIB: usize = 1 << 20;

/// How long a body waits for room in the budget before its request is refused.
pub(crate) const BUDGET_WAIT: Duration = Duration::from_secs(30);

/// Bytes that hold their share of the budget until dropped.
struct Budgeted {
    bytes: Bytes,
    _permit: SemaphorePermit<'static>,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Takes the body's size from `budget` as its chunks come (waiting at most [`BUDGET_WAIT`] for room),
/// gathering the permits in `held`. The count is of the bytes so far, rounded up to a KiB once, not of each
/// chunk rounded up: a body sent one byte a chunk would otherwise take a KiB of the budget per byte.
fn budgeted(
    chunks: impl Stream<Item = Result<Bytes, BodyFault>> + Send + 'static,
    budget: &'static Semaphore,
    held: Arc<Mutex<Option<SemaphorePermit<'static>>>>,
) -> impl Stream<Item = Result<Bytes, BodyFault>> + Send + 'static {
    let (mut bytes, mut kib_taken) = (0usize, 0usize);
    chunks.then(move |chunk| {
        let held = held.clone();
        // The stream is read one chunk at a time, so the running count needs no lock.
        bytes = bytes.saturating_add(chunk.as_ref().map_or(0, Bytes::len));
        let more = bytes.div_ceil(1024) - kib_taken;
        kib_taken += more;
        async move {
            let chunk = chunk?;
            if more == 0 {
                return Ok(chunk);
            }
            let kib = u32::try_from(more).map_err(|_| BodyFault::Busy)?;
            let permit = tokio::time::timeout(BUDGET_WAIT, budget.acquire_many(kib))
                .await
                .map_err(|_| BodyFault::Busy)?
                .map_err(|_| BodyFault::Busy)?;
            if let Ok(mut held) = held.lock() {
                match held.as_mut() {
                    Some(all) => all.merge(permit),
                    None => *held = Some(permit),
                }
            }
            Ok(chunk)
        }
    })
}

/// The most bytes a request's body may have, set where the limit is (as axum's `DefaultBodyLimit`), so
/// that a body refused for passing it is answered with the number.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A rejection of the body as the client's error: a fault of the body, or the body limit's 413.
fn rejection_error(rej: BytesRejection, limit: Option<BodyLimit>) -> ApiError {
    if let Some(fault) = fault_in(&rej) {
        return fault.answer("the request");
    }
    let status = rej.status();
    let text = rej.body_text();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        let message = match limit {
            Some(BodyLimit(limit)) => format!(
                "the request body is too large: more than {limit} bytes came, the limit is {limit} \
                 bytes; send it in smaller requests"
            ),
            None => format!("request body is too large: {text}"),
        };
        ApiError::http(status, "TOO_LARGE", message)
    } else {
        ApiError::http(
            status,
            crate::error::code_for_status(status),
            format!("could not read the body: {text}"),
        )
    }
}

/// How long a client may send nothing in the middle of a request body before the request fails: a silent
/// client would otherwise hold its request (an upload's temp file, a JSON body's buffered bytes) for as long as
/// its connection stays open.
pub const BODY_STALL: Duration = Duration::from_secs(60);

/// Why a request body could not be read to its end: the client's fault (or its connection's), answered as
/// such rather than as the storage error it would surface as further in.
#[derive(Debug, thiserror::Error)]
pub enum BodyFault {
    #[error("the body stalled: no data came for {} s", BODY_STALL.as_secs())]
    Stalled,
    #[error(
        "the body could not be read to its end ({0}): the client stopped sending or sent a malformed body"
    )]
    Broken(String),
    #[error(
        "the server is holding as many request bodies in memory as it may ({} MiB) and none made room \
         for {} s", BUFFERED_BODIES_KIB >> 10, BUDGET_WAIT.as_secs()
    )]
    Busy,
    #[error(
        "the server is receiving as many uploads as it may ({}) and none finished for {} s",
        crate::artifacts::UPLOAD_SLOT_COUNT, BUDGET_WAIT.as_secs()
    )]
    UploadsBusy,
}

impl BodyFault {
    /// The client's 400 for a body that failed: what happened, and that it is safe to send `what` again.
    pub fn answer(&self, what: &str) -> ApiError {
        let message = format!("{self}; nothing was stored, send {what} again");
        match self {
            BodyFault::Stalled | BodyFault::Broken(_) => ApiError::invalid("body", message),
            // Not the client's mistake: a 503, which clients retry after a pause.
            BodyFault::Busy | BodyFault::UploadsBusy => {
                ApiError::http(StatusCode::SERVICE_UNAVAILABLE, "BUSY", message)
            }
        }
    }
}

/// The [`BodyFault`] behind a rejection, if a fault of the body is what it was.
fn fault_in(rejection: &BytesRejection) -> Option<&BodyFault> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = cause {
        if let Some(fault) = e.downcast_ref::<BodyFault>() {
            return Some(fault);
        }
        cause = e.source();
    }
    None
}

/// A body's data, chunk by chunk ([`body_chunks`]).
pub type BodyChunks = BoxStream<'static, Result<Bytes, BodyFault>>;

/// A body's data chunks, ending in a [`BodyFault`] when the client goes silent for [`BODY_STALL`] or the
/// connection breaks.
pub fn body_chunks(body: Body) -> BodyChunks {
    let data = body.into_data_stream();
    futures::stream::unfold(Some(data), |data| async move {
        let mut data = data?;
        match tokio::time::timeout(BODY_STALL, data.next()).await {
            Err(_) => Some((Err(BodyFault::Stalled), None)),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(BodyFault::Broken(e.to_string())), None)),
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(data))),
        }
    })
    // Fused: a reader may ask again after the end (or a fault), and then hears of the end again.
    .fuse()
    .boxed()
}

/// A missing content type is accepted (curl without -H); any other than JSON is a 415.
fn check_json_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("expected Content-Type: application/json, got '{essence}'"),
        ))
    }
}

/// Parses JSON at full speed; only when that fails is it parsed again tracking the path, to name the field.
/// Every body is an object: serde would read an array as a struct's fields in order (`[]` as a run with
/// every default), so one is refused before it can be.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> ApiResult<T> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid(
            "body",
            "expected a JSON object ({...}), found an array",
        ));
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => Err(json_error::<T>(bytes)),
    }
}

fn json_error<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> ApiError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => ApiError::invalid("body", "the JSON body has trailing characters"),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // Malformed text has no field to name (its path can be `?`, a key that is no string); the
            // message gives the line and column.
            let malformed = inner.is_syntax() || inner.is_eof();
            let field = if malformed || path == "." || path.is_empty() {
                "body".to_string()
            } else {
                path
            };
            let what = if malformed { "malformed JSON: " } else { "" };
            ApiError::invalid(field, format!("{what}{inner}"))
        }
    }
}

/// A query string as (key, value) pairs in order, keeping repeated keys (`status=Running&status=Failed`).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<String>) -> Self {
        let raw = raw.unwrap_or_default();
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` parsed as `T`; a value that does not parse is a 400 naming the parameter.
    pub fn parsed<T: QueryValue>(&self, key: &str) -> ApiResult<Option<T>> {
        self.get(key).map(|v| parse_param(key, v)).transpose()
    }

    /// A flag: absent → false; `?flag`, `true`, `1`, `yes` → true; `false`, `0`, `no` → false.
    pub fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(false),
            Some("" | "true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(ApiError::invalid(
                key,
                format!("'{v}' is not a boolean (true or false)"),
            )),
        }
    }
}

/// A value a query parameter or header can hold, with the reason a text is not one: a number out of range says
/// so and gives the bound, rather than calling `99999999999999999999` "not a valid integer".
pub trait QueryValue: Sized {
    /// The value, or what is wrong with `text` (a sentence that quotes it).
    fn from_query(text: &str) -> Result<Self, String>;
}

impl QueryValue for String {
    fn from_query(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl QueryValue for flightlog_model::RunStatus {
    fn from_query(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e| match e {
            Error::InvalidArgument { message, .. } => message,
            other => other.to_string(),
        })
    }
}

macro_rules! integer_query_value {
    ($($int:ty => $word:literal),* $(,)?) => {$(
        impl QueryValue for $int {
            fn from_query(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: std::num::ParseIntError| {
                    let shown = shown(text);
                    match e.kind() {
                        IntErrorKind::PosOverflow => {
                            format!("'{shown}' is too large; the largest accepted is {}", <$int>::MAX)
                        }
                        IntErrorKind::NegOverflow => {
                            format!("'{shown}' is too small; the smallest accepted is {}", <$int>::MIN)
                        }
                        _ => format!("'{shown}' is not a valid {}", $word),
                    }
                })
            }
        }
    )*};
}

integer_query_value!(u64 => "non-negative integer", u32 => "non-negative integer", i64 => "integer");

/// At most 80 characters of a rejected value: enough to recognise it, short enough for a message.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

pub fn parse_param<T: QueryValue>(key: &str, value: &str) -> ApiResult<T> {
    T::from_query(value).map_err(|reason| ApiError::invalid(key, reason))
}

pub fn run_id(s: &str) -> ApiResult<RunId> {
    Ok(s.parse::<RunId>()?)
}

pub fn experiment_id(s: &str) -> ApiResult<ExperimentId> {
    Ok(s.parse::<ExperimentId>()?)
}

/// Runs a store call on the blocking pool: the store is synchronous and may wait on disk or on group commit.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ApiResult<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::Model(Error::storage(format!(
            "internal task failed: {e}"
        )))),
    }
}

/// Appends a batch and waits for its commit without parking a thread: the store's writer answers through a
/// oneshot ([`Store::write_batch_then`]). A request thus costs two thread hand-offs rather than four, which on a
/// machine whose cores are busy (a training job beside the server) is most of a small write's latency.
pub async fn write_batch(store: &dyn Store, run: &RunId, batch: Batch) -> Result<BatchAck, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.write_batch_then(
        run,
        batch,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    rx.await
        .unwrap_or_else(|_| Err(flightlog_store::write_not_applied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::Batch;

    #[test]
    fn query_values_say_what_is_wrong() {
        let reason = |r: Result<u32, String>| r.err().unwrap();
        assert_eq!(
            reason(u32::from_query("4294967296")),
            "'4294967296' is too large; the largest accepted is 4294967295"
        );
        assert_eq!(
            reason(u32::from_query("-1")),
            "'-1' is not a valid non-negative integer"
        );
        assert_eq!(
            i64::from_query("-99999999999999999999").err().unwrap(),
            "'-99999999999999999999' is too small; the smallest accepted is -9223372036854775808"
        );
        assert_eq!(i64::from_query("-7"), Ok(-7));
        let status = flightlog_model::RunStatus::from_query("Dozing")
            .err()
            .unwrap();
        assert!(
            status.starts_with("'Dozing' is not a run status"),
            "{status}"
        );
    }

    /// A JSON body the client stops sending fails once it has been silent for [`BODY_STALL`] (the clock is
    /// paused, so the wait is instant), instead of holding its request open for as long as the connection.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_goes_silent_fails_with_a_clear_error() {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{\"run"))]);
        let body = Body::from_stream(first.chain(futures::stream::pending()));
        let req = Request::builder().method("POST").uri("/").body(body);
        let err = body_bytes(req.expect("a request"), &()).await.err();
        let err = err.expect("a silent body fails");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message(),
            "invalid body: the body stalled: no data came for 60 s; nothing was stored, send the request \
             again"
        );
    }

    /// A body sent a byte a chunk takes its size from the budget, not a KiB per chunk: 2,048 one-byte chunks
    /// take 2 KiB of a 4 KiB budget (they took 2,048 KiB, so the request waited, then was refused as busy).
    #[tokio::test(start_paused = true)]
    async fn a_body_of_tiny_chunks_takes_its_size_from_the_budget() {
        static BUDGET: Semaphore = Semaphore::const_new(4);
        let chunks = (0..2048).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b" ")));
        let body = Body::from_stream(futures::stream::iter(chunks));
        let req = Request::builder().method("POST").uri("/").body(body);
        let bytes = body_bytes_within(&BUDGET, req.expect("a request"), &()).await;
        let bytes = bytes.expect("within the budget");
        assert_eq!(bytes.len(), 2048);
        assert_eq!(BUDGET.available_permits(), 2);
        drop(bytes);
        assert_eq!(BUDGET.available_permits(), 4);
    }

    /// Bodies held in memory count against the budget until their bytes are dropped: one that finds no room
    /// is refused with a 503 once it has waited [`BUDGET_WAIT`], and goes through once room is made.
    #[tokio::test(start_paused = true)]
    async fn bodies_past_the_memory_budget_wait_then_are_refused_as_busy() {
        static BUDGET: Semaphore = Semaphore::const_new(4);
        let request = |kib: usize| {
            let req = Request::builder().method("POST").uri("/");
            req.body(Body::from(vec![b' '; kib * 1024]))
                .expect("a request")
        };
        let first = body_bytes_within(&BUDGET, request(3), &()).await;
        let first = first.expect("within the budget");
        assert_eq!(BUDGET.available_permits(), 1);
        let refused = body_bytes_within(&BUDGET, request(2), &()).await.err();
        let refused = refused.expect("past the budget");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            refused.message().starts_with(
                "the server is holding as many request bodies in memory as it may (1024 MiB) and none \
                 made room for 30 s; nothing was stored"
            ),
            "{}",
            refused.message()
        );
        let copy = first.clone();
        drop(first);
        assert_eq!(BUDGET.available_permits(), 1, "a clone still holds it");
        drop(copy);
        assert_eq!(BUDGET.available_permits(), 4);
        let second = body_bytes_within(&BUDGET, request(2), &()).await;
        assert_eq!(second.expect("room was made").len(), 2048);
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Batch>(br#"{"scalars":[{"name":"a","values":[1,"x"]}]}"#)
            .err()
            .unwrap();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.message().contains("scalars[0].values[1]"),
            "{}",
            err.message()
        );
        let err = parse_json::<Batch>(b"{not json").err().unwrap();
        assert!(
            err.message().contains("malformed JSON"),
            "{}",
            err.message()
        );
        let err = parse_json::<Batch>(br#"{"scalars": [], 5: 1}"#)
            .err()
            .unwrap();
        assert!(
            err.message()
                .starts_with("invalid body: malformed JSON: key must be a string"),
            "{}",
            err.message()
        );
        let err = parse_json::<flightlog_model::NewExperiment>(b"{}")
            .err()
            .unwrap();
        assert!(err.message().contains("name"), "{}", err.message());
    }

    /// A misspelt field is refused by name instead of acknowledged and ignored (`step` for `steps` stored
    /// the point at step 0; `scalar` for `scalars` stored nothing), and an array is no run with defaults.
    #[test]
    fn unknown_fields_and_arrays_are_refused() {
        let message = |r: ApiResult<Batch>| r.expect_err("refused").message();
        let typo = message(parse_json(
            br#"{"scalars":[{"name":"a","values":[1],"step":[5]}]}"#,
        ));
        assert!(
            typo.starts_with("invalid scalars[0].step: unknown field `step`, expected one of"),
            "{typo}"
        );
        let typo = message(parse_json(br#"{"scalar":[{"name":"a","values":[1]}]}"#));
        assert!(typo.contains("unknown field `scalar`"), "{typo}");
        let typo = message(parse_json(
            br#"{"metrics":[{"kind":"list","name":"l","values":[1],"steps":3}]}"#,
        ));
        assert!(typo.contains("unknown field `steps`"), "{typo}");
        let good = parse_json::<Batch>(br#"{"metrics":[{"kind":"list","name":"l","values":[1]}]}"#);
        assert!(good.is_ok(), "the kind tag is no unknown field");
        let run = parse_json::<flightlog_model::NewRun>(br#"{"name":"r","experiment":"6"}"#);
        assert!(run
            .expect_err("refused")
            .message()
            .contains("unknown field `name`"));
        let array = parse_json::<flightlog_model::NewRun>(b" []").expect_err("refused");
        assert_eq!(
            array.message(),
            "invalid body: expected a JSON object ({...}), found an array"
        );
    }

    #[test]
    fn queries_keep_repeats_and_name_bad_values() {
        let q = Query::parse(Some("status=Running&status=Failed&limit=x&flag".into()));
        assert_eq!(q.all("status").collect::<Vec<_>>(), ["Running", "Failed"]);
        assert!(q
            .parsed::<u32>("limit")
            .err()
            .unwrap()
            .message()
            .contains("invalid limit"));
        assert!(q.flag("flag").unwrap());
        assert!(!q.flag("other").unwrap());
    }
}
