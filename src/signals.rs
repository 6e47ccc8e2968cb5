//! Graceful interruption: SIGTERM and SIGINT ask the running command to stop at its next safe point.
//!
//! [`install`] runs at the start of every command. The first SIGTERM or SIGINT only sets a flag; long
//! jobs poll [`interrupted`] (or [`check`]) at points where stopping leaves the repository consistent
//! (between files and packs of a backup, between snapshots of forget and copy, between packs of prune,
//! check and restore) and return [`Error::Interrupted`]. Their lock guards are dropped on the way out,
//! which removes the lock. Because a job commits packs, then the index, then the snapshot, a backup
//! stopped this way commits nothing; packs it already wrote stay unreferenced until the next prune.
//!
//! A second signal while stopping ends the process at once (with the same exit code), for a stop that
//! takes too long; its lock is then stale at once on this host (its process is gone).
//!
//! The exit code of an interrupted command is 128 + the signal number: 130 for SIGINT, 143 for
//! SIGTERM, as shells report them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use crate::error::{Error, Result};

/// Set by the first SIGTERM or SIGINT.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The number of the last signal received (0: none yet).
static SIGNAL: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// SIGINT's number.
pub const SIGINT: i32 = signal_hook::consts::SIGINT;
/// SIGTERM's number.
pub const SIGTERM: i32 = signal_hook::consts::SIGTERM;

/// Installs the handlers for SIGTERM and SIGINT (once per process; later calls do nothing).
///
/// # Errors
/// The operating system refused a handler (the command then runs without graceful interruption).
pub fn install() -> std::io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = (|| {
            for sig in [SIGINT, SIGTERM] {
                // Order matters: the shutdown looks at the flag before this signal sets it, so only a
                // second signal ends the process at once.
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, &STOPPING)?;
                signal_hook::flag::register_usize(sig, &SIGNAL, sig as usize)?;
                signal_hook::flag::register(sig, &STOPPING)?;
            }
            Ok(())
        })();
    });
    result
}

/// Whether a stop was asked for (a signal arrived, or [`request_stop`] was called).
pub fn interrupted() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// [`Error::Interrupted`] once a stop was asked for; for `?` at safe points.
///
/// # Errors
/// [`Error::Interrupted`] after a stop was asked for.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Asks the running jobs of this process to stop as if SIGTERM had arrived (for a supervisor inside
/// the process, and for tests).
pub fn request_stop() {
    SIGNAL
        .compare_exchange(0, SIGTERM as usize, Ordering::SeqCst, Ordering::SeqCst)
        .ok();
    STOPPING.store(true, Ordering::SeqCst);
}

/// The signal that asked for the stop, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// The exit code of an interrupted command: 128 + the signal number (130 for SIGINT, 143 for
/// SIGTERM); 130 when the stop came from elsewhere.
pub fn exit_code() -> u8 {
    received()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(130)
}

/// The signal's name for messages (`SIGTERM`, `SIGINT`).
pub fn name() -> &'static str {
    match received() {
        Some(SIGTERM) => "SIGTERM",
        Some(SIGINT) => "SIGINT",
        _ => "a stop request",
    }
}
