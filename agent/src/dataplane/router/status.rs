//! What `agent status` shows of each peer.
use std::{sync::atomic::Ordering, time::Duration};

use super::{PeerStatus, Router, lock};

impl Router {
    pub fn status(&self) -> Vec<PeerStatus> {
        let table = self.table();
        let now = self.now_ms();
        let mut out: Vec<PeerStatus> = (table.by_index.values())
            .map(|p| {
                let tunn = lock(&p.tunn);
                // The session in use: one this host made answering the peer
                // is no handshake until the peer uses it.
                let (age, (_, tx, rx, _, _), handshaking) =
                    (tunn.current_session_age(), tunn.stats(), tunn.handshake_in_progress());
                drop(tunn);
                let unheard = p.unheard_since.load(Ordering::Relaxed);
                // An idle peer's sessions expire (and boringtun's age with
                // them); its last handshake is still what `wg show` would say.
                let at = p.handshake_at.load(Ordering::Relaxed);
                let age = age.or_else(|| (at > 0).then(|| Duration::from_millis(now.saturating_sub(at))));
                PeerStatus {
                    node_id: p.config.node_id,
                    name: p.config.name.clone(),
                    address: p.config.address,
                    endpoint: p.endpoint(),
                    handshake_age_secs: age.map(|d| d.as_secs_f64()),
                    handshake_in_progress: handshaking,
                    unheard_secs: (unheard > 0).then(|| now.saturating_sub(unheard) as f64 / 1000.0),
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    dropped_spoofed: p.dropped_spoofed.load(Ordering::Relaxed),
                    dropped_foreign_segment: p.dropped_foreign_segment.load(Ordering::Relaxed),
                    dropped_storm: p.dropped_storm.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by_key(|p| p.address);
        out
    }
}
