//! How the map watch retries: the delays, and what ends a membership.
use std::time::Duration;

use crate::error::Error;

/// Retry delays for the watch: start small, cap low enough that changes never wait long.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Retries at `BACKOFF_MIN` after a watch ends, before the backoff grows.
pub(super) const QUICK_RETRIES: u32 = 5;
/// Next retry delay: doubled, capped, with up to 25 % jitter so that many
/// agents do not reconnect in lockstep after a coordinator restart.
pub fn next_backoff(current: Duration) -> Duration {
    let doubled = (current * 2).min(BACKOFF_MAX);
    let jitter = doubled.mul_f64(rand::random::<f64>() * 0.25);
    (doubled + jitter).min(BACKOFF_MAX)
}

/// Waits `wait`, or until a coordinator answers a status call, made every
/// [`BACKOFF_MIN`] meanwhile (at least one such pause first). A balanced
/// channel over several coordinators advances a connection only while a
/// call waits on it: one begun by a failed watch stood mid-handshake while
/// the watch slept its backoff, the coordinator closed it at its 5 s TLS
/// timeout, and the next watch met that and began another. Agents took
/// 13-96 s to watch again after both coordinators restarted (found by a
/// review, 2026-12-06).
pub(super) async fn wait_or_answered(
    status: &mut weave_proto::v1::status_service_client::StatusServiceClient<weave_proto::client::AuthChannel>,
    wait: Duration,
) {
    let probe = async {
        loop {
            tokio::time::sleep(BACKOFF_MIN).await;
            if status.get_status(weave_proto::v1::GetStatusRequest {}).await.is_ok() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(wait, probe).await;
}

/// Whether a failed watch means this node is no longer a member. The
/// coordinator says so with UNAUTHENTICATED (the node was removed, or its
/// credential replaced by a re-join elsewhere); anything else (unreachable,
/// restarting, overloaded) is an outage to wait out.
pub fn membership_ended(status: &tonic::Status) -> bool {
    // The coordinator marks a real end of membership (`weave-membership:
    // removed|replaced`); a bare UNAUTHENTICATED (a coordinator restored
    // from an older backup, a wrong one behind the same address) is waited
    // out: tearing the network down for it would be the worse mistake.
    status.code() == tonic::Code::Unauthenticated && status.metadata().get("weave-membership").is_some()
}

/// The error a status for which [`membership_ended`] holds stops the agent
/// with: [`Error::Forgotten`] when the coordinator forgot the node
/// (`weave-membership: forgotten`, its token's `--forget-after`), which may
/// join again with its token; else [`Error::Removed`], which stays out.
pub fn membership_error(status: &tonic::Status) -> Error {
    let why = status.message().to_string();
    match status.metadata().get("weave-membership").is_some_and(|v| v.as_bytes() == b"forgotten") {
        true => Error::Forgotten(why),
        false => Error::Removed(why),
    }
}

/// Warns, once an outage has lasted half of this node's `forget_after` (from
/// its token, in the map), that the coordinator forgets it if it lasts the
/// whole: its addresses then go to other containers while its own still use
/// them, and it takes its network down when it reconnects. Runs for the
/// agent's life; `connected` is the map watch's.
pub async fn warn_out_of_touch(
    node: u64,
    maps: tokio::sync::watch::Receiver<weave_proto::v1::NetworkMap>,
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut lost: Option<tokio::time::Instant> = None;
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if connected.load(std::sync::atomic::Ordering::Relaxed) {
            (lost, warned) = (None, false);
            continue;
        }
        let since = *lost.get_or_insert_with(tokio::time::Instant::now);
        let forget_after = maps.borrow().nodes.iter().find(|n| n.id == node).map_or(0, |n| n.forget_after_seconds);
        if warned || forget_after == 0 || since.elapsed() < Duration::from_secs(forget_after) / 2 {
            continue;
        }
        warned = true;
        tracing::warn!(
            out_of_touch_s = since.elapsed().as_secs(),
            forget_after_s = forget_after,
            "no map watch on any coordinator for half of this node's --forget-after: if that lasts the whole, the \
             coordinator forgets this node (its addresses go to other containers) and, when it is reached again, \
             this agent takes the host's network down and must join again"
        );
    }
}

/// How often a watch that keeps failing for the same reason says so again.
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(300);

/// How long a watch stays open before an outage is taken to be over (1 s
/// in unit tests).
pub(super) const HOLDS_AFTER: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 10 });

/// One outage of the watch, for its log: a WARN when it starts or its
/// reason changes, a reminder every [`REMIND_EVERY`], DEBUG for the retries
/// between, and how long it lasted once a watch is open again. Every agent
/// wrote a WARN every 5 s for as long as the coordinator was away (3.7 MB a
/// day each; found by a review, 2026-12-08).
#[derive(Default)]
pub(super) struct Outage {
    /// When it began, the reason last said, and when it was said.
    since: Option<(std::time::Instant, String, std::time::Instant)>,
}

impl Outage {
    /// Whether this failure (`reason`) is to be said at WARN.
    pub(super) fn failed(&mut self, reason: &str) -> bool {
        let now = std::time::Instant::now();
        match &mut self.since {
            Some((_, said, at)) if said == reason && at.elapsed() < REMIND_EVERY => false,
            Some((_, said, at)) => {
                (*said, *at) = (reason.to_string(), now);
                true
            }
            None => {
                self.since = Some((now, reason.to_string(), now));
                true
            }
        }
    }

    /// A watch is open: how long the outage lasted, if there was one.
    pub(super) fn ended(&mut self) -> Option<Duration> {
        self.since.take().map(|(began, ..)| began.elapsed())
    }

    pub(super) fn ongoing(&self) -> bool {
        self.since.is_some()
    }

    /// A watch delivered an event, or stayed open [`HOLDS_AFTER`]: the
    /// outage is over (a watch accepted and then broken at once, a
    /// coordinator whose database is away, is not the end of one).
    pub(super) fn resumed(&mut self, from: u64) {
        if let Some(d) = self.ended() {
            tracing::info!(from_revision = from, after_s = d.as_secs(), "watching the network map again");
        }
    }
}
