//! Flushing the SDK's clients when the process is stopped with SIGTERM (docker stop, a Kubernetes eviction, a
//! Slurm time limit, `Pool.terminate()`), without Python's help.
//!
//! `Pool.terminate()` (the end of a `with Pool()` block) stops its workers with SIGTERM, whose default action
//! skips every exit hook, so what a worker logged and had not sent yet was lost. A Python-level handler does
//! not fix that reliably: CPython runs it only when the main thread next looks, and a signal that arrives just
//! before the worker blocks on its task queue's lock (held by a worker already dead) is never looked at, so
//! the worker hung and the pool with it (1 run in 80 under load). Here the handler itself only writes a byte to
//! a pipe; a thread of ours reads it, flushes every client of this process, and then lets the signal kill the
//! process as it would have.

use flightlog_client::Client;
use flightlog_model::{ErrorDetails, RunId, RunPatch, RunStatus};
use pyo3::prelude::*;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The clients to flush, with the process that made each (a forked child inherits its parent's entries,
/// whose sender threads it does not have).
static CLIENTS: Mutex<Vec<(u32, Weak<Client>)>> = Mutex::new(Vec::new());
/// The write end of the pipe the handler wakes the flushing thread through; -1 until installed.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The process that installed the handler: a forked child has the handler until it forgets it, and one
/// signaled before then (its parent may signal it at once) must not wake its parent's thread.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Runs this process started and has not ended, with the client that logs them and the process (a forked
/// child inherits the list, not the runs).
static OWNED: Mutex<Vec<(u32, Weak<Client>, RunId)>> = Mutex::new(Vec::new());

/// Remembers that this process started `run` through `client`: SIGTERM ends it Canceled.
pub fn own(client: &Arc<Client>, run: RunId) {
    let mut owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
    owned.retain(|(_, c, _)| c.strong_count() > 0);
    owned.push((std::process::id(), Arc::downgrade(client), run));
}

/// Forgets `run`: it ended here.
pub fn disown(run: &RunId) {
    let mut owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
    owned.retain(|(_, _, r)| r != run);
}

/// Queues the end of every run this process started and has not ended, after what was logged: the process is
/// being stopped (docker stop, a Kubernetes eviction, a Slurm time limit), and a run left Running would stay
/// so for good. Canceled is MLflow's KILLED. A run ended meanwhile through another handle keeps its end (the
/// server refuses a change from one end to another).
fn end_owned_runs(me: u32) {
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(PoisonError::into_inner));
    for (pid, client, run) in owned {
        let Some(client) = client.upgrade().filter(|_| pid == me) else {
            continue;
        };
        let patch = RunPatch {
            status: Some(RunStatus::Canceled),
            error: Some(ErrorDetails {
                message: "the process was stopped by SIGTERM".into(),
                code: Some("SIGTERM".into()),
                details: None,
            }),
            ..Default::default()
        };
        // A client closed already takes nothing; the process ends next, with no one to tell.
        let _ = client.update_run_async(&run, patch);
    }
}

/// Remembers `client` for a flush on SIGTERM (if [`flush_on_sigterm`] is installed in this process).
pub fn track(client: &Arc<Client>) {
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    clients.retain(|(_, c)| c.strong_count() > 0);
    clients.push((std::process::id(), Arc::downgrade(client)));
}

/// From here on, SIGTERM first flushes this process's clients (up to `timeout_seconds` in all, giving up on
/// a server that keeps failing: what is unsent goes to the spool journal), then kills the process as before.
/// Installed by the SDK where SIGTERM has its default action: in the main process when its first client is
/// made, and in multiprocessing children.
#[pyfunction]
pub fn flush_on_sigterm(timeout_seconds: f64) -> PyResult<()> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let timeout = Duration::from_secs_f64(timeout_seconds.clamp(0.0, 3600.0));
    flightlog_model::background::spawn("flightlog-sigterm", move || {
        wait_then_flush(fds[0], timeout)
    })?;
    // SAFETY: getpid never fails.
    OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    WAKE.store(fds[1], Ordering::SeqCst);
    // SAFETY: `on_sigterm` only loads an atomic and calls write(2), both async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
    Ok(())
}

/// In a forked child: SIGTERM back to its default action, and the pipe forgotten. The child inherits the
/// handler but not the thread that reads the pipe, and that thread is its parent's: the child's SIGTERM would
/// have flushed and killed the parent and left the child running. (A multiprocessing child installs its own.)
#[pyfunction]
pub fn forget_sigterm_in_child() {
    let fd = WAKE.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the write end is this process's own copy, closed once; SIG_DFL is always a valid action.
        unsafe {
            libc::close(fd);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // SAFETY: getpid, signal and raise are async-signal-safe. In a forked child the signal gets its default
    // action back and is raised again: it is delivered, and kills the child, once this handler returns.
    if unsafe { libc::getpid() } != OWNER.load(Ordering::SeqCst) {
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
        }
        return;
    }
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writes one byte from a static buffer; a failure leaves nothing to do here.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Waits for the handler's byte, flushes, restores SIGTERM's default action and sends it again.
fn wait_then_flush(read_fd: RawFd, timeout: Duration) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into `byte`.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
    let me = std::process::id();
    end_owned_runs(me);
    let clients: Vec<Arc<Client>> = CLIENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(pid, _)| *pid == me)
        .filter_map(|(_, c)| c.upgrade())
        .collect();
    let deadline = Instant::now() + timeout;
    for client in clients {
        client.deliver(deadline.saturating_duration_since(Instant::now()));
        let _ = client.close(Duration::ZERO);
    }
    // SAFETY: restores the default action and signals the process (not this thread, which blocks SIGTERM).
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}
