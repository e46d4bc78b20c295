//! The peers' timers (rekey, keepalive, expiry, the endpoint fallback) and
//! the handshake limiter's second.
use std::sync::atomic::Ordering;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};

use super::{Peer, Router, Sink, flush_queued, lock};

/// boringtun sends an initiation again after 5 s without an answer
/// (REKEY_TIMEOUT); a peer is reported down at its first retry.
const UNANSWERED: Duration = Duration::from_secs(5);

impl Router {
    /// Timers for every peer (rekey, keepalive, expiry); call every ~250 ms.
    pub fn tick(&self, buf: &mut [u8], sink: &impl Sink) {
        let table = self.table();
        let now = self.now_ms();
        let keepalive_ms = self.nat_keepalive_ms.load(Ordering::Relaxed);
        let nat = self.behind_nat.load(Ordering::Relaxed) && keepalive_ms > 0;
        for peer in table.by_index.values() {
            if nat && now.saturating_sub(peer.last_keepalive.load(Ordering::Relaxed)) >= keepalive_ms {
                self.keepalive(peer, now, buf, sink);
            }
            let mut tunn = lock(&peer.tunn);
            // The session in use: one made answering the peer counts once
            // the peer used it (`report_unheard`).
            if let Some(age) = tunn.current_session_age() {
                peer.handshake_at.store(now.saturating_sub(age.as_millis() as u64).max(1), Ordering::Relaxed);
            }
            if let Some(next) = peer.fallback.due(now, peer.endpoint(), super::fallback::routable) {
                tracing::info!(peer = %peer.config.name, from = ?peer.endpoint(), to = %next, "no answer: trying the peer's next endpoint");
                *lock(&peer.endpoint) = Some(next);
                if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(buf, true) {
                    sink.to_network(next, init);
                }
            }
            // boringtun's timers log (REKEY_TIMEOUT, …) under the peer's name.
            let _peer = tracing::info_span!("peer", name = %peer.config.name).entered();
            if let TunnResult::WriteToNetwork(out) = tunn.update_timers(buf)
                && let Some(endpoint) = peer.endpoint()
            {
                sink.to_network(endpoint, out);
            }
            report_reachability(peer, &tunn, now);
            report_unheard(peer, &tunn, now);
            // boringtun's timers never send what it queued: a session made
            // current by the initiator's data, its keepalive lost, would
            // leave the queue waiting for the next keepalive (found by a
            // review). An empty queue costs one pop.
            if tunn.time_since_last_handshake().is_some()
                && let Some(endpoint) = peer.endpoint()
            {
                flush_queued(&mut tunn, endpoint, buf, sink);
            }
        }
    }

    /// Call once a second: the handshake rate limit is per second.
    pub fn reset_rate_limit(&self) {
        self.rate_limiter.reset_count();
        self.refresh_trusted();
    }

    /// The peers' addresses (in the map, and where each is now: roaming,
    /// a NAT's mapping) keep a place in the handshake limiter's source table
    /// while an outsider fills it (the vendored `RateLimiter::set_trusted`).
    pub(super) fn refresh_trusted(&self) {
        let mut known = lock(&self.map_endpoints).clone();
        known.extend(self.table().by_index.values().filter_map(|p| p.endpoint()).map(|e| e.ip()));
        self.rate_limiter.set_trusted(known);
    }
}

/// One warning when the peer's handshakes arrive and this host's answers go
/// unused for 5 s (the other way lost: a firewall or NAT dropping it), one
/// line when one is used. That host saw the peer as just handshaken for as
/// long as it lasted (found by a review, 2026-12-07).
fn report_unheard(peer: &Peer, tunn: &Tunn, now: u64) {
    let since = peer.unheard_since.load(Ordering::Relaxed);
    match tunn.unused_answer_age() {
        Some(age) if age >= UNANSWERED && since == 0 => {
            tracing::warn!(
                peer = %peer.config.name,
                endpoint = ?peer.endpoint(),
                "the peer's handshakes arrive, but for 5 s it has not used this host's answers: this host's \
                 packets do not reach it (a firewall or NAT dropping that direction?)"
            );
            peer.unheard_since.store(now.saturating_sub(age.as_millis() as u64).max(1), Ordering::Relaxed);
        }
        None if since != 0 => {
            tracing::info!(peer = %peer.config.name, unheard_s = now.saturating_sub(since) / 1000, "the peer hears this host again");
            peer.unheard_since.store(0, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// One warning per outage (boringtun logged one every 5 s for as long as a
/// peer was down, at debug now) and one line when the peer answers again.
fn report_reachability(peer: &Peer, tunn: &Tunn, now: u64) {
    let down_since = peer.down_since.load(Ordering::Relaxed);
    if down_since == 0 {
        if let Some(age) = tunn.unanswered_handshake().filter(|age| *age >= UNANSWERED) {
            // A peer whose endpoints are all of a family this host has no
            // route to is not down: the two hosts share no address family
            // (and weave has no relay). Said once per outage.
            let candidates = peer.fallback.candidates();
            if !candidates.is_empty() && !candidates.iter().any(|e| super::fallback::routable(*e)) {
                tracing::warn!(
                    peer = %peer.config.name,
                    endpoints = ?candidates,
                    "this host has no route to any of the peer's endpoints: hosts need an address family \
                     (IPv4 or IPv6) in common, and weave has no relay"
                );
            } else {
                tracing::warn!(
                    peer = %peer.config.name,
                    endpoint = ?peer.endpoint(),
                    "no answer to a handshake for 5 s: the peer is down or cannot be reached \
                     (retrying every 5 s while there is traffic for it)"
                );
            }
            peer.down_since.store(now.saturating_sub(age.as_millis() as u64).max(1), Ordering::Relaxed);
        }
        return;
    }
    let down_for = now.saturating_sub(down_since);
    // A session in use made since the unanswered attempt began: one this
    // host made answering the peer counts once the peer used it (its
    // packets to the peer all lost, it said "answers again" and then
    // nothing; found by a review, 2026-12-06).
    if tunn.current_session_age().is_some_and(|age| (age.as_millis() as u64) < down_for) {
        tracing::info!(
            peer = %peer.config.name,
            endpoint = ?peer.endpoint(),
            unanswered_s = down_for / 1000,
            "the peer answers again"
        );
        peer.down_since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};

    /// Two tunnels that are each other's peer.
    fn pair() -> (Tunn, Tunn) {
        let (a_secret, b_secret) = (StaticSecret::from([1; 32]), StaticSecret::from([2; 32]));
        let (a_public, b_public) = (PublicKey::from(&a_secret), PublicKey::from(&b_secret));
        (Tunn::new(a_secret, b_public, None, None, 1, None), Tunn::new(b_secret, a_public, None, None, 2, None))
    }

    /// A paused peer, back, answers the initiation before this host's last
    /// retry (the retry, taken within 20 ms, is refused as a flood): a
    /// session, the retry still in progress. That is an answer: the router
    /// warned and said "answers again" by turns every 250 ms until the retry
    /// was answered (found by a review, 2026-12-06).
    #[test]
    fn a_session_made_while_a_retry_waits_is_an_answer() {
        let (mut a, mut b) = pair();
        let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(first) = a.format_handshake_initiation(&mut x, false) else { panic!() };
        let first = first.to_vec();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let TunnResult::WriteToNetwork(_) = a.format_handshake_initiation(&mut x, true) else { panic!("no retry") };
        assert!(a.unanswered_handshake().is_some_and(|d| d.as_millis() >= 1200), "a's attempt waits");
        let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, &first, &mut y) else { panic!("no response") };
        // boringtun's clock is its last tick's (every 250 ms here).
        let _ = a.update_timers(&mut x);
        let TunnResult::WriteToNetwork(_) = a.decapsulate(None, resp, &mut x) else { panic!("no keepalive") };
        assert!(a.time_since_last_handshake().is_some() && a.handshake_in_progress(), "a session, the retry on");
        // Unanswered since the session (a peer that stops again right after
        // is reported 5 s on), not since the attempt began.
        assert!(a.unanswered_handshake().is_some_and(|d| d.as_millis() < 600), "{:?}", a.unanswered_handshake());
    }

    /// A session this host made answering the peer is no proof that the
    /// peer hears it until the peer uses it: a host whose packets to the
    /// peer were all lost said "answers again" 250 ms after its warning, and
    /// nothing more while its traffic was lost (found by a review,
    /// 2026-12-06). `report_reachability` counts the session in use.
    #[test]
    fn a_session_this_host_answered_counts_once_the_peer_uses_it() {
        let (mut a, mut b) = pair();
        let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut x, false) else { panic!() };
        let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, init, &mut y) else { panic!("no response") };
        let TunnResult::WriteToNetwork(_) = a.decapsulate(None, resp, &mut x) else { panic!("no keepalive") };
        std::thread::sleep(std::time::Duration::from_millis(1200));
        // b's initiation, answered by a; the answer is lost.
        let _ = (a.update_timers(&mut x), b.update_timers(&mut y));
        let TunnResult::WriteToNetwork(init) = b.format_handshake_initiation(&mut y, true) else { panic!() };
        let TunnResult::WriteToNetwork(resp) = a.decapsulate(None, init, &mut x) else { panic!("no response") };
        let resp = resp.to_vec();
        assert!(a.time_since_last_handshake().is_some_and(|d| d.as_millis() < 600), "a session made");
        let old = a.current_session_age().unwrap();
        assert!(old.as_millis() >= 1200, "the session in use is still the first: {old:?}");
        // b gets it and uses it: now it is.
        let TunnResult::WriteToNetwork(keepalive) = b.decapsulate(None, &resp, &mut y) else { panic!("no keepalive") };
        assert!(matches!(a.decapsulate(None, keepalive, &mut x), TunnResult::Done));
        assert!(a.current_session_age().is_some_and(|d| d.as_millis() < 600), "{:?}", a.current_session_age());
    }
}
