//! Ctrl-C, SIGTERM and SIGHUP to a supervising command (`flightlog submit`, `tensorboard`, `import --follow`)
//! become a request to stop cleanly instead of an abrupt exit.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Whether a second signal, once a stop was requested, kills the process as the signal's default would.
static FORCE_ON_SECOND: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) && FORCE_ON_SECOND.load(Ordering::SeqCst) {
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Routes SIGINT, SIGTERM and SIGHUP to [`requested`]. SIGHUP is what a dropped ssh session or a closed terminal
/// sends: its default action killed the command at once (a submitted run stayed Running for good, TensorBoard
/// kept serving). For `submit`, the job, in its own process group, does not see a terminal Ctrl-C, so the
/// lifecycle can stop it (SIGTERM, grace, SIGKILL) and record the run as Canceled; that stop is bounded, so a
/// second signal waits for it (`force_on_second` false). Where the clean stop may wait on a hung server (the
/// TensorBoard bridge), a second Ctrl-C quits at once (`force_on_second` true).
pub fn install(force_on_second: bool) {
    FORCE_ON_SECOND.store(force_on_second, Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches atomics, or restores the default action and re-raises.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether a stop was asked for since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
