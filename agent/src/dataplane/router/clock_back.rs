//! A peer whose clock was set back. WireGuard takes a peer's handshake
//! initiation only if its timestamp (the sender's wall clock) is newer than
//! the last one taken from that peer: an agent restarted after its clock
//! went back (NTP correcting a clock that ran ahead) had every initiation
//! dropped, without a word, until its clock passed the old stamp, an hour
//! for an hour's step; a host that only initiates (behind NAT, a client of
//! services elsewhere) stayed cut off that long (found by a review,
//! 2026-12-07). Its initiation proves it holds the peer's key (or replays
//! one that did): this host starts a handshake of its own, to the peer's
//! endpoint (not to where the stale one came from), at most once per
//! [`EVERY_MS`], and once for each initiation (by its ephemeral key): a
//! captured one replayed again and again started a handshake every 5 s,
//! each resent by boringtun for 90 s to a peer that did not answer (found
//! by a review, 2026-12-07). A peer whose clock went back sends a new
//! initiation each retry.
use std::{collections::VecDeque, sync::atomic::Ordering};

use boringtun::noise::{Tunn, TunnResult};

use super::{Peer, Router, Sink};

/// At most this often per peer (ms): WireGuard's REKEY_TIMEOUT.
const EVERY_MS: u64 = 5_000;
/// The initiations answered that are remembered per peer.
const REMEMBERED: usize = 8;

/// The ephemeral keys of the stale initiations a peer's were answered for.
pub(super) type Answered = std::sync::Mutex<VecDeque<[u8; 32]>>;

impl Router {
    /// `peer`'s initiation (`message`, whole) was refused as older than one
    /// taken before.
    pub(super) fn answer_stale_initiation(
        &self,
        peer: &Peer,
        message: &[u8],
        tunn: &mut Tunn,
        buf: &mut [u8],
        sink: &impl Sink,
    ) {
        // Type, sender index, then the initiator's ephemeral key.
        let Some(ephemeral) = message.get(8..40).and_then(|e| <[u8; 32]>::try_from(e).ok()) else { return };
        let mut answered = peer.stale_answered.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        let last = peer.stale_answered_at.load(Ordering::Relaxed);
        if answered.contains(&ephemeral) || (last != 0 && now.saturating_sub(last) < EVERY_MS) {
            return;
        }
        if answered.len() == REMEMBERED {
            answered.pop_front();
        }
        answered.push_back(ephemeral);
        drop(answered);
        peer.stale_answered_at.store(now.max(1), Ordering::Relaxed);
        let Some(endpoint) = peer.endpoint() else { return };
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(buf, false) {
            if last == 0 {
                tracing::info!(
                    peer = %peer.config.name,
                    "the peer's handshake is older than one it sent before (its clock was set back, or a replay): \
                     starting one from this side"
                );
            }
            sink.to_network(endpoint, init);
        }
    }
}
