//! What `agent status` shows of each peer.
use std::sync::atomic::Ordering;

use super::{PeerStatus, Router, lock};

impl Router {
    pub fn status(&self) -> Vec<PeerStatus> {
        let table = self.table();
        let mut out: Vec<PeerStatus> = (table.by_index.values())
            .map(|p| {
                let tunn = lock(&p.tunn);
                let ((age, tx, rx, _, _), handshaking) = (tunn.stats(), tunn.handshake_in_progress());
                drop(tunn);
                PeerStatus {
                    node_id: p.config.node_id,
                    name: p.config.name.clone(),
                    address: p.config.address,
                    endpoint: p.endpoint(),
                    handshake_age_secs: age.map(|d| d.as_secs_f64()),
                    handshake_in_progress: handshaking,
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
