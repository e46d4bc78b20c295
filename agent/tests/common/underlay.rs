//! Underlay helpers for the IPv6, dual-stack, moving-host, NAT and MTU
//! tests: routers and hosts behind them, IPv6 frames of a capture, a check
//! that a capture holds nothing but WireGuard, and a bulk TCP transfer
//! between two workloads.
use std::{
    fs,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use super::{Bed, WG_PORT, in_netns, ok, ok_in, wait_for};

/// One IPv6 packet of a capture (a hop-by-hop header skipped; a fragment header is `fragment`).
pub struct Captured6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub fragment: bool,
    pub src_port: u16,
    pub dst_port: u16,
    /// UDP: the payload; ICMPv6: the message from its type on; else the rest.
    pub payload: Vec<u8>,
}

/// Reads an Ethernet pcap file: its IPv6 packets, and how many frames were
/// something else (IPv4, ARP, ...).
pub fn read_pcap6(path: &Path) -> (Vec<Captured6>, usize) {
    let data = fs::read(path).unwrap();
    assert!(data.len() >= 24, "pcap file too short");
    let le = data[0..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a: [u8; 4] = b[..4].try_into().unwrap();
        if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    };
    assert_eq!(u32_at(&data[20..24]), 1, "not an Ethernet capture");
    let (mut pos, mut packets, mut other) = (24, Vec::new(), 0);
    while pos + 16 <= data.len() {
        let incl = u32_at(&data[pos + 8..pos + 12]) as usize;
        let frame = &data[pos + 16..(pos + 16 + incl).min(data.len())];
        pos += 16 + incl;
        if frame.len() < 54 || frame[12..14] != [0x86, 0xdd] {
            other += 1;
            continue;
        }
        let ip = &frame[14..];
        let addr = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
        let (src, dst, mut next_header) = (addr(&ip[8..24]), addr(&ip[24..40]), ip[6]);
        let mut l4 = &ip[40..];
        // A hop-by-hop options header (MLD reports carry one) is skipped.
        if next_header == 0 && l4.len() >= 8 {
            let len = (l4[1] as usize + 1) * 8;
            next_header = l4[0];
            l4 = &l4[len.min(l4.len())..];
        }
        let (src_port, dst_port, payload) = if next_header == 17 && l4.len() >= 8 {
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]), l4[8..].to_vec())
        } else {
            (0, 0, l4.to_vec())
        };
        packets.push(Captured6 { src, dst, next_header, fragment: next_header == 44, src_port, dst_port, payload });
    }
    (packets, other)
}

/// ICMPv6 that the underlay's own IPv6 needs: neighbour discovery (133-137)
/// and multicast listener reports (131, 143).
pub fn is_underlay_icmp6(p: &Captured6) -> bool {
    p.next_header == 58 && p.payload.first().is_some_and(|t| matches!(t, 131 | 133..=137 | 143))
}

/// Panics unless every IPv6 packet of `packets` is an unfragmented
/// WireGuard message to or from [`WG_PORT`] (or the underlay's own ICMPv6);
/// returns the WireGuard bytes carried.
pub fn assert_only_wireguard6(packets: &[Captured6]) -> usize {
    let mut carried = 0;
    for p in packets.iter().filter(|p| !is_underlay_icmp6(p)) {
        assert!(!p.fragment, "a fragmented datagram on the underlay: {} -> {}", p.src, p.dst);
        assert_eq!(
            p.next_header, 17,
            "only UDP between hosts; got next header {} {} -> {}",
            p.next_header, p.src, p.dst
        );
        assert!(p.src_port == WG_PORT || p.dst_port == WG_PORT, "UDP {} -> {}", p.src_port, p.dst_port);
        assert!(
            p.payload.len() >= 4 && (1..=4).contains(&p.payload[0]) && p.payload[1..4] == [0, 0, 0],
            "not a WireGuard message: {:02x?}",
            &p.payload[..p.payload.len().min(8)]
        );
        carried += p.payload.len();
    }
    carried
}

/// Sends `total` bytes over TCP from namespace `from` to `to`:`port` (a
/// listener started in namespace `to_ns`); returns the time it took. Panics
/// if the transfer does not complete within `limit` (a stalled connection).
pub fn tcp_transfer(from: &str, to_ns: &str, to: Ipv4Addr, port: u16, total: usize, limit: Duration) -> Duration {
    let addr = SocketAddr::new(IpAddr::V4(to), port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(to_ns, move || {
        let listener = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        let (mut got, mut buf) = (0usize, vec![0u8; 64 * 1024]);
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("receiving stalled after {got} bytes: {e}"),
            }
        }
        got
    });
    ready_rx.recv().unwrap();
    let client = in_netns(from, move || {
        let started = Instant::now();
        let mut s = wait_for("the TCP receiver", Duration::from_secs(10), || TcpStream::connect(addr).ok());
        s.set_write_timeout(Some(limit)).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            s.write_all(&chunk[..n]).unwrap_or_else(|e| panic!("sending stalled after {sent} bytes: {e}"));
            sent += n;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        started.elapsed()
    });
    let elapsed = client.join().expect("the sender");
    let got = server.join().expect("the receiver");
    assert_eq!(got, total, "every byte arrived");
    elapsed
}

impl Bed {
    /// A router namespace `<prefix>-<name>` with `eth0` on the underlay
    /// bridge at `ip` (192.0.2.x/24), forwarding IPv4.
    pub fn add_router(&mut self, name: &str, ip: Ipv4Addr) -> String {
        let ns = format!("{}-{name}", self.prefix);
        self.plug(&ns, name, ip);
        ok_in(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ns
    }

    /// A bare namespace `<prefix>-<name>` (lo up) that the bed removes on drop.
    pub fn add_bare_ns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        self.add_ns(&ns);
        ns
    }

    /// A veth between namespaces `a` (`a_if`, `a_addr` as ip/len) and `b`
    /// (`b_if`, `b_addr`), both ends `mtu`, up.
    pub fn link(&self, (a, a_if, a_addr): (&str, &str, &str), (b, b_if, b_addr): (&str, &str, &str), mtu: u32) {
        let mtu = mtu.to_string();
        ok(&[
            "ip", "-n", a, "link", "add", a_if, "mtu", &mtu, "type", "veth", "peer", "name", b_if, "mtu", &mtu,
            "netns", b,
        ]);
        for (ns, dev, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            ok_in(ns, &["ip", "addr", "add", addr, "dev", dev]);
            ok_in(ns, &["ip", "link", "set", dev, "up"]);
        }
    }

    /// The next host, not on the underlay bridge but behind `gateway` (a
    /// router namespace): a 1500-byte link, the host at `ip`/24 with its
    /// default route via `gw`/24 on the router's side. Starts `agent join`.
    pub fn add_host_behind(&mut self, gateway: &str, gw: Ipv4Addr, ip: Ipv4Addr) -> usize {
        self.add_host_behind_mtu(gateway, gw, ip, 1500)
    }

    /// [`Bed::add_host_behind`] with a link of `mtu` bytes.
    pub fn add_host_behind_mtu(&mut self, gateway: &str, gw: Ipv4Addr, ip: Ipv4Addr, mtu: u32) -> usize {
        let i = self.hosts.len();
        let ns = format!("{}-h{}", self.prefix, i + 1);
        self.add_ns(&ns);
        let port = format!("h{}", i + 1);
        self.link((gateway, &port, &format!("{gw}/24")), (&ns, "eth0", &format!("{ip}/24")), mtu);
        ok_in(&ns, &["ip", "route", "add", "default", "via", &gw.to_string()]);
        self.start_host(ns, ip)
    }
}
