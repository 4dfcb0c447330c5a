//! Accepting connections: hyper as `axum::serve` runs it, plus a timeout on reading a request's headers (which
//! `axum::serve` leaves unset), and a graceful shutdown that lets requests in flight finish.

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, by default. A connection that sent part of a head
/// and then nothing stayed open for good, holding a socket and a task; now it is closed after this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for every open
/// connection to finish the request it is on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone of `open_rx`; `open_tx.closed()` resolves once all are gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        match accepted {
            Ok((tcp, _)) => {
                let (stop, open) = (stop_rx.clone(), open_rx.clone());
                tokio::spawn(connection(tcp, app.clone(), header_timeout, stop, open));
            }
            Err(e) => backoff(e).await,
        }
    }
    let _ = stop_tx.send(true);
    drop((listener, stop_rx, open_rx));
    open_tx.closed().await;
    Ok(())
}

/// One connection, HTTP/1 or 2, until it closes; on `stop`, it finishes its request and closes.
async fn connection(
    tcp: TcpStream,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!("could not set TCP_NODELAY: {e}");
    }
    let service = app.map_request(|req: Request<Incoming>| req.map(Body::new));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut conn = pin!(builder
        .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service)));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// After a failed accept: errors of one connection are nothing to wait for; others (out of file
/// descriptors) get a second's pause, so the loop does not spin while they last.
async fn backoff(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_half_sent_head_is_closed_after_the_timeout_and_whole_requests_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/ok", axum::routing::get(|| async { "fine" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, Duration::from_millis(300), async {
            let _ = stop_rx.await;
        }));
        let exchange = move |head: &'static str| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(head.as_bytes()).unwrap();
            let mut answer = String::new();
            let started = std::time::Instant::now();
            let _ = c.read_to_string(&mut answer);
            (answer, started.elapsed())
        };
        let (answer, _) = tokio::task::spawn_blocking(move || {
            exchange("GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        })
        .await
        .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("fine"),
            "{answer}"
        );
        let (answer, took) =
            tokio::task::spawn_blocking(move || exchange("GET /ok HTTP/1.1\r\nHost: x\r\n"))
                .await
                .unwrap();
        assert!(!answer.contains("fine"), "{answer}");
        assert!(took < Duration::from_secs(4), "closed after {took:?}");
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
