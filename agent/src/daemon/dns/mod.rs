//! The agent's DNS server for workloads, in the style of Docker's embedded
//! DNS: inside every attached container namespace a UDP and a TCP socket
//! answering 127.0.0.11:53 ([`redirect`]: on another port, with a DNAT rule
//! in the container), all served from one in-memory copy of the map's records.
//! The answers are [`crate::plan::dns`]'s; every other query is relayed byte
//! for byte to the upstream resolvers (from the agent's own namespace).
//!
//! Built on hickory-proto for parsing and encoding with a small UDP/TCP loop
//! of our own: what we need is a per-answer shuffle, a per-namespace socket
//! pair created from a `setns` thread, and a byte relay upstream, none of
//! which hickory-server's catalog gives without wrapping most of it.
//!
//! Bounded so that a container cannot starve the agent ([`limits`]): its own
//! thread and runtime, per-namespace limits on TCP connections and on
//! queries waiting upstream, a global budget of each, and back-off on
//! accept errors. The loops are in [`serve`].
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use hickory_proto::op::{Message, ResponseCode};
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};
use weave_proto::v1::NetworkMap;

mod again;
pub mod limits;
mod open;
pub mod redirect;
mod scopes;
mod serve;
mod shape;

use limits::Budget;
use open::{open_in_file, open_in_netns};
use serve::{any_for, read_framed, write_framed};
use shape::{malformed, misshapen};

use crate::{
    error::Error,
    host::{netns, registry::Registry},
    plan::dns::{Answer, Records, answer, encode_tcp, encode_udp, fqdn_lower},
};

/// Docker's embedded-DNS address; workloads put it in their resolv.conf.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);
/// Where the agent answers inside a Docker container: Docker's own resolver
/// holds 127.0.0.11:53 there (a DNAT rule), and forwards the names it does
/// not know to the daemon's `--dns` servers from inside the container, so
/// `dockerd --dns 127.0.0.12` makes it ask the agent (README, With Docker).
pub const DOCKER_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12)), 53);
/// DNS keys of Docker sandboxes start with this; they are served at [`DOCKER_LISTEN`].
pub const DOCKER_KEY_PREFIX: &str = "docker:";

/// The address the server of `key` listens on in its namespace.
pub fn listen_for(key: &str) -> SocketAddr {
    if key.starts_with(DOCKER_KEY_PREFIX) { DOCKER_LISTEN } else { LISTEN }
}
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The records and the upstreams; the sockets of every served namespace.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the served namespaces are kept (key -> netns path), so that a
    /// restarted agent serves its attached containers again.
    registry: Option<Arc<Registry>>,
    default_domain: String,
    upstreams: Vec<SocketAddr>,
    records: RwLock<Arc<Records>>,
    /// TCP connections and forwarded queries across namespaces.
    budget: Budget,
    served: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
    /// Per namespace key: the scopes of its networks ([`DnsServer::set_scopes`]).
    scopes: Mutex<HashMap<String, limits::Scopes>>,
    /// The namespaces whose 127.0.0.11:53 leads to the key's port through a
    /// DNAT rule ([`redirect`]): a detach takes the rule away too.
    redirected: Mutex<HashMap<String, std::fs::File>>,
}

impl DnsServer {
    pub fn new(domain: &str, upstreams: Vec<SocketAddr>) -> Self {
        let default_domain = fqdn_lower(domain);
        let records = Records { domain: default_domain.clone(), ..Default::default() };
        DnsServer {
            inner: Arc::new(Inner {
                registry: None,
                default_domain,
                upstreams,
                records: RwLock::new(Arc::new(records)),
                budget: Budget::for_file_limit(limits::file_limit()),
                served: Mutex::new(HashMap::new()),
                scopes: Mutex::new(HashMap::new()),
                redirected: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Like [`DnsServer::new`], remembering served namespaces in `registry`.
    pub fn with_registry(domain: &str, upstreams: Vec<SocketAddr>, registry: Arc<Registry>) -> Self {
        let mut server = Self::new(domain, upstreams);
        if let Some(inner) = Arc::get_mut(&mut server.inner) {
            inner.registry = Some(registry);
        }
        server
    }

    /// Forwards a second each namespace, and all of them, may start
    /// (`--dns-forward-rate`, `--dns-forward-rate-host`; 0: no limit). Before
    /// the server is shared (cloned).
    pub fn with_forward_rates(mut self, per_namespace: u32, per_host: u32) -> Self {
        let inner = Arc::get_mut(&mut self.inner);
        debug_assert!(inner.is_some(), "forward rates are set before the DNS server is shared");
        if let Some(inner) = inner {
            inner.budget.ns_rate = per_namespace;
            inner.budget.set_host_rate(per_host);
        }
        self
    }

    fn registered(&self) -> Vec<(String, String)> {
        self.inner.registry.as_ref().map(|r| r.dns_served()).unwrap_or_default()
    }

    fn unregister(&self, key: &str) {
        if let Some(r) = &self.inner.registry {
            r.stop_dns(key);
        }
    }

    /// Serves again every namespace served before a restart that still
    /// exists (and, for `netns:<inode>` keys, is still the same namespace).
    /// One that is gone stays registered: the attacher gives back what it
    /// held, then forgets it (`retire_dead`).
    pub async fn restore(&self) {
        for (key, netns) in self.registered() {
            let path = Path::new(&netns);
            if !again::same_namespace(&key, path) {
                if crate::host::netns::inode_in_key(&key).is_none() {
                    self.unregister(&key);
                }
                continue;
            }
            if let Err(e) = self.serve_in(path, &key).await {
                tracing::warn!(netns, error = %e, "cannot serve DNS again after restart (tried again every 10 s)");
            }
        }
    }

    /// Replaces the records with the map's. One pass over the records.
    pub fn update(&self, map: &NetworkMap) {
        let records = Arc::new(Records::from_map(map, &self.inner.default_domain));
        // Poisoning needs a panic while holding the lock, which only swaps an Arc.
        *self.inner.records.write().unwrap_or_else(|e| e.into_inner()) = records;
    }

    pub fn records(&self) -> Arc<Records> {
        self.inner.records.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.inner.upstreams
    }

    /// Opens 127.0.0.11:53 (UDP and TCP) inside the namespace at `netns` and
    /// serves it until [`DnsServer::stop`] with the same `key`. Serving a key
    /// again does nothing. Must be called inside the tokio runtime.
    pub async fn serve_in(&self, netns: &Path, key: &str) -> Result<(), Error> {
        // Attach is idempotent and attaching a second subnet attaches again:
        // the sockets already there keep serving (a second bind would fail).
        if self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key) {
            return Ok(());
        }
        self.open_and_serve(netns, key).await?;
        if let Some(r) = &self.inner.registry {
            r.serve_dns(key, Some(netns.display().to_string()));
        }
        tracing::info!(netns = %netns.display(), key, "serving DNS at {}", listen_for(key));
        Ok(())
    }

    /// [`DnsServer::serve_in`] without the record.
    async fn open_and_serve(&self, netns: &Path, key: &str) -> Result<(), Error> {
        let path = netns.to_path_buf();
        let addr = listen_for(key);
        let (udp, tcp, rule) = tokio::task::spawn_blocking(move || open_in_netns(&path, addr))
            .await
            .map_err(|e| Error::Dns(format!("socket thread: {e}")))??;
        self.serve_sockets(udp, tcp, key)?;
        self.redirected_in(key, rule);
        Ok(())
    }

    /// Like [`DnsServer::serve_in`] for a namespace the caller passed as a
    /// descriptor (the agent may not see its path). Not registered for
    /// [`DnsServer::restore`]: after a restart there is nothing to reopen.
    pub async fn serve_in_file(&self, netns: &std::fs::File, key: &str) -> Result<(), Error> {
        if self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key) {
            return Ok(());
        }
        let file = netns.try_clone().map_err(|e| Error::Io(format!("the namespace of {key}"), e))?;
        let label = key.to_string();
        let addr = listen_for(key);
        let (udp, tcp, rule) = tokio::task::spawn_blocking(move || open_in_file(file, label, addr))
            .await
            .map_err(|e| Error::Dns(format!("socket thread: {e}")))??;
        self.serve_sockets(udp, tcp, key)?;
        self.redirected_in(key, rule);
        tracing::info!(key, "serving DNS at {LISTEN} (passed namespace)");
        Ok(())
    }

    /// Serves sockets bound elsewhere (non-blocking), under `key`, on the
    /// DNS thread ([`limits::runtime`], started by the first call).
    pub fn serve_sockets(&self, udp: std::net::UdpSocket, tcp: std::net::TcpListener, key: &str) -> Result<(), Error> {
        let runtime = limits::runtime()?;
        let (udp, tcp) = {
            let _on = runtime.enter();
            let io = |e| Error::Io(format!("register DNS sockets for {key}"), e);
            (UdpSocket::from_std(udp).map_err(io)?, TcpListener::from_std(tcp).map_err(io)?)
        };
        // Shared by the namespace's UDP and TCP queries: its share of the budget.
        let forwards = self.inner.budget.namespace_forwards(self.scopes_of(key));
        let tasks = vec![
            runtime.spawn(self.clone().udp_loop(udp, forwards.clone())),
            runtime.spawn(self.clone().tcp_loop(tcp, forwards)),
        ];
        let old = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), tasks);
        for t in old.into_iter().flatten() {
            t.abort();
        }
        Ok(())
    }

    fn redirected_in(&self, key: &str, rule: Option<std::fs::File>) {
        let mut redirected = self.inner.redirected.lock().unwrap_or_else(|e| e.into_inner());
        match rule {
            Some(netns) => redirected.insert(key.to_string(), netns),
            None => redirected.remove(key),
        };
    }

    /// [`DnsServer::stop`] for a container that lives on (a detach): its
    /// DNAT rule goes too, so that its 127.0.0.11:53 is its own again (a
    /// server of its own there answers; found by a review). Awaited: an
    /// attach right after finds the rule gone, not its new one removed.
    pub async fn stop_detached(&self, key: &str) -> bool {
        // Out of the record before the rule is taken: `serve_missing` places
        // a rule, then looks at the record (and takes it away itself if the
        // key went), so one of the two removes it (a review, 2026-12-07).
        self.unregister(key);
        let netns = self.inner.redirected.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let found = self.stop(key);
        if let Some(netns) = netns {
            let label = key.to_string();
            let removed = tokio::task::spawn_blocking(move || {
                netns::run_in(&netns, &label, || {
                    redirect::remove();
                    Ok(())
                })
            })
            .await;
            if let Ok(Err(e)) = removed {
                tracing::debug!(key, error = %e, "the DNS rule stays");
            }
        }
        found
    }

    /// Every container's DNAT rule out (the node removed; found by a
    /// review, 2026-12-05). Before [`Self::stop_all`].
    pub async fn unredirect_all(&self) {
        let all: Vec<_> = self.inner.redirected.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        let namespaces = all.into_iter().map(|(key, netns)| (key, Ok(netns)));
        let _ = tokio::task::spawn_blocking(move || redirect::remove_in(namespaces)).await;
    }

    /// Closes the sockets of `key` and forgets it in the registry (its
    /// namespace and names). Returns whether it was served.
    pub fn stop(&self, key: &str) -> bool {
        // Out of the record first: `serve_missing` serves, then looks at the
        // record, so one of the two always sees the other.
        self.unregister(key);
        self.inner.redirected.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let tasks = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let found = tasks.is_some();
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
        found
    }

    pub fn stop_all(&self) {
        let all: Vec<_> = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (_, tasks) in all {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// The response to one query, as bytes; `udp_max` set for UDP clients.
    /// Public for the fuzz target (fuzz/fuzz_targets/dns_query.rs). Outside
    /// the limits: the serving loops decide and forward themselves.
    pub async fn respond(&self, query: &[u8], udp_max: Option<u16>) -> Option<Vec<u8>> {
        if let Some(refused) = misshapen(query) {
            return refused;
        }
        let message = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return malformed(query),
        };
        match self.decide(&message, udp_max, &[]) {
            Decided::Reply(out) => out,
            Decided::Forward(failed) => self.forwarded(query, failed).await,
        }
    }

    /// The answer from the map, or that the query goes upstream (counted in
    /// `weave_dns_queries_total` either way).
    fn decide(&self, message: &Message, udp_max: Option<u16>, scopes: &[String]) -> Decided {
        let decided = answer(&self.records(), message, scopes, &mut rand::rng());
        let result = match &decided {
            Answer::Local(r) if r.metadata.response_code == ResponseCode::NXDomain => "nxdomain",
            Answer::Local(r) if r.answers.is_empty() => "empty",
            Answer::Local(_) => "answered",
            Answer::Forward => "forwarded",
        };
        metrics::counter!("weave_dns_queries_total", "result" => result).increment(1);
        match decided {
            Answer::Local(response) => Decided::Reply(match udp_max {
                Some(max) => encode_udp(&response, max),
                None => encode_tcp(&response),
            }),
            Answer::Forward => Decided::Forward(Failed { query: message.clone(), udp_max }),
        }
    }

    /// The upstream's answer to `query`, or SERVFAIL if none answered; to a
    /// UDP client, truncated to what it takes ([`Failed::fit_udp`]): an upstream
    /// that ignored the client's size had its whole answer relayed (2 KB
    /// to a client without EDNS, which takes 512; found by a review,
    /// 2026-12-05).
    async fn forwarded(&self, query: &[u8], failed: Failed) -> Option<Vec<u8>> {
        match self.forward(query, failed.udp_max.is_some()).await {
            Some(bytes) => Some(match failed.udp_max {
                Some(max) => failed.fit_udp(bytes, max),
                None => bytes,
            }),
            None => {
                // Also counted as forwarded: an alert on a broken upstream
                // compares the two (a failure was counted as forwarded alone).
                metrics::counter!("weave_dns_queries_total", "result" => "forward_failed").increment(1);
                failed.servfail()
            }
        }
    }

    /// Relays `query` to each upstream in turn until one answers.
    async fn forward(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        for upstream in &self.inner.upstreams {
            let attempt = async {
                if udp {
                    let socket = UdpSocket::bind(any_for(upstream)).await.ok()?;
                    socket.connect(upstream).await.ok()?;
                    socket.send(query).await.ok()?;
                    let mut buf = vec![0u8; 65535];
                    loop {
                        let n = socket.recv(&mut buf).await.ok()?;
                        if is_answer_to(query, &buf[..n]) {
                            return Some(buf[..n].to_vec());
                        }
                    }
                } else {
                    let mut stream = TcpStream::connect(upstream).await.ok()?;
                    write_framed(&mut stream, query).await.ok()?;
                    let reply = read_framed(&mut stream).await.ok()?;
                    is_answer_to(query, &reply).then_some(reply)
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Some(bytes)) => return Some(bytes),
                _ => tracing::debug!(%upstream, "upstream DNS did not answer"),
            }
        }
        None
    }
}

/// Whether `reply` is an answer to `query`: a whole header, the same id,
/// and QR set. Anything else from an upstream (a query, a reply to another
/// id, a runt) is not relayed to the container as if it were its answer.
fn is_answer_to(query: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && query.len() >= 2 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// What to do with one query.
enum Decided {
    /// Answered from the map (None: nothing to send).
    Reply(Option<Vec<u8>>),
    /// Ask the upstreams; `Failed` if none answers.
    Forward(Failed),
}

/// A query on its way upstream: what its SERVFAIL or its truncated
/// answer is made from.
struct Failed {
    query: Message,
    /// What a UDP client said it takes; None over TCP.
    udp_max: Option<u16>,
}

impl Failed {
    /// The answer to the query with `code` and no records: its id, question
    /// and RD, RA set. A bare header (no question, no RD) could be taken
    /// for a spurious reply by a stub resolver, which then waits out its
    /// timeout (a review, 2026-12-05).
    fn reply(&self, code: ResponseCode) -> Message {
        let mut m = Message::response(self.query.metadata.id, self.query.metadata.op_code);
        m.metadata.recursion_desired = self.query.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.response_code = code;
        m.queries = self.query.queries.clone();
        m
    }

    fn servfail(&self) -> Option<Vec<u8>> {
        self.reply(ResponseCode::ServFail).to_vec().ok()
    }

    /// An upstream's UDP answer for a client that takes at most `max`
    /// bytes: as it is if it fits, else its header and question with the TC
    /// bit ([`encode_udp`]; the client asks again over TCP); one that does
    /// not parse, as the query's own question with TC (a bare header was
    /// ignored by glibc, which then never retried over TCP; a review).
    fn fit_udp(&self, reply: Vec<u8>, max: u16) -> Vec<u8> {
        if reply.len() <= usize::from(max) {
            return reply;
        }
        if let Some(short) = Message::from_vec(&reply).ok().and_then(|m| encode_udp(&m, max)) {
            return short;
        }
        let mut short = self.reply(ResponseCode::NoError);
        short.metadata.truncation = true;
        short.to_vec().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
