//! A member with bad intent at the WireGuard layer: host `from`'s own key
//! (read from its data dir, as its root can), spoken by a plain boringtun
//! `Tunn` from a socket on `from`'s WireGuard port instead of by its agent,
//! so the test chooses every inner packet the peer decrypts: what a
//! modified agent would send, whatever its routes say.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use boringtun::{
    noise::{Tunn, TunnResult},
    x25519::{PublicKey, StaticSecret},
};

use super::{Bed, WG_PORT, in_netns};

/// A handshake initiation to host `i` from a key of nobody's: what anyone who
/// knows the host's public key (no secret) can make, a valid mac1 included.
pub fn stranger_initiation(bed: &Bed, i: usize) -> Vec<u8> {
    let target = PublicKey::from(&key(bed, i));
    let mut tunn = Tunn::new(StaticSecret::from(rand::random::<[u8; 32]>()), target, None, None, 7, None);
    let mut buf = [0u8; 256];
    match tunn.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(init) => init.to_vec(),
        _ => panic!("no initiation"),
    }
}

/// Host `i`'s private key, read from its data dir.
pub fn key(bed: &Bed, i: usize) -> StaticSecret {
    let text = fs::read_to_string(bed.hosts[i].data_dir.join("private.key")).unwrap();
    let bytes: [u8; 32] = STANDARD.decode(text.trim()).unwrap().try_into().unwrap();
    StaticSecret::from(bytes)
}

pub struct Rogue {
    tunn: Tunn,
    sock: UdpSocket,
    peer: SocketAddr,
    /// The member's node address: the one inner source its peer takes from it.
    pub address: Ipv4Addr,
}

impl Rogue {
    /// Stops host `from`'s agent and completes a handshake with host `to`'s
    /// agent under `from`'s key, from `from`'s WireGuard port.
    pub fn connect(bed: &mut Bed, from: usize, to: usize) -> Self {
        let address = bed.wait_status(from).address;
        bed.signal_agent(from, nix::sys::signal::Signal::SIGKILL);
        let secret = key(bed, from);
        let public = PublicKey::from(&key(bed, to));
        let sock = in_netns(&bed.hosts[from].ns, || UdpSocket::bind(("0.0.0.0", WG_PORT)).unwrap()).join().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let peer = SocketAddr::from((bed.hosts[to].ip, WG_PORT));
        let mut rogue = Rogue { tunn: Tunn::new(secret, public, None, None, 0x77, None), sock, peer, address };
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = vec![0u8; 2048];
        while rogue.tunn.stats().0.is_none() {
            assert!(Instant::now() < deadline, "no handshake with host {} as host {}", to + 1, from + 1);
            if let TunnResult::WriteToNetwork(p) = rogue.tunn.format_handshake_initiation(&mut buf, true) {
                rogue.sock.send_to(p, peer).unwrap();
            }
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until && rogue.tunn.stats().0.is_none() {
                rogue.receive(&mut buf);
            }
        }
        rogue
    }

    /// One datagram in (within the socket's timeout), through the tunnel's
    /// state: the inner packet it carried, if any.
    fn receive(&mut self, buf: &mut [u8]) -> Option<Vec<u8>> {
        let mut datagram = [0u8; 2048];
        let (n, src) = self.sock.recv_from(&mut datagram).ok()?;
        let mut inner = None;
        let mut result = self.tunn.decapsulate(Some(src.ip()), &datagram[..n], buf);
        loop {
            match result {
                TunnResult::WriteToNetwork(p) => {
                    self.sock.send_to(p, src).unwrap();
                    result = self.tunn.decapsulate(None, &[], buf);
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => inner = Some(p.to_vec()),
                _ => {}
            }
            return inner;
        }
    }

    /// Sends `packet` (an IP packet) through the tunnel.
    pub fn send(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; packet.len() + 64];
        match self.tunn.encapsulate(packet, &mut buf) {
            TunnResult::WriteToNetwork(p) => {
                self.sock.send_to(p, self.peer).unwrap();
            }
            other => panic!("encapsulating {} bytes: {other:?}", packet.len()),
        }
    }

    /// The inner packets the peer sends within `wait` (keepalives skipped).
    pub fn receive_for(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let (mut buf, mut got) = (vec![0u8; 2048], Vec::new());
        let until = Instant::now() + wait;
        while Instant::now() < until {
            got.extend(self.receive(&mut buf).filter(|p| !p.is_empty()));
        }
        got
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, DF clear, TTL 64) around `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend(len.to_be_bytes());
    p.extend([0x12, 0x34, 0, 0, 64, protocol, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    let sum = checksum(&p, 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend(payload);
    p
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport`, in its IPv4 packet.
pub fn tcp_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend(0x1000_0000u32.to_be_bytes());
    t.extend([0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend([0, 6, 0, 20]);
    let sum = checksum(&pseudo, 0);
    let sum = checksum(&t, u32::from(!sum));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 6, &t)
}

/// An ICMP echo request from `src` to `dst`, in its IPv4 packet.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend(id.to_be_bytes());
    m.extend([0, 1]);
    m.extend(b"weave-rogue");
    let sum = checksum(&m, 0);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

/// An ICMP "fragmentation needed" (next-hop MTU `mtu`) from `src` to `dst`,
/// quoting the start of a UDP datagram `quoted_src`:`sport` →
/// `quoted_dst`:`dport` of 1420 bytes with DF set (its header, then
/// `payload`: a VXLAN header, say), as a router on its path would send it.
pub fn frag_needed(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    mtu: u16,
    quoted: (Ipv4Addr, u16, Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let (quoted_src, sport, quoted_dst, dport) = quoted;
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend(sport.to_be_bytes());
    udp.extend(dport.to_be_bytes());
    udp.extend(1400u16.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let mut inner = ipv4(quoted_src, quoted_dst, 17, &udp);
    inner[2..4].copy_from_slice(&1420u16.to_be_bytes());
    inner[6] = 0x40;
    inner[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&inner[..20], 0);
    inner[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut m = vec![3, 4, 0, 0, 0, 0];
    m.extend(mtu.to_be_bytes());
    m.extend(&inner);
    let sum = checksum(&m, 0);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

/// Sends `packet`'s ICMP message (an IPv4 packet as [`frag_needed`] makes
/// it; the kernel writes the header) from namespace `ns` to `to`, through
/// a raw socket: what root in a container can do.
pub fn send_icmp_from(ns: &str, to: Ipv4Addr, packet: &[u8]) {
    use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
    let icmp = packet[20..].to_vec();
    in_netns(ns, move || {
        let fd = socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::empty(), SockProtocol::Icmp).unwrap();
        let to = SockaddrIn::from(std::net::SocketAddrV4::new(to, 0));
        socket::sendto(std::os::fd::AsRawFd::as_raw_fd(&fd), &icmp, &to, MsgFlags::empty()).unwrap();
    })
    .join()
    .unwrap();
}
