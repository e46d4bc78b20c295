//! One namespace's UDP and TCP loops, within [`super::limits`]. Each loop
//! owns its tasks (a `JoinSet`): stopping the namespace aborts the loop and
//! with it every connection and forward it started.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::OwnedSemaphorePermit,
    task::{AbortHandle, Id, JoinSet},
    time::timeout,
};

use super::{
    Decided, DnsServer,
    limits::{
        BACKOFF, EVICT_WAIT, Idle, NsForwards, Refused, TCP_IDLE, TCP_QUERIES, connection_only, forward_permit,
        oldest_idle,
    },
};

/// One open TCP connection, as its accept loop sees it.
struct Conn {
    idle: Arc<Idle>,
    task: AbortHandle,
}

impl DnsServer {
    /// What to do with a query as bytes (a FORMERR echo if it does not parse).
    fn decide_bytes(&self, query: &[u8], udp: bool, namespace: &NsForwards) -> Decided {
        // An answer (QR set), parseable or not, is never answered: a
        // datagram spoofed from the resolver's own address and port made it
        // answer itself, each answer (FORMERR is one) coming back as the next
        // message, for ever (found by a review).
        if query.get(2).is_some_and(|flags| flags & 0x80 != 0) {
            return Decided::Reply(None);
        }
        if let Some(refused) = super::shape::misshapen(query) {
            return Decided::Reply(refused);
        }
        match Message::from_vec(query) {
            Ok(m) => {
                let max = udp.then(|| m.max_payload());
                self.decide(&m, max, &namespace.scopes.read().unwrap_or_else(|e| e.into_inner()))
            }
            Err(_) => Decided::Reply(super::shape::malformed(query)),
        }
    }

    /// Receives queries: answers from the map at once, forwards within the
    /// namespace's and the agent's budget, drops (and counts) the rest.
    pub(super) async fn udp_loop(self, socket: UdpSocket, namespace: Arc<NsForwards>) {
        let socket = Arc::new(socket);
        let mut forwards = JoinSet::new();
        let mut buf = vec![0u8; 65535];
        loop {
            while forwards.try_join_next().is_some() {}
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    if !connection_only(&e) {
                        tracing::warn!(error = %e, "DNS receive failed; pausing");
                        tokio::time::sleep(BACKOFF).await;
                    }
                    continue;
                }
            };
            let query = &buf[..n];
            match self.decide_bytes(query, true, &namespace) {
                Decided::Reply(Some(out)) => {
                    let _ = socket.send_to(&out, from).await;
                }
                Decided::Reply(None) => {}
                Decided::Forward(failed) => match forward_permit(&namespace, &self.inner.budget.forwards) {
                    Ok(permit) => {
                        let (server, socket, query) = (self.clone(), socket.clone(), query.to_vec());
                        forwards.spawn(async move {
                            let _permit = permit;
                            if let Some(out) = server.forwarded(&query, failed).await {
                                let _ = socket.send_to(&out, from).await;
                            }
                        });
                    }
                    Err(refused) => refused.count("udp"),
                },
            }
        }
    }

    /// Accepts connections: at most [`super::limits::Budget::ns_tcp`] here (the one
    /// idle the longest makes room, else the new one is closed) and within
    /// the agent's budget; pauses after an accept error not the connection's.
    pub(super) async fn tcp_loop(self, listener: TcpListener, namespace: Arc<NsForwards>) {
        let mut tasks = JoinSet::new();
        let mut open: HashMap<Id, Conn> = HashMap::new();
        loop {
            while let Some(done) = tasks.try_join_next_with_id() {
                open.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
            }
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if connection_only(&e) => continue,
                Err(e) => {
                    Refused::AcceptError.count("tcp");
                    tracing::warn!(error = %e, "DNS accept failed (out of file descriptors?); pausing");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            let mut evicted = false;
            if open.len() >= self.inner.budget.ns_tcp {
                let Some(oldest) = oldest_idle(open.iter().map(|(id, c)| (id, &*c.idle))) else {
                    Refused::NamespaceConnections.count("tcp");
                    continue;
                };
                if let Some(c) = open.remove(&oldest) {
                    c.task.abort();
                }
                Refused::IdleEvicted.count("tcp");
                evicted = true;
            }
            let Some(permit) = self.tcp_permit(evicted).await else {
                Refused::AgentConnections.count("tcp");
                continue;
            };
            let idle = Arc::new(Idle::default());
            idle.idle();
            let task = tasks.spawn(self.clone().connection(stream, namespace.clone(), idle.clone(), permit));
            open.insert(task.id(), Conn { idle, task });
        }
    }

    /// A global connection permit; after an eviction, waits briefly for the
    /// one the closed connection gives back (aborting is not immediate).
    async fn tcp_permit(&self, evicted: bool) -> Option<OwnedSemaphorePermit> {
        let budget = &self.inner.budget.tcp;
        match budget.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if evicted => timeout(EVICT_WAIT, budget.clone().acquire_owned()).await.ok()?.ok(),
            Err(_) => None,
        }
    }

    /// Serves one connection: up to [`TCP_QUERIES`] queries, each to come
    /// whole within [`TCP_IDLE`] and its answer to be taken within it too.
    async fn connection(
        self,
        mut stream: TcpStream,
        namespace: Arc<NsForwards>,
        idle: Arc<Idle>,
        _permit: OwnedSemaphorePermit,
    ) {
        for _ in 0..TCP_QUERIES {
            idle.idle();
            let Ok(Ok(query)) = timeout(TCP_IDLE, read_framed(&mut stream)).await else { return };
            idle.busy();
            let out = match self.decide_bytes(&query, false, &namespace) {
                Decided::Reply(out) => out,
                Decided::Forward(failed) => match forward_permit(&namespace, &self.inner.budget.forwards) {
                    Ok(_permit) => self.forwarded(&query, failed).await,
                    Err(refused) => {
                        refused.count("tcp");
                        failed.servfail()
                    }
                },
            };
            let Some(out) = out else { return };
            if !matches!(timeout(TCP_IDLE, write_framed(&mut stream, &out)).await, Ok(Ok(()))) {
                return;
            }
        }
        // The last query answered: close our side, politely.
        let _ = stream.shutdown().await;
    }
}

pub(super) async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

pub(super) async fn write_framed(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await
}

/// The address a UDP upstream query is sent from: any, of the upstream's family.
pub(super) fn any_for(upstream: &SocketAddr) -> SocketAddr {
    if upstream.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::daemon::dns::limits::{Budget, NS_TCP_CONNECTIONS};

    /// A server on 127.0.0.1 (no namespace, no root) under `key`; its TCP address.
    fn serving(server: &DnsServer, key: &str) -> SocketAddr {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let addr = tcp.local_addr().unwrap();
        server.serve_sockets(udp, tcp, key).unwrap();
        addr
    }

    fn query(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 5]);
        q.extend_from_slice(b"weave\x05local\x00\x00\x01\x00\x01");
        q
    }

    /// Whether the server closed `c` (EOF or reset) within 5 s.
    async fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(timeout(Duration::from_secs(5), c.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    }

    /// Whether `c` still gets an answer to a query.
    async fn answers(c: &mut TcpStream, id: u16) -> bool {
        if write_framed(c, &query(id)).await.is_err() {
            return false;
        }
        let got = timeout(Duration::from_secs(5), read_framed(c)).await;
        matches!(got, Ok(Ok(a)) if a[..2] == id.to_be_bytes())
    }

    /// Whether the server closed `c`, without waiting.
    fn shut(c: &TcpStream) -> bool {
        let mut b = [0u8; 1];
        match c.try_read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    async fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(TcpStream::connect(addr).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_namespace_keeps_64_connections_closing_the_one_idle_the_longest() {
        let mut server = DnsServer::new("weave.local.", Vec::new());
        Arc::get_mut(&mut server.inner).unwrap().budget = Budget::for_file_limit(Some(65536));
        assert_eq!(server.inner.budget.ns_tcp, NS_TCP_CONNECTIONS);
        let addr = serving(&server, "ns");
        let mut first = open(addr, 1).await.remove(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rest = open(addr, NS_TCP_CONNECTIONS - 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A query makes `rest[0]` the most recently idle of them all.
        assert!(answers(&mut rest[0], 1).await);
        let mut new = open(addr, 1).await.remove(0);
        assert!(closed(&mut first).await, "the connection idle the longest is closed for the 65th");
        assert!(answers(&mut new, 2).await, "the 65th is served");
        assert!(answers(&mut rest[0], 3).await && answers(&mut rest[1], 4).await, "the others stay");
        server.stop("ns");
        assert!(closed(&mut rest[0]).await && closed(&mut new).await, "stop closes the namespace's connections");
    }

    #[tokio::test]
    async fn a_connection_is_closed_after_its_last_query() {
        let server = DnsServer::new("weave.local.", Vec::new());
        let addr = serving(&server, "ns");
        let mut c = open(addr, 1).await.remove(0);
        for id in 0..TCP_QUERIES as u16 {
            assert!(answers(&mut c, id).await, "query {id}");
        }
        assert!(closed(&mut c).await);
        server.stop("ns");
    }

    /// At a file limit of 512 the agent holds 64 connections: one namespace
    /// gets 8 of them, however many it opens (each new one closes its own
    /// oldest idle), and another namespace is still served. With a fixed 64
    /// per namespace the first took them all.
    #[tokio::test]
    async fn a_namespace_cannot_take_the_agents_whole_connection_budget() {
        let mut server = DnsServer::new("weave.local.", Vec::new());
        Arc::get_mut(&mut server.inner).unwrap().budget = Budget::for_file_limit(Some(512));
        let (a, b) = (serving(&server, "a"), serving(&server, "b"));
        let mut held = open(a, 64).await;
        // A connect returns before the server accepts. Counted before the
        // last accept, an early connection could answer before a later
        // accept closed it: wait until 56 are closed (which ones is up to
        // the server: those accepted in one millisecond are equally idle).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let shut = held.iter().filter(|c| shut(c)).count();
            if shut >= 56 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut open_ones = 0;
        for (i, c) in held.iter_mut().enumerate() {
            open_ones += usize::from(answers(c, i as u16).await);
        }
        assert_eq!(open_ones, 8, "namespace a holds its eighth");
        let mut other = open(b, 8).await;
        for (i, c) in other.iter_mut().enumerate() {
            assert!(answers(c, i as u16).await, "b's connection {i} is served");
        }
        server.stop_all();
    }

    #[tokio::test]
    async fn the_agents_connection_budget_spans_namespaces() {
        let mut server = DnsServer::new("weave.local.", Vec::new());
        Arc::get_mut(&mut server.inner).unwrap().budget = Budget::for_file_limit(Some(128));
        // 16 in all, 2 per namespace: eight namespaces take them, then a
        // ninth's first is closed.
        let mut held = Vec::new();
        for n in 0..8 {
            let mut two = open(serving(&server, &format!("ns{n}")), 2).await;
            assert!(answers(&mut two[1], 1).await);
            held.push(two);
        }
        let b = serving(&server, "b");
        let mut refused = open(b, 1).await.remove(0);
        assert!(closed(&mut refused).await, "over the agent's budget");
        drop(held[0].pop());
        let mut now = timeout(Duration::from_secs(5), async {
            loop {
                let mut c = open(b, 1).await.remove(0);
                if answers(&mut c, 2).await {
                    return c;
                }
            }
        })
        .await
        .expect("a connection of b served once another namespace's closed");
        assert!(answers(&mut now, 3).await);
        server.stop_all();
    }
}
