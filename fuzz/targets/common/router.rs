//! Shared by the router targets: nodes with fixed keys (so a message recorded
//! once, e.g. in the seed corpus, stays valid in every run) and a wire that
//! records what a router sends.
#![allow(dead_code)]

use std::{
    cell::RefCell,
    net::{Ipv4Addr, SocketAddr},
};

use boringtun::x25519::{PublicKey, StaticSecret};
use weave_agent::{
    dataplane::router::{BUF_SIZE, DATAGRAM_LEAD, LEAD, Router, Sink},
    plan::netmap::PeerConfig,
};

#[derive(Default)]
pub struct Wire {
    pub net: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Sink for Wire {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
        self.net.borrow_mut().push((dst, datagram.to_vec()));
    }
}

pub struct Node {
    pub router: Router,
    pub addr: Ipv4Addr,
    pub workload: Ipv4Addr,
    pub endpoint: SocketAddr,
    pub public: [u8; 32],
    pub wire: Wire,
}

pub fn node(n: u8) -> Node {
    let secret = StaticSecret::from([n; 32]);
    let public = PublicKey::from(&secret).to_bytes();
    Node {
        router: Router::new(secret),
        addr: Ipv4Addr::new(10, 47, 0, n),
        workload: Ipv4Addr::new(10, 32, 0, n),
        endpoint: SocketAddr::from(([192, 0, 2, 10 + n], 6784)),
        public,
        wire: Wire::default(),
    }
}

pub fn config(of: &Node, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        node_id: of.addr.octets()[3] as u64,
        name: format!("h{}", of.addr.octets()[3]),
        public_key: of.public,
        address: of.addr,
        endpoint,
        endpoints: endpoint.into_iter().collect(),
        routes: vec![(of.workload, 42)],
        segments: [42].into(),
    }
}

/// A source address picked by one byte: the peers' own endpoints, or others.
pub fn source(b: u8) -> SocketAddr {
    match b % 4 {
        0 => SocketAddr::from(([192, 0, 2, 11], 6784)),
        1 => SocketAddr::from(([192, 0, 2, 12], 6784)),
        2 => SocketAddr::from(([203, 0, 113, 5], 40000 + b as u16)),
        _ => SocketAddr::from(([198, 51, 100, 7], b as u16)),
    }
}

/// A minimal IPv4 packet: header with the given addresses and the payload.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 64, proto, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// Everything `from` sent so far, taken off its wire.
pub fn drain(from: &Node) -> Vec<(SocketAddr, Vec<u8>)> {
    from.wire.net.borrow_mut().drain(..).collect()
}

/// A datagram into `to`; the decrypted packet, if any.
/// (The router reads `DATAGRAM_LEAD` bytes in front of the datagram and
/// `LEAD` in front of the packet, and leaves them as they were.)
pub fn receive(to: &Node, src: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut led = vec![0x5a_u8; DATAGRAM_LEAD];
    led.extend_from_slice(datagram);
    let mut out = vec![0xa5_u8; LEAD + BUF_SIZE];
    let n = to.router.decapsulate(&to.router.table(), src, &led, &mut out, &to.wire);
    assert!(out[..LEAD].iter().all(|&b| b == 0xa5), "the packet's lead changed");
    Some(out[LEAD..LEAD + n?].to_vec())
}

/// A packet from `from`'s TUN: the datagram it would send, if any.
pub fn send(from: &Node, packet: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
    let mut led = vec![0x5a_u8; LEAD];
    led.extend_from_slice(packet);
    let mut out = vec![0xa5_u8; DATAGRAM_LEAD + BUF_SIZE];
    let sent = from.router.encapsulate(&from.router.table(), &led, &mut out);
    assert!(out[..DATAGRAM_LEAD].iter().all(|&b| b == 0xa5), "the datagram's lead changed");
    let (dst, n) = sent?;
    Some((dst, out[DATAGRAM_LEAD..DATAGRAM_LEAD + n].to_vec()))
}
