//! The tunnel's UDP socket: one socket for both underlay families.
//!
//! Bound to `[::]:port` with `IPV6_V6ONLY` off, it receives IPv4 datagrams as
//! IPv4-mapped IPv6 sources (`::ffff:192.0.2.11`) and sends to IPv4 endpoints
//! through the same mapping; everything above this module sees plain
//! `SocketAddr::V4` / `V6` (a peer's endpoint compares equal to the map's).
//! UDP GSO (`UDP_SEGMENT`) and GRO (`UDP_GRO`) are per socket and work for
//! both families. A host whose kernel has no IPv6 gets an IPv4-only socket.
//! With several queues, each has its own socket on the same port.
use std::{
    io::{self, IoSlice, IoSliceMut},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::{
    errno::Errno,
    sys::socket::{
        self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn6,
        SockaddrStorage, setsockopt, sockopt,
    },
};

/// Binds the tunnel sockets, one per queue: with more than one they share
/// the port (`SO_REUSEPORT`: the kernel hands each sender, by a hash of its
/// address and port, to one socket). `listen` with an unspecified address
/// (either family) means every address of both families where the kernel
/// has IPv6; port 0 picks one port for all of them.
pub fn bind_queues(listen: SocketAddr, queues: usize) -> io::Result<Vec<UdpSocket>> {
    let reuse = queues > 1;
    let first = bind(listen, reuse)?;
    let port = first.local_addr()?.port();
    let mut all = vec![first];
    for _ in 1..queues {
        all.push(bind(SocketAddr::new(listen.ip(), port), reuse)?);
    }
    Ok(all)
}

/// One tunnel socket (see [`bind_queues`]).
pub fn bind(listen: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    if !listen.ip().is_unspecified() {
        return Ok(plain(listen, reuse_port)?);
    }
    match dual_stack(listen.port(), reuse_port) {
        Ok(s) => Ok(s),
        Err(Errno::EAFNOSUPPORT) => {
            tracing::warn!("this kernel has no IPv6: the tunnel socket serves IPv4 only");
            Ok(plain(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.port()), reuse_port)?)
        }
        Err(e) => Err(e.into()),
    }
}

fn plain(addr: SocketAddr, reuse_port: bool) -> Result<UdpSocket, Errno> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if addr.is_ipv4() {
        ignore_path_mtu_v4(&fd)?;
        setsockopt(&fd, sockopt::IpRecvTos, &true)?;
    } else {
        ignore_path_mtu_v6(&fd)?;
        setsockopt(&fd, sockopt::Ipv6RecvTClass, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(UdpSocket::from(fd))
}

fn dual_stack(port: u16, reuse_port: bool) -> Result<UdpSocket, Errno> {
    let fd = socket::socket(AddressFamily::Inet6, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // Explicitly: the default follows net.ipv6.bindv6only, which a host may set.
    setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // IPPROTO_IP options on an IPv6 socket govern its IPv4(-mapped) sends.
    ignore_path_mtu_v4(&fd)?;
    ignore_path_mtu_v6(&fd)?;
    // The outer ECN field of both families' datagrams (`super::ecn`).
    setsockopt(&fd, sockopt::IpRecvTos, &true)?;
    setsockopt(&fd, sockopt::Ipv6RecvTClass, &true)?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    socket::bind(fd.as_raw_fd(), &addr)?;
    Ok(UdpSocket::from(fd))
}

/// IPv4 datagrams leave without DF and at the interface's MTU, whatever
/// "fragmentation needed" the host was told (`IP_PMTUDISC_OMIT`), as the
/// kernel's WireGuard sends them. Anyone on the underlay can forge that ICMP
/// message for a peer's address (it quotes only addresses and ports anyone
/// can see): with path MTU discovery on, one forged message every ten
/// minutes shrank the path to 552 bytes, and every datagram to that peer
/// went one at a time, in three fragments. A genuinely narrower path still
/// works: its router fragments the datagrams instead of this host.
fn ignore_path_mtu_v4(fd: &std::os::fd::OwnedFd) -> Result<(), Errno> {
    use rustix::net::sockopt::{Ipv4PathMtuDiscovery, set_ip_mtu_discover};
    set_ip_mtu_discover(fd, Ipv4PathMtuDiscovery::OMIT).map_err(|e| Errno::from_raw(e.raw_os_error()))
}

/// IPv6 is the kernel's default unless told otherwise: its routers never
/// fragment, so a path narrower than this host's interface (a jumbo-frame
/// cloud NIC reaching a peer over a 1,500-byte path, a PPPoE link, a tunnel)
/// works only because the router's "packet too big" is believed, and the
/// datagrams to that peer then go in fragments (as the kernel's WireGuard
/// does). The price: anyone on the underlay can forge that message for a
/// peer's address, and the peer's fragments then meet whatever junk fills the
/// receiver's reassembly memory (4 MB; found by a review, 2026-12-03). With
/// `--ignore-ipv6-packet-too-big` ([`ignore_ipv6_packet_too_big`]; for an
/// underlay whose every path carries the interface's MTU, one LAN or VPC)
/// the datagrams leave at the interface's MTU and the message is not taken
/// in (`IPV6_PMTUDISC_OMIT`), as for IPv4.
fn ignore_path_mtu_v6(fd: &std::os::fd::OwnedFd) -> Result<(), Errno> {
    use rustix::net::sockopt::{Ipv6PathMtuDiscovery, set_ipv6_mtu_discover};
    let mode = if IGNORE_V6.load(Ordering::Relaxed) { Ipv6PathMtuDiscovery::OMIT } else { Ipv6PathMtuDiscovery::WANT };
    set_ipv6_mtu_discover(fd, mode).map_err(|e| Errno::from_raw(e.raw_os_error()))
}

static IGNORE_V6: AtomicBool = AtomicBool::new(false);

/// Whether sockets bound from now on ignore IPv6 "packet too big"
/// (`--ignore-ipv6-packet-too-big`; see [`ignore_path_mtu_v6`]).
pub fn ignore_ipv6_packet_too_big(ignore: bool) {
    IGNORE_V6.store(ignore, Ordering::Relaxed);
}

/// The address to hand the kernel for `dst`: IPv4 endpoints as IPv4-mapped
/// addresses on a dual-stack (IPv6) socket.
pub fn wire(dst: SocketAddr, v6_socket: bool) -> SocketAddr {
    match dst {
        SocketAddr::V4(v4) if v6_socket => SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
        other => other,
    }
}

/// A sender as the router sees it: IPv4-mapped addresses as IPv4, IPv6
/// without a flow label or (for global addresses) a scope.
pub fn canonical(src: SocketAddr) -> SocketAddr {
    match src {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id())),
        },
        v4 => v4,
    }
}

/// Whether `udp` is an IPv6 (dual-stack) socket.
pub fn is_v6(udp: &UdpSocket) -> io::Result<bool> {
    Ok(udp.local_addr()?.is_ipv6())
}

/// Sends `datagrams` to `dst` (the router's form: [`wire`] maps it for a
/// dual-stack socket): one datagram, or with `segment` one GSO send of
/// datagrams `segment` bytes long but the last. Their outer ECN field is
/// `ecn` (`super::ecn`); nothing else of the traffic class is set.
pub fn send(
    udp: &UdpSocket,
    v6_socket: bool,
    dst: SocketAddr,
    datagrams: &[u8],
    segment: Option<u16>,
    ecn: u8,
) -> nix::Result<usize> {
    let addr = SockaddrStorage::from(wire(dst, v6_socket));
    let (tos, class) = (ecn & 0b11, i32::from(ecn & 0b11));
    let size = segment.unwrap_or(0);
    // IPv4 destinations take IP_TOS, on a dual-stack socket as well.
    let marked = match dst {
        SocketAddr::V4(_) => ControlMessage::Ipv4Tos(&tos),
        SocketAddr::V6(_) => ControlMessage::Ipv6TClass(&class),
    };
    let all = [ControlMessage::UdpGsoSegments(&size), marked];
    let cmsgs = match (segment.is_some(), tos != 0) {
        (true, true) => &all[..],
        (true, false) => &all[..1],
        (false, true) => &all[1..],
        (false, false) => &[],
    };
    socket::sendmsg(udp.as_raw_fd(), &[IoSlice::new(datagrams)], cmsgs, MsgFlags::empty(), Some(&addr))
}

/// Room for what [`recv_datagrams`] asks the kernel to say about a
/// receive: the GRO segment size and the traffic class.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32, i32)
}

/// One receive: its bytes, their sender, the size of each datagram in them
/// (all of it unless the kernel coalesced several with UDP GRO) and their
/// outer ECN field (GRO coalesces only datagrams with equal headers).
pub struct Received {
    pub len: usize,
    pub src: SocketAddr,
    pub segment: usize,
    pub ecn: u8,
}

/// One `recvmsg` into `buf`, with `cmsg` from [`cmsg_buffer`].
pub fn recv_datagrams(udp: &UdpSocket, buf: &mut [u8], cmsg: &mut [u8], flags: MsgFlags) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(udp.as_raw_fd(), &mut iov, Some(cmsg), flags)?;
    let (mut segment, mut ecn) = (msg.bytes, 0);
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::UdpGroSegments(s) if s > 0 => segment = s as usize,
            ControlMessageOwned::Ipv4Tos(tos) => ecn = tos & 0b11,
            ControlMessageOwned::Ipv6TClass(class) => ecn = (class & 0b11) as u8,
            _ => {}
        }
    }
    let src = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::V4((*s).into()))
                .or_else(|| a.as_sockaddr_in6().map(|s| SocketAddr::V6((*s).into())))
        })
        .map(canonical)
        .ok_or_else(|| io::Error::other("datagram without an IP source"))?;
    Ok(Received { len: msg.bytes, src, segment: segment.max(1), ecn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.11:6784".parse().unwrap();
        let mapped = wire(v4, true);
        assert_eq!(mapped, "[::ffff:192.0.2.11]:6784".parse::<SocketAddr>().unwrap());
        assert_eq!(canonical(mapped), v4);
        assert_eq!(wire(v4, false), v4);
        let v6: SocketAddr = "[2001:db8::11]:6784".parse().unwrap();
        assert_eq!(wire(v6, true), v6);
        assert_eq!(canonical(v6), v6);
    }

    /// IPv4 sends ignore the path MTU on both kinds of socket (the e2e test
    /// `e2e_underlay_mtu` forges the ICMP message this is against).
    #[test]
    fn ipv4_sends_ignore_learned_path_mtus() {
        use rustix::net::sockopt::{Ipv4PathMtuDiscovery, ip_mtu_discover};
        for listen in ["[::]:0", "127.0.0.1:0"] {
            let s = bind(listen.parse().unwrap(), false).unwrap();
            assert_eq!(ip_mtu_discover(&s).unwrap(), Ipv4PathMtuDiscovery::OMIT, "{listen}");
        }
    }

    /// IPv6 sends follow learned path MTUs unless told to ignore them
    /// (`--ignore-ipv6-packet-too-big`).
    #[test]
    fn ipv6_sends_ignore_learned_path_mtus_only_when_told() {
        use rustix::net::sockopt::{Ipv6PathMtuDiscovery, ipv6_mtu_discover};
        let Ok(s) = bind("[::1]:0".parse().unwrap(), false) else { return }; // no IPv6 here
        assert_eq!(ipv6_mtu_discover(&s).unwrap(), Ipv6PathMtuDiscovery::WANT);
        ignore_ipv6_packet_too_big(true);
        let (ignoring, dual) = (bind("[::1]:0".parse().unwrap(), false), bind("[::]:0".parse().unwrap(), false));
        ignore_ipv6_packet_too_big(false);
        assert_eq!(ipv6_mtu_discover(ignoring.unwrap()).unwrap(), Ipv6PathMtuDiscovery::OMIT);
        let dual = dual.unwrap();
        if is_v6(&dual).unwrap() {
            assert_eq!(ipv6_mtu_discover(&dual).unwrap(), Ipv6PathMtuDiscovery::OMIT);
        }
    }

    /// Both families reach one dual-stack socket, on loopback, and the
    /// sources come out canonical.
    #[test]
    fn one_socket_serves_both_families() {
        let server = bind("[::]:0".parse().unwrap(), false).unwrap();
        let port = server.local_addr().unwrap().port();
        if !is_v6(&server).unwrap() {
            return; // no IPv6 in this kernel: nothing dual-stack to prove
        }
        let mut cmsg = cmsg_buffer();
        let mut buf = [0u8; 64];
        for client in ["127.0.0.1:0", "[::1]:0"] {
            let c = UdpSocket::bind(client).unwrap();
            let to = SocketAddr::new(c.local_addr().unwrap().ip(), port);
            c.send_to(b"hello", to).unwrap();
            let r = recv_datagrams(&server, &mut buf, &mut cmsg, MsgFlags::empty()).unwrap();
            assert_eq!((&buf[..r.len], r.src), (&b"hello"[..], c.local_addr().unwrap()));
            server.send_to(b"back", wire(r.src, true)).unwrap();
            let (n, _) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
        }
    }

    /// The ECN field set on a send (alone, and with GSO) is the one the
    /// receive reports, for both families on a dual-stack socket and on
    /// plain ones; nothing else of the traffic class is set.
    #[test]
    fn the_outer_ecn_field_is_sent_and_received() {
        let dual = bind("[::]:0".parse().unwrap(), false).unwrap();
        let mut pairs = vec![(bind("127.0.0.1:0".parse().unwrap(), false).unwrap(), "127.0.0.1")];
        if is_v6(&dual).unwrap() {
            pairs.push((bind("[::1]:0".parse().unwrap(), false).unwrap(), "::1"));
            for ip in ["127.0.0.1", "::1"] {
                pairs.push((dual.try_clone().unwrap(), ip));
            }
        }
        let mut cmsg = cmsg_buffer();
        let mut buf = [0u8; 256];
        for (server, ip) in &pairs {
            let to = SocketAddr::new(ip.parse().unwrap(), server.local_addr().unwrap().port());
            let sender = bind(SocketAddr::new(to.ip(), 0), false).unwrap();
            let v6_sender = is_v6(&sender).unwrap();
            for ecn in [0b00, 0b01, 0b10, 0b11] {
                for segment in [None, Some(40)] {
                    let sent = send(&sender, v6_sender, to, &[7u8; 100], segment, ecn).unwrap();
                    assert_eq!(sent, 100);
                    let mut got = Vec::new();
                    while got.iter().map(|r: &Received| r.len).sum::<usize>() < 100 {
                        got.push(recv_datagrams(server, &mut buf, &mut cmsg, MsgFlags::empty()).unwrap());
                    }
                    for r in &got {
                        assert_eq!(r.ecn, ecn, "to {to} ({segment:?})");
                        assert_eq!(r.src, sender.local_addr().unwrap(), "to {to}");
                    }
                }
            }
        }
    }

    /// Queues share the port; every sender lands on exactly one socket, and
    /// always the same one.
    #[test]
    fn queue_sockets_share_the_port_and_each_sender_sticks_to_one() {
        let socks = bind_queues("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
        for s in &socks {
            s.set_nonblocking(true).unwrap();
        }
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmsg = cmsg_buffer();
        let mut buf = [0u8; 64];
        for _ in 0..8 {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..3 {
                c.send_to(b"x", to).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            let got: Vec<usize> = socks
                .iter()
                .map(|s| {
                    let mut n = 0;
                    while recv_datagrams(s, &mut buf, &mut cmsg, MsgFlags::MSG_DONTWAIT).is_ok() {
                        n += 1;
                    }
                    n
                })
                .collect();
            assert_eq!(got.iter().filter(|&&n| n > 0).count(), 1, "one socket per sender: {got:?}");
            assert_eq!(got.iter().sum::<usize>(), 3);
        }
    }
}
