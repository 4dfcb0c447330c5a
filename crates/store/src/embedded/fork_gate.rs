//! Holds SQLite still across `fork()`, so that a forked child can open the same data folder again.
//!
//! SQLite keeps per-process bookkeeping of the locks its connections hold on a database file and its shared
//! memory index, and a forked child inherits it exactly as it was at the fork. Had a thread of the parent been
//! inside a transaction then, the child's own connection would see a write lock "held in this process" that no
//! thread of the child will ever release, and every write of the child would fail with `database is locked`.
//! Every use of SQLite in this store goes through [`using_sqlite`]; [`prepare_fork`] (called by the Python
//! SDK's `os.register_at_fork(before=...)`) waits until none is in progress and holds new ones back until
//! [`after_fork`], so at the fork the parent's connections are all idle.

use std::cell::{Cell, RefCell};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Shared by every use of SQLite; taken exclusively around a fork.
static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// How deep this thread is in [`using_sqlite`]: only the outermost use takes the gate, so a use nested in
    /// another never waits behind a fork that waits for the outer one.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The gate, held by the forking thread from [`prepare_fork`] to [`after_fork`].
    static HELD_FOR_FORK: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// One use of SQLite in progress on this thread.
struct InUse {
    _gate: Option<RwLockReadGuard<'static, ()>>,
}

impl InUse {
    fn enter() -> InUse {
        let depth = DEPTH.get();
        DEPTH.set(depth + 1);
        let gate = (depth == 0).then(|| GATE.read().unwrap_or_else(PoisonError::into_inner));
        InUse { _gate: gate }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

/// Runs `f`, which uses SQLite: a fork waits until it is done. `f` must not wait on another thread that uses
/// SQLite (such as the writer): while a fork waits to close the gate, that thread cannot enter it, and the fork
/// waits for `f`.
pub(crate) fn using_sqlite<R>(f: impl FnOnce() -> R) -> R {
    let _in_use = InUse::enter();
    f()
}

/// Before `fork()`: waits until no SQLite call of this process is in progress and keeps new ones from
/// starting until [`after_fork`]. A thread that is itself using SQLite cannot wait for itself: it forks
/// without the wait (the SDK never forks from inside a store call).
pub fn prepare_fork() {
    if DEPTH.get() > 0 || HELD_FOR_FORK.with_borrow(Option::is_some) {
        return;
    }
    let held = GATE.write().unwrap_or_else(PoisonError::into_inner);
    HELD_FOR_FORK.set(Some(held));
}

/// After `fork()`, in the parent and in the child: lets SQLite calls go on.
pub fn after_fork() {
    HELD_FOR_FORK.take();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_fork_waits_for_the_use_in_progress_and_holds_new_ones_back() {
        let inside = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let user = {
            let (inside, release) = (inside.clone(), release.clone());
            std::thread::spawn(move || {
                using_sqlite(|| {
                    inside.store(true, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
        };
        while !inside.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let forker = std::thread::spawn(move || {
            prepare_fork();
            // Here the fork would happen: a new use started now must wait for after_fork.
            let waiter = std::thread::spawn(|| using_sqlite(|| ()));
            std::thread::sleep(Duration::from_millis(50));
            let waited = !waiter.is_finished();
            after_fork();
            waiter.join().unwrap();
            waited
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !forker.is_finished(),
            "prepare_fork returned while SQLite was in use"
        );
        release.store(true, Ordering::SeqCst);
        user.join().unwrap();
        assert!(
            forker.join().unwrap(),
            "a use started between prepare_fork and after_fork"
        );
    }

    #[test]
    fn nested_uses_and_a_fork_from_inside_a_use_do_not_deadlock() {
        let depth = using_sqlite(|| using_sqlite(|| DEPTH.get()));
        assert_eq!(depth, 2);
        assert_eq!(DEPTH.get(), 0);
        using_sqlite(|| {
            prepare_fork();
            after_fork();
        });
        prepare_fork();
        prepare_fork(); // a second prepare on the same thread is a no-op, not a self-deadlock
        after_fork();
        using_sqlite(|| ());
    }
}
