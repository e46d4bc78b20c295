//! Storm control for what a member host puts into segments over VXLAN.
//! Each workload port is metered where it is (`plan::l2::guard_ruleset`:
//! `--broadcast-limit` broadcast and multicast frames a second), but a
//! member host can write frames straight into its VXLAN device, past its
//! own ports' meters: every host of the segment took all of them and its
//! bridge copied each to every local port. So the receiving agent meters
//! each peer's group-addressed frames per segment too, at what the peer's
//! ports there let through together: the limit times its workload
//! addresses in that segment (its exposed address among them) plus one for
//! its bridge, at most [`MOST_PORTS`] times (addresses cost a member
//! nothing to allocate), with room for a fifth of a second at once (the
//! ports' own bursts, and a tenth of a second of the tunnel's jitter).
//! Unicast is not metered: a TCP stream's segments are one frame each
//! here but one super-packet each at the sender's port, so no rate fits
//! both; a frame to a known MAC reaches one port.
use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::plan::rate::TokenBucket;

/// The most ports one peer's meter in one segment counts.
pub(super) const MOST_PORTS: usize = 16;

/// One peer's meters, one per segment (VNI) it sent group frames into.
#[derive(Default)]
pub(super) struct Meter(Mutex<HashMap<u32, TokenBucket>>);

impl Meter {
    /// Whether a frame to `dst` (its destination MAC) in segment `vni`
    /// passes, for a peer with `workloads` addresses there and `limit`
    /// (`--broadcast-limit`; 0: no limit). Unicast always does.
    pub(super) fn admit(&self, vni: u32, dst: &[u8], workloads: usize, limit: u32, now: Instant) -> bool {
        let group = dst.first().is_none_or(|b| b & 1 == 1);
        if limit == 0 || !group {
            return true;
        }
        let rate = f64::from(limit) * (workloads.min(MOST_PORTS) as f64 + 1.0);
        // Room for a fifth of a second at once.
        let room = (rate / 5.0).max(1.0);
        let mut buckets = super::lock(&self.0);
        buckets.entry(vni).or_insert(TokenBucket::full(room, now)).take(rate, room, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BROADCAST: [u8; 6] = [0xff; 6];
    const UNICAST: [u8; 6] = [0x0a, 0x58, 10, 32, 0, 5];

    /// How many of `n` frames to `dst` in segment `vni`, spread evenly over
    /// `secs` from `start`, pass (limit 100).
    fn passed(meter: &Meter, vni: u32, dst: &[u8], n: u32, secs: f64, workloads: usize, start: Instant) -> u32 {
        (0..n)
            .filter(|i| {
                let at = start + Duration::from_secs_f64(secs * f64::from(*i) / f64::from(n));
                meter.admit(vni, dst, workloads, 100, at)
            })
            .count() as u32
    }

    #[test]
    fn a_peer_within_its_ports_limits_loses_nothing() {
        let (meter, start) = (Meter::default(), Instant::now());
        // One workload and the bridge: 200 group frames a second.
        assert_eq!(passed(&meter, 7, &BROADCAST, 190, 1.0, 1, start), 190);
        // Its ports' bursts at once, on top.
        let later = start + Duration::from_secs(2);
        assert_eq!(passed(&meter, 7, &BROADCAST, 40, 0.0, 1, later), 40);
        // Unicast is not metered.
        assert_eq!(passed(&meter, 7, &UNICAST, 100_000, 0.0, 1, later), 100_000);
        assert!(Meter::default().admit(7, &BROADCAST, 0, 0, start), "no limit");
    }

    #[test]
    fn a_flooding_peer_gets_what_its_ports_in_that_segment_would_let_through() {
        let start = Instant::now();
        // 10,000 group frames in a second from a peer with one workload there.
        let meter = Meter::default();
        let got = passed(&meter, 7, &BROADCAST, 10_000, 1.0, 1, start);
        assert!((200..=241).contains(&got), "{got}");
        // Each segment has its own meter: the flood in 7 used none of 8's.
        let got = passed(&meter, 8, &BROADCAST, 10_000, 1.0, 1, start);
        assert!((200..=241).contains(&got), "{got}");
        // With three workloads there, twice as much.
        let got = passed(&Meter::default(), 7, &BROADCAST, 10_000, 1.0, 3, start);
        assert!((400..=481).contains(&got), "{got}");
        // Addresses past MOST_PORTS buy nothing.
        let most = passed(&Meter::default(), 7, &BROADCAST, 100_000, 1.0, MOST_PORTS, start);
        assert_eq!(most, passed(&Meter::default(), 7, &BROADCAST, 100_000, 1.0, 4096, start));
        assert!(most <= 100 * (MOST_PORTS as u32 + 1) * 6 / 5 + 1, "{most}");
        // Multicast is group-addressed too; a frame cut before its address counts as one.
        let got = passed(&Meter::default(), 7, &[0x33, 0x33, 0, 0, 0, 1], 10_000, 1.0, 1, start);
        assert!((200..=241).contains(&got), "{got}");
        assert_eq!(passed(&Meter::default(), 7, &[], 1_000, 0.0, 1, start), 40);
    }
}
