//! Live streams (Server-Sent Events) of a run's or an experiment's commits, resumable by event seq.

use crate::error::{ApiError, ApiResult};
use crate::extract::{blocking, experiment_id, parse_param, run_id, Query};
use crate::metrics::write_scalar_columns;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, KeepAliveStream, Sse};
use axum::routing::get;
use axum::Router;
use flightlog_model::{Event, EventBody, EventFilter, MetricKind, ReadRange};
use flightlog_store::Store;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Events read from the store per round trip.
const PAGE: usize = 1000;
const KEEPALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}/events", get(run_events))
        .route("/experiments/{id}/events", get(experiment_events))
}

/// Which stream is being served: the run stream carries every event of the run with the data itself; the
/// experiment stream only run-level events, points announced without their data.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Run,
    Experiment,
}

type EventStream = Sse<KeepAliveStream<ReceiverStream<Result<SseEvent, Infallible>>>>;

async fn run_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<EventStream> {
    let id = run_id(&id)?;
    let after = start_after(&headers, &Query::parse(raw), st.store.as_ref())?;
    let (store, check) = (st.store.clone(), id.clone());
    blocking(move || Ok(store.get_run(&check).map(|_| ())?)).await?;
    Ok(open(
        st,
        EventFilter {
            run_id: Some(id),
            ..Default::default()
        },
        after,
        Scope::Run,
    ))
}

async fn experiment_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<EventStream> {
    let id = experiment_id(&id)?;
    let after = start_after(&headers, &Query::parse(raw), st.store.as_ref())?;
    let store = st.store.clone();
    blocking(move || Ok(store.get_experiment(id).map(|_| ())?)).await?;
    Ok(open(
        st,
        EventFilter {
            experiment_id: Some(id),
            ..Default::default()
        },
        after,
        Scope::Experiment,
    ))
}

/// The seq to resume after: `Last-Event-ID` (a reconnecting browser), else `?after=`, else the newest seq now
/// (a new reader wants what happens from here on; `?after=0` replays everything).
fn start_after(headers: &HeaderMap, q: &Query, store: &dyn Store) -> ApiResult<u64> {
    if let Some(v) = headers.get("last-event-id") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "not text"))?;
        return parse_param("Last-Event-ID", v.trim());
    }
    Ok(match q.parsed::<u64>("after")? {
        Some(after) => after,
        None => *store.subscribe().borrow(),
    })
}

fn open(st: AppState, filter: EventFilter, after: u64, scope: Scope) -> EventStream {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(st, filter, after, scope, tx));
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text(" keepalive"))
}

/// Sends every matching event after `after`, then waits for the store's next commit and repeats. The watch
/// is marked seen before each read, so a commit landing between the read and the wait still wakes us.
async fn pump(
    st: AppState,
    filter: EventFilter,
    mut after: u64,
    scope: Scope,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut watch = st.store.subscribe();
    loop {
        watch.borrow_and_update();
        let (store, f) = (st.store.clone(), filter.clone());
        let page = match blocking(move || fetch(store.as_ref(), &f, after, scope)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("event stream ended: {}", e.message());
                return;
            }
        };
        if let Some(last) = page.last_seq {
            after = last;
        }
        for msg in page.messages {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        if page.full {
            continue;
        }
        tokio::select! {
            _ = st.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            changed = watch.changed() => if changed.is_err() { return },
        }
    }
}

struct Page {
    messages: Vec<SseEvent>,
    last_seq: Option<u64>,
    full: bool,
}

fn fetch(store: &dyn Store, filter: &EventFilter, after: u64, scope: Scope) -> ApiResult<Page> {
    let events = store.events_since(filter, after, PAGE)?;
    Ok(Page {
        last_seq: events.last().map(|e| e.seq),
        full: events.len() >= PAGE,
        messages: events
            .iter()
            .filter(|e| wanted(e, scope))
            .map(|e| message(store, e, scope))
            .collect(),
    })
}

fn wanted(e: &Event, scope: Scope) -> bool {
    scope == Scope::Run
        || matches!(
            e.body,
            EventBody::RunCreated { .. } | EventBody::RunUpdated { .. } | EventBody::Points { .. }
        )
}

fn type_name(body: &EventBody) -> &'static str {
    match body {
        EventBody::ExperimentCreated { .. } => "experiment_created",
        EventBody::ExperimentUpdated { .. } => "experiment_updated",
        EventBody::RunCreated { .. } => "run_created",
        EventBody::RunUpdated { .. } => "run_updated",
        EventBody::Points { .. } => "points",
        EventBody::LogAppended { .. } => "log_appended",
        EventBody::ArtifactWritten { .. } => "artifact_written",
        EventBody::ArtifactDeleted { .. } => "artifact_deleted",
    }
}

/// The SSE message for one event: the Event JSON, on the run stream extended with the data it announces.
fn message(store: &dyn Store, e: &Event, scope: Scope) -> SseEvent {
    let mut json = serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec());
    if scope == Scope::Run && json.last() == Some(&b'}') {
        json.pop();
        append_data(store, e, &mut json);
        json.push(b'}');
    }
    SseEvent::default()
        .id(e.seq.to_string())
        .event(type_name(&e.body))
        .data(String::from_utf8_lossy(&json))
}

/// Appends `,"steps":…` / `,"records":…` / `,"data":…`; if the data cannot be read (deleted since), the
/// event goes out without it rather than ending the stream.
fn append_data(store: &dyn Store, e: &Event, out: &mut Vec<u8>) {
    let Some(run) = &e.run_id else { return };
    match &e.body {
        EventBody::Points {
            name,
            kind,
            from_index,
            count,
            ..
        } => {
            let range = ReadRange {
                start_index: *from_index,
                limit: Some(*count),
                ..Default::default()
            };
            if *kind == MetricKind::Scalar {
                if let Ok(series) = store.read_scalars(run, name, &range) {
                    write_scalar_columns(out, &series);
                }
            } else if let Ok(records) = store.read_records(run, name, &range) {
                out.extend_from_slice(b",\"records\":");
                let _ = serde_json::to_writer(&mut *out, &records);
            }
        }
        EventBody::LogAppended {
            stream,
            offset,
            length,
            ..
        } => {
            if let Ok(slice) = store.read_log(run, stream, *offset, *length) {
                out.extend_from_slice(b",\"data\":");
                let _ = serde_json::to_writer(&mut *out, &slice.data);
            }
        }
        _ => {}
    }
}
