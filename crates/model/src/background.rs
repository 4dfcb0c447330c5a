//! Threads the library starts for its own work, which leave the process's signals to the application's threads.

use std::thread::JoinHandle;

/// Starts thread `name` running `f`, with every asynchronous signal blocked in it.
///
/// A signal sent to a process goes to any one of its threads that does not block it. When a Python program
/// handles one (multiprocessing's pool workers are stopped with SIGTERM; the SDK then flushes before dying;
/// Ctrl-C raises KeyboardInterrupt), CPython only notes it on the thread that got it and runs the handler
/// when the main thread next checks. A main thread waiting in C (a pool worker on its queue's lock) never
/// does if the signal landed on one of our threads: the process hung. Blocked here, the signal goes to a
/// thread of the application's. The faults a thread raises itself (SIGSEGV, SIGBUS, ...) stay unblocked.
pub fn spawn<F, T>(name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // A new thread starts with its creator's mask: block, spawn, restore.
    let previous = mask::block_async_signals();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    mask::restore(previous);
    spawned
}

#[cfg(unix)]
mod mask {
    /// Signals a thread raises itself; blocking them would turn a crash into a hang or an odd death.
    const FAULTS: [libc::c_int; 6] = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];

    pub fn block_async_signals() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data that sigfillset/sigdelset initialize; pthread_sigmask only reads
        // `block` and writes `previous`, both valid for the call.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut block);
            for s in FAULTS {
                libc::sigdelset(&mut block, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            previous
        }
    }

    pub fn restore(previous: libc::sigset_t) {
        // SAFETY: `previous` is a mask pthread_sigmask returned.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
mod mask {
    pub fn block_async_signals() {}
    pub fn restore(_: ()) {}
}

#[cfg(all(test, unix))]
mod tests {
    use super::spawn;

    /// Whether `signal` is blocked on the calling thread.
    fn blocked(signal: libc::c_int) -> bool {
        // SAFETY: with a null new mask, pthread_sigmask only writes the current mask into `current`.
        unsafe {
            let mut current: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current);
            libc::sigismember(&current, signal) == 1
        }
    }

    #[test]
    fn the_thread_blocks_async_signals_and_the_caller_keeps_its_mask() {
        assert!(
            !blocked(libc::SIGTERM),
            "the test thread starts with SIGTERM open"
        );
        let inside = spawn("flightlog-test", || {
            let name = std::thread::current().name().map(str::to_string);
            let open = |s| !blocked(s);
            (
                name,
                [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGCHLD].map(blocked),
                open(libc::SIGSEGV),
            )
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(inside, (Some("flightlog-test".into()), [true; 4], true));
        assert!(!blocked(libc::SIGTERM), "the caller's mask was restored");
    }
}
