//! How fast one node may call (`--node-rate`): a member with a valid
//! credential could otherwise allocate and release in a loop (every change
//! is applied by every agent: ~1.6 ms of CPU each per change, measured by a
//! review at ~200 changes/s) or read the whole map over and over (a 4,000-
//! allocation map is ~244 kB an answer), slowing every other member's calls.
//!
//! A generic cell rate algorithm per node: `rate` tokens a second, a burst of
//! [`BURST_SECONDS`] worth; a call costs 1 token, one that answers with the
//! whole map (or a list as large) [`MAP_READ`]. A call over the budget waits
//! its turn when that is at most [`MAX_WAIT`] away (a burst of container
//! starts goes through, spaced), else it is refused with
//! `RESOURCE_EXHAUSTED` at once, without queueing. The admin is not paced.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tonic::Status;

/// Seconds of `rate` a node may spend at once.
pub const BURST_SECONDS: u32 = 4;
/// Longest a call waits for its turn before it is refused instead.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// The cost of a call that answers with the whole map or a list as long.
pub const MAP_READ: u32 = 10;

pub struct Pacer {
    /// Tokens a second (None: no limit).
    rate: Option<u32>,
    /// Per node id: when its budget is next whole again ("theoretical
    /// arrival time"), as an offset from `epoch`.
    due: Mutex<HashMap<u64, Duration>>,
    epoch: Instant,
}

impl Pacer {
    pub fn new(rate: Option<u32>) -> Self {
        Self { rate: rate.filter(|r| *r > 0), due: Mutex::default(), epoch: Instant::now() }
    }

    /// How long a call of `cost` from `node` must wait (zero: none), or the
    /// refusal when that is longer than [`MAX_WAIT`]. Reserves its turn.
    fn admit(&self, node: u64, name: &str, cost: u32, now: Duration) -> Result<Duration, Status> {
        let Some(rate) = self.rate else { return Ok(Duration::ZERO) };
        let per_token = Duration::from_secs(1) / rate;
        let tolerance = per_token * rate * BURST_SECONDS;
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if due.len() > 100_000 {
            due.retain(|_, d| *d > now);
        }
        let next = due.get(&node).copied().unwrap_or(now).max(now) + per_token * cost;
        let wait = next.saturating_sub(now + tolerance);
        if wait > MAX_WAIT {
            return Err(Status::resource_exhausted(format!(
                "node {name} is calling faster than the coordinator's --node-rate {rate}/s allows (a burst of \
                 {BURST_SECONDS} s of it): retry in a few seconds"
            )));
        }
        due.insert(node, next);
        Ok(wait)
    }

    /// Waits for the turn of a call of `cost` from `node`, or refuses it.
    pub async fn pace(&self, node: u64, name: &str, cost: u32) -> Result<(), Status> {
        let wait = self.admit(node, name, cost, self.epoch.elapsed())?;
        if !wait.is_zero() {
            metrics::counter!("weave_rpc_paced_total").increment(1);
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_goes_through_then_calls_are_spaced_then_refused() {
        let p = Pacer::new(Some(10)); // burst: 40 tokens
        let t = 100 * S;
        for _ in 0..40 {
            assert_eq!(p.admit(1, "h1", 1, t).unwrap(), Duration::ZERO);
        }
        // The 41st waits one token's time, the 42nd two.
        assert_eq!(p.admit(1, "h1", 1, t).unwrap(), S / 10);
        assert_eq!(p.admit(1, "h1", 1, t).unwrap(), S / 10 * 2);
        // Up to MAX_WAIT (5 s = 50 tokens) ahead, then refused, reserving nothing.
        for _ in 0..48 {
            p.admit(1, "h1", 1, t).unwrap();
        }
        let refused = p.admit(1, "h1", 1, t).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--node-rate 10/s"), "{}", refused.message());
        assert!(p.admit(1, "h1", MAP_READ, t).is_err());
        // Another node has its own budget; time gives it back.
        assert_eq!(p.admit(2, "h2", MAP_READ, t).unwrap(), Duration::ZERO);
        assert_eq!(p.admit(1, "h1", 1, t + 10 * S).unwrap(), Duration::ZERO);
    }

    #[test]
    fn no_rate_no_limit() {
        let p = Pacer::new(None);
        for _ in 0..10_000 {
            assert_eq!(p.admit(1, "h1", MAP_READ, S).unwrap(), Duration::ZERO);
        }
        let p = Pacer::new(Some(0));
        assert_eq!(p.admit(1, "h1", MAP_READ, S).unwrap(), Duration::ZERO);
    }
}
