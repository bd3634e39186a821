//! Ctrl-C and SIGTERM as a graceful shutdown.
//!
//! One process-wide watcher thread (signal-hook's self-pipe iterator, so nothing but a write runs
//! inside the signal handler) waits for SIGINT and SIGTERM. A runtime built with
//! [`Builder::shutdown_on_signals`](crate::Builder::shutdown_on_signals) arms its
//! [`ShutdownSignal`] here for as long as it lives. The first signal triggers every armed
//! shutdown; a signal that finds nothing left to trigger (none armed, or all already triggered:
//! the second Ctrl-C) gets the default action, so the process ends as it would have without us.
//! The watcher is never torn down: unregistering would leave the signals ignored, not defaulted.

use std::io;
use std::sync::{Mutex, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::shutdown::ShutdownSignal;

struct Watcher {
    armed: Mutex<slab::Slab<ShutdownSignal>>,
}

fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<Watcher, String>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let signals = Signals::new([SIGINT, SIGTERM])
                .map_err(|e| format!("cannot install the SIGINT/SIGTERM handlers: {e}"))?;
            std::thread::Builder::new()
                .name("zcrx-signals".into())
                .spawn(move || watch(signals))
                .map_err(|e| format!("cannot start the signal watcher thread: {e}"))?;
            Ok(Watcher {
                armed: Mutex::new(slab::Slab::new()),
            })
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

fn watch(mut signals: Signals) {
    for sig in signals.forever() {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        // Blocks until the thread that started this one has stored the watcher.
        let Ok(w) = watcher() else {
            return;
        };
        let armed = w.armed.lock().unwrap_or_else(|e| e.into_inner());
        let pending: Vec<&ShutdownSignal> = armed
            .iter()
            .map(|(_, s)| s)
            .filter(|s| !s.is_triggered())
            .collect();
        if pending.is_empty() {
            drop(armed);
            tracing::info!("{name} again: exiting at once");
            // Ends the process the way the signal's default action would (status 128 + signal).
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            continue;
        }
        tracing::info!(
            runtimes = pending.len(),
            "{name}: shutting down gracefully (send it again to exit at once)"
        );
        for s in pending {
            s.trigger();
        }
    }
}

/// Keeps a [`ShutdownSignal`] armed against SIGINT and SIGTERM until dropped.
#[derive(Debug)]
pub(crate) struct Armed {
    key: usize,
}

/// Arms `signal`: the next SIGINT or SIGTERM triggers it.
pub(crate) fn arm(signal: &ShutdownSignal) -> io::Result<Armed> {
    let w = watcher()?;
    let key = w
        .armed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(signal.clone());
    Ok(Armed { key })
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Ok(w) = watcher() {
            w.armed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.key);
        }
    }
}
