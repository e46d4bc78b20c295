// Copyright (c) 2019 Cloudflare, Inc. All rights reserved.
// SPDX-License-Identifier: BSD-3-Clause

use super::errors::WireGuardError;
use crate::noise::{Tunn, TunnResult};
use std::mem;
use std::ops::{Index, IndexMut};

use std::time::Duration;

#[cfg(feature = "mock-instant")]
use mock_instant::Instant;

#[cfg(not(feature = "mock-instant"))]
use crate::sleepyinstant::Instant;

// Some constants, represent time in seconds
// https://www.wireguard.com/papers/wireguard.pdf#page=14
pub(crate) const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
pub(crate) const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const COOKIE_EXPIRATION_TIME: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub enum TimerName {
    /// Current time, updated each call to `update_timers`
    TimeCurrent,
    /// Time when last handshake was completed
    TimeSessionEstablished,
    /// Time the last attempt for a new handshake began
    TimeLastHandshakeStarted,
    /// Time we last received and authenticated a packet
    TimeLastPacketReceived,
    /// Time we last send a packet
    TimeLastPacketSent,
    /// Time we last received and authenticated a DATA packet
    TimeLastDataPacketReceived,
    /// Time we last send a DATA packet
    TimeLastDataPacketSent,
    /// Time we last received a cookie
    TimeCookieReceived,
    /// Time we last sent persistent keepalive
    TimePersistentKeepalive,
    Top,
}

use self::TimerName::*;

#[derive(Debug)]
pub struct Timers {
    /// Is the owner of the timer the initiator or the responder for the last handshake?
    is_initiator: bool,
    /// Start time of the tunnel
    time_started: Instant,
    timers: [Duration; TimerName::Top as usize],
    pub(super) session_timers: [Duration; super::N_SESSIONS],
    /// Did we receive data without sending anything back?
    want_keepalive: bool,
    /// Did we send data without hearing back?
    want_handshake: bool,
    /// weave: when the first data went out since the last packet came in
    /// (none since): the start of KEEPALIVE + REKEY_TIMEOUT, as the kernel's
    /// `new_handshake` timer. Measured from the last packet received, a send
    /// after 15 s of quiet started a handshake at once (a warning and a
    /// handshake per peer for each broadcast; firezone/boringtun#66).
    pub(super) first_unanswered: Option<Duration>,
    persistent_keepalive: usize,
    /// Should this timer call reset rr function (if not a shared rr instance)
    pub(super) should_reset_rr: bool,
}

impl Timers {
    pub(super) fn new(persistent_keepalive: Option<u16>, reset_rr: bool) -> Timers {
        Timers {
            is_initiator: false,
            time_started: Instant::now(),
            timers: Default::default(),
            session_timers: Default::default(),
            want_keepalive: Default::default(),
            want_handshake: Default::default(),
            first_unanswered: None,
            persistent_keepalive: usize::from(persistent_keepalive.unwrap_or(0)),
            should_reset_rr: reset_rr,
        }
    }

    fn is_initiator(&self) -> bool {
        self.is_initiator
    }

    // We don't really clear the timers, but we set them to the current time to
    // so the reference time frame is the same
    pub(super) fn clear(&mut self) {
        let now = Instant::now().duration_since(self.time_started);
        for t in &mut self.timers[..] {
            *t = now;
        }
        self.want_handshake = false;
        self.want_keepalive = false;
        self.first_unanswered = None;
    }
}

impl Index<TimerName> for Timers {
    type Output = Duration;
    fn index(&self, index: TimerName) -> &Duration {
        &self.timers[index as usize]
    }
}

impl IndexMut<TimerName> for Timers {
    fn index_mut(&mut self, index: TimerName) -> &mut Duration {
        &mut self.timers[index as usize]
    }
}

impl Tunn {
    pub(super) fn timer_tick(&mut self, timer_name: TimerName) {
        match timer_name {
            TimeLastPacketReceived => {
                self.timers.want_keepalive = true;
                self.timers.want_handshake = false;
                self.timers.first_unanswered = None;
            }
            TimeLastDataPacketSent => {
                let now = self.timers[TimeCurrent];
                self.timers.first_unanswered.get_or_insert(now);
            }
            TimeLastPacketSent => {
                self.timers.want_handshake = true;
                self.timers.want_keepalive = false;
            }
            _ => {}
        }

        let time = self.timers[TimeCurrent];
        self.timers[timer_name] = time;
    }

    pub(super) fn timer_tick_session_established(
        &mut self,
        is_initiator: bool,
        session_idx: usize,
    ) {
        self.timer_tick(TimeSessionEstablished);
        self.timers.session_timers[session_idx % crate::noise::N_SESSIONS] =
            self.timers[TimeCurrent];
        self.timers.is_initiator = is_initiator;
    }

    // We don't really clear the timers, but we set them to the current time to
    // so the reference time frame is the same
    fn clear_all(&mut self) {
        for session in &mut self.sessions {
            *session = None;
        }

        self.packet_queue.clear();

        self.timers.clear();
    }

    fn update_session_timers(&mut self, time_now: Duration) {
        let timers = &mut self.timers;

        for (i, t) in timers.session_timers.iter_mut().enumerate() {
            if time_now - *t > REJECT_AFTER_TIME {
                if let Some(session) = self.sessions[i].take() {
                    tracing::debug!(
                        message = "SESSION_EXPIRED(REJECT_AFTER_TIME)",
                        session = session.receiving_index
                    );
                }
                *t = time_now;
            }
        }
    }

    pub fn update_timers<'a>(&mut self, dst: &'a mut [u8]) -> TunnResult<'a> {
        let mut handshake_initiation_required = false;
        let mut keepalive_required = false;

        let time = Instant::now();

        if self.timers.should_reset_rr {
            self.rate_limiter.reset_count();
        }

        // All the times are counted from tunnel initiation, for efficiency our timers are rounded
        // to a second, as there is no real benefit to having highly accurate timers.
        let now = time.duration_since(self.timers.time_started);
        self.timers[TimeCurrent] = now;

        self.update_session_timers(now);

        // Load timers only once:
        let session_established = self.timers[TimeSessionEstablished];
        let handshake_started = self.timers[TimeLastHandshakeStarted];
        let aut_packet_received = self.timers[TimeLastPacketReceived];
        let aut_packet_sent = self.timers[TimeLastPacketSent];
        let data_packet_received = self.timers[TimeLastDataPacketReceived];
        let data_packet_sent = self.timers[TimeLastDataPacketSent];
        let persistent_keepalive = self.timers.persistent_keepalive;

        {
            if self.handshake.is_expired() {
                return TunnResult::Err(WireGuardError::ConnectionExpired);
            }

            // Clear cookie after COOKIE_EXPIRATION_TIME
            if self.handshake.has_cookie()
                && now - self.timers[TimeCookieReceived] >= COOKIE_EXPIRATION_TIME
            {
                self.handshake.clear_cookie();
            }

            // All ephemeral private keys and symmetric session keys are zeroed out after
            // (REJECT_AFTER_TIME * 3) ms if no new keys have been exchanged.
            if now - session_established >= REJECT_AFTER_TIME * 3 {
                // weave: debug: the keys of a tunnel idle for 9 minutes
                // wiped, as they should be, not a fault.
                tracing::debug!("CONNECTION_EXPIRED(REJECT_AFTER_TIME * 3)");
                self.handshake.set_expired();
                self.clear_all();
                return TunnResult::Err(WireGuardError::ConnectionExpired);
            }

            if let Some(time_init_sent) = self.handshake.timer() {
                // Handshake Initiation Retransmission
                if now - handshake_started >= REKEY_ATTEMPT_TIME {
                    // After REKEY_ATTEMPT_TIME ms of trying to initiate a new handshake,
                    // the retries give up and cease, and clear all existing packets queued
                    // up to be sent. If a packet is explicitly queued up to be sent, then
                    // this timer is reset.
                    // weave: debug, as the retries: the agent says once per
                    // outage that the peer does not answer.
                    tracing::debug!("CONNECTION_EXPIRED(REKEY_ATTEMPT_TIME)");
                    self.handshake.set_expired();
                    self.clear_all();
                    return TunnResult::Err(WireGuardError::ConnectionExpired);
                }

                if time_init_sent.elapsed() >= REKEY_TIMEOUT {
                    // We avoid using `time` here, because it can be earlier than `time_init_sent`.
                    // Once `checked_duration_since` is stable we can use that.
                    // A handshake initiation is retried after REKEY_TIMEOUT + jitter ms,
                    // if a response has not been received, where jitter is some random
                    // value between 0 and 333 ms.
                    // weave: debug: one line every 5 s for as long as a peer
                    // is down; the agent logs the outage once
                    // (`Tunn::unanswered_handshake`).
                    tracing::debug!("HANDSHAKE(REKEY_TIMEOUT)");
                    handshake_initiation_required = true;
                }
            } else {
                if self.timers.is_initiator() {
                    // After sending a packet, if the sender was the original initiator
                    // of the handshake and if the current session key is REKEY_AFTER_TIME
                    // ms old, we initiate a new handshake. If the sender was the original
                    // responder of the handshake, it does not re-initiate a new handshake
                    // after REKEY_AFTER_TIME ms like the original initiator does.
                    // weave: a message sent since the key became that old, a
                    // keepalive too, as the kernel's WireGuard checks it on
                    // each send; not any data since the session began (an
                    // idle tunnel made one more handshake 120 s after its
                    // last, and showed as established for up to 300 s after
                    // its traffic).
                    if aut_packet_sent >= session_established + REKEY_AFTER_TIME {
                        tracing::debug!("HANDSHAKE(REKEY_AFTER_TIME (on send))");
                        handshake_initiation_required = true;
                    }

                    // After receiving a packet, if the receiver was the original initiator
                    // of the handshake and if the current session key is REJECT_AFTER_TIME
                    // - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT ms old, we initiate a new
                    // handshake.
                    // weave: a message received since then, as above.
                    if aut_packet_received
                        >= session_established + (REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)
                    {
                        // weave: debug, as its "on send" twin: the rekey of
                        // every live tunnel, not a fault.
                        tracing::debug!(
                            "HANDSHAKE(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - \
                        REKEY_TIMEOUT \
                        (on receive))"
                        );
                        handshake_initiation_required = true;
                    }
                }

                // If we have sent a packet to a given peer but have not received a
                // packet after from that peer for (KEEPALIVE + REKEY_TIMEOUT) ms,
                // we initiate a new handshake. weave: counted from the first
                // data sent since (`first_unanswered`), not from the last
                // packet received.
                let unanswered = self.timers.first_unanswered.map(|t| now.saturating_sub(t));
                if data_packet_sent > aut_packet_received
                    && unanswered.is_some_and(|u| u >= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)
                    && mem::replace(&mut self.timers.want_handshake, false)
                {
                    // weave: debug: the agent warns if this handshake goes
                    // unanswered too.
                    tracing::debug!("HANDSHAKE(KEEPALIVE + REKEY_TIMEOUT)");
                    handshake_initiation_required = true;
                }

                if !handshake_initiation_required {
                    // If a packet has been received from a given peer, but we have not sent one back
                    // to the given peer in KEEPALIVE ms, we send an empty packet.
                    if data_packet_received > aut_packet_sent
                        && now - aut_packet_sent >= KEEPALIVE_TIMEOUT
                        && mem::replace(&mut self.timers.want_keepalive, false)
                    {
                        tracing::debug!("KEEPALIVE(KEEPALIVE_TIMEOUT)");
                        keepalive_required = true;
                    }

                    // Persistent KEEPALIVE
                    if persistent_keepalive > 0
                        && (now - self.timers[TimePersistentKeepalive]
                            >= Duration::from_secs(persistent_keepalive as _))
                    {
                        tracing::debug!("KEEPALIVE(PERSISTENT_KEEPALIVE)");
                        self.timer_tick(TimePersistentKeepalive);
                        keepalive_required = true;
                    }
                }
            }
        }

        if handshake_initiation_required {
            return self.format_handshake_initiation(dst, true);
        }

        if keepalive_required {
            return self.encapsulate(&[], dst);
        }

        TunnResult::Done
    }

    /// weave: how long this host's current handshake attempt has gone
    /// unanswered (its first initiation to now, retries included), or
    /// `None` when no initiation of this host waits for an answer.
    /// A session made since the attempt began (the peer answered an earlier
    /// initiation of it) is an answer: the time counts from that session,
    /// while the attempt stays in progress, retried until its own answer
    /// comes. Counted from the attempt's start, weave's router warned and
    /// said "answers again" by turns every 250 ms after a paused peer came
    /// back (found by a review, 2026-12-06); not counted at all, a peer that
    /// stopped again right after went unreported until the attempt expired
    /// (90 s; found by the review of that fix).
    /// Only the session in use counts ([`Self::current_session_age`]): one
    /// this host made answering the peer's initiation is not proof that the
    /// peer hears it until the peer uses it (a host whose packets to the
    /// peer were all lost said "answers again" and nothing more; found by a
    /// review, 2026-12-06).
    pub fn unanswered_handshake(&self) -> Option<Duration> {
        self.handshake.timer()?;
        let now = Instant::now().duration_since(self.timers.time_started);
        let mut since = self.timers[TimeLastHandshakeStarted];
        if let Some(age) = self.current_session_age() {
            since = since.max(now.saturating_sub(age));
        }
        Some(now.saturating_sub(since))
    }

    /// weave: how long ago the session in use was made, or `None` when
    /// there is none. Unlike [`Self::time_since_last_handshake`] (the last
    /// session made, in use or not), a session this host made answering the
    /// peer's initiation counts only once the peer sent data on it (it
    /// becomes the one in use then): proof that the peer hears this host.
    /// The slot of the session in use holds it only until a newer session
    /// takes the slot (each handshake another of eight, in turn): eight
    /// answers the peer never used, and one of them was taken for the
    /// session in use (a host whose answers were all lost showed the peer as
    /// handshaken seconds ago; found by a review, 2026-12-07).
    pub fn current_session_age(&self) -> Option<Duration> {
        let i = self.current % super::N_SESSIONS;
        self.sessions[i].as_ref().filter(|s| s.local_index() == self.current)?;
        let now = Instant::now().duration_since(self.timers.time_started);
        Some(now.saturating_sub(self.timers.session_timers[i]))
    }

    /// weave: the age of the session this host made last answering the
    /// peer's initiation, while the peer has not used it: it is still in its
    /// slot, not the session in use, and no session in use is as new. For
    /// longer than a round trip, the peer's handshakes arrive but this
    /// host's answers do not reach it. An answer the peer used, and which
    /// then expired (an idle tunnel), is none: read from the newest session
    /// alone, every idle peer this host had answered was "unheard" 180 s on
    /// (found by a review, 2026-12-07).
    pub fn unused_answer_age(&self) -> Option<Duration> {
        let answered = self.answered?;
        let slot = answered % super::N_SESSIONS;
        self.sessions[slot].as_ref().filter(|s| s.local_index() == answered)?;
        let made = self.timers.session_timers[slot];
        if self.current == answered
            || (self.current_session_age().is_some()
                && self.timers.session_timers[self.current % super::N_SESSIONS] >= made)
        {
            return None;
        }
        Some(Instant::now().duration_since(self.timers.time_started).saturating_sub(made))
    }

    pub fn time_since_last_handshake(&self) -> Option<Duration> {
        let current_session = self.current;
        if self.sessions[current_session % super::N_SESSIONS].is_some() {
            let duration_since_tun_start = Instant::now().duration_since(self.timers.time_started);
            let duration_since_session_established = self.timers[TimeSessionEstablished];

            Some(duration_since_tun_start - duration_since_session_established)
        } else {
            None
        }
    }

    pub fn persistent_keepalive(&self) -> Option<u16> {
        let keepalive = self.timers.persistent_keepalive;

        if keepalive > 0 {
            Some(keepalive as u16)
        } else {
            None
        }
    }
}

// weave: `first_unanswered` (the timers aged by moving their start back).
#[cfg(all(test, not(feature = "mock-instant")))]
mod tests {
    use super::*;
    use crate::noise::Packet;
    use rand_core::OsRng;

    fn age(tun: &mut Tunn, d: Duration) {
        tun.timers.time_started = tun.timers.time_started.earlier(d);
    }

    #[test]
    fn a_send_after_a_quiet_spell_starts_a_handshake_only_once_unanswered_for_15_s() {
        let (a_secret, b_secret) = (
            x25519_dalek::StaticSecret::random_from_rng(OsRng),
            x25519_dalek::StaticSecret::random_from_rng(OsRng),
        );
        let (a_public, b_public) = (
            x25519_dalek::PublicKey::from(&a_secret),
            x25519_dalek::PublicKey::from(&b_secret),
        );
        let mut a = Tunn::new(a_secret, b_public, None, None, 1, None);
        let mut b = Tunn::new(b_secret, a_public, None, None, 2, None);
        let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut x, false) else { panic!() };
        let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, init, &mut y) else { panic!() };
        let TunnResult::WriteToNetwork(_) = a.decapsulate(None, resp, &mut x) else { panic!("no keepalive") };
        // 30 s of quiet, then a packet to the peer: no handshake for it yet
        // (the release started one at once, 15 s after the last packet in).
        age(&mut a, Duration::from_secs(30));
        let is_init = |r: TunnResult| match r {
            TunnResult::WriteToNetwork(p) => matches!(Tunn::parse_incoming_packet(p), Ok(Packet::HandshakeInit(_))),
            _ => false,
        };
        assert!(!is_init(a.update_timers(&mut x)));
        let mut packet = vec![0u8; 40];
        packet[0] = 0x45;
        packet[3] = 40;
        assert!(matches!(a.encapsulate(&packet, &mut x), TunnResult::WriteToNetwork(_)));
        assert!(!is_init(a.update_timers(&mut x)), "a handshake for a send just made");
        age(&mut a, Duration::from_secs(10));
        assert!(!is_init(a.update_timers(&mut x)), "a handshake 10 s after the send");
        // Unanswered for 16 s: now one.
        age(&mut a, Duration::from_secs(6));
        assert!(is_init(a.update_timers(&mut x)), "no handshake 16 s after an unanswered send");
    }

    #[test]
    fn a_session_made_by_an_earlier_initiation_answers_this_hosts_attempt() {
        let (a_secret, b_secret) = (
            x25519_dalek::StaticSecret::random_from_rng(OsRng),
            x25519_dalek::StaticSecret::random_from_rng(OsRng),
        );
        let (a_public, b_public) = (
            x25519_dalek::PublicKey::from(&a_secret),
            x25519_dalek::PublicKey::from(&b_secret),
        );
        let mut a = Tunn::new(a_secret, b_public, None, None, 1, None);
        let mut b = Tunn::new(b_secret, a_public, None, None, 2, None);
        let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
        // b paused: a's initiation and its retry 6 s later wait in b's
        // socket. b, back, answers the first (the second, taken within
        // 20 ms, is refused as a flood).
        let TunnResult::WriteToNetwork(first) = a.format_handshake_initiation(&mut x, false) else { panic!() };
        let first = first.to_vec();
        age(&mut a, Duration::from_secs(6));
        let TunnResult::WriteToNetwork(_) = a.format_handshake_initiation(&mut x, true) else { panic!() };
        assert!(a.unanswered_handshake().is_some_and(|d| d >= Duration::from_secs(6)));
        let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, &first, &mut y) else { panic!("no response") };
        // The timers' clock is the last tick's (every 250 ms in weave).
        let _ = a.update_timers(&mut x);
        let TunnResult::WriteToNetwork(_) = a.decapsulate(None, resp, &mut x) else { panic!("no keepalive") };
        // A session, and a's retry still waits for its answer: unanswered
        // since the session, not since the attempt began.
        assert!(a.time_since_last_handshake().is_some());
        assert!(a.handshake.timer().is_some(), "a's retry is still in progress");
        assert!(a.unanswered_handshake().is_some_and(|d| d < Duration::from_secs(1)), "the peer answered");
        // b silent again for 6 s: unanswered for those.
        age(&mut a, Duration::from_secs(6));
        assert!(a.unanswered_handshake().is_some_and(|d| d >= Duration::from_secs(6)));
        // b's own initiation, answered by a, the answer lost: no proof that
        // b hears a, the session in use still the old one. Once b uses the
        // new one, it is.
        let TunnResult::WriteToNetwork(init) = b.format_handshake_initiation(&mut y, false) else { panic!() };
        let _ = a.update_timers(&mut x);
        let TunnResult::WriteToNetwork(resp) = a.decapsulate(None, init, &mut x) else { panic!("no response") };
        let resp = resp.to_vec();
        assert!(a.time_since_last_handshake().is_some_and(|d| d < Duration::from_secs(1)), "a session made");
        assert!(a.current_session_age().is_some_and(|d| d >= Duration::from_secs(6)), "a's answer may be lost");
        assert!(a.unused_answer_age().is_some_and(|d| d < Duration::from_secs(1)), "a's answer is unused");
        // Eight more of b's initiations answered, the answers lost: one of
        // them takes the slot of the session in use, which is not it.
        let mut last = resp;
        for _ in 0..8 {
            // (An initiation within 20 ms of the last is refused as a flood.)
            std::thread::sleep(Duration::from_millis(25));
            let TunnResult::WriteToNetwork(init) = b.format_handshake_initiation(&mut y, true) else { panic!() };
            let TunnResult::WriteToNetwork(resp) = a.decapsulate(None, init, &mut x) else { panic!("no response") };
            last = resp.to_vec();
        }
        // (The session in use is gone from its slot: none in use.)
        assert!(a.current_session_age().is_none_or(|d| d >= Duration::from_secs(6)), "an unused answer counted");
        assert!(a.unused_answer_age().is_some());
        let TunnResult::WriteToNetwork(keepalive) = b.decapsulate(None, &last, &mut y) else { panic!() };
        assert!(matches!(a.decapsulate(None, keepalive, &mut x), TunnResult::Done));
        assert!(a.current_session_age().is_some_and(|d| d < Duration::from_secs(1)), "b used a's session");
        assert_eq!(a.unused_answer_age(), None);
        // Idle past the session's life: the used answer expires, and that
        // is an idle tunnel, not an unheard host.
        age(&mut a, Duration::from_secs(200));
        let _ = a.update_timers(&mut x);
        assert_eq!(a.current_session_age(), None, "the session expired");
        assert_eq!(a.unused_answer_age(), None, "an expired answer the peer had used");
    }
}
