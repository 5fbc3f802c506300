//! Ctrl-C and SIGTERM: the first asks the run to stop at its next safe point; the
//! second ends the process at once with status 130. Both are safe at any instant:
//! batches become visible only by an atomic rename and the checkpoint never runs
//! ahead of data on disk, so an abrupt exit leaves a resumable folder.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Exit status of an interrupted run (128 + SIGINT).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe operations here: an atomic add and _exit.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(libc::c_int::from(EXIT_INTERRUPTED)) };
    }
}

/// Installs the handlers for SIGINT and SIGTERM.
pub(crate) fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask is a
        // well-formed argument; the handler only touches an atomic and calls _exit.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether the user asked the run to stop.
pub(crate) fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}
