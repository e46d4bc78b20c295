//! The DNS server's bounds, so that one container cannot starve its host's
//! agent (issue 11): per namespace an eighth of the agent's TCP connection
//! budget (at most [`NS_TCP_CONNECTIONS`]) and of its forward budget (at
//! most [`NS_FORWARDS`], in queries waiting on an upstream); across namespaces a
//! [`Budget`] sized from the agent's file limit; every accept
//! pauses after an error that is not one connection's (EMFILE, ENFILE,
//! ENOBUFS); and all of it runs on a thread and runtime of its own
//! ([`runtime`]), so a flood costs at most that one thread while the control
//! loop, the local API, CNI and reconcile keep theirs.
//!
//! Answers from the map (weave.local) take no budget: they are answered in
//! the receive loop itself, without a task or a socket. What is bounded is
//! what holds a descriptor or a task: connections and forwarded queries.
use std::{
    io,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    runtime::Handle,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{error::Error, plan::rate::TokenBucket};

/// TCP connections one namespace may hold open, at most; its share is
/// [`Budget::ns_tcp`]. Past it the connection idle the longest is closed to
/// make room; with none idle the new one is.
pub const NS_TCP_CONNECTIONS: usize = 64;
/// Queries (UDP and TCP) one namespace may have waiting on an upstream, at
/// most; its share is [`Budget::ns_forwards`]. Past it a UDP query is
/// dropped and a TCP one answered SERVFAIL.
pub const NS_FORWARDS: usize = 128;
/// One namespace's share of the agent's forward budget: 1/NS_SHARE.
///
/// A fixed 128 per namespace equalled the whole budget at the common file
/// limit of 1024 (and exceeded it below): one container asking for names
/// whose upstream never answers held every permit for the upstream timeout
/// and no other container's forwarded lookup was answered. With an eighth,
/// one namespace holds at most 1/8 (16 at 1024, still 128 from 8192 up) and
/// it takes eight flooding namespaces at once to spend the budget. A floor
/// reserved for every namespace cannot be had (their number is not bounded,
/// the budget is); a fixed share keeps it simple and predictable. A forward
/// to an upstream that answers lasts milliseconds, so 16 at a time is still
/// thousands of lookups a second for one container.
pub const NS_SHARE: usize = 8;
/// Forwarded queries a second one namespace may start, by default
/// (`--dns-forward-rate`), with twice that at once. The permits bound only
/// how many wait at a time: against an upstream that answers in a
/// millisecond one container sent 10,000-12,000 a second of random names
/// under a domain of its choosing (a "water torture" flood of someone
/// else's name servers, from the host's address, which a real resolver
/// answers by refusing the host: every container's lookups and the host's
/// own then fail; found by a review, 2026-12-03). A busy service's lookups,
/// search domains and all, stay far below it.
pub const DEFAULT_FORWARD_RATE: u32 = 1000;
/// Forwarded queries a second all namespaces together may start, by default
/// (`--dns-forward-rate-host`; twice that at once): per namespace alone, ten
/// containers on one host made the flood above again (found by a review).
/// The agent keeps no cache: these bound a flood, they are not sized for a
/// host whose many containers all resolve outside names on every request.
pub const DEFAULT_HOST_FORWARD_RATE: u32 = 4 * DEFAULT_FORWARD_RATE;
/// A TCP connection with no complete query (or answer taken) for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries one TCP connection may ask; it is closed after the last answer.
pub const TCP_QUERIES: usize = 100;
/// Bounds of each global budget (TCP connections, forwarded queries).
const GLOBAL_MIN: usize = 16;
const GLOBAL_MAX: usize = 1024;
/// How long an accept or receive pauses after an error that is not one
/// connection's: out of descriptors, only closing some helps, and retrying
/// at once only spins (the coordinator's accept loop does the same).
pub const BACKOFF: Duration = Duration::from_millis(100);
/// How long a namespace at its limit waits for the global permit of the
/// connection it just closed.
pub const EVICT_WAIT: Duration = Duration::from_millis(50);

/// The limits across namespaces: each one a descriptor per unit.
pub struct Budget {
    pub tcp: Arc<Semaphore>,
    pub forwards: Arc<Semaphore>,
    /// How many of `forwards` one namespace may hold: 1/[`NS_SHARE`] of
    /// them, within 1..=[`NS_FORWARDS`].
    pub ns_forwards: usize,
    /// How many of `tcp` one namespace may hold: 1/[`NS_SHARE`] of them,
    /// within 1..=[`NS_TCP_CONNECTIONS`]. A fixed 64 was half the budget at
    /// the common file limit of 1024: two containers holding theirs open
    /// (a query every few seconds keeps them from idling out) left every
    /// other namespace no TCP, so no retry of a truncated answer (found by
    /// a review, 2026-12-02).
    pub ns_tcp: usize,
    /// Forwards a second each namespace may start ([`DEFAULT_FORWARD_RATE`]; 0: no limit).
    pub ns_rate: u32,
    /// Forwards a second all namespaces may start ([`DEFAULT_HOST_FORWARD_RATE`]; None: no limit).
    host_rate: Option<Arc<Mutex<Bucket>>>,
}

/// One namespace's forwards: how many may wait on an upstream at once (its
/// share of [`Budget::forwards`]) and how many a second may start.
pub struct NsForwards {
    /// The scopes of the namespace's networks (`plan::dns::scoped`): not a
    /// limit, but what is the namespace's own beside them.
    pub scopes: Scopes,
    pub permits: Arc<Semaphore>,
    rate: Option<Mutex<Bucket>>,
    /// The agent's bucket, shared by every namespace.
    host_rate: Option<Arc<Mutex<Bucket>>>,
}

/// A namespace's scopes, shared by its serving loops and `set_scopes`.
pub type Scopes = Arc<std::sync::RwLock<Vec<String>>>;

/// `per_second` forwards a second, at most twice that at once.
struct Bucket {
    per_second: f64,
    tokens: TokenBucket,
}

impl Bucket {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Bucket { per_second, tokens: TokenBucket::full(2.0 * per_second, Instant::now()) }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.tokens.take(self.per_second, 2.0 * self.per_second, now)
    }
}

impl Budget {
    /// An eighth of the file limit for each (a quarter in all), within
    /// 16..=1024: 128 each at the common 1024, 1024 each from 8192 up.
    pub fn for_file_limit(limit: Option<u64>) -> Self {
        let size = limit.map_or(GLOBAL_MIN, |l| usize::try_from(l / 8).unwrap_or(GLOBAL_MAX));
        let size = size.clamp(GLOBAL_MIN, GLOBAL_MAX);
        Budget {
            tcp: Arc::new(Semaphore::new(size)),
            forwards: Arc::new(Semaphore::new(size)),
            ns_forwards: (size / NS_SHARE).clamp(1, NS_FORWARDS),
            ns_tcp: (size / NS_SHARE).clamp(1, NS_TCP_CONNECTIONS),
            ns_rate: DEFAULT_FORWARD_RATE,
            host_rate: Some(Arc::new(Mutex::new(Bucket::new(DEFAULT_HOST_FORWARD_RATE)))),
        }
    }

    /// Forwards a second all namespaces together may start (0: no limit).
    pub fn set_host_rate(&mut self, per_second: u32) {
        self.host_rate = (per_second > 0).then(|| Arc::new(Mutex::new(Bucket::new(per_second))));
    }

    /// A new namespace's forwards: its share of the budget and its rate.
    pub fn namespace_forwards(&self, scopes: Scopes) -> Arc<NsForwards> {
        Arc::new(NsForwards {
            scopes,
            permits: Arc::new(Semaphore::new(self.ns_forwards)),
            rate: (self.ns_rate > 0).then(|| Mutex::new(Bucket::new(self.ns_rate))),
            host_rate: self.host_rate.clone(),
        })
    }
}

/// The soft `Max open files` of this process.
pub fn file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(3)? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Why a query or connection was turned away: `weave_dns_dropped_total`'s labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The namespace has its share ([`Budget::ns_forwards`]) waiting on an upstream.
    NamespaceForwards,
    /// The namespace started its [`Budget::ns_rate`] of forwards this second.
    NamespaceRate,
    /// All namespaces together started the host's rate of forwards this second.
    HostRate,
    /// The agent has its whole forward budget waiting.
    AgentForwards,
    /// A new connection closed: the namespace is at its limit, none idle.
    NamespaceConnections,
    /// A new connection closed: the agent's connection budget is spent.
    AgentConnections,
    /// The connection idle the longest, closed for a new one.
    IdleEvicted,
    /// accept failed for a reason not the connection's (EMFILE, ENFILE).
    AcceptError,
}

impl Refused {
    /// Every reason, for counting each from 0 at start.
    pub const ALL: [Refused; 8] = [
        Refused::NamespaceForwards,
        Refused::NamespaceRate,
        Refused::HostRate,
        Refused::AgentForwards,
        Refused::NamespaceConnections,
        Refused::AgentConnections,
        Refused::IdleEvicted,
        Refused::AcceptError,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Refused::NamespaceForwards => "namespace_forwards",
            Refused::NamespaceRate => "namespace_rate",
            Refused::HostRate => "host_rate",
            Refused::AgentForwards => "agent_forwards",
            Refused::NamespaceConnections => "namespace_connections",
            Refused::AgentConnections => "agent_connections",
            Refused::IdleEvicted => "idle_evicted",
            Refused::AcceptError => "accept_error",
        }
    }

    /// Counts one in `weave_dns_dropped_total{proto, reason}`.
    pub fn count(self, proto: &'static str) {
        metrics::counter!("weave_dns_dropped_total", "proto" => proto, "reason" => self.reason()).increment(1);
    }
}

/// A namespace's and the agent's permit for one forwarded query.
pub struct ForwardPermit {
    _namespace: OwnedSemaphorePermit,
    _agent: OwnedSemaphorePermit,
}

/// Both permits, within the namespace's rate, or which limit refused.
pub fn forward_permit(namespace: &NsForwards, agent: &Arc<Semaphore>) -> Result<ForwardPermit, Refused> {
    let now = Instant::now();
    if let Some(rate) = &namespace.rate
        && !rate.lock().unwrap_or_else(|e| e.into_inner()).take(now)
    {
        return Err(Refused::NamespaceRate);
    }
    if let Some(rate) = &namespace.host_rate
        && !rate.lock().unwrap_or_else(|e| e.into_inner()).take(now)
    {
        return Err(Refused::HostRate);
    }
    let ns = namespace.permits.clone().try_acquire_owned().map_err(|_| Refused::NamespaceForwards)?;
    let agent = agent.clone().try_acquire_owned().map_err(|_| Refused::AgentForwards)?;
    Ok(ForwardPermit { _namespace: ns, _agent: agent })
}

/// Errors that concern only the connection being accepted (or the datagram
/// received): go on at once. Anything else pauses [`BACKOFF`].
pub fn connection_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// When a TCP connection last went idle (waiting for a query), or busy.
#[derive(Default)]
pub struct Idle(AtomicU64);

const BUSY: u64 = u64::MAX;

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Idle {
    pub fn idle(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
    pub fn busy(&self) {
        self.0.store(BUSY, Ordering::Relaxed);
    }
    /// When it went idle (ms on this process's clock), None while busy.
    pub fn since(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|t| *t != BUSY)
    }
}

/// The key of the entry idle the longest, if any is idle.
pub fn oldest_idle<'a, K: Copy + 'a>(entries: impl IntoIterator<Item = (&'a K, &'a Idle)>) -> Option<K> {
    entries.into_iter().filter_map(|(k, idle)| Some((idle.since()?, *k))).min_by_key(|(t, _)| *t).map(|(_, k)| k)
}

/// The DNS server's runtime: one thread ("weave-dns") with a current-thread
/// runtime, started by the first call. Its thread is created by the calling
/// thread, so it is in that thread's network namespace: forwarded queries
/// leave from there (the agent's own namespace, where it serves from).
pub fn runtime() -> Result<Handle, Error> {
    static HANDLE: Mutex<Option<Handle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = &*handle {
        return Ok(h.clone());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("weave-dns".into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => {
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(|e| Error::Io("start the DNS thread".into(), e))?;
    let started = rx
        .recv()
        .map_err(|_| Error::Dns("the DNS thread ended before its runtime started".into()))?
        .map_err(|e| Error::Io("the DNS runtime".into(), e))?;
    *handle = Some(started.clone());
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_budget_follows_the_file_limit_within_bounds() {
        assert_eq!(Budget::for_file_limit(Some(1024)).tcp.available_permits(), 128);
        assert_eq!(Budget::for_file_limit(Some(65536)).tcp.available_permits(), 1024);
        assert_eq!(Budget::for_file_limit(Some(u64::MAX)).tcp.available_permits(), 1024);
        assert_eq!(Budget::for_file_limit(Some(64)).tcp.available_permits(), 16);
        assert_eq!(Budget::for_file_limit(None).tcp.available_permits(), 16);
        assert!(file_limit().is_some_and(|l| l > 0), "this process has a file limit");
    }

    #[test]
    fn a_namespace_holds_an_eighth_of_the_connection_budget_at_most() {
        for (limit, share) in [(Some(1024), 16), (Some(4096), 64), (Some(u64::MAX), 64), (Some(64), 2), (None, 2)] {
            assert_eq!(Budget::for_file_limit(limit).ns_tcp, share, "file limit {limit:?}");
        }
    }

    #[test]
    fn a_namespace_takes_an_eighth_of_the_forward_budget_at_most() {
        for (limit, share) in [(Some(1024), 16), (Some(8192), 128), (Some(u64::MAX), 128), (Some(64), 2), (None, 2)] {
            assert_eq!(Budget::for_file_limit(limit).ns_forwards, share, "file limit {limit:?}");
        }
        // At 1024: a flooding namespace holds its 16, another still gets its own 16.
        let budget = Budget::for_file_limit(Some(1024));
        let (flooder, other) =
            (budget.namespace_forwards(Scopes::default()), budget.namespace_forwards(Scopes::default()));
        let held: Vec<_> = std::iter::from_fn(|| forward_permit(&flooder, &budget.forwards).ok()).collect();
        assert_eq!(held.len(), 16);
        assert_eq!(forward_permit(&flooder, &budget.forwards).err(), Some(Refused::NamespaceForwards));
        let others: Vec<_> = std::iter::from_fn(|| forward_permit(&other, &budget.forwards).ok()).collect();
        assert_eq!(others.len(), 16);
        assert_eq!(budget.forwards.available_permits(), 128 - 32);
    }

    #[test]
    fn a_forward_needs_both_the_namespace_and_the_agent_permit() {
        let ns =
            NsForwards { scopes: Scopes::default(), permits: Arc::new(Semaphore::new(2)), rate: None, host_rate: None };
        let agent = Arc::new(Semaphore::new(1));
        let first = forward_permit(&ns, &agent).unwrap();
        // The namespace has room, the agent not: nothing is kept.
        assert_eq!(forward_permit(&ns, &agent).err(), Some(Refused::AgentForwards));
        assert_eq!(ns.permits.available_permits(), 1);
        drop(first);
        let _held = (forward_permit(&ns, &agent).unwrap(), ns.permits.clone().try_acquire_owned().unwrap());
        assert_eq!(forward_permit(&ns, &agent).err(), Some(Refused::NamespaceForwards));
    }

    #[test]
    fn a_namespace_starts_at_most_its_rate_of_forwards() {
        let mut budget = Budget::for_file_limit(Some(65536));
        assert_eq!(budget.ns_rate, DEFAULT_FORWARD_RATE);
        budget.ns_rate = 10;
        let ns = budget.namespace_forwards(Scopes::default());
        // Twice the rate at once (each permit given back as an answer would).
        let started = (0..100).filter(|_| forward_permit(&ns, &budget.forwards).is_ok()).count();
        assert_eq!(started, 20);
        assert_eq!(forward_permit(&ns, &budget.forwards).err(), Some(Refused::NamespaceRate));
        // Then the rate: a token every 100 ms.
        let mut bucket = Bucket::new(10);
        let start = Instant::now();
        while bucket.take(start) {}
        assert_eq!((0..5).filter(|_| bucket.take(start + Duration::from_millis(250))).count(), 2);
        budget.ns_rate = 0;
        let free = budget.namespace_forwards(Scopes::default());
        assert_eq!((0..100).filter(|_| forward_permit(&free, &budget.forwards).is_ok()).count(), 100);
        // Across namespaces: the host's rate, shared.
        budget.ns_rate = 10;
        budget.set_host_rate(15);
        let (a, b) = (budget.namespace_forwards(Scopes::default()), budget.namespace_forwards(Scopes::default()));
        let started = (0..100).filter(|_| forward_permit(&a, &budget.forwards).is_ok()).count()
            + (0..100).filter(|_| forward_permit(&b, &budget.forwards).is_ok()).count();
        assert_eq!(started, 30, "twice the host's rate at once, across both namespaces");
        assert_eq!(forward_permit(&b, &budget.forwards).err(), Some(Refused::NamespaceRate));
        let c = budget.namespace_forwards(Scopes::default());
        assert_eq!(forward_permit(&c, &budget.forwards).err(), Some(Refused::HostRate));
    }

    #[test]
    fn the_oldest_idle_entry_is_chosen_and_busy_ones_never() {
        let (a, b, c) = (Idle::default(), Idle::default(), Idle::default());
        a.busy();
        b.0.store(5, Ordering::Relaxed);
        c.0.store(3, Ordering::Relaxed);
        assert_eq!(oldest_idle([(&1, &a), (&2, &b), (&3, &c)]), Some(3));
        c.busy();
        assert_eq!(oldest_idle([(&1, &a), (&2, &b), (&3, &c)]), Some(2));
        b.busy();
        assert_eq!(oldest_idle([(&1, &a), (&2, &b), (&3, &c)]), None);
    }

    #[test]
    fn out_of_descriptors_is_not_one_connections_error() {
        assert!(!connection_only(&io::Error::from_raw_os_error(24)), "EMFILE");
        assert!(!connection_only(&io::Error::from_raw_os_error(23)), "ENFILE");
        assert!(connection_only(&io::Error::from(io::ErrorKind::ConnectionAborted)));
    }
}
