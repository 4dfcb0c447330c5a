//! Ctrl-C, SIGTERM and SIGHUP to the submitting process become a cancel of the run instead of an abrupt exit.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT, SIGTERM and SIGHUP to [`requested`]; the job, in its own process group, does not see a
/// terminal Ctrl-C, so the lifecycle can stop it (SIGTERM, grace, SIGKILL) and record the run as Canceled.
/// SIGHUP is what a dropped ssh session or a closed terminal sends: its default action killed the submitter
/// at once and left the run Running for good.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether Ctrl-C or SIGTERM arrived since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
