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
use flightlog_model::{Event, EventBody, EventFilter, MetricKind, ReadRange, Replaced};
use flightlog_store::Store;
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::ops::Range;
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

/// Sends the resume point, then every matching event after `after`, then waits for the store's next commit
/// and repeats. The watch is marked seen before each read, so a commit landing between the read and the wait
/// still wakes us.
async fn pump(
    st: AppState,
    filter: EventFilter,
    mut after: u64,
    scope: Scope,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut watch = st.store.subscribe();
    // An `id:` with no data is not dispatched as an event, but it sets the reader's last event id: a browser
    // whose connection drops before the first event (a quiet run, a server restart) resumes from here, not
    // from whatever is newest when it reconnects.
    if tx
        .send(Ok(SseEvent::default().id(after.to_string())))
        .await
        .is_err()
    {
        return;
    }
    let mut sent = Sent::new();
    loop {
        watch.borrow_and_update();
        let (store, f) = (st.store.clone(), filter.clone());
        let read = blocking(move || {
            let page = fetch(store.as_ref(), &f, after, scope, &mut sent)?;
            Ok((page, sent))
        });
        let page = match read.await {
            Ok((page, now_sent)) => {
                sent = now_sent;
                page
            }
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

/// Where this connection's run stream has sent each series (and log stream) up to, by event type and name.
type Sent = HashMap<(&'static str, String), u64>;

fn fetch(
    store: &dyn Store,
    filter: &EventFilter,
    after: u64,
    scope: Scope,
    sent: &mut Sent,
) -> ApiResult<Page> {
    let events = store.events_since(filter, after, PAGE)?;
    Ok(Page {
        last_seq: events.last().map(|e| e.seq),
        full: events.len() >= PAGE,
        messages: events
            .iter()
            .filter(|e| wanted(e, scope))
            .filter_map(|e| match scope {
                Scope::Run => unsent(e, after, sent),
                Scope::Experiment => Some(Cow::Borrowed(e)),
            })
            .map(|e| message(store, &e, scope))
            .collect(),
    })
}

/// The part of an append event (points, log_appended) that a reader past event `after` has not had (any other
/// event whole); `None` if it had all of it. An append event replaces its series' (stream's) previous one and
/// covers that range too, so the part the replaced event announced is left out when the reader is past it, and
/// so is whatever this connection sent (it may have read an event that was replaced twice since). A reader
/// resuming from further back can still get points or bytes it had: `from_index` / `offset` say which.
fn unsent<'a>(e: &'a Event, after: u64, sent: &mut Sent) -> Option<Cow<'a, Event>> {
    let Some((name, range, replaced)) = appended(&e.body) else {
        return Some(Cow::Borrowed(e));
    };
    let mut start = range.start;
    if let Some(r) = replaced.filter(|r| r.seq <= after) {
        start = start.max(r.end);
    }
    let key = (type_name(&e.body), name.to_string());
    if let Some(&s) = sent.get(&key) {
        start = start.max(s);
    }
    if start >= range.end {
        return None;
    }
    sent.insert(key, range.end);
    if start == range.start {
        return Some(Cow::Borrowed(e));
    }
    let mut rest = e.clone();
    narrow(&mut rest.body, start);
    Some(Cow::Owned(rest))
}

/// An append event's series or stream name, the range it announces (point indexes or bytes) and the event it
/// replaced; `None` for other events.
fn appended(body: &EventBody) -> Option<(&str, Range<u64>, Option<Replaced>)> {
    match body {
        EventBody::Points {
            name,
            from_index,
            count,
            replaced,
            ..
        } => Some((name, *from_index..from_index + count, *replaced)),
        EventBody::LogAppended {
            stream,
            offset,
            length,
            replaced,
        } => Some((stream, *offset..offset + length, *replaced)),
        _ => None,
    }
}

/// Makes an append event announce only its range from `start` on (a part no event replaced).
fn narrow(body: &mut EventBody, start: u64) {
    match body {
        EventBody::Points {
            from_index,
            count,
            replaced,
            ..
        } => (*count, *from_index, *replaced) = (*from_index + *count - start, start, None),
        EventBody::LogAppended {
            offset,
            length,
            replaced,
            ..
        } => (*length, *offset, *replaced) = (*offset + *length - start, start, None),
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{ExperimentId, WallTime};

    fn points(seq: u64, from_index: u64, count: u64, replaced: Option<Replaced>) -> Event {
        Event {
            seq,
            time: WallTime(0),
            experiment_id: ExperimentId(0),
            run_id: None,
            body: EventBody::Points {
                name: "loss".into(),
                kind: MetricKind::Scalar,
                from_index,
                count,
                last_step: None,
                last_value: serde_json::Value::Null,
                replaced,
            },
        }
    }

    fn range(e: Option<Cow<Event>>) -> Option<(u64, u64)> {
        match e?.body {
            EventBody::Points {
                from_index, count, ..
            } => Some((from_index, count)),
            _ => None,
        }
    }

    #[test]
    fn a_reader_past_the_replaced_event_gets_only_the_new_points() {
        let e = points(9, 0, 5, Some(Replaced { seq: 7, end: 3 }));
        assert_eq!(range(unsent(&e, 7, &mut Sent::new())), Some((3, 2)));
        assert_eq!(range(unsent(&e, 6, &mut Sent::new())), Some((0, 5)));
    }

    #[test]
    fn a_connection_never_sends_a_point_twice() {
        let mut sent = Sent::new();
        assert_eq!(
            range(unsent(&points(5, 0, 1, None), 0, &mut sent)),
            Some((0, 1))
        );
        // Replaced twice before the reader looked again: the newest event names event 7, which it never saw.
        let e = points(9, 0, 3, Some(Replaced { seq: 7, end: 2 }));
        assert_eq!(range(unsent(&e, 5, &mut sent)), Some((1, 2)));
        assert_eq!(range(unsent(&e, 5, &mut sent)), None, "all of it sent");
    }

    #[test]
    fn log_appends_are_trimmed_like_points_and_apart_from_a_series_of_the_same_name() {
        let log = |seq, offset, length, replaced| Event {
            body: EventBody::LogAppended {
                stream: "loss".into(),
                offset,
                length,
                replaced,
            },
            ..points(seq, 0, 0, None)
        };
        let mut sent = Sent::new();
        let first = log(3, 0, 10, None);
        assert_eq!(unsent(&first, 0, &mut sent).as_deref(), Some(&first));
        assert_eq!(
            range(unsent(&points(4, 0, 4, None), 0, &mut sent)),
            Some((0, 4)),
            "a series named like the stream is tracked apart"
        );
        let merged = log(6, 0, 25, Some(Replaced { seq: 5, end: 18 }));
        let rest = unsent(&merged, 4, &mut sent).map(|e| e.into_owned().body);
        assert_eq!(
            rest,
            Some(EventBody::LogAppended {
                stream: "loss".into(),
                offset: 10,
                length: 15,
                replaced: None
            }),
            "event 5 was never seen: only what this connection sent is left out"
        );
        assert_eq!(unsent(&merged, 4, &mut sent), None);
    }
}
