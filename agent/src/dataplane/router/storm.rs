//! Storm control for what a member host puts into segments over VXLAN.
//! Each workload port is metered where it is (`plan::l2::guard_ruleset`:
//! `--broadcast-limit` broadcast and multicast frames a second, ten times
//! that of unicast leaving for other hosts), but a member host can write
//! frames straight into its VXLAN device, past its own ports' meters: every
//! host of the segment took all of them, and its bridge copied each group
//! frame (and each unicast one to a MAC it does not know) to every local
//! port. So the receiving agent meters each peer too, at what the peer's own
//! ports let through together: the limit times its workloads in the map
//! (its exposed addresses among them) plus one for its bridges, for group
//! frames, and ten times that for unicast; with room for a fifth of a
//! second at once (the ports' own bursts, and a tenth of a second of the
//! tunnel's jitter). A peer that stays within its ports' limits loses
//! nothing; one that floods gets no more than they would have let through.
use std::{sync::Mutex, time::Instant};

/// A token bucket: `tokens` at `at`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    /// Whether one more frame passes at `rate` a second (room: a fifth of it).
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let room = (rate / 5.0).max(1.0);
        let refill = self.at.map_or(room, |at| now.saturating_duration_since(at).as_secs_f64() * rate);
        self.tokens = (self.tokens + refill).min(room);
        self.at = Some(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// One peer's two meters: group-addressed frames, and unicast ones.
pub(super) struct Meter(Mutex<[Bucket; 2]>);

impl Default for Meter {
    fn default() -> Self {
        Self(Mutex::new([Bucket { tokens: 0.0, at: None }; 2]))
    }
}

impl Meter {
    /// Whether a frame to `dst` (its destination MAC) passes, for a peer
    /// with `workloads` in the map and `limit` (`--broadcast-limit`; 0:
    /// no limit).
    pub(super) fn admit(&self, dst: &[u8], workloads: usize, limit: u32, now: Instant) -> bool {
        if limit == 0 {
            return true;
        }
        let group = dst.first().is_none_or(|b| b & 1 == 1);
        let rate = f64::from(limit) * (workloads as f64 + 1.0) * if group { 1.0 } else { 10.0 };
        super::lock(&self.0)[usize::from(!group)].take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BROADCAST: [u8; 6] = [0xff; 6];
    const UNICAST: [u8; 6] = [0x0a, 0x58, 10, 32, 0, 5];

    /// How many of `n` frames to `dst`, spread evenly over `secs`, pass.
    fn passed(meter: &Meter, dst: &[u8], n: u32, secs: f64, workloads: usize, start: Instant) -> u32 {
        (0..n)
            .filter(|i| {
                let at = start + Duration::from_secs_f64(secs * f64::from(*i) / f64::from(n));
                meter.admit(dst, workloads, 100, at)
            })
            .count() as u32
    }

    #[test]
    fn a_peer_within_its_ports_limits_loses_nothing() {
        let (meter, start) = (Meter::default(), Instant::now());
        // One workload and the bridge: 200 group frames a second.
        assert_eq!(passed(&meter, &BROADCAST, 190, 1.0, 1, start), 190);
        // Its ports' bursts at once, on top.
        let later = start + Duration::from_secs(2);
        assert_eq!(passed(&meter, &BROADCAST, 40, 0.0, 1, later), 40);
        // Unicast: ten times as much, apart.
        assert_eq!(passed(&meter, &UNICAST, 1900, 1.0, 1, later), 1900);
        assert!(Meter::default().admit(&BROADCAST, 0, 0, start), "no limit");
    }

    #[test]
    fn a_flooding_peer_gets_what_its_ports_would_let_through() {
        let (meter, start) = (Meter::default(), Instant::now());
        // 10,000 group frames in a second from a peer with one workload.
        let got = passed(&meter, &BROADCAST, 10_000, 1.0, 1, start);
        assert!((200..=241).contains(&got), "{got}");
        // With three workloads, twice as much.
        let got = passed(&Meter::default(), &BROADCAST, 10_000, 1.0, 3, start);
        assert!((400..=481).contains(&got), "{got}");
        // Unicast has its own meter, at ten times the rate.
        let got = passed(&meter, &UNICAST, 100_000, 1.0, 1, start);
        assert!((2_000..=2_401).contains(&got), "{got}");
        // Multicast is group-addressed too; a frame cut before its address counts as one.
        let mut multicast = Meter::default();
        let got = passed(&multicast, &[0x33, 0x33, 0, 0, 0, 1], 10_000, 1.0, 1, start);
        assert!((200..=241).contains(&got), "{got}");
        multicast = Meter::default();
        assert_eq!(passed(&multicast, &[], 1_000, 0.0, 1, start), 40);
    }
}
