//! The source guard's drops as a metric: the named counters of `bridge
//! weave_guard` (`<reason>_drops`, [`GUARD_DROP_REASONS`]), read every check and before the table
//! is replaced (ports come and go: a new table counts from 0), added to
//! `weave_port_frames_dropped_total{reason}`. A container sending as
//! another address, or past its storm meter, was dropped without a trace an
//! operator could see (found by a review, 2026-12-07).
use std::sync::Mutex;

use crate::plan::l2::{GUARD_DROP_REASONS, GUARD_TABLE};

/// What the current table's counters held when last counted; None until
/// this process first read them: a table an earlier run of the agent left
/// holds what that run counted already (a restart counted it again; found
/// by a review, 2026-12-07).
static SEEN: Mutex<Option<[u64; 2]>> = Mutex::new(None);

/// Adds what the counters grew by since they were last read. Called under
/// the guard's lock, so that no replacement comes between the read and the
/// bookkeeping.
pub(super) fn count(listing: &serde_json::Value) {
    let now = GUARD_DROP_REASONS.map(|r| super::counted(listing, "bridge", GUARD_TABLE, &format!("{r}_drops")));
    let mut kept = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let first = kept.is_none();
    let seen = kept.get_or_insert([0; 2]);
    for (i, n) in now.into_iter().enumerate() {
        let Some(n) = n else { continue };
        // Smaller: a table put in by another hand (a repair) counts from 0.
        let grown = n.checked_sub(seen[i]).unwrap_or(n);
        if !first {
            let reason = GUARD_DROP_REASONS[i];
            metrics::counter!("weave_port_frames_dropped_total", "reason" => reason).increment(grown);
        }
        seen[i] = n;
    }
}

/// [`count`] under the guard's lock, from a listing read under it (the
/// periodic check: its own listing, read before the lock, may predate a
/// replacement the reconcile made meanwhile, whose drops it counted again;
/// found by a review, 2026-12-07).
pub(super) async fn count_locked() {
    let _one = super::GUARD.lock().await;
    if let Some(listing) = super::listing().await {
        count(&listing);
    }
}

/// The table was just replaced: its counters start from 0.
pub(super) fn replaced() {
    *SEEN.lock().unwrap_or_else(|e| e.into_inner()) = Some([0; 2]);
}
