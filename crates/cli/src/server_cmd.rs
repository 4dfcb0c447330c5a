//! `flightlog server`: opens the embedded store and serves the HTTP API until SIGINT/SIGTERM.

use crate::CliError;
use flightlog_store::embedded::{Durability, EmbeddedStore};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ServerArgs {
    pub host: String,
    pub port: u16,
    pub data: PathBuf,
    pub durability: Durability,
    pub access: flightlog_server::AccessPolicy,
    /// Largest artifact upload, in bytes.
    pub max_artifact_size: usize,
    /// Announce the address as one JSON line (`--json`), for supervisors that start it with `--port 0`.
    pub json: bool,
}

/// Logging to stderr, `RUST_LOG` wins; default: info for flightlog's crates, warn for the rest.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,flightlog=info,flightlog_cli=info,flightlog_server=info,flightlog_store=info,flightlog_client=info",
        )
    });
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Warnings only (an output file not uploaded, the server unreachable), on stderr without time stamps, for
/// commands that go on after them and whose user should still hear of them; `RUST_LOG` wins.
pub fn init_warnings() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Plain)
        .try_init();
}

/// `flightlog: warning: <message>`, as the CLI's own messages read.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            _ => "note",
        };
        write!(writer, "flightlog: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

pub fn run(args: ServerArgs) -> Result<(), CliError> {
    init_tracing();
    raise_open_file_limit();
    std::fs::create_dir_all(&args.data).map_err(|e| {
        CliError::with_hint(
            1,
            format!(
                "cannot create data directory '{}': {e}",
                args.data.display()
            ),
            "pass a writable folder with --data or FLIGHTLOG_DATA",
        )
    })?;
    let _lock = lock_data_dir(&args.data)?;
    let store = EmbeddedStore::open_with(&args.data, args.durability).map_err(|e| {
        CliError::with_hint(
            1,
            format!("cannot open data directory '{}': {e}", args.data.display()),
            "pass a writable flightlog data folder with --data or FLIGHTLOG_DATA",
        )
    })?;
    tracing::info!(data = %args.data.display(), fsync = %args.durability, "store opened");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flightlog-server")
        .build()
        .map_err(|e| CliError::new(1, format!("cannot start the async runtime: {e}")))?;
    let config = flightlog_server::ServerConfig {
        host: args.host.clone(),
        port: args.port,
        access: args.access,
        max_body_bytes: args.max_artifact_size,
        ..Default::default()
    };
    let result = runtime.block_on(serve(config, Arc::new(store), args.json, &args.data));
    result.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "another process uses that port; pick another with --port"
        } else {
            "check --host and --port"
        };
        CliError::with_hint(
            1,
            format!("server failed on {}:{}: {e}", args.host, args.port),
            hint,
        )
    })
}

/// The file a server holds locked while it serves a data directory.
const SERVER_LOCK: &str = "server.lock";

/// Takes the data directory for this server, refusing it if another server holds it: each server announces
/// only its own commits to its live streams and its followers (TensorBoard ingest, script runs), so a second
/// one would serve views that miss the first one's writes. The lock goes with the process, however it ends;
/// local-mode SDK processes, which share a data directory by design, do not take it.
fn lock_data_dir(data: &std::path::Path) -> Result<std::fs::File, CliError> {
    let path = data.join(SERVER_LOCK);
    let cannot = |e: std::io::Error| {
        CliError::with_hint(
            1,
            format!("cannot lock '{}': {e}", path.display()),
            "pass a writable flightlog data folder with --data or FLIGHTLOG_DATA",
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let pid = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            return Err(CliError::with_hint(
                1,
                format!(
                    "data directory '{}' is in use by another flightlog server{pid}",
                    data.display()
                ),
                "stop that server first, or give this one another folder with --data",
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
    }
    // The holder's pid, for the message above; a failure here only leaves that message shorter.
    let _ = file
        .set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()));
    Ok(file)
}

/// The one place that knows `flightlog_server::serve`'s signature.
async fn serve(
    config: flightlog_server::ServerConfig,
    store: Arc<EmbeddedStore>,
    json: bool,
    data: &std::path::Path,
) -> std::io::Result<()> {
    let data = data.display().to_string();
    let on_ready = move |addr: SocketAddr| {
        let mut out = std::io::stdout().lock();
        if json {
            let v = serde_json::json!({"url": format!("http://{addr}"), "portal": format!("http://{addr}/"), "data": data});
            let _ = writeln!(out, "{v}");
        } else {
            let _ = writeln!(out, "flightlog server listening on http://{addr}");
            let _ = writeln!(out, "portal: http://{addr}/");
        }
        let _ = out.flush();
    };
    flightlog_server::serve(config, store, on_ready, shutdown_signal()).await
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed here, before the server prints its
/// address, not when the future is first polled: a supervisor (or a test) that sends SIGTERM as soon as the
/// server answers would otherwise race the spawned shutdown task and kill it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            let (Ok(mut int), Ok(mut term)) = (int, term) else {
                tracing::warn!("cannot install signal handlers; stop the server with SIGKILL");
                return std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received, shutting down");
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime and most servers do: every
/// connection, upload temp file and store handle is a file descriptor, and the soft limit many systems still
/// default to (1,024) is used up by a few hundred clients uploading at once, after which new connections are
/// refused. A limit that cannot be raised is left as it is.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = soft,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}
