//! The WireGuard router without I/O: callers hand it packets from the tunnel
//! device or datagrams from the network. Data comes back to the caller (so it
//! can batch the I/O); handshakes, cookies and keepalives go to a [`Sink`].
//! One `Tunn` per peer, each behind its own lock; the peer table is an
//! immutable snapshot ([`Table`]) that the packet threads take once per batch.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use boringtun::{
    noise::{
        Packet, Tunn, TunnResult, errors::WireGuardError, handshake::parse_handshake_anon, rate_limiter::RateLimiter,
    },
    x25519::{PublicKey, StaticSecret},
};

/// The room in front of a packet and of a datagram that the AEAD reads and
/// leaves as it was: with it, nothing is copied ([`Router::encapsulate`]).
pub use {boringtun::noise::DATAGRAM_LEAD, weave_aead::LEAD};

use super::PeerStatus;
use crate::plan::netmap::PeerConfig;

mod clock_back;
mod fallback;
pub mod rejected;
mod settings;
mod status;
mod storm;
mod timers;
mod vxlan;
use fallback::Fallback;
use rejected::Reason;
use vxlan::Foreign;

/// Seconds between keepalives to every peer from a host behind NAT (what
/// WireGuard recommends: below the 30 s many NATs keep an idle UDP mapping).
/// Hosts not behind NAT send none: an idle tunnel costs nothing.
pub const NAT_KEEPALIVE: u16 = 25;
/// The shortest IPv4 header.
const IPV4_HEADER: usize = 20;
/// Handshake messages per second before the rate limiter demands cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest buffer any output needs: a full-size IP packet plus WireGuard's framing.
pub const BUF_SIZE: usize = 65_535 + 64;
/// WireGuard message types (the first byte of every datagram).
const HANDSHAKE_INITIATION: u8 = 1;
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
    /// The endpoint the map gave last: a new one from the map replaces the
    /// live endpoint (the peer moved); the same one again does not undo
    /// what roaming learned since.
    map_endpoint: Mutex<Option<SocketAddr>>,
    /// Moves to the peer's next endpoint when its path stops answering.
    fallback: Fallback,
    dropped_spoofed: AtomicU64,
    /// VXLAN frames it sent into a segment it has no workload in.
    dropped_foreign_segment: AtomicU64,
    /// Its VXLAN frames past what its workloads' ports let through.
    storm: storm::Meter,
    dropped_storm: AtomicU64,
    /// When the last NAT keepalive went to it (ms on the router's clock).
    last_keepalive: AtomicU64,
    /// When its last handshake completed (ms on the router's clock, 0: never):
    /// boringtun forgets that with the sessions after 540 s without traffic.
    handshake_at: AtomicU64,
    /// When the handshake attempt that was reported unanswered began (ms on
    /// the router's clock, 0: none reported): one warning per outage.
    down_since: AtomicU64,
    /// When this host's answers to the peer's handshakes began to go
    /// unused (its packets do not reach the peer); 0 while they are used.
    unheard_since: AtomicU64,
    /// When this host last answered a stale initiation of the peer's with
    /// one of its own (ms on the router's clock, 0: never; `clock_back.rs`).
    stale_answered_at: AtomicU64,
    stale_answered: clock_back::Answered,
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
    /// (VNI, peer index) for each segment in which a peer hosts a workload:
    /// the only segments whose VXLAN frames are taken from it.
    members: HashSet<(u32, u32)>,
    /// Each peer's workload address with the VNI of its subnet.
    vni_of: HashMap<Ipv4Addr, u32>,
    /// How many workload addresses each peer (by index) hosts in each
    /// segment (by VNI): its share of the storm meter there ([`storm`]).
    workloads: HashMap<(u32, u32), usize>,
}

impl Table {
    /// Whether `peer` may send from `ip` (its node or a workload's address).
    fn may_use(&self, peer: &Arc<Peer>, ip: Ipv4Addr) -> bool {
        self.by_address.get(&ip).is_some_and(|p| Arc::ptr_eq(p, peer))
    }
}

pub struct Router {
    secret: StaticSecret,
    public: PublicKey,
    peers: RwLock<Arc<Table>>,
    rate_limiter: Arc<RateLimiter>,
    next_index: AtomicU32,
    /// The clock of the endpoint fallback.
    started: Instant,
    /// The peers' addresses in the map (all their endpoints): with where
    /// each is now, trusted by the handshake limiter ([`Router::refresh_trusted`]).
    map_endpoints: Mutex<Vec<IpAddr>>,
    /// `--nat-keepalive` in ms (0: none), and whether this host is behind NAT.
    nat_keepalive_ms: AtomicU64,
    behind_nat: std::sync::atomic::AtomicBool,
    /// `--broadcast-limit` (0: none), for the peers' storm meters.
    broadcast_limit: AtomicU32,
    /// Datagrams no peer's tunnel took, by reason.
    pub rejected: rejected::Rejected,
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
            started: Instant::now(),
            map_endpoints: Mutex::default(),
            nat_keepalive_ms: AtomicU64::new(0),
            behind_nat: Default::default(),
            broadcast_limit: AtomicU32::new(0),
            rejected: Default::default(),
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
                        let mut from_map = lock(&p.map_endpoint);
                        if *from_map != config.endpoint && config.endpoint.is_some() {
                            *lock(&p.endpoint) = fallback::first_routable(&config.endpoints).or(config.endpoint);
                        }
                        *from_map = config.endpoint;
                        p.fallback.set_candidates(&config.endpoints);
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
                for &(a, vni) in &config.routes {
                    table.by_address.entry(a).or_insert_with(|| Arc::clone(&peer));
                    table.vni_of.entry(a).or_insert(vni);
                }
                table.members.extend(config.segments.iter().map(|vni| (*vni, peer.index)));
                for &(_, vni) in &config.routes {
                    *table.workloads.entry((vni, peer.index)).or_default() += 1;
                }
                table.by_address.insert(config.address, Arc::clone(&peer));
                table.by_index.insert(peer.index, Arc::clone(&peer));
                table.by_key.insert(config.public_key, peer);
            }
            *lock(&self.map_endpoints) = wanted.iter().flat_map(|c| &c.endpoints).map(|e| e.ip()).collect();
            *current = Arc::new(table);
        }
        self.refresh_trusted();
        // Start handshakes with new peers right away, so that the first packet
        // (and `status`) does not wait for one.
        let mut buf = vec![0u8; 256];
        for p in fresh {
            let Some(endpoint) = p.endpoint() else { continue };
            let mut tunn = lock(&p.tunn);
            if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false) {
                sink.to_network(endpoint, init);
                // The wait for an answer starts here: the data that follows
                // is queued behind this handshake (nothing "sent"), and a
                // restarted agent stayed on a first endpoint that does not
                // answer (a NATed host's private address) until the peer
                // spoke first, a minute and more (found by a review,
                // 2026-12-07).
                p.fallback.sent_at(|| self.now_ms());
            }
        }
    }

    fn new_peer(&self, config: PeerConfig) -> Peer {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(config.public_key),
            None,
            // Keepalives only behind NAT: the router sends them ([`Router::set_behind_nat`]).
            None,
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        Peer {
            // The first endpoint this host can reach (an IPv4-only host and
            // a peer advertising its IPv6 endpoint first).
            endpoint: Mutex::new(fallback::first_routable(&config.endpoints).or(config.endpoint)),
            map_endpoint: Mutex::new(config.endpoint),
            fallback: Fallback::new(config.endpoints.clone()),
            config,
            index,
            tunn: Mutex::new(tunn),
            dropped_spoofed: AtomicU64::new(0),
            dropped_foreign_segment: AtomicU64::new(0),
            storm: storm::Meter::default(),
            dropped_storm: AtomicU64::new(0),
            last_keepalive: AtomicU64::new(self.now_ms()),
            handshake_at: AtomicU64::new(0),
            down_since: AtomicU64::new(0),
            unheard_since: AtomicU64::new(0),
            stale_answered_at: AtomicU64::new(0),
            stale_answered: Default::default(),
        }
    }

    /// The current peer table; take it once per batch of packets.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&self.peers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A packet read from the tunnel device, `packet[LEAD..]`: encrypts it
    /// for the peer that owns its destination (a node or a workload address)
    /// into `out[DATAGRAM_LEAD..]` and returns where to send how many bytes
    /// from there. Anything else is dropped. The bytes in front of both are
    /// read and left as they were (`weave_aead::Key::seal_led`). `out` needs
    /// `DATAGRAM_LEAD` + 32 bytes more than the packet (148 at least).
    pub fn encapsulate(&self, table: &Table, packet: &[u8], out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.encryptor(table).encapsulate(packet, out)
    }

    /// Encrypts a batch's packets one after another ([`Encryptor::encapsulate`]).
    pub fn encryptor<'a>(&'a self, table: &'a Table) -> Encryptor<'a> {
        Encryptor { router: self, table, held: None }
    }

    /// Milliseconds since the router started, never 0.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// A datagram from the UDP socket, `datagram[DATAGRAM_LEAD..]`: decrypts
    /// data into `out[LEAD..]` and returns its length once the inner source
    /// proved to belong to the sending peer; handshake traffic is answered
    /// through `sink`. The bytes in front of both are read and left as they
    /// were (`weave_aead::Key::open_led`).
    pub fn decapsulate(
        &self,
        table: &Table,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        sink: &impl Sink,
    ) -> Option<usize> {
        // An initiation is verified here, before the DH that finds its peer,
        // and only here: each check charges its source under load.
        let led = datagram;
        let datagram = &datagram[DATAGRAM_LEAD..];
        let (peer, init) = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(_)) => {
                // Under load this answers with a cookie, or drops what a source
                // sends past its share, instead of doing the DH below.
                let init = match self.rate_limiter.verify_packet(Some(src.ip()), datagram, &mut out[LEAD..]) {
                    Ok(Packet::HandshakeInit(init)) => init,
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        sink.to_network(src, cookie);
                        return None;
                    }
                    Err(TunnResult::Err(WireGuardError::InvalidMac)) => return self.rejected.drop(Reason::BadMac),
                    _ => return self.rejected.drop(Reason::UnderLoad),
                };
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, &init) else {
                    return self.rejected.drop(Reason::UnknownPeer);
                };
                (table.by_key.get(&half.peer_static_public), Some(init))
            }
            Ok(Packet::HandshakeResponse(p)) => (table.by_index.get(&(p.receiver_idx >> 8)), None),
            Ok(Packet::PacketCookieReply(p)) => (table.by_index.get(&(p.receiver_idx >> 8)), None),
            Ok(Packet::PacketData(p)) => (table.by_index.get(&(p.receiver_idx >> 8)), None),
            Err(_) => return self.rejected.drop(Reason::Malformed),
        };
        let Some(peer) = peer else { return self.rejected.drop(Reason::UnknownPeer) };
        let mut tunn = lock(&peer.tunn);
        // Whether the datagram proved to come from the peer now: only then is
        // its source where the peer is (roaming). Anyone can send a cookie
        // reply (its key is derived from the public key) or replay an old
        // message, so neither may move the endpoint.
        let mut authenticated = false;
        let initiation = init.is_some();
        let result = match init {
            Some(init) => tunn.handle_verified_packet(Packet::HandshakeInit(init), &mut out[LEAD..]),
            None => tunn.decapsulate_led(Some(src.ip()), led, out),
        };
        let plain = match result {
            // A fresh keepalive: it decrypted, and its counter was new. The
            // first one under a session this host answered makes that session
            // current: what queued meanwhile goes now.
            TunnResult::Done => {
                authenticated = datagram[0] == DATA;
                if authenticated {
                    flush_queued(&mut tunn, src, &mut out[LEAD..], sink);
                }
                None
            }
            TunnResult::Err(WireGuardError::WrongTai64nTimestamp) if initiation => {
                self.answer_stale_initiation(peer, datagram, &mut tunn, &mut out[LEAD..], sink);
                return self.rejected.drop(Reason::Failed);
            }
            TunnResult::Err(_) => return self.rejected.drop(Reason::Failed),
            TunnResult::WriteToNetwork(reply) => {
                // boringtun answers a response that matched its own initiation
                // with a keepalive: only that proves where the peer is. An
                // initiation it accepted (answered with a response) is fresh
                // only against the newest one this Tunn took, and a restarted
                // agent has taken none: a replay of one sniffed long ago is
                // answered (no one else can finish that handshake) but does
                // not move the endpoint; the initiator's first data from its
                // real place will. A cookie (the rate limiter under load) is
                // what boringtun answers anyone.
                authenticated = matches!((datagram[0], reply.first()), (HANDSHAKE_RESPONSE, Some(&DATA)));
                // A cookie reply's initiation, sent again at once, goes where the peer is.
                let again = reply.first() == Some(&HANDSHAKE_INITIATION);
                sink.to_network(if again { peer.endpoint().unwrap_or(src) } else { src }, reply);
                // Packets queued while our handshake ran go under its new
                // session. Not after answering an initiation: that session
                // cannot send before the initiator's first data, so boringtun
                // would start an initiation of its own instead, replacing the
                // one in flight, and send it to whoever replayed the
                // initiation (found by a review).
                if authenticated {
                    flush_queued(&mut tunn, src, &mut out[LEAD..], sink);
                }
                None
            }
            TunnResult::WriteToTunnelV4(packet, inner_src) => {
                authenticated = table.may_use(peer, inner_src);
                // boringtun cuts the plaintext to the IPv4 header's total
                // length, which a peer may set below the header's own 20
                // bytes (even to 0): no packet, and an empty one would fail
                // the TUN write of the whole batch, other peers' packets with
                // it. Counted with the spoofed ones: it has no source the peer
                // may use (as an IPv6 packet, below, has none).
                // A VXLAN datagram is checked for its frame too (vxlan.rs).
                let ok = authenticated && packet.len() >= IPV4_HEADER;
                let limit = self.broadcast_limit.load(Ordering::Relaxed);
                let verdict =
                    if ok { table.frame_verdict(peer, packet, inner_src, limit) } else { Some(Foreign::Source) };
                match verdict {
                    None => Some(packet.len()),
                    Some(Foreign::Segment(_)) => {
                        peer.dropped_foreign_segment.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Some(Foreign::Source) => {
                        peer.dropped_spoofed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Some(Foreign::Storm) => {
                        peer.dropped_storm.fetch_add(1, Ordering::Relaxed);
                        None
                    }
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
            peer.fallback.answered();
        }
        plain
    }
}

/// A batch's packets to encrypt, in the order read: consecutive packets to
/// one destination (the segments of a TSO super-packet) take its peer's
/// lock, endpoint and address lookup once, not once per packet. The lock is
/// held until the destination changes or the encryptor is dropped (the end
/// of the batch): the same thread decrypts that peer's datagrams only
/// after, and a thread of its own (`--queue-threads 2`) waits one batch.
pub struct Encryptor<'a> {
    router: &'a Router,
    table: &'a Table,
    held: Option<Held<'a>>,
}

struct Held<'a> {
    dst: Ipv4Addr,
    peer: &'a Peer,
    tunn: std::sync::MutexGuard<'a, Tunn>,
    /// Read once per run: what roaming learns meanwhile applies from the
    /// next run (at most a batch later).
    endpoint: Option<SocketAddr>,
}

impl Encryptor<'_> {
    /// As [`Router::encapsulate`].
    pub fn encapsulate(&mut self, packet: &[u8], out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let Some(IpAddr::V4(dst)) = Tunn::dst_address(&packet[LEAD..]) else { return None };
        if self.held.as_ref().is_none_or(|h| h.dst != dst) {
            // The previous peer's lock goes before the next one is taken.
            self.held = None;
            let peer = self.table.by_address.get(&dst)?;
            // The endpoint under the peer's lock, as the timers move it (to
            // the next endpoint when the path stops answering).
            let tunn = lock(&peer.tunn);
            self.held = Some(Held { dst, peer, endpoint: peer.endpoint(), tunn });
        }
        let held = self.held.as_mut()?;
        match held.tunn.encapsulate_led(packet, out) {
            TunnResult::WriteToNetwork(datagram) => {
                // Per packet (an atomic load once the clock runs): an answer
                // may stop the clock in the middle of a run.
                held.peer.fallback.sent_at(|| self.router.now_ms());
                Some((held.endpoint?, datagram.len()))
            }
            _ => None,
        }
    }
}

/// Sends what `tunn` queued while it had no session, to `dst`.
fn flush_queued(tunn: &mut Tunn, dst: SocketAddr, out: &mut [u8], sink: &impl Sink) {
    while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
        sink.to_network(dst, queued);
    }
}

#[cfg(test)]
mod tests;
