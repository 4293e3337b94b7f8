//! Signals for the daemon: SIGTERM and SIGINT ask it to stop, SIGHUP to
//! reload its config. Each handler only sets a flag (one atomic store,
//! async-signal-safe), which the main thread reads; everything else happens
//! outside signal context. The daemon's main thread sleeps in [`wait`],
//! which takes the signals synchronously (`sigtimedwait`) and sets the same
//! flags, so an idle daemon does not wake on a tick to look for them.
//!
//! Worker threads should be started inside [`with_signals_blocked`], so
//! they inherit a mask that keeps these signals away from them: a signal is
//! then always delivered to the main thread and never interrupts a worker's
//! system call (a socket read with a timeout fails with EINTR even with
//! `SA_RESTART`).
//!
//! This needs `libc` (std has no signal API); it was already in the
//! dependency tree through memmap2.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

/// The signals handled here.
const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn request_reload(_signal: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Install the handlers for SIGTERM, SIGINT and SIGHUP.
pub fn install() {
    for signal in HANDLED {
        let handler = if signal == libc::SIGHUP { request_reload } else { request_stop };
        // SAFETY: the handlers are async-signal-safe (one atomic store), and
        // `sigaction` is given a fully initialised struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether SIGTERM or SIGINT has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Whether SIGHUP has arrived since the last call (which consumes it:
/// several SIGHUPs before a reload make one reload).
pub fn take_reload_request() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

/// Sleep up to `timeout`, or until SIGTERM, SIGINT or SIGHUP arrives: the
/// signal sets its flag as its handler would. From the first call on, the
/// calling thread keeps these signals blocked, so that one arriving while
/// it does something else stays pending until the next call takes it
/// (every other thread blocks them too, see [`with_signals_blocked`]).
pub fn wait(timeout: std::time::Duration) {
    let set = handled_set();
    set_thread_mask(libc::SIG_BLOCK, &set);
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `set` and `timeout` are initialised; no siginfo is asked for.
    match unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) } {
        libc::SIGHUP => RELOAD.store(true, Ordering::SeqCst),
        libc::SIGTERM | libc::SIGINT => STOP.store(true, Ordering::SeqCst),
        _ => {} // timed out, or interrupted by another signal
    }
}

/// The handled signals as a set.
fn handled_set() -> libc::sigset_t {
    // SAFETY: `set` is initialised by sigemptyset before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Run `start` with the handled signals blocked in the calling thread, so
/// that the threads it spawns inherit the block; the calling thread's mask
/// is restored afterwards, and a signal that arrived meanwhile is delivered
/// then.
pub fn with_signals_blocked<T>(start: impl FnOnce() -> T) -> T {
    let blocked = handled_set();
    let previous = set_thread_mask(libc::SIG_BLOCK, &blocked);
    let result = start();
    set_thread_mask(libc::SIG_SETMASK, &previous);
    result
}

/// `pthread_sigmask(how, set)`, returning the mask it replaced.
fn set_thread_mask(how: libc::c_int, set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: both sets are valid, initialised sigset_t values, and
    // pthread_sigmask only changes the calling thread's mask.
    unsafe {
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(how, set, &mut previous);
        previous
    }
}
