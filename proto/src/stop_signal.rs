//! The signals that stop a daemon (`agent run`, `coordinator serve`)
//! gracefully: SIGINT, SIGTERM, and SIGHUP. Neither has anything to reload,
//! and a hangup (a terminal or SSH session closed under a daemon started
//! with `&`, as the README's quick start does) killed both by the default
//! action: no map saved, no socket removed, the coordinator's write-ahead
//! log left unfolded (found by a review, 2026-12-07). A SIGHUP ignored when
//! the process started (`nohup`, a supervisor's choice) stays ignored: a
//! handler would have replaced that, and stopped a `nohup` daemon at logout
//! (found by the review of that change).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The handlers, installed by [`install`] (at once: a signal that came
/// before them, while the daemon started, took the default action).
pub struct StopSignals {
    /// SIGINT, SIGTERM, and SIGHUP unless ignored from the start; None if
    /// one could not be installed.
    handlers: Option<(Signal, Signal, Option<Signal>)>,
}

/// Installs the handlers now. Needs a Tokio runtime.
pub fn install() -> StopSignals {
    let hup = match hangup_ignored() {
        true => None,
        false => Some(signal(SignalKind::hangup())),
    };
    let handlers = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), hup.transpose()) {
        (Ok(int), Ok(term), Ok(hup)) => Some((int, term, hup)),
        _ => None,
    };
    StopSignals { handlers }
}

impl StopSignals {
    /// Resolves at the first of them, and says which. Without handlers it
    /// never resolves: the process still ends on a signal, just not
    /// gracefully.
    pub async fn requested(self) {
        let Some((mut int, mut term, mut hup)) = self.handlers else {
            return std::future::pending().await;
        };
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let signal = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hangup => "SIGHUP",
        };
        tracing::info!(signal, "shutting down");
    }
}

/// Whether SIGHUP is ignored in this process now (`SigIgn` in
/// `/proc/self/status`, a mask whose bit 0 is signal 1, SIGHUP).
fn hangup_ignored() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map(str::trim);
    mask.and_then(|m| u64::from_str_radix(m, 16).ok()).is_some_and(|m| m & 1 != 0)
}

/// [`install`] at the first poll, then [`StopSignals::requested`]: until
/// then a signal takes its default action, which ends a daemon still
/// waiting to start (a lock another holds) at once.
pub async fn stop_requested() {
    install().requested().await;
}
