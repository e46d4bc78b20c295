//! The WireGuard router without I/O: callers hand it packets from the tunnel
//! device or datagrams from the network. Data comes back to the caller (so it
//! can batch the I/O); handshakes, cookies and keepalives go to a [`Sink`].
//! One `Tunn` per peer, each behind its own lock; the peer table is an
//! immutable snapshot ([`Table`]) that the packet threads take once per batch.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use boringtun::{
    noise::{
        Packet, Tunn, TunnResult, errors::WireGuardError, handshake::parse_handshake_anon, rate_limiter::RateLimiter,
    },
    x25519::{PublicKey, StaticSecret},
};

use super::PeerStatus;
use crate::plan::netmap::PeerConfig;

/// Seconds between keepalives on an otherwise idle tunnel (keeps NAT state and roaming fresh).
pub const PERSISTENT_KEEPALIVE: u16 = 25;
/// Handshake messages per second before the rate limiter demands cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest buffer any output needs: a full-size IP packet plus WireGuard's framing.
pub const BUF_SIZE: usize = 65_535 + 64;
/// WireGuard message types (the first byte of every datagram).
const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
const DATA: u8 = 4;

/// Where the router's control messages (handshakes, cookies, keepalives) go.
pub trait Sink {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]);
}

struct Peer {
    config: PeerConfig,
    index: u32,
    tunn: Mutex<Tunn>,
    endpoint: Mutex<Option<SocketAddr>>,
    dropped_spoofed: AtomicU64,
}

impl Peer {
    fn endpoint(&self) -> Option<SocketAddr> {
        *lock(&self.endpoint)
    }
}

/// The peers at one moment. `by_address` holds every address a peer may use
/// inside the tunnel: its node address and the workload addresses it hosts
/// (its allowed IPs), so one lookup routes a packet out and checks one in.
#[derive(Default)]
pub struct Table {
    by_address: HashMap<Ipv4Addr, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    by_key: HashMap<[u8; 32], Arc<Peer>>,
}

pub struct Router {
    secret: StaticSecret,
    public: PublicKey,
    peers: RwLock<Arc<Table>>,
    rate_limiter: Arc<RateLimiter>,
    next_index: AtomicU32,
}

/// A poisoned lock means a panic mid-update of one peer's tunnel state; the
/// state is still memory-safe, and WireGuard recovers by re-handshaking.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            peers: RwLock::new(Arc::new(Table::default())),
            next_index: AtomicU32::new(rand::random::<u32>() & 0xff_ffff),
        }
    }

    pub fn set_peers(&self, wanted: &[PeerConfig], sink: &impl Sink) {
        let mut fresh = Vec::new();
        {
            let mut current = self.peers.write().unwrap_or_else(|e| e.into_inner());
            let mut table = Table::default();
            for config in wanted {
                let keep = current.by_key.get(&config.public_key).filter(|p| p.config.address == config.address);
                let peer = match keep {
                    Some(p) => {
                        if p.config.endpoint != config.endpoint && config.endpoint.is_some() {
                            *lock(&p.endpoint) = config.endpoint;
                        }
                        // Same tunnel; the rest of the config (name, endpoint) is informational.
                        Arc::clone(p)
                    }
                    None => {
                        let p = Arc::new(self.new_peer(config.clone()));
                        fresh.push(Arc::clone(&p));
                        p
                    }
                };
                // Workload addresses first: a node address always wins a clash.
                for a in &config.routes {
                    table.by_address.entry(*a).or_insert_with(|| Arc::clone(&peer));
                }
                table.by_address.insert(config.address, Arc::clone(&peer));
                table.by_index.insert(peer.index, Arc::clone(&peer));
                table.by_key.insert(config.public_key, peer);
            }
            *current = Arc::new(table);
        }
        // Start handshakes with new peers right away, so that the first packet
        // (and `status`) does not wait for one.
        let mut buf = vec![0u8; 256];
        for p in fresh {
            let Some(endpoint) = p.endpoint() else { continue };
            let mut tunn = lock(&p.tunn);
            if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false) {
                sink.to_network(endpoint, init);
            }
        }
    }

    fn new_peer(&self, config: PeerConfig) -> Peer {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(config.public_key),
            None,
            Some(PERSISTENT_KEEPALIVE),
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        Peer {
            endpoint: Mutex::new(config.endpoint),
            config,
            index,
            tunn: Mutex::new(tunn),
            dropped_spoofed: AtomicU64::new(0),
        }
    }

    /// The current peer table; take it once per batch of packets.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&self.peers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A packet read from the tunnel device: encrypts it into `out` for the
    /// peer that owns its destination (a node or a workload address) and
    /// returns where to send how many bytes of `out`. Anything else is dropped.
    /// `out` needs 32 bytes more than the packet (and at least 148).
    pub fn encapsulate(&self, table: &Table, packet: &[u8], out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let Some(IpAddr::V4(dst)) = Tunn::dst_address(packet) else { return None };
        let peer = table.by_address.get(&dst)?;
        let mut tunn = lock(&peer.tunn);
        match tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(datagram) => Some((peer.endpoint()?, datagram.len())),
            _ => None,
        }
    }

    /// A datagram from the UDP socket: decrypts data into `out` and returns
    /// its length once the inner source proved to belong to the sending peer;
    /// handshake traffic is answered through `sink`.
    pub fn decapsulate(
        &self,
        table: &Table,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        sink: &impl Sink,
    ) -> Option<usize> {
        let peer = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(init)) => {
                // Under load this answers with a cookie instead of doing the DH below.
                match self.rate_limiter.verify_packet(Some(src.ip()), datagram, out) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        sink.to_network(src, cookie);
                        return None;
                    }
                    Err(_) => return None,
                }
                let half = parse_handshake_anon(&self.secret, &self.public, &init).ok()?;
                table.by_key.get(&half.peer_static_public)
            }
            Ok(Packet::HandshakeResponse(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
            Ok(Packet::PacketCookieReply(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
            Ok(Packet::PacketData(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
            Err(_) => None,
        }?;
        let mut tunn = lock(&peer.tunn);
        // Whether the datagram proved to come from the peer now: only then is
        // its source where the peer is (roaming). Anyone can send a cookie
        // reply (its key is derived from the public key) or replay an old
        // message, so neither may move the endpoint.
        let mut authenticated = false;
        let plain = match tunn.decapsulate(Some(src.ip()), datagram, out) {
            // A fresh keepalive: it decrypted, and its counter was new.
            TunnResult::Done => {
                authenticated = datagram[0] == DATA;
                None
            }
            TunnResult::Err(WireGuardError::DuplicateCounter) | TunnResult::Err(_) => return None,
            TunnResult::WriteToNetwork(reply) => {
                // boringtun answers an initiation it accepted (fresh timestamp)
                // with a response, and a response that matched its own
                // initiation with a keepalive; a cookie (the rate limiter under
                // load) is what it answers anyone.
                authenticated = matches!((datagram[0], reply.first()), (HANDSHAKE_INIT, Some(&HANDSHAKE_RESPONSE)))
                    || matches!((datagram[0], reply.first()), (HANDSHAKE_RESPONSE, Some(&DATA)));
                sink.to_network(src, reply);
                // Flush packets that were queued while the handshake ran.
                while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
                    sink.to_network(src, queued);
                }
                None
            }
            TunnResult::WriteToTunnelV4(packet, inner_src) => {
                if table.by_address.get(&inner_src).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                    authenticated = true;
                    Some(packet.len())
                } else {
                    peer.dropped_spoofed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
            // Node and workload addresses are IPv4; nothing else is allowed from a peer.
            TunnResult::WriteToTunnelV6(..) => {
                peer.dropped_spoofed.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        drop(tunn);
        if authenticated {
            *lock(&peer.endpoint) = Some(src);
        }
        plain
    }

    /// Timers for every peer (rekey, keepalive, expiry); call every ~250 ms.
    pub fn tick(&self, buf: &mut [u8], sink: &impl Sink) {
        let table = self.table();
        for peer in table.by_index.values() {
            let mut tunn = lock(&peer.tunn);
            if let TunnResult::WriteToNetwork(out) = tunn.update_timers(buf)
                && let Some(endpoint) = peer.endpoint()
            {
                sink.to_network(endpoint, out);
            }
        }
    }

    /// Call once a second: the handshake rate limit is per second.
    pub fn reset_rate_limit(&self) {
        self.rate_limiter.reset_count();
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .table()
            .by_index
            .values()
            .map(|p| {
                let (age, tx, rx, _, _) = lock(&p.tunn).stats();
                PeerStatus {
                    node_id: p.config.node_id,
                    name: p.config.name.clone(),
                    address: p.config.address,
                    endpoint: p.endpoint(),
                    handshake_age_secs: age.map(|d| d.as_secs_f64()),
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    dropped_spoofed: p.dropped_spoofed.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by_key(|p| p.address);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Wire {
        net: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
        tun: RefCell<Vec<Vec<u8>>>,
    }

    impl Sink for Wire {
        fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
            self.net.borrow_mut().push((dst, datagram.to_vec()));
        }
    }

    impl Node {
        /// A packet from this node's tunnel device: what it sends goes on its wire.
        fn send(&self, packet: &[u8]) {
            let mut out = vec![0u8; BUF_SIZE];
            if let Some((dst, n)) = self.router.encapsulate(&self.router.table(), packet, &mut out) {
                self.wire.net.borrow_mut().push((dst, out[..n].to_vec()));
            }
        }

        /// A datagram from the network: decrypted data goes to this node's tunnel device.
        fn receive(&self, src: SocketAddr, datagram: &[u8]) {
            let mut out = vec![0u8; BUF_SIZE];
            if let Some(n) = self.router.decapsulate(&self.router.table(), src, datagram, &mut out, &self.wire) {
                self.wire.tun.borrow_mut().push(out[..n].to_vec());
            }
        }
    }

    /// A minimal IPv4 header + payload, enough for boringtun to read addresses and length.
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let len = 20 + payload.len();
        let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    struct Node {
        router: Router,
        addr: Ipv4Addr,
        endpoint: SocketAddr,
        public: [u8; 32],
        wire: Wire,
    }

    fn node(n: u8) -> Node {
        let secret = StaticSecret::from([n; 32]);
        let public = PublicKey::from(&secret).to_bytes();
        Node {
            router: Router::new(secret),
            addr: Ipv4Addr::new(10, 47, 0, n),
            endpoint: SocketAddr::from(([192, 0, 2, 10 + n], 6784)),
            public,
            wire: Wire::default(),
        }
    }

    fn config(of: &Node, endpoint: Option<SocketAddr>) -> PeerConfig {
        PeerConfig {
            node_id: of.addr.octets()[3] as u64,
            name: format!("h{}", of.addr.octets()[3]),
            public_key: of.public,
            address: of.addr,
            endpoint,
            routes: vec![workload(of)],
        }
    }

    /// The one workload address each test node hosts.
    fn workload(of: &Node) -> Ipv4Addr {
        Ipv4Addr::new(10, 32, 0, of.addr.octets()[3])
    }

    /// Delivers everything `from` sent to the network to whichever node owns the
    /// destination endpoint, with `from`'s endpoint (or `src`) as source.
    fn deliver(from: &Node, to: &Node, src: SocketAddr) -> usize {
        let msgs: Vec<_> = from.wire.net.borrow_mut().drain(..).collect();
        for (dst, msg) in &msgs {
            assert_eq!(*dst, to.endpoint, "sent to the peer's endpoint");
            assert!((1..=4).contains(&msg[0]), "every datagram is a WireGuard message");
            to.receive(src, msg);
        }
        msgs.len()
    }

    fn pair() -> (Node, Node) {
        let (a, b) = (node(1), node(2));
        a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
        b.router.set_peers(&[config(&a, Some(a.endpoint))], &b.wire);
        // Both sides initiated; let the handshakes cross until the wire is quiet.
        for _ in 0..4 {
            deliver(&a, &b, a.endpoint);
            deliver(&b, &a, b.endpoint);
        }
        (a, b)
    }

    #[test]
    fn two_routers_handshake_and_exchange_data() {
        let (a, b) = pair();
        assert!(a.router.status()[0].handshake_age_secs.is_some(), "handshake completed");
        let packet = ipv4(a.addr, b.addr, b"hello over wireguard");
        a.send(&packet);
        let sent = a.wire.net.borrow().clone();
        assert_eq!(sent.len(), 1);
        assert!(!sent[0].1.windows(5).any(|w| w == b"hello"), "the payload is encrypted on the wire");
        deliver(&a, &b, a.endpoint);
        assert_eq!(b.wire.tun.borrow_mut().drain(..).collect::<Vec<_>>(), vec![packet]);
        let reply = ipv4(b.addr, a.addr, b"and back");
        b.send(&reply);
        deliver(&b, &a, b.endpoint);
        assert_eq!(a.wire.tun.borrow().as_slice(), &[reply]);
        let st = b.router.status();
        assert!(st[0].rx_bytes > 0 && st[0].tx_bytes > 0);
    }

    #[test]
    fn workload_addresses_route_to_their_node_and_only_it_may_use_them() {
        let (a, b) = pair();
        // Workload to workload: routed by b's workload address, accepted from a's.
        let packet = ipv4(workload(&a), workload(&b), b"container to container");
        a.send(&packet);
        assert_eq!(deliver(&a, &b, a.endpoint), 1);
        assert_eq!(b.wire.tun.borrow_mut().drain(..).collect::<Vec<_>>(), vec![packet]);
        // a may not use b's own workload address (or any other) as its source.
        a.send(&ipv4(workload(&b), b.addr, b"not a's address"));
        deliver(&a, &b, a.endpoint);
        assert!(b.wire.tun.borrow().is_empty());
        assert_eq!(b.router.status()[0].dropped_spoofed, 1);
        // A workload that moved away is no longer routed to b.
        a.router.set_peers(&[PeerConfig { routes: vec![], ..config(&b, Some(b.endpoint)) }], &a.wire);
        a.send(&ipv4(a.addr, workload(&b), b"gone"));
        assert!(a.wire.net.borrow().is_empty(), "no peer owns that address any more");
    }

    #[test]
    fn packets_with_a_foreign_inner_source_are_dropped() {
        let (a, b) = pair();
        // a claims to be 10.47.0.9, which is not its node address.
        let spoofed = ipv4(Ipv4Addr::new(10, 47, 0, 9), b.addr, b"spoof");
        a.send(&spoofed);
        deliver(&a, &b, a.endpoint);
        assert!(b.wire.tun.borrow().is_empty());
        assert_eq!(b.router.status()[0].dropped_spoofed, 1);
    }

    #[test]
    fn unknown_destinations_and_peers_are_dropped() {
        let (a, b) = pair();
        a.send(&ipv4(a.addr, Ipv4Addr::new(10, 47, 0, 77), b"x"));
        assert!(a.wire.net.borrow().is_empty(), "no peer owns that address");
        // b forgets a: a's data can no longer be decrypted by b.
        b.router.set_peers(&[], &b.wire);
        a.send(&ipv4(a.addr, b.addr, b"x"));
        deliver(&a, &b, a.endpoint);
        assert!(b.wire.tun.borrow().is_empty());
        assert!(b.router.status().is_empty());
    }

    #[test]
    fn endpoint_roams_to_the_source_of_authenticated_packets() {
        let (a, b) = pair();
        let moved: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        a.send(&ipv4(a.addr, b.addr, b"from a new place"));
        deliver(&a, &b, moved);
        assert_eq!(b.router.status()[0].endpoint, Some(moved));
        // Garbage from yet another address does not move it.
        b.receive("203.0.113.5:1".parse().unwrap(), &[4, 0, 0, 0, 1, 2, 3]);
        assert_eq!(b.router.status()[0].endpoint, Some(moved));
    }

    #[test]
    fn spoofed_data_from_a_new_address_does_not_move_the_endpoint() {
        let (a, b) = pair();
        a.send(&ipv4(Ipv4Addr::new(10, 47, 0, 9), b.addr, b"spoof"));
        deliver(&a, &b, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(b.router.status()[0].endpoint, Some(a.endpoint), "the inner source was not a's");
    }

    #[test]
    fn replayed_handshakes_from_a_new_address_leave_the_endpoint_unchanged() {
        let (a, b) = (node(1), node(2));
        a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
        b.router.set_peers(&[config(&a, Some(a.endpoint))], &b.wire);
        // Both initiate and both respond: record what a sent (its initiation and its response).
        let mut from_a = Vec::new();
        for _ in 0..4 {
            from_a.extend(a.wire.net.borrow().iter().map(|(_, m)| m.clone()).filter(|m| m[0] <= 2));
            deliver(&a, &b, a.endpoint);
            deliver(&b, &a, b.endpoint);
        }
        assert_eq!(from_a.iter().map(|m| m[0]).collect::<Vec<_>>(), vec![1, 2], "{from_a:?}");
        let evil: SocketAddr = "203.0.113.66:6784".parse().unwrap();
        // Replays alternate between initiation and response, so that the rate
        // limiter passes load at every count, including where boringtun (not
        // the router) is the one that answers with a cookie.
        for round in 0..(2 * HANDSHAKE_RATE_LIMIT) {
            b.receive(evil, &from_a[(round % 2) as usize]);
            assert_eq!(b.router.status()[0].endpoint, Some(a.endpoint), "replay {round} moved the endpoint");
        }
        assert!(b.wire.net.borrow().iter().any(|(_, m)| m[0] == 3), "the replays met the rate limiter's cookies");
        // The tunnel still works from where a really is.
        b.wire.net.borrow_mut().clear();
        a.send(&ipv4(a.addr, b.addr, b"still here"));
        assert_eq!(deliver(&a, &b, a.endpoint), 1);
        assert_eq!(b.wire.tun.borrow().len(), 1);
    }

    #[test]
    fn a_forged_cookie_reply_from_a_new_address_leaves_the_endpoint_unchanged() {
        let (a, b) = (node(1), node(2));
        a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
        let init = a.wire.net.borrow()[0].1.clone();
        // A cookie reply needs only b's public key and a's mac1 (both seen on
        // the wire): an on-path machine makes one with a limiter already "under load".
        let forger = RateLimiter::new(&PublicKey::from(b.public), 0);
        let mut buf = [0u8; 64];
        let cookie = match forger.verify_packet(Some("203.0.113.66".parse().unwrap()), &init, &mut buf) {
            Err(TunnResult::WriteToNetwork(cookie)) => cookie.to_vec(),
            _ => panic!("a limiter under load answers with a cookie"),
        };
        assert_eq!(cookie[0], 3);
        for _ in 0..2 {
            a.receive("203.0.113.66:6784".parse().unwrap(), &cookie);
            assert_eq!(a.router.status()[0].endpoint, Some(b.endpoint), "a cookie reply is not authenticated");
        }
    }

    #[test]
    fn a_handshake_flood_gets_cookie_replies_instead_of_handshakes() {
        let (a, b) = (node(1), node(2));
        a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
        // b has no endpoint for a, so it does not initiate itself.
        b.router.set_peers(&[config(&a, None)], &b.wire);
        let init = a.wire.net.borrow()[0].1.clone();
        assert_eq!(init[0], 1, "a handshake initiation");
        for _ in 0..(2 * HANDSHAKE_RATE_LIMIT) {
            b.receive(a.endpoint, &init);
        }
        let sent = b.wire.net.borrow();
        let responses = sent.iter().filter(|(_, m)| m[0] == 2).count();
        let cookies = sent.iter().filter(|(_, m)| m[0] == 3).count();
        assert_eq!(responses, 1, "one handshake answered, replays are not");
        assert!(cookies > 0, "past the rate limit, the answer is a cookie");
    }
}
