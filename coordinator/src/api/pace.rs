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

mod log_budget;

/// Failed authentications one source address may have a second (a wrong
/// or unknown credential, a join token that is not valid), and at once.
pub const FAILURES_PER_SECOND: u32 = 5;
pub const FAILURES_BURST: u32 = 50;

/// How often a source address may fail to authenticate. Each failure cost
/// the store three lookups; one address of an outsider that never joined,
/// sending bad credentials and join tokens on a few connections (~3,000 a
/// second), made members' calls ~85 times slower (found by a review,
/// 2026-12-04). Past its budget, a source's calls are refused with
/// `RESOURCE_EXHAUSTED` before any lookup, whatever they carry, until the
/// budget comes back (a second for five). A source is an IPv4 address or
/// an IPv6 /64. The price: members that share an address (one NAT, or a
/// load balancer that hides the callers' addresses) with someone failing
/// this often are refused with it, unless their credential has been proved
/// from that address before: a credential that authenticated from a source
/// is let through to its lookup there whatever the source's budget (a
/// container masqueraded to its host's address, sending bad credentials,
/// locked the host's own agent out; found by a review, 2026-12-05). The
/// lookup of a credential proved before is the one a member's call costs
/// anyway; what an outsider sends was never proved anywhere.
pub struct Failures {
    /// Per source: when its budget is whole again, as an offset from `epoch`.
    due: Mutex<HashMap<Source, Duration>>,
    /// Which credentials authenticated from which sources.
    proven: Mutex<Proven>,
    /// The credentials valid when this coordinator started (every node's,
    /// the admin's): let past the budget from anywhere until one fails. A
    /// restart forgot which had authenticated where, and an outsider
    /// failing from the hosts' shared IPv6 /64 kept every agent from
    /// watching again (found by a review, 2026-12-05). A credential is a
    /// 256-bit secret: what presents one that is valid is its holder.
    known: Mutex<std::collections::HashSet<String>>,
    /// The failure lines in total.
    log_budget: Mutex<log_budget::LogBudget>,
    epoch: Instant,
}

/// Credentials remembered per source (the nodes behind one NAT, an admin's
/// weavectl), and sources per credential: one credential cannot push the
/// others' proofs out by proving itself from ever new addresses (found by
/// a review, 2026-12-05), so what is remembered is bounded by the
/// credentials there are.
const PROVEN_PER_SOURCE: usize = 64;
const SOURCES_PER_CREDENTIAL: usize = 16;

#[derive(Default)]
struct Proven {
    /// Per source: the hashes of the credentials that authenticated from it.
    by_source: HashMap<Source, Vec<String>>,
    /// Per credential hash: its sources, oldest first.
    by_credential: HashMap<String, std::collections::VecDeque<Source>>,
}

impl Proven {
    fn has(&self, source: Source, proof: &str) -> bool {
        self.by_source.get(&source).is_some_and(|hashes| hashes.iter().any(|h| h == proof))
    }

    fn add(&mut self, source: Source, proof: &str) {
        if self.has(source, proof) {
            return;
        }
        let sources = self.by_credential.entry(proof.to_string()).or_default();
        sources.push_back(source);
        let dropped = if sources.len() > SOURCES_PER_CREDENTIAL { sources.pop_front() } else { None };
        if let Some(old) = dropped {
            self.remove_from(old, proof);
        }
        let hashes = self.by_source.entry(source).or_default();
        if hashes.len() >= PROVEN_PER_SOURCE {
            let evicted = hashes.remove(0);
            if let Some(sources) = self.by_credential.get_mut(&evicted) {
                sources.retain(|s| *s != source);
                if sources.is_empty() {
                    self.by_credential.remove(&evicted);
                }
            }
        }
        self.by_source.entry(source).or_default().push(proof.to_string());
    }

    /// Forgets that `proof` authenticated from `source` (it failed there since).
    fn remove(&mut self, source: Source, proof: &str) {
        self.remove_from(source, proof);
        if let Some(sources) = self.by_credential.get_mut(proof) {
            sources.retain(|s| *s != source);
            if sources.is_empty() {
                self.by_credential.remove(proof);
            }
        }
    }

    fn remove_from(&mut self, source: Source, proof: &str) {
        if let Some(hashes) = self.by_source.get_mut(&source) {
            hashes.retain(|h| h != proof);
            if hashes.is_empty() {
                self.by_source.remove(&source);
            }
        }
    }
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            due: Mutex::default(),
            proven: Mutex::default(),
            known: Mutex::default(),
            log_budget: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl Failures {
    /// Failures that let the credentials of `hashes` (valid now) past the
    /// budget from any source.
    pub fn knowing(hashes: impl IntoIterator<Item = String>) -> Self {
        Self { known: Mutex::new(hashes.into_iter().collect()), ..Self::default() }
    }
}

/// An IPv4 address, or an IPv6 /64 (`V6Host`: one IPv6 address, charged
/// beside its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(u32),
    V6(u64),
    V6Host(u128),
}

/// How many times one address's budget an IPv6 /64's is. Each IPv6 address
/// has a budget of its own, and its /64 one this many times larger: one
/// outsider address in the hosts' shared /64 (a LAN, a cloud subnet) spent
/// the whole /64's and locked every host out, joins included (found by a
/// review, 2026-12-05); now it must fail from this many addresses at once.
const PREFIX_SHARE: u32 = 16;

pub(crate) fn source_key(ip: std::net::IpAddr) -> Source {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => Source::V4(u32::from(v4)),
        std::net::IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
    }
}

impl Failures {
    const PER_FAILURE: Duration = Duration::from_millis(1000 / FAILURES_PER_SECOND as u64);

    /// Refuses a call from `from` while its source has failed too often.
    fn check(&self, from: Option<std::net::SocketAddr>) -> Result<(), Status> {
        self.check_at(from, self.epoch.elapsed())
    }

    fn check_at(&self, from: Option<std::net::SocketAddr>, now: Duration) -> Result<(), Status> {
        let Some(from) = from else { return Ok(()) };
        let due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let over = |key| due.get(&key).is_some_and(|d| *d >= now + Self::PER_FAILURE * FAILURES_BURST);
        if buckets(from.ip()).iter().any(|(key, _)| over(*key)) {
            metrics::counter!("weave_rpc_refused_after_failures_total").increment(1);
            return Err(Status::resource_exhausted(format!(
                "too many failed authentications from {}: retry in a few seconds",
                from.ip().to_canonical()
            )));
        }
        Ok(())
    }

    /// Runs `call` (an authentication, or what starts with one) for a caller
    /// at `from`: refused at once while that source has failed too often,
    /// and charged one failure when it answers UNAUTHENTICATED.
    pub async fn counted<T>(
        &self,
        from: Option<std::net::SocketAddr>,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        self.counted_with(from, None, call).await
    }

    /// [`Self::counted`] for a call that presents a credential of hash
    /// `proof`: let through past an exhausted budget when that credential
    /// authenticated from the same source before, and remembered when it does.
    pub async fn counted_with<T>(
        &self,
        from: Option<std::net::SocketAddr>,
        proof: Option<&str>,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        if !proof.is_some_and(|p| self.proved(from, p)) {
            self.check(from)?;
        }
        let answer = call.await;
        match (&answer, proof) {
            (Err(s), _) if s.code() == tonic::Code::Unauthenticated => {
                // One line per failure, within the source's budget (5 a
                // second): a refused join or a dead credential left no trace
                // but a histogram bucket (found by a review, 2026-12-06). The
                // messages name token ids, never a secret.
                let elapsed = self.epoch.elapsed();
                let (line, unlogged) = self.log_budget.lock().unwrap_or_else(|p| p.into_inner()).admit(elapsed);
                if let Some((second, unlogged)) = unlogged {
                    // When that second began, on the wall clock.
                    let ago = elapsed.saturating_sub(Duration::from_secs(second));
                    let at = (std::time::SystemTime::now() - ago)
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    tracing::warn!(
                        unlogged,
                        second_unix = at,
                        "authentication failures in that second were not logged (past the log's 20 a second)"
                    );
                }
                if line {
                    tracing::warn!(source = ?from.map(|f| f.ip()), reason = ?s.message(), "authentication failed");
                }
                self.failed(from);
                if let Some(p) = proof {
                    self.known.lock().unwrap_or_else(|p| p.into_inner()).remove(p);
                }
                // A credential that fails now (a removed node's, a rotated
                // admin's) is not let past the budget again (found by a
                // review, 2026-12-05).
                if let (Some(from), Some(p)) = (from, proof) {
                    self.proven.lock().unwrap_or_else(|p| p.into_inner()).remove(source_key(from.ip()), p);
                }
            }
            (Ok(_), Some(p)) => {
                if let Some(from) = from {
                    self.proven.lock().unwrap_or_else(|p| p.into_inner()).add(source_key(from.ip()), p);
                }
            }
            _ => {}
        }
        answer
    }

    fn proved(&self, from: Option<std::net::SocketAddr>, proof: &str) -> bool {
        let Some(from) = from else { return false };
        self.known.lock().unwrap_or_else(|p| p.into_inner()).contains(proof)
            || self.proven.lock().unwrap_or_else(|p| p.into_inner()).has(source_key(from.ip()), proof)
    }

    /// Charges `from`'s source one failure.
    fn failed(&self, from: Option<std::net::SocketAddr>) {
        self.failed_at(from, self.epoch.elapsed());
    }

    fn failed_at(&self, from: Option<std::net::SocketAddr>, now: Duration) {
        let Some(from) = from else { return };
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if due.len() > 100_000 {
            due.retain(|_, d| *d > now);
        }
        for (key, cost) in buckets(from.ip()) {
            let next = due.get(&key).copied().unwrap_or(now).max(now) + cost;
            // Never more than one failure past the budget (calls that got
            // past the check while others were being looked up are charged
            // up to it), so the budget comes back at its rate once they stop.
            due.insert(key, next.min(now + Self::PER_FAILURE * FAILURES_BURST + cost));
        }
    }
}

/// The budgets a failure from `ip` is charged to, with what it costs each:
/// an IPv4 address's; an IPv6 address's and its /64's (a share of it).
fn buckets(ip: std::net::IpAddr) -> Vec<(Source, Duration)> {
    match ip.to_canonical() {
        std::net::IpAddr::V4(_) => vec![(source_key(ip), Failures::PER_FAILURE)],
        std::net::IpAddr::V6(v6) => vec![
            (Source::V6Host(u128::from(v6)), Failures::PER_FAILURE),
            (source_key(ip), Failures::PER_FAILURE / PREFIX_SHARE),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_fails_too_often_is_refused_until_its_budget_comes_back() {
        let f = Failures::default();
        let (a, b): (std::net::SocketAddr, std::net::SocketAddr) =
            ("192.0.2.1:1000".parse().unwrap(), "192.0.2.2:1000".parse().unwrap());
        let t = 100 * S;
        for _ in 0..FAILURES_BURST {
            f.check_at(Some(a), t).unwrap();
            f.failed_at(Some(a), t);
        }
        let refused = f.check_at(Some(a), t).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("from 192.0.2.1"), "{}", refused.message());
        // Another port of the same address is the same source; another address is not.
        assert!(f.check_at(Some("192.0.2.1:2000".parse().unwrap()), t).is_err());
        f.check_at(Some(b), t).unwrap();
        // Refused calls are not charged: one failure's time later, one more may try.
        for _ in 0..1000 {
            f.failed_at(Some(a), t);
        }
        assert!(f.check_at(Some(a), t).is_err());
        f.check_at(Some(a), t + S / FAILURES_PER_SECOND * 2).unwrap();
        // An IPv6 address has its own budget: one outsider address in the
        // hosts' /64 spends only its own.
        for _ in 0..FAILURES_BURST {
            f.failed_at(Some("[2001:db8::66]:1".parse().unwrap()), t);
        }
        assert!(f.check_at(Some("[2001:db8::66]:2".parse().unwrap()), t).is_err());
        f.check_at(Some("[2001:db8::ffff]:1".parse().unwrap()), t).unwrap();
        // Its /64 has PREFIX_SHARE times that: failing from as many
        // addresses at once spends it; another /64 is not touched.
        for i in 0..FAILURES_BURST * PREFIX_SHARE {
            f.failed_at(Some(format!("[2001:db8::1:{i:x}]:1").parse().unwrap()), t);
        }
        assert!(f.check_at(Some("[2001:db8::ffff]:1".parse().unwrap()), t).is_err());
        f.check_at(Some("[2001:db8:0:1::1]:1".parse().unwrap()), t).unwrap();
        // Told apart from IPv4 and from the /64 with the top bit set.
        f.check_at(Some("[::c000:201]:1".parse().unwrap()), t).unwrap();
        f.check_at(Some("[a001:db8::1]:1".parse().unwrap()), t).unwrap();
        assert!(f.check_at(Some("[::ffff:192.0.2.1]:1".parse().unwrap()), t).is_err());
        f.check_at(None, t).unwrap();
    }

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

    #[tokio::test]
    async fn a_credential_proved_from_a_source_passes_its_spent_budget_until_it_fails() {
        let f = Failures::default();
        let at: std::net::SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let ok = || async { Ok::<(), Status>(()) };
        let bad = || async { Err::<(), Status>(Status::unauthenticated("no")) };
        f.counted_with(Some(at), Some("node"), ok()).await.unwrap();
        while f.check(Some(at)).is_ok() {
            let _ = f.counted_with(Some(at), Some("outsider"), bad()).await;
        }
        // Spent: an unproved credential is refused before its lookup, the proved one is looked up.
        let refused = f.counted_with(Some(at), Some("admin"), ok()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        f.counted_with(Some(at), Some("node"), ok()).await.expect("proved before");
        // Once it fails (a removed node's), it is refused like any other.
        let _ = f.counted_with(Some(at), Some("node"), bad()).await;
        let refused = f.counted_with(Some(at), Some("node"), ok()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn one_credential_proving_itself_everywhere_pushes_out_only_its_own_proofs() {
        let mut p = Proven::default();
        let source = |i: u32| Source::V4(0xc000_0200 + i);
        p.add(source(0), "node");
        for i in 1..=100_000 {
            p.add(source(i), "member");
        }
        assert!(p.has(source(0), "node"), "another credential's proof was pushed out");
        assert_eq!(p.by_credential["member"].len(), SOURCES_PER_CREDENTIAL);
        assert!(p.has(source(100_000), "member") && !p.has(source(1), "member"));
        assert_eq!(p.by_source.len(), SOURCES_PER_CREDENTIAL + 1, "forgotten sources are dropped");
        // A source keeps at most so many credentials, each still bounded per credential.
        for c in 0..2 * PROVEN_PER_SOURCE {
            p.add(source(7), &format!("c{c}"));
        }
        assert_eq!(p.by_source[&source(7)].len(), PROVEN_PER_SOURCE);
        assert!(!p.by_credential.contains_key("c0"), "an evicted credential's sources go too");
    }
}
