//! The signals that stop a daemon (`agent run`, `coordinator serve`)
//! gracefully: SIGINT, SIGTERM, and SIGHUP. Neither has anything to reload,
//! and a hangup (a terminal or SSH session closed under a daemon started
//! with `&`, as the README's quick start does) killed both by the default
//! action: no map saved, no socket removed, the coordinator's write-ahead
//! log left unfolded (found by a review, 2026-12-07).

/// Resolves at the first of SIGINT, SIGTERM or SIGHUP, and says which.
/// Without handlers (none could be installed) it never resolves: the
/// process still ends on a signal, just not gracefully.
pub async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let (int, term, hup) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()));
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (int, term, hup) else {
        return std::future::pending().await;
    };
    let signal = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    };
    tracing::info!(signal, "shutting down");
}
