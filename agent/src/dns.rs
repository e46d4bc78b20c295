//! The agent's DNS server for workloads, in the style of Docker's embedded
//! DNS: inside every attached container namespace a UDP and a TCP socket on
//! 127.0.0.11:53, all served from one in-memory copy of the map's records.
//!
//! Names in the cluster domain (`weave.local.`) are answered here: A/AAAA from
//! the records (several per name, shuffled per answer), PTR for known
//! addresses, NXDOMAIN for unknown names, TTL 1; single-label names are
//! qualified with the domain, and matching ignores case. Every other query is
//! relayed byte for byte to the upstream resolvers (from the agent's own
//! namespace). Answers too big for the client's UDP size are sent truncated,
//! so the client retries over TCP.
//!
//! Built on hickory-proto for parsing and encoding with a small UDP/TCP loop
//! of our own: what we need is a per-answer shuffle, a per-namespace socket
//! pair created from a `setns` thread, and a byte relay upstream, none of
//! which hickory-server's catalog gives without wrapping most of it.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};
use rand::seq::SliceRandom;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};
use weave_proto::v1::NetworkMap;

use crate::error::Error;

/// Docker's embedded-DNS address; workloads put it in their resolv.conf.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// In the agent's data dir: the namespaces served (key -> path), for restarts.
pub const REGISTRY_FILE: &str = "dns-namespaces.json";
/// As Weave: records change as containers come and go.
pub const TTL: u32 = 1;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// What we advertise (and use) as our EDNS UDP size.
const EDNS_PAYLOAD: u16 = 1232;

/// The records of one map, indexed for answers. Pure data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    /// Lower case, with a trailing dot.
    pub domain: String,
    pub by_name: HashMap<String, Vec<IpAddr>>,
    pub by_address: HashMap<IpAddr, Vec<String>>,
}

impl Records {
    pub fn from_map(map: &NetworkMap, default_domain: &str) -> Self {
        let domain = if map.dns_domain.is_empty() { default_domain } else { &map.dns_domain };
        let mut records = Records { domain: fqdn_lower(domain), ..Default::default() };
        for r in &map.dns_records {
            let Ok(ip) = r.address.split('/').next().unwrap_or_default().parse::<IpAddr>() else { continue };
            let name = fqdn_lower(&r.name);
            let addrs = records.by_name.entry(name.clone()).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
            let names = records.by_address.entry(ip).or_default();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        records
    }

    /// The addresses of `name` (qualified with the domain if it has one label).
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        self.by_name.get(&qualify(name, &self.domain)).cloned().unwrap_or_default()
    }

    pub fn in_domain(&self, qualified: &str) -> bool {
        qualified == self.domain || qualified.ends_with(&format!(".{}", self.domain))
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn fqdn_lower(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Lower case, trailing dot, and a single label gets the domain appended
/// (`Web` -> `web.weave.local.`), as Weave resolved unqualified names.
pub fn qualify(name: &str, domain: &str) -> String {
    let n = fqdn_lower(name);
    let labels = n.trim_end_matches('.');
    if !labels.is_empty() && !labels.contains('.') { format!("{n}{domain}") } else { n }
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` -> 1.2.3.4,
/// and the 32-nibble `ip6.arpa.` form.
pub fn ptr_address(name: &str) -> Option<IpAddr> {
    let n = fqdn_lower(name);
    if let Some(rest) = n.strip_suffix(".in-addr.arpa.") {
        let parts: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let [d, c, b, a] = parts[..] else { return None };
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = n.strip_suffix(".ip6.arpa.")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| if p.len() == 1 { u8::from_str_radix(p, 16).ok() } else { None })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.iter().rev().collect::<Vec<_>>().chunks(2).enumerate() {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// What to do with a query.
#[derive(Debug)]
pub enum Answer {
    /// Answered here: the encoded response.
    Local(Message),
    /// Not ours: relay the query upstream unchanged.
    Forward,
}

/// Builds the answer to `query` from `records` (shuffling with `rng`). Pure.
pub fn answer(records: &Records, query: &Message, rng: &mut impl rand::Rng) -> Answer {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.edns = Some(edns);
    }
    let (Some(q), OpCode::Query, MessageType::Query, 1) =
        (query.queries.first(), query.metadata.op_code, query.metadata.message_type, query.queries.len())
    else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Answer::Local(response);
    };
    let asked = q.name().to_ascii();
    let qtype = q.query_type();
    if qtype == RecordType::PTR {
        let Some(ip) = ptr_address(&asked) else { return Answer::Forward };
        let Some(names) = records.by_address.get(&ip) else { return Answer::Forward };
        response.metadata.authoritative = true;
        for n in names {
            let Ok(target) = Name::from_ascii(n) else { continue };
            response.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
        }
        return Answer::Local(response);
    }
    let name = qualify(&asked, &records.domain);
    if !records.in_domain(&name) {
        return Answer::Forward;
    }
    response.metadata.authoritative = true;
    let Some(addrs) = records.by_name.get(&name) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return Answer::Local(response);
    };
    let mut addrs = addrs.clone();
    addrs.shuffle(rng);
    for ip in addrs {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            // The name exists: NOERROR with no data for other types.
            _ => continue,
        };
        response.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
    }
    Answer::Local(response)
}

/// Encodes `response` for UDP: if it is bigger than the client said it can
/// take, only the header and question go, with the TC bit (the client then
/// asks again over TCP).
pub fn encode_udp(response: &Message, client_max: u16) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= client_max as usize {
        return Some(bytes);
    }
    let mut short = Message::response(response.metadata.id, response.metadata.op_code);
    short.metadata = response.metadata;
    short.metadata.truncation = true;
    short.queries = response.queries.clone();
    short.edns = response.edns.clone();
    short.to_vec().ok()
}

/// The nameservers of a resolv.conf, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The records and the upstreams; the sockets of every served namespace.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the served namespaces are kept (key -> netns path), so that a
    /// restarted agent serves its attached containers again.
    registry: Option<std::path::PathBuf>,
    default_domain: String,
    upstreams: Vec<SocketAddr>,
    records: RwLock<Arc<Records>>,
    served: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
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
                served: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Like [`DnsServer::new`], remembering served namespaces in `registry`.
    pub fn with_registry(domain: &str, upstreams: Vec<SocketAddr>, registry: &Path) -> Self {
        let mut server = Self::new(domain, upstreams);
        if let Some(inner) = Arc::get_mut(&mut server.inner) {
            inner.registry = Some(registry.to_path_buf());
        }
        server
    }

    fn registered(&self) -> HashMap<String, String> {
        let Some(path) = &self.inner.registry else { return HashMap::new() };
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn register(&self, change: impl FnOnce(&mut HashMap<String, String>)) {
        let Some(path) = &self.inner.registry else { return };
        let mut all = self.registered();
        change(&mut all);
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&all)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the served DNS namespaces");
        }
    }

    /// Serves again every namespace served before a restart that still
    /// exists (and, for `netns:<inode>` keys, is still the same namespace).
    pub async fn restore(&self) {
        for (key, netns) in self.registered() {
            let path = Path::new(&netns);
            let same = std::fs::metadata(path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                key.strip_prefix("netns:").is_none_or(|ino| ino == m.ino().to_string())
            });
            if same != Some(true) {
                self.register(|all| {
                    all.remove(&key);
                });
                continue;
            }
            if let Err(e) = self.serve_in(path, &key).await {
                tracing::warn!(netns, error = %e, "cannot serve DNS again after restart");
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
        let path = netns.to_path_buf();
        let (udp, tcp) = tokio::task::spawn_blocking(move || open_in_netns(&path))
            .await
            .map_err(|e| Error::Dns(format!("socket thread: {e}")))??;
        self.serve_sockets(udp, tcp, key)?;
        let netns_path = netns.display().to_string();
        self.register(|all| {
            all.insert(key.to_string(), netns_path);
        });
        tracing::info!(netns = %netns.display(), key, "serving DNS at {LISTEN}");
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
        let (udp, tcp) = tokio::task::spawn_blocking(move || open_in_file(file, label))
            .await
            .map_err(|e| Error::Dns(format!("socket thread: {e}")))??;
        self.serve_sockets(udp, tcp, key)?;
        tracing::info!(key, "serving DNS at {LISTEN} (passed namespace)");
        Ok(())
    }

    /// Serves sockets bound elsewhere (non-blocking), under `key`. Must be
    /// called inside the tokio runtime.
    pub fn serve_sockets(&self, udp: std::net::UdpSocket, tcp: std::net::TcpListener, key: &str) -> Result<(), Error> {
        let io = |e| Error::Io(format!("register DNS sockets for {key}"), e);
        let udp = UdpSocket::from_std(udp).map_err(io)?;
        let tcp = TcpListener::from_std(tcp).map_err(io)?;
        let tasks = vec![tokio::spawn(self.clone().udp_loop(udp)), tokio::spawn(self.clone().tcp_loop(tcp))];
        let old = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), tasks);
        for t in old.into_iter().flatten() {
            t.abort();
        }
        Ok(())
    }

    /// Closes the sockets of `key`. Returns whether it was served.
    pub fn stop(&self, key: &str) -> bool {
        let tasks = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let found = tasks.is_some();
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
        self.register(|all| {
            all.remove(key);
        });
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
    /// Public for the fuzz target (fuzz/fuzz_targets/dns_query.rs).
    pub async fn respond(&self, query: &[u8], udp_max: Option<u16>) -> Option<Vec<u8>> {
        let message = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // Echo the id back if there is one, so the client stops waiting.
                let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
            }
        };
        let decided = answer(&self.records(), &message, &mut rand::rng());
        let result = match &decided {
            Answer::Local(r) if r.metadata.response_code == ResponseCode::NXDomain => "nxdomain",
            Answer::Local(r) if r.answers.is_empty() => "empty",
            Answer::Local(_) => "answered",
            Answer::Forward => "forwarded",
        };
        metrics::counter!("weave_dns_queries_total", "result" => result).increment(1);
        match decided {
            Answer::Local(response) => match udp_max {
                Some(max) => encode_udp(&response, max),
                None => response.to_vec().ok(),
            },
            Answer::Forward => match self.forward(query, udp_max.is_some()).await {
                Some(bytes) => Some(bytes),
                None => Message::error_msg(message.metadata.id, message.metadata.op_code, ResponseCode::ServFail)
                    .to_vec()
                    .ok(),
            },
        }
    }

    /// Relays `query` to each upstream in turn until one answers.
    async fn forward(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        for upstream in &self.inner.upstreams {
            let attempt = async {
                if udp {
                    let bind: SocketAddr =
                        if upstream.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
                    let socket = UdpSocket::bind(bind).await.ok()?;
                    socket.connect(upstream).await.ok()?;
                    socket.send(query).await.ok()?;
                    let mut buf = vec![0u8; 65535];
                    loop {
                        let n = socket.recv(&mut buf).await.ok()?;
                        // Only the answer to this query (same id).
                        if n >= 2 && buf[..2] == query[..2] {
                            return Some(buf[..n].to_vec());
                        }
                    }
                } else {
                    let mut stream = TcpStream::connect(upstream).await.ok()?;
                    write_framed(&mut stream, query).await.ok()?;
                    read_framed(&mut stream).await.ok()
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Some(bytes)) => return Some(bytes),
                _ => tracing::debug!(%upstream, "upstream DNS did not answer"),
            }
        }
        None
    }

    async fn udp_loop(self, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
            let query = buf[..n].to_vec();
            let (server, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                let max = Message::from_vec(&query).map(|m| m.max_payload()).unwrap_or(512);
                if let Some(out) = server.respond(&query, Some(max)).await {
                    let _ = socket.send_to(&out, from).await;
                }
            });
        }
    }

    async fn tcp_loop(self, listener: TcpListener) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let server = self.clone();
            tokio::spawn(async move {
                while let Ok(Ok(query)) = tokio::time::timeout(Duration::from_secs(10), read_framed(&mut stream)).await
                {
                    let Some(out) = server.respond(&query, None).await else { return };
                    if write_framed(&mut stream, &out).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await
}

/// On a thread of its own (setns changes only the calling thread): enter the
/// namespace, bring `lo` up, bind both sockets. They stay in that namespace.
fn open_in_netns(netns: &Path) -> Result<(std::net::UdpSocket, std::net::TcpListener), Error> {
    let file = std::fs::File::open(netns).map_err(|e| Error::Io(netns.display().to_string(), e))?;
    open_in_file(file, netns.display().to_string())
}

/// The sockets, opened inside the namespace `file` (`label` names it in errors).
fn open_in_file(file: std::fs::File, label: String) -> Result<(std::net::UdpSocket, std::net::TcpListener), Error> {
    let thread_label = label.clone();
    std::thread::spawn(move || {
        let what = |w: &str| format!("{w} in {thread_label}");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Io(what("setns"), e.into()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(what("runtime"), e))?;
        rt.block_on(async { crate::netlink::Netlink::connect()?.set_up("lo").await })?;
        let udp = std::net::UdpSocket::bind(LISTEN).map_err(|e| Error::Io(what("bind udp 127.0.0.11:53"), e))?;
        let tcp = std::net::TcpListener::bind(LISTEN).map_err(|e| Error::Io(what("bind tcp 127.0.0.11:53"), e))?;
        udp.set_nonblocking(true).map_err(|e| Error::Io(what("udp"), e))?;
        tcp.set_nonblocking(true).map_err(|e| Error::Io(what("tcp"), e))?;
        Ok((udp, tcp))
    })
    .join()
    .map_err(|_| Error::Dns(format!("the socket thread for {label} panicked")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use rand::SeedableRng;
    use weave_proto::v1::DnsRecord;

    fn map() -> NetworkMap {
        let rec = |id, name: &str, address: &str| DnsRecord {
            id,
            name: name.into(),
            address: address.into(),
            ..Default::default()
        };
        NetworkMap {
            dns_domain: "weave.local.".into(),
            dns_records: vec![
                rec(1, "web.weave.local.", "10.32.0.1"),
                rec(2, "web.weave.local.", "10.32.0.2"),
                rec(3, "db.weave.local.", "10.32.0.3/12"),
                rec(4, "v6.weave.local.", "fd00::1"),
            ],
            ..Default::default()
        }
    }

    fn ask(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    fn local(records: &Records, name: &str, t: RecordType, seed: u64) -> Message {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        match answer(records, &ask(name, t), &mut rng) {
            Answer::Local(m) => m,
            Answer::Forward => panic!("{name} was forwarded"),
        }
    }

    fn addrs(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn qualifies_single_labels_and_lowercases() {
        assert_eq!(qualify("Web", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("web.", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("WEB.Weave.Local", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("example.com.", "weave.local."), "example.com.");
    }

    #[test]
    fn parses_reverse_names() {
        assert_eq!(ptr_address("4.3.2.10.in-addr.arpa."), Some("10.2.3.4".parse().unwrap()));
        assert_eq!(ptr_address("4.3.2.10.IN-ADDR.ARPA"), Some("10.2.3.4".parse().unwrap()));
        assert_eq!(ptr_address("3.2.10.in-addr.arpa."), None);
        assert_eq!(ptr_address("x.3.2.10.in-addr.arpa."), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(ptr_address(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(ptr_address("web.weave.local."), None);
    }

    #[test]
    fn builds_records_from_the_map() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(r.len(), 4);
        assert_eq!(r.lookup("db"), vec!["10.32.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.lookup("nope"), Vec::<IpAddr>::new());
        let empty = NetworkMap::default();
        assert_eq!(Records::from_map(&empty, "other.").domain, "other.");
    }

    #[test]
    fn answers_a_with_every_record_shuffled_and_ttl_1() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        let mut orders = std::collections::HashSet::new();
        for seed in 0..20 {
            let m = local(&r, "web.weave.local.", RecordType::A, seed);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.iter().all(|a| a.ttl == TTL));
            let mut got = addrs(&m);
            orders.insert(got.clone());
            got.sort();
            assert_eq!(got, ["10.32.0.1", "10.32.0.2"]);
        }
        assert_eq!(orders.len(), 2, "both orders over 20 answers");
    }

    #[test]
    fn unqualified_and_mixed_case_names_resolve() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(addrs(&local(&r, "DB.", RecordType::A, 1)), ["10.32.0.3"]);
        assert_eq!(addrs(&local(&r, "Db.WEAVE.local.", RecordType::A, 1)), ["10.32.0.3"]);
    }

    #[test]
    fn aaaa_ptr_and_nxdomain() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(addrs(&local(&r, "v6.weave.local.", RecordType::AAAA, 1)), ["fd00::1"]);
        let none = local(&r, "v6.weave.local.", RecordType::A, 1);
        assert_eq!((none.metadata.response_code, none.answers.len()), (ResponseCode::NoError, 0));
        let ptr = local(&r, "3.0.32.10.in-addr.arpa.", RecordType::PTR, 1);
        assert_eq!(addrs(&ptr), ["db.weave.local."]);
        let nx = local(&r, "nope.weave.local.", RecordType::A, 1);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn other_names_and_unknown_addresses_go_upstream() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert!(matches!(answer(&r, &ask("example.com.", RecordType::A), &mut rng), Answer::Forward));
        assert!(matches!(answer(&r, &ask("9.9.9.9.in-addr.arpa.", RecordType::PTR), &mut rng), Answer::Forward));
    }

    #[test]
    fn big_answers_are_truncated_for_udp() {
        let mut m = map();
        m.dns_records = (1..=50)
            .map(|i| DnsRecord {
                id: i,
                name: "many.weave.local.".into(),
                address: format!("10.40.0.{i}"),
                ..Default::default()
            })
            .collect();
        let r = Records::from_map(&m, DEFAULT_DOMAIN);
        let full = local(&r, "many", RecordType::A, 1);
        assert_eq!(full.answers.len(), 50);
        let short = Message::from_vec(&encode_udp(&full, 512).unwrap()).unwrap();
        assert!(short.metadata.truncation && short.answers.is_empty());
        let fits = Message::from_vec(&encode_udp(&full, 4096).unwrap()).unwrap();
        assert!(!fits.metadata.truncation && fits.answers.len() == 50);
    }

    #[test]
    fn reads_nameservers_from_resolv_conf() {
        let text = "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:1\n";
        assert_eq!(parse_resolv_conf(text), ["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
