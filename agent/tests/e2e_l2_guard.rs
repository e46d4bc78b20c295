//! A malicious workload on a segment that crosses hosts at L2 (and a member
//! host writing into its VXLAN device): frames it crafts with a raw socket
//! (as an attacker in a container would) must not reach or mislead the
//! other workloads of its subnet, on its host or others.
mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use common::*;

/// Python for the scripts below: `udp_ip(src, dst, dport, payload)`, an IPv4
/// header (checksummed) and a UDP datagram (no checksum) SRC -> DST.
const UDP_IP: &str = r#"
import socket, struct, sys, time
def udp_ip(src, dst, dport, payload):
    udp = struct.pack('!HHHH', 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack('!10H', ip)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ip[:10] + struct.pack('!H', ~s & 0xffff) + ip[12:] + udp
"#;

/// `python3 -c SEND IFACE SRC DST DPORT [SRCMAC]` (after [`UDP_IP`]): three
/// UDP datagrams SRC -> DST in an Ethernet frame to ff:ff:ff:ff:ff:ff, from
/// SRCMAC, or else IFACE's own MAC (the audit's frame).
const SEND_IN_BROADCAST: &str = r#"
ifc, src, dst, dport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mac = sys.argv[5] if len(sys.argv) > 5 else open(f'/sys/class/net/{ifc}/address').read().strip()
mac = bytes.fromhex(mac.replace(':', ''))
frame = udp_ip(src, dst, dport, f'from {src} to {dst}'.encode())
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3): sock.send(b'\xff' * 6 + mac + b'\x08\x00' + frame)
"#;

/// Runs Python `script` (after [`UDP_IP`]) in `ns` with `args`.
fn python(ns: &str, script: &str, args: &[&str]) -> String {
    let code = format!("{UDP_IP}{script}");
    ok_in(ns, &[&["python3", "-c", code.as_str()], args].concat())
}

const PORT: u16 = 5555;

fn bind(ns: &str) -> UdpSocket {
    let s = in_netns(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).unwrap()).join().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Every datagram `s` receives within `wait`, as text.
fn received(s: &UdpSocket, wait: Duration) -> Vec<String> {
    let (mut out, end, mut buf) = (Vec::new(), Instant::now() + wait, [0u8; 1500]);
    while Instant::now() < end {
        if let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn send(ns: &str, src: Ipv4Addr, dst: Ipv4Addr) {
    let (src, dst, port) = (src.to_string(), dst.to_string(), PORT.to_string());
    python(ns, SEND_IN_BROADCAST, &["ethwe", &src, &dst, &port]);
}

/// Deletes the bridge table's prerouting rule whose text contains `what`.
fn delete_rule(ns: &str, what: &str) {
    let chain = ok_in(ns, &["nft", "-a", "list", "chain", "bridge", "weave", "prerouting"]);
    let line = chain.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no rule '{what}': {chain}"));
    let handle = line.rsplit("# handle ").next().unwrap().trim();
    ok_in(ns, &["nft", "delete", "rule", "bridge", "weave", "prerouting", "handle", handle]);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_forged_source_in_an_l2_broadcast_reaches_no_workload() {
    let mut bed = Bed::with_hosts(2);
    // The attacker and a hardened victim are attached by the agent (its
    // ports, its sysctls); the bare victims have only a veth in the bridge.
    let (attacker, attacker_ip) = attached_at(&mut bed, 0, "attacker");
    let (hardened, hardened_ip) = attached_at(&mut bed, 1, "hardened");
    let local = bed.add_workload(0, "default");
    let remote = bed.add_workload(1, "default");
    let (local_ns, remote_ns) = (bed.workloads[local].ns.clone(), bed.workloads[remote].ns.clone());
    let (local_ip, remote_ip) = (bed.workloads[local].ip, bed.workloads[remote].ip);
    for w in [local, remote] {
        wait_for("the attacker to reach every victim", Duration::from_secs(15), || {
            ping_once(&attacker, bed.workloads[w].ip).then_some(())
        });
    }
    wait_for("the attacker to reach every victim", Duration::from_secs(15), || {
        ping_once(&attacker, hardened_ip).then_some(())
    });
    let sysctl = ok_in(&hardened, &["cat", "/proc/sys/net/ipv4/conf/ethwe/drop_unicast_in_l2_multicast"]);
    assert_eq!(sysctl.trim(), "1", "attach sets the sysctl in the container");
    let victims = [(local_ns.as_str(), local_ip), (remote_ns.as_str(), remote_ip), (hardened.as_str(), hardened_ip)];
    let sockets: Vec<_> = victims.iter().map(|(ns, _)| bind(ns)).collect();
    // Unicast to each victim in a broadcast frame. From the attacker's own
    // address: a forged one would already be dropped by the source guard
    // (its own test below), and this test is about the broadcast rule.
    let attack = |round: &str| {
        for (_, ip) in &victims {
            send(&attacker, attacker_ip, *ip);
        }
        // A real broadcast still arrives everywhere (and the sockets work).
        send(&attacker, attacker_ip, Ipv4Addr::BROADCAST);
        let got: Vec<Vec<String>> = sockets.iter().map(|s| received(s, Duration::from_secs(2))).collect();
        for (g, (ns, _)) in got.iter().zip(&victims) {
            assert!(g.iter().any(|m| m.ends_with("to 255.255.255.255")), "{round}: {ns} got the broadcast: {g:?}");
        }
        got.into_iter().map(|g| g.iter().filter(|m| !m.ends_with("to 255.255.255.255")).count()).collect::<Vec<_>>()
    };
    assert_eq!(attack("with the rules"), [0, 0, 0], "no victim took a unicast packet out of a broadcast frame");
    // Control: without the bridge rule (on both hosts) the bare victims take
    // the very same frames, locally and over VXLAN; the hardened one still
    // drops them by its sysctl.
    for h in 0..2 {
        delete_rule(&bed.hosts[h].ns, "== 01:00:00:00:00:00 ip daddr != {");
    }
    let got = attack("without the rule");
    assert!(got[0] > 0 && got[1] > 0 && got[2] == 0, "bare victims get the forged packets, the hardened not: {got:?}");
}

/// `python3 -c UNICAST IFACE DSTMAC SRC DST DPORT` (after [`UDP_IP`]): three
/// UDP datagrams SRC -> DST in a unicast frame to DSTMAC, from IFACE's own MAC.
const UNICAST: &str = r#"
ifc, dmac, src, dst, dport = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
mac = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
frame = udp_ip(src, dst, dport, f'from {src} to {dst}'.encode())
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3): sock.send(bytes.fromhex(dmac.replace(':', '')) + mac + b'\x08\x00' + frame)
"#;

/// `python3 -c ARP_REPLY IFACE DSTMAC SPA TPA [SHA]`: three ARP replies to
/// DSTMAC saying SPA is at SHA (default: IFACE's own MAC), in frames from
/// IFACE's own MAC.
const ARP_REPLY: &str = r#"
import socket, struct, sys, time
ifc, dmac, spa, tpa = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), sys.argv[3], sys.argv[4]
mac = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
sha = bytes.fromhex(sys.argv[5].replace(':', '')) if len(sys.argv) > 5 else mac
arp = struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + sha + socket.inet_aton(spa) + dmac + socket.inet_aton(tpa)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3): sock.send(dmac + mac + b'\x08\x06' + arp); time.sleep(0.05)
"#;

fn mac_of(ns: &str) -> String {
    ok_in(ns, &["cat", "/sys/class/net/ethwe/address"]).trim().to_string()
}

/// The MAC `ns` has for `ip` on ethwe (its neighbour entry), if any.
fn neighbour(ns: &str, ip: Ipv4Addr) -> Option<String> {
    let out = ok_in(ns, &["ip", "neigh", "show", &ip.to_string(), "dev", "ethwe"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words.iter().position(|w| *w == "lladdr").map(|i| words[i + 1].to_string())
}

/// A container on the subnet (attached by the agent: its port is held to its
/// address) sends packets from its neighbour's address (and from one nobody
/// has), answers ARP for its neighbour, and announces its own address at
/// the neighbour's MAC. None of it reaches anyone: not a workload on its
/// host (bridged), not one on another host (routed through the tunnel; ARP
/// never crosses hosts). Control: a container the agent did not plug (a
/// bare veth in the bridge) sends the very same frames, and they arrive.
/// And when someone deletes the guard table, the agent puts it back.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workload_can_neither_send_from_nor_claim_another_address() {
    let mut bed = Bed::with_hosts(2);
    let (attacker, attacker_ip) = attached_at(&mut bed, 0, "attacker");
    let (victim, victim_ip) = attached_at(&mut bed, 0, "victim");
    let (near, near_ip) = attached_at(&mut bed, 0, "near");
    let (far, far_ip) = attached_at(&mut bed, 1, "far");
    let bare = bed.add_workload(0, "default");
    let (bare, bare_ip) = (bed.workloads[bare].ns.clone(), bed.workloads[bare].ip);
    for (from, to) in [(&attacker, near_ip), (&attacker, far_ip), (&bare, near_ip), (&bare, far_ip), (&near, victim_ip)]
    {
        wait_for(&format!("{from} to reach {to}"), Duration::from_secs(15), || ping_once(from, to).then_some(()));
    }
    // near learns the attacker's and the bare container's MACs.
    for to in [attacker_ip, bare_ip] {
        assert!(ping_within(&near, to, 5), "near reaches {to}");
    }
    let (victim_mac, near_mac) = (mac_of(&victim), mac_of(&near));
    let sockets = [bind(&near), bind(&far)];
    // From `from` (whose own address is `own`): a datagram from its own
    // address, from the victim's and from an unallocated one, to near and to
    // far. Returns how many forged ones each received.
    let attack = |from: &str, own: Ipv4Addr, round: &str| {
        // The far workload is behind `from`'s host (proxy ARP): its MAC there.
        let far_mac = neighbour(from, far_ip).expect("the far workload resolved");
        for (mac, ip) in [(&near_mac, near_ip), (&far_mac, far_ip)] {
            for src in [own, victim_ip, "10.32.255.251".parse().unwrap()] {
                let (mac, src, ip, port) = (mac.as_str(), src.to_string(), ip.to_string(), PORT.to_string());
                python(from, UNICAST, &["ethwe", mac, &src, &ip, &port]);
            }
        }
        let got: Vec<Vec<String>> = sockets.iter().map(|s| received(s, Duration::from_secs(2))).collect();
        let own_prefix = format!("from {own} to");
        for (g, who) in got.iter().zip(["near", "far"]) {
            assert!(g.iter().any(|m| m.starts_with(&own_prefix)), "{round}: {who} got the sender's own packets: {g:?}");
        }
        got.iter().map(|g| g.iter().filter(|m| !m.starts_with(&own_prefix)).count()).collect::<Vec<_>>()
    };
    // ARP from `from` to near: "the victim is at my MAC", and "`own` is at the victim's MAC".
    let claim = |from: &str, own: Ipv4Addr| {
        let (near_mac, tpa) = (near_mac.as_str(), near_ip.to_string());
        ok_in(from, &["python3", "-c", ARP_REPLY, "ethwe", near_mac, &victim_ip.to_string(), &tpa]);
        ok_in(from, &["python3", "-c", ARP_REPLY, "ethwe", near_mac, &own.to_string(), &tpa, &victim_mac]);
    };
    assert_eq!(attack(&attacker, attacker_ip, "guarded"), vec![0, 0], "no packet from a forged source arrived");
    // Any ARP reply may replace near's entries at once (no lock time), so
    // the checks below cannot pass for the kernel's own reasons.
    ok_in(&near, &["sysctl", "-qw", "net.ipv4.neigh.ethwe.locktime=0"]);
    claim(&attacker, attacker_ip);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(neighbour(&near, victim_ip), Some(victim_mac.clone()), "near kept the victim's MAC");
    assert_eq!(neighbour(&near, attacker_ip), Some(mac_of(&attacker)), "near kept the attacker's own MAC");
    // And the operator sees it: four forged datagrams and two ARP claims at
    // least, counted by the guard's table and read every 10 s.
    let host = bed.hosts[0].ns.clone();
    let dropped = || total(&scrape(&host), "weave_port_frames_dropped_total{reason=\"guard\"}");
    wait_for("the guard's drops in the agent's metrics", Duration::from_secs(25), || (dropped() >= 6.0).then_some(()));
    assert_eq!(total(&scrape(&host), "weave_port_frames_dropped_total{reason=\"storm\"}"), 0.0);
    // Emptied (`nft flush table` keeps the named counters and their
    // counts) and put back by the 10 s check: counted once. The check
    // counted the table it had listed before the repair again, after the
    // repair (found by a review, 2026-12-07).
    std::thread::sleep(Duration::from_secs(11));
    let counted = dropped();
    ok_in(&host, &["nft", "flush", "table", "bridge", "weave_guard"]);
    let repairs = || total(&scrape(&host), "weave_firewall_repairs_total");
    wait_for("the emptied guard table to be put back", Duration::from_secs(25), || (repairs() >= 1.0).then_some(()));
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(dropped(), counted, "the drops before the repair were counted again");
    // A restarted agent counts from its start: the table it finds holds what
    // the run before exported already (it counted them again).
    bed.signal_agent(0, nix::sys::signal::Signal::SIGTERM);
    bed.start_agent(0, false);
    wait_for("the restarted agent's metrics", Duration::from_secs(30), || (!scrape(&host).is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(dropped(), 0.0, "the restarted agent counted the run before's drops");

    // Control: the same frames from the bare container arrive.
    let got = attack(&bare, bare_ip, "unguarded");
    assert!(got[0] > 0 && got[1] > 0, "forged packets from an unguarded port arrive: {got:?}");
    wait_for("the bare container's ARP claims to take", Duration::from_secs(10), || {
        claim(&bare, bare_ip);
        std::thread::sleep(Duration::from_millis(200));
        let moved = neighbour(&near, victim_ip).as_deref() == Some(mac_of(&bare).as_str());
        (moved && neighbour(&near, bare_ip).as_deref() == Some(victim_mac.as_str())).then_some(())
    });

    // A deleted guard table comes back (the agent checks every 10 s), and guards again.
    ok_in(&host, &["nft", "delete", "table", "bridge", "weave_guard"]);
    wait_for("the agent to put the guard table back", Duration::from_secs(30), || {
        in_ns(&host, &["nft", "list", "table", "bridge", "weave_guard"]).status.success().then_some(())
    });
    assert_eq!(attack(&attacker, attacker_ip, "guarded again"), vec![0, 0], "the guard is back");

    // A port an unfinished attach left down (the agent stopped between
    // plugging it, down, and bringing it up once guarded) comes up with the
    // agent's next full pass (every 30 s).
    let port = fdb_port(&host, &mac_of(&attacker)).expect("the attacker's port holds its MAC");
    ok_in(&host, &["ip", "link", "set", &port, "down"]);
    // Unless the agent's full pass (every 30 s) fell inside the ping and set it up.
    let reached = ping_once(&attacker, near_ip);
    assert!(
        !reached || ok_in(&host, &["ip", "-o", "link", "show", "dev", &port]).contains("state UP"),
        "a port that is down carries nothing"
    );
    wait_for("the agent to set the port up again", Duration::from_secs(45), || {
        ping_once(&attacker, near_ip).then_some(())
    });
}

/// `python3 -c SEND6 IFACE DSTMAC SRCMAC KIND SRC DST ARG` (after
/// [`UDP_IP`]): three IPv6 packets SRC -> DST in frames SRCMAC -> DSTMAC,
/// checksummed: KIND `na`, a neighbour advertisement (override) "ARG is at
/// SRCMAC"; KIND `udp`, a UDP datagram to port ARG.
const SEND6: &str = r#"
ifc, dmac, smac, kind, src, dst, arg = sys.argv[1:8]
mac = lambda m: bytes.fromhex(m.replace(':', ''))
a6 = lambda a: socket.inet_pton(socket.AF_INET6, a)
def csum(b):
    b += b'\0' * (len(b) % 2); s = sum(struct.unpack(f'!{len(b) // 2}H', b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
if kind == 'na':
    nh, body = 58, struct.pack('!BBHI', 136, 0, 0, 0x20000000) + a6(arg) + bytes([2, 1]) + mac(smac)
    at = 2
else:
    payload = f'from {src}'.encode()
    nh, body, at = 17, struct.pack('!HHHH', 40000, int(arg), 8 + len(payload), 0) + payload, 6
c = csum(a6(src) + a6(dst) + struct.pack('!IxxxB', len(body), nh) + body)
body = body[:at] + struct.pack('!H', c) + body[at + 2:]
ip = struct.pack('!IHBB', 0x60000000, len(body), nh, 255) + a6(src) + a6(dst)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3): sock.send(mac(dmac) + mac(smac) + b'\x86\xdd' + ip + body)
"#;

/// The MAC `ns` has for IPv6 address `ip` on ethwe (its neighbour entry).
fn neighbour6(ns: &str, ip: &str) -> Option<String> {
    let out = ok_in(ns, &["ip", "-6", "neigh", "show", ip, "dev", "ethwe"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words.iter().position(|w| *w == "lladdr").map(|i| words[i + 1].to_string())
}

/// Host `ns`'s one workload's IPv6 link-local address, scoped to
/// `ethwe` for a neighbour's ping.
fn link_local(ns: &str) -> String {
    format!("{}%ethwe", link_local_address(ns))
}

/// The same, unscoped; once it is no longer tentative.
fn link_local_address(ns: &str) -> String {
    wait_for(&format!("{ns}'s link-local address"), Duration::from_secs(10), || {
        let addr = ok_in(ns, &["ip", "-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link"]);
        let ll = addr.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
        (!addr.contains("tentative")).then(|| ll.split('/').next().unwrap().to_string())
    })
}

/// The IPv6 twin of the test above: a container on the subnet (attached by
/// the agent) sends UDP from its neighbour's link-local address and
/// advertises that address at its own MAC. The victim took the datagrams
/// and sent its IPv6 for the neighbour to the attacker. Now its port lets
/// IPv6 through only from its own link-local address (the EUI-64 one of the
/// MAC weave gave it, which attach asks the kernel for) and advertisements
/// only for it. Control: the very same frames from a container the agent
/// did not plug arrive, and the victim's entry moves.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workload_can_neither_send_ipv6_from_nor_advertise_another_workloads_address() {
    let mut bed = Bed::with_hosts(1);
    let (attacker, attacker_ip) = attached_at(&mut bed, 0, "attacker");
    let (victim, _) = attached_at(&mut bed, 0, "victim");
    let (near, _) = attached_at(&mut bed, 0, "near");
    let bare = bed.add_workload(0, "default");
    let bare = bed.workloads[bare].ns.clone();
    let (near_ll, victim_ll) = (link_local_address(&near), link_local_address(&victim));
    assert_eq!(mac_of(&attacker), workload_mac(attacker_ip));
    for from in [&attacker, &bare, &victim] {
        let to = if *from == victim { link_local(&near) } else { link_local(&victim) };
        wait_for(&format!("{from} to reach {to}"), Duration::from_secs(15), || {
            in_ns(from, &["ping", "-6", "-c", "1", "-W", "1", &to]).status.success().then_some(())
        });
    }
    let near_mac = mac_of(&near);
    assert_eq!(neighbour6(&victim, &near_ll), Some(near_mac.clone()), "the victim resolved its neighbour");
    let socket = in_netns(&victim, || UdpSocket::bind("[::]:5556").unwrap()).join().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // "near's address is at my MAC", from `from`.
    let advertise = |from: &str| {
        let (own_ll, own_mac) = (link_local_address(from), mac_of(from));
        python(from, SEND6, &["ethwe", "33:33:00:00:00:01", &own_mac, "na", &own_ll, "ff02::1", &near_ll]);
    };
    // From `from`: UDP from its own link-local address and from near's, and
    // the advertisement. Returns the victim's entry for near right after it
    // (near's own probes may put it back later) and how many datagrams the
    // victim got from near's address.
    let attack = |from: &str| {
        let (own_ll, own_mac, victim_mac) = (link_local_address(from), mac_of(from), mac_of(&victim));
        for src in [own_ll.as_str(), near_ll.as_str()] {
            python(from, SEND6, &["ethwe", &victim_mac, &own_mac, "udp", src, &victim_ll, "5556"]);
        }
        advertise(from);
        let entry = neighbour6(&victim, &near_ll);
        let got = received(&socket, Duration::from_secs(2));
        assert!(got.iter().any(|m| *m == format!("from {own_ll}")), "{from}'s own datagrams arrive: {got:?}");
        (got.iter().filter(|m| **m == format!("from {near_ll}")).count(), entry)
    };
    let (forged, entry) = attack(&attacker);
    assert_eq!(forged, 0, "datagrams from the neighbour's address arrived");
    assert_eq!(entry, Some(near_mac), "the victim kept its neighbour's MAC");
    // Control: from the container the agent did not plug.
    assert!(attack(&bare).0 > 0, "forged datagrams from an unguarded port arrive");
    let bare_mac = mac_of(&bare);
    wait_for("the bare container's advertisement to take", Duration::from_secs(10), || {
        advertise(&bare);
        (neighbour6(&victim, &near_ll).as_deref() == Some(bare_mac.as_str())).then_some(())
    });
}

/// `python3 -c ADVERTISE IFACE`: three router advertisements to ff02::1 (high
/// preference, a /64 prefix for SLAAC, an RDNSS server), the audit's RA.
const ADVERTISE: &str = r#"
import socket, struct, sys
ifc = sys.argv[1]; idx = socket.if_nametoindex(ifc)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0x08, 1800, 0, 0)
pio = struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, '2001:db8:66::')
rdnss = struct.pack('!BBHI', 25, 3, 0, 1800) + socket.inet_pton(socket.AF_INET6, '2001:db8:66::1')
for _ in range(3): s.sendto(ra + pio + rdnss, ('ff02::1', 0, 0, idx))
"#;

/// What a router advertisement left in `ns`: its default route or SLAAC address.
fn advertised(ns: &str) -> Option<String> {
    let route = ok_in(ns, &["ip", "-6", "route", "show", "default"]);
    let addr = ok_in(ns, &["ip", "-6", "-o", "addr", "show", "scope", "global"]);
    let got = format!("{route}{addr}");
    (!got.trim().is_empty()).then_some(got)
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_workloads_router_advertisement_configures_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let attacker = attached_at(&mut bed, 0, "attacker").0;
    let hardened = attached_at(&mut bed, 1, "hardened").0;
    let local = bed.add_workload(0, "default");
    let remote = bed.add_workload(1, "default");
    let victims = [bed.workloads[local].ns.clone(), bed.workloads[remote].ns.clone(), hardened.clone()];
    for (key, want) in [("accept_ra", "0"), ("autoconf", "0")] {
        let got = ok_in(&hardened, &["cat", &format!("/proc/sys/net/ipv6/conf/ethwe/{key}")]);
        assert_eq!(got.trim(), want, "attach sets {key} in the container");
    }
    // The attacker needs its link-local address (an RA's source) out of DAD.
    wait_for("the attacker's link-local address", Duration::from_secs(10), || {
        let out = ok_in(&attacker, &["ip", "-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link"]);
        (!out.is_empty() && !out.contains("tentative")).then_some(())
    });
    ok_in(&attacker, &["python3", "-c", ADVERTISE, "ethwe"]);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        for v in &victims {
            assert_eq!(advertised(v), None, "{v} took the attacker's router advertisement");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Control: without the bridge rule (on both hosts) the same RA makes the
    // attacker the bare victims' router, locally and over VXLAN; the attached
    // container ignores it by its sysctls.
    for h in 0..2 {
        delete_rule(&bed.hosts[h].ns, "icmpv6 type { nd-router-advert, nd-redirect } drop");
    }
    for v in &victims[..2] {
        wait_for(&format!("{v} to take the RA without the rule"), Duration::from_secs(10), || {
            ok_in(&attacker, &["python3", "-c", ADVERTISE, "ethwe"]);
            advertised(v).filter(|got| got.contains("default via fe80") && got.contains("2001:db8:66:"))
        });
    }
    assert_eq!(advertised(&hardened), None, "the attached container ignores router advertisements");
}

/// `python3 -c FLAP IFACE MAC [DST]`: twenty frames with source MAC `MAC`:
/// to `DST` as LLDP, or else IPv6 (UDP to ff02::1 from IFACE's own
/// link-local address, which the source guard lets through: only the lock
/// keeps the port from learning `MAC`).
const FLAP: &str = r#"
import socket, struct, sys, time
ifc = sys.argv[1]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
mac = bytes.fromhex(sys.argv[2].replace(':', ''))
if len(sys.argv) > 3:
    frame = bytes.fromhex(sys.argv[3].replace(':', '')) + mac + b'\x88\xcc' + b'\0' * 46
else:
    own = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
    src = b'\xfe\x80' + b'\0' * 6 + bytes([own[0] ^ 2]) + own[1:3] + b'\xff\xfe' + own[3:6]
    ip6 = struct.pack('!IHBB', 6 << 28, 8, 17, 1) + src + bytes.fromhex('ff02' + '0' * 26 + '01')
    frame = b'\x33\x33\x00\x00\x00\x01' + mac + b'\x86\xdd' + ip6 + struct.pack('!HHHH', 40000, 9, 8, 0)
for _ in range(20):
    sock.send(frame); time.sleep(0.02)
"#;

/// The one port on host namespace `ns` the agent made for a workload.
fn workload_port(ns: &str) -> String {
    let all = links(ns);
    let ports: Vec<&String> = all
        .iter()
        .filter(|n| n.starts_with("wv") && !n.starts_with("wvvx-") && !n.starts_with("wvbr-") && *n != "wvtun0")
        .collect();
    assert_eq!(ports.len(), 1, "{all:?}");
    ports[0].clone()
}

/// The port `mac` is on in host namespace `ns`'s FDB, if any.
fn fdb_port(ns: &str, mac: &str) -> Option<String> {
    let fdb = ok_in(ns, &["bridge", "fdb", "show"]);
    fdb.lines().filter(|l| l.starts_with(mac) && l.contains(" master ")).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.iter().position(|x| *x == "dev").map(|i| f[i + 1].to_string())
    })
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_workload_spoofing_another_workloads_mac_moves_it_on_no_host() {
    let mut bed = Bed::with_hosts(2);
    let (attacker, victim) = (attached(&mut bed, 0, "attacker"), attached(&mut bed, 1, "victim"));
    let (a, v) = (bed.workloads[attacker].ns.clone(), bed.workloads[victim].ns.clone());
    let (h0, h1) = (bed.hosts[0].ns.clone(), bed.hosts[1].ns.clone());
    let (attacker_port, victim_port) = (workload_port(&h0), workload_port(&h1));
    let victim_mac = ok_in(&v, &["cat", "/sys/class/net/ethwe/address"]).trim().to_string();
    // Locked ports still carry their own workload's traffic, IPv4 and IPv6 (ND).
    bed.wait_ping(attacker, victim, Duration::from_secs(15));
    let ll = wait_for("the victim's link-local address", Duration::from_secs(10), || {
        let out = ok_in(&v, &["ip", "-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link"]);
        (!out.contains("tentative")).then(|| out.split_whitespace().nth(3)?.split('/').next().map(str::to_string))?
    });
    wait_for("the attacker to ping the victim's link-local address", Duration::from_secs(10), || {
        in_ns(&a, &["ping", "-6", "-c1", "-W1", &format!("{ll}%ethwe")]).status.success().then_some(())
    });
    assert_eq!(fdb_port(&h1, &victim_mac).as_deref(), Some(victim_port.as_str()), "pinned on its port");
    ok_in(&a, &["python3", "-c", FLAP, "ethwe", &victim_mac]);
    assert_ne!(fdb_port(&h0, &victim_mac), Some(attacker_port.clone()), "the attacker's host kept the victim's MAC");
    assert_eq!(fdb_port(&h1, &victim_mac), Some(victim_port.clone()), "the victim's host kept its MAC");
    // Nor as LLDP (01:80:c2:00:00:0e): a locked port that still learned
    // would learn a link-local frame's source before the lock is checked.
    ok_in(&a, &["python3", "-c", FLAP, "ethwe", &victim_mac, "01:80:c2:00:00:0e"]);
    assert_ne!(fdb_port(&h0, &victim_mac), Some(attacker_port.clone()), "LLDP moved the victim's MAC");
    // Control: with the attacker's port unlocked the same frames move the
    // victim's MAC to it on its own host; the victim's host keeps it (sticky).
    ok_in(
        &h0,
        &["ip", "link", "set", "dev", &attacker_port, "type", "bridge_slave", "locked", "off", "learning", "on"],
    );
    ok_in(&a, &["python3", "-c", FLAP, "ethwe", &victim_mac]);
    assert_eq!(fdb_port(&h0, &victim_mac), Some(attacker_port), "without the lock the spoof moves the MAC");
    assert_eq!(fdb_port(&h1, &victim_mac), Some(victim_port), "the sticky entry stays on the victim's port");
}

/// A container that took its neighbour's MAC and is attached again (attach
/// is idempotent and reads the container's MAC) is refused: the neighbour's
/// port keeps the lock on its MAC (found by a review: the re-attach moved it).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_reattach_with_another_workloads_mac_is_refused() {
    let mut bed = Bed::with_hosts(1);
    let (a, v) = (bed.add_container("a"), bed.add_container("v"));
    bed.weavectl_attach(0, &v, &[&format!("/run/netns/{v}")]);
    bed.weavectl_attach(0, &a, &[&format!("/run/netns/{a}")]);
    let h0 = bed.hosts[0].ns.clone();
    let victim_mac = ok_in(&v, &["cat", "/sys/class/net/ethwe/address"]).trim().to_string();
    let victim_port = fdb_port(&h0, &victim_mac).expect("the victim's MAC is locked to its port");
    ok_in(&a, &["ip", "link", "set", "dev", "ethwe", "address", &victim_mac]);
    let out = bed.weavectl(0, &["attach", &format!("/run/netns/{a}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the re-attach was accepted");
    assert!(stderr.contains(&format!("has MAC {victim_mac}, not")), "{stderr}");
    assert_eq!(fdb_port(&h0, &victim_mac), Some(victim_port), "the victim's MAC moved");
    // Nor with a remote workload's (only learned here, over VXLAN): its
    // port would have been locked to it, and the host's IPv6 to the remote
    // workload would have gone to it.
    let remote = workload_mac("10.32.99.99".parse().unwrap());
    ok_in(&a, &["ip", "link", "set", "dev", "ethwe", "address", &remote]);
    let out = bed.weavectl(0, &["attach", &format!("/run/netns/{a}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the MAC weave gives"), "{stderr}");
    assert_eq!(fdb_port(&h0, &remote), None, "a port holds the remote workload's MAC");
}

/// Nor with the MAC of its host's bridge (the one proxy ARP gives every
/// workload for remote addresses and the exposed one): the lock's
/// replacing add moved the bridge's own entry to the container's port, which
/// then took its neighbours' routed traffic, and the entry went with the
/// port at detach (found by a review). Refused, and the neighbour still
/// reaches a remote workload.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_reattach_with_the_bridges_mac_is_refused() {
    let mut bed = Bed::with_hosts(2);
    let (i, n, r) = (attached(&mut bed, 0, "a"), attached(&mut bed, 0, "n"), attached(&mut bed, 1, "r"));
    bed.wait_ping(n, r, Duration::from_secs(15));
    let (a, h0) = (bed.workloads[i].ns.clone(), bed.hosts[0].ns.clone());
    let bridge = interfaces(&h0).into_iter().find(|i| i.starts_with("wvbr-")).expect("a bridge");
    let bridge_mac = ok_in(&h0, &["cat", &format!("/sys/class/net/{bridge}/address")]).trim().to_string();
    assert_eq!(fdb_port(&h0, &bridge_mac).as_deref(), Some(bridge.as_str()), "the bridge's own entry");
    ok_in(&a, &["ip", "link", "set", "dev", "ethwe", "address", &bridge_mac]);
    let out = bed.weavectl(0, &["attach", &format!("/run/netns/{a}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the re-attach was accepted");
    assert!(stderr.contains(&format!("has MAC {bridge_mac}, not")), "{stderr}");
    assert_eq!(fdb_port(&h0, &bridge_mac).as_deref(), Some(bridge.as_str()), "the bridge's MAC moved");
    assert!(ping_within(&bed.workloads[n].ns, bed.workloads[r].ip, 5), "the neighbour lost the remote workload");
}

/// A container that showed its neighbour's address when detached does not
/// take the host's pinned neighbour entry for the neighbour with it: detach
/// unpins the address the container holds, not the one it shows (found by a
/// review: the host then had to ARP for the neighbour from an address outside
/// the subnet, which workloads with reverse-path filtering ignore).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_detach_after_taking_a_neighbours_address_leaves_the_neighbours_pin() {
    let mut bed = Bed::with_hosts(1);
    let (_, v_ip) = attached_at(&mut bed, 0, "v");
    let i = attached(&mut bed, 0, "a");
    let (a, a_ip, prefix) = (bed.workloads[i].ns.clone(), bed.workloads[i].ip, bed.workloads[i].prefix);
    let h0 = bed.hosts[0].ns.clone();
    let bridge = interfaces(&h0).into_iter().find(|i| i.starts_with("wvbr-")).expect("a bridge");
    let pinned =
        |ip: Ipv4Addr| ok_in(&h0, &["ip", "neigh", "show", &ip.to_string(), "dev", &bridge]).contains("PERMANENT");
    assert!(pinned(v_ip) && pinned(a_ip), "both workloads are pinned on {bridge}");
    ok_in(&a, &["ip", "addr", "flush", "dev", "ethwe"]);
    ok_in(&a, &["ip", "addr", "add", &format!("{v_ip}/{prefix}"), "dev", "ethwe"]);
    let out = bed.weavectl(0, &["detach", &format!("/run/netns/{a}")]);
    assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    assert!(pinned(v_ip), "the neighbour's pin went with the detach");
    assert!(!pinned(a_ip), "the detached container's own pin stayed");
}

/// Echo replies from other workloads to three pings to `ff02::1` from
/// workload `ns` (its own kernel answers too: not counted).
fn multicast_ping_replies(ns: &str) -> usize {
    let own = link_local_address(ns);
    let out = in_ns(ns, &["ping", "-6", "-c", "3", "-i", "0.2", "-w", "2", "ff02::1%ethwe"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| {
            let from = l.split(" bytes from ").nth(1)?;
            Some(from.split(['%', ' ']).next()?.trim_end_matches(':').to_string())
        })
        .filter(|from| *from != own)
        .count()
}

/// One ping to `ff02::1` got an echo reply from every workload of the
/// segment, on every host (each encrypted once per member host): a
/// container's small multicast ping flood came back several times over.
/// Now no echo request to an IPv6 multicast address enters a segment from a
/// weave port; unicast link-local pings still work. Control: without that
/// rule the same ping gets its replies.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_multicast_ping_from_a_workload_gets_no_echo_from_the_segment() {
    let mut bed = Bed::with_hosts(2);
    let (a, _) = attached_at(&mut bed, 0, "a");
    let (b, _) = attached_at(&mut bed, 0, "b");
    let (c, _) = attached_at(&mut bed, 1, "c");
    for peer in [&b, &c] {
        let to = link_local(peer);
        wait_for("a unicast link-local ping", Duration::from_secs(15), || {
            in_ns(&a, &["ping", "-6", "-c", "1", "-w", "2", &to]).status.success().then_some(())
        });
    }
    assert_eq!(multicast_ping_replies(&a), 0, "the segment answered a's multicast ping");
    // Control: without the rule (on both hosts), b and c answer.
    for h in 0..2 {
        let ns = bed.hosts[h].ns.clone();
        delete_rule(&ns, "ff00::/8 icmpv6 type echo-request");
    }
    assert!(multicast_ping_replies(&a) >= 2, "without the rule the segment did not answer: the test is void");
}

/// `python3 -c QUERY IFACE`: three MLDv2 general queries to ff02::1 and
/// three IGMPv2 membership queries to 224.0.0.1, from the workload's own
/// addresses (no router alert: the captures below read the headers plainly).
const QUERY: &str = r#"
import socket, struct, sys
ifc = sys.argv[1]; idx = socket.if_nametoindex(ifc)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
mld = struct.pack('!BBHHH', 130, 0, 0, 1000, 0) + bytes(16) + struct.pack('!BBH', 2, 125, 0)
for _ in range(3): s.sendto(mld, ('ff02::1', 0, 0, idx))
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
q = struct.pack('!BBH4s', 0x11, 100, 0, bytes(4))
q = struct.pack('!BBH4s', 0x11, 100, csum(q), bytes(4))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
r.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
r.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifc.encode())
for _ in range(3): r.sendto(q, ('224.0.0.1', 0))
"#;

/// Waits until workload `a` pings workload `c`'s link-local address: the
/// address (a source the guard allows) out of DAD, and the segment up
/// across hosts.
fn segment_up(a: &str, c: &str) {
    let to = link_local(c);
    wait_for("a unicast link-local ping from a to c", Duration::from_secs(15), || {
        in_ns(a, &["ping", "-6", "-c", "1", "-w", "2", &to]).status.success().then_some(())
    });
}

/// MLD and IGMP queries that reached `victims` while `attacker` sent
/// [`QUERY`]: (MLD, IGMP).
fn queries_seen(bed: &Bed, attacker: &str, victims: &[String]) -> (usize, usize) {
    let filter = "(icmp6 and ip6[40] == 130) or (igmp and ip[20] == 0x11)";
    let captures: Vec<Capture> =
        victims.iter().map(|v| Capture::start(v, "ethwe", filter, bed.path(&format!("query-{v}.pcap")))).collect();
    ok_in(attacker, &["python3", "-c", QUERY, "ethwe"]);
    std::thread::sleep(Duration::from_millis(500));
    let (mut mld, mut igmp) = (0, 0);
    for c in captures {
        let (v4, other) = read_pcap(&c.stop());
        igmp += v4.iter().filter(|p| p.protocol == 2).count();
        mld += other;
    }
    (mld, igmp)
}

/// A workload's MLD and IGMP general queries reached every workload of the
/// segment on every host, each of which answered with its reports (encrypted
/// once per member host): an amplifier, and a querier that steers the
/// bridges' multicast snooping. Now no query enters a segment from a weave
/// port. Control: without the two rules (on both hosts) the same queries
/// arrive, locally and over VXLAN.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workloads_multicast_queries_reach_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let (a, _) = attached_at(&mut bed, 0, "a");
    let (b, _) = attached_at(&mut bed, 0, "b");
    let (c, _) = attached_at(&mut bed, 1, "c");
    segment_up(&a, &c);
    let victims = [b, c];
    assert_eq!(queries_seen(&bed, &a, &victims), (0, 0), "a's queries reached the segment");
    for h in 0..2 {
        let ns = bed.hosts[h].ns.clone();
        delete_rule(&ns, "icmpv6 type mld-listener-query drop");
        delete_rule(&ns, "igmp type membership-query drop");
    }
    let (mld, igmp) = queries_seen(&bed, &a, &victims);
    assert!(mld >= 6 && igmp >= 6, "without the rules: {mld} MLD and {igmp} IGMP queries arrived of 6 each");
}

/// ARP from a workload tells it nothing of its host but the address the
/// host was exposed with on its subnet: the kernel answered for any of the
/// host's addresses (its underlay and node addresses too) at the bridge's
/// MAC. Now the bridges answer only for their own (`arp_ignore` 1).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workload_learns_no_host_address_but_the_exposed_one_by_arp() {
    let mut bed = Bed::with_hosts(1);
    let (a, a_ip) = attached_at(&mut bed, 0, "a");
    let out = bed.weavectl(0, &["expose", "net:default"]);
    assert!(out.status.success(), "expose: {}", String::from_utf8_lossy(&out.stderr));
    let exposed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let node = bed.status(0).unwrap().address.to_string();
    let (src, underlay) = (a_ip.to_string(), bed.hosts[0].ip.to_string());
    assert!(arp_answered(&a, "ethwe", &src, &exposed), "the exposed address is not answered: the test is void");
    for hidden in [&underlay, &node] {
        assert!(!arp_answered(&a, "ethwe", &src, hidden), "a workload learned the host's {hidden} by ARP");
    }
}

/// A workload that renames its interface before it is detached (or takes
/// its address off) was not found by detach, which then released its
/// address but left its port in the bridge, locked to the address's MAC and
/// guarded for it: the workload kept talking on the segment, answered for
/// whoever was given the address next, and every attach on its host was
/// refused ("MAC … is locked to another workload's port"), the lowest free
/// address being its own. Now detach deletes the host's end of the pair.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workload_that_hides_its_interface_is_still_detached_whole() {
    // No address hold: the next container gets the released address at once.
    let mut bed = Bed::with_hosts_and_coordinator_args(1, &["--address-hold", "0s"]);
    let (v, v_ip) = attached_at(&mut bed, 0, "v");
    let (a, _) = attached_at(&mut bed, 0, "a");
    ok_in(&v, &["ip", "link", "set", "ethwe", "down"]);
    ok_in(&v, &["ip", "link", "set", "ethwe", "name", "hide0"]);
    ok_in(&v, &["ip", "link", "set", "hide0", "up"]);
    let out = bed.weavectl(0, &["detach", &format!("/run/netns/{v}")]);
    assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !in_ns(&v, &["ip", "link", "show", "hide0"]).status.success(),
        "the renamed interface (and its port on host 1) outlived the detach: {:?}",
        links(&bed.hosts[0].ns)
    );
    // The next container on the host gets the released address, and works.
    let (n, n_ip) = attached_at(&mut bed, 0, "n");
    assert_eq!(n_ip, v_ip, "the released address went elsewhere: the test is void");
    assert!(ping_within(&n, bed.workloads.iter().find(|w| w.ns == a).unwrap().ip, 5), "n cannot reach a");
}

/// `python3 -c TAGGED IFACE DSTMAC SRCMAC SPA TPA DPORT` (after [`UDP_IP`]):
/// three times, an ARP reply "SPA is at SRCMAC" to DSTMAC and a UDP datagram
/// SPA -> TPA to DSTMAC, each in a frame from SRCMAC with an 802.1Q tag of
/// VLAN 0 (a priority tag, which the receiving kernel takes as no tag).
const TAGGED: &str = r#"
ifc, dmac, smac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), bytes.fromhex(sys.argv[3].replace(':', ''))
spa, tpa, dport = sys.argv[4], sys.argv[5], int(sys.argv[6])
tag = b'\x81\x00\x00\x00'
arp = struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + smac + socket.inet_aton(spa) + dmac + socket.inet_aton(tpa)
frame = udp_ip(spa, tpa, dport, f'tagged from {spa} to {tpa}'.encode())
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3):
    sock.send(dmac + smac + tag + b'\x08\x06' + arp)
    sock.send(dmac + smac + tag + b'\x08\x00' + frame)
"#;

/// A member host (root on a node that joined, with a workload of its own in
/// the segment: from other hosts, the receiving agents take no frame for the
/// segment, `e2e_flood`) writes frames straight into its VXLAN device, which
/// carries them through the tunnel into the segment on every other host: ARP "the neighbour is at my MAC" and IPv4 unicast
/// from the neighbour's address, both to a victim on another host. Untagged,
/// the bridge rules drop both at the remote VXLAN port. Tagged with VLAN 0,
/// every one of those rules read 0x8100 as the frame's type and let them
/// pass, and the victim's kernel took the tag as none: its ARP entry for
/// the neighbour moved to the member's MAC (all its traffic to the neighbour
/// went to the member) and the forged datagram arrived. Control: without
/// the rule that drops tagged frames on weave ports, the same frames do.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_member_sending_vlan_tagged_frames_over_vxlan_poisons_and_reaches_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let (own, own_ip) = attached_at(&mut bed, 0, "own");
    let (victim, victim_ip) = attached_at(&mut bed, 1, "victim");
    let (_near, near_ip) = attached_at(&mut bed, 1, "near");
    wait_for("the victim to reach its neighbour", Duration::from_secs(15), || {
        ping_once(&victim, near_ip).then_some(())
    });
    wait_for("the member's workload to reach the victim", Duration::from_secs(15), || {
        ping_once(&own, victim_ip).then_some(())
    });
    let near_mac = neighbour(&victim, near_ip).expect("the victim resolved its neighbour");
    // Any ARP reply may replace the victim's entry at once (no lock time).
    ok_in(&victim, &["sysctl", "-qw", "net.ipv4.neigh.ethwe.locktime=0"]);
    let member = bed.hosts[0].ns.clone();
    let vxlan = vxlan_device(&member);
    // From the MAC of the member's own workload: any other, the receiving
    // agent drops (`a_member_claiming_another_hosts_workload_mac…`).
    let (victim_mac, member_mac) = (mac_of(&victim), workload_mac(own_ip));
    let member_mac = member_mac.as_str();
    let socket = bind(&victim);
    let attack = || {
        let (spa, tpa, port) = (near_ip.to_string(), victim_ip.to_string(), PORT.to_string());
        python(&member, TAGGED, &[&vxlan, &victim_mac, member_mac, &spa, &tpa, &port]);
        let got = received(&socket, Duration::from_secs(2));
        (got.iter().filter(|m| m.starts_with("tagged from")).count(), neighbour(&victim, near_ip))
    };
    let (datagrams, entry) = attack();
    assert_eq!(datagrams, 0, "no tagged datagram from a forged source arrived");
    assert_eq!(entry.as_deref(), Some(near_mac.as_str()), "the victim kept its neighbour's MAC");
    // Control: without the rule on the victim's host, the same frames arrive.
    delete_rule(&bed.hosts[1].ns, "ether type != { ip, arp, ip6 } drop");
    let (datagrams, entry) = attack();
    assert!(datagrams > 0, "the tagged datagrams arrive without the rule");
    assert_eq!(entry.as_deref(), Some(member_mac), "and the tagged ARP reply moves the victim's entry");
}

/// `python3 -c FLOOD IFACE N`: N broadcast frames (local experimental
/// ethertype 0x88b5), each from a source MAC of its own, paced in bursts.
const FLOOD: &str = r#"
import socket, struct, sys, time
ifc, n = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for i in range(n):
    sock.send(b'\xff' * 6 + b'\x02\x77' + struct.pack('!I', i) + b'\x88\xb5' + b'flood' * 10)
    if i % 1000 == 999: time.sleep(0.01)
"#;

/// A member host writes frames from ever new source MACs into its VXLAN
/// device: every other host's VXLAN device and bridge learned each one (for
/// 300 s), kernel memory without bound on all of them. Then each learned at
/// most `SEGMENT_LEARNED_MACS` (a cap kept, also where an older agent made
/// the segment: the victim's bridge and VXLAN device are first replaced by
/// ones without the caps, as an older agent left them, and the agent's next
/// full pass makes the VXLAN device again and caps the bridge in place).
/// Now the receiving agent takes from a member only frames from its own
/// workloads' MACs or its bridges': it learns none of the flood's, counts
/// them, and the segment still carries L2 unicast across hosts.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_member_flooding_new_macs_over_vxlan_fills_no_hosts_tables() {
    const LIMIT: usize = 4096; // plan/kernel.rs SEGMENT_LEARNED_MACS
    let mut bed = Bed::with_hosts(2);
    let (a, _) = attached_at(&mut bed, 0, "a");
    let (b, b_ip) = attached_at(&mut bed, 1, "b");
    wait_for("a to reach b", Duration::from_secs(15), || ping_once(&a, b_ip).then_some(()));
    let (member, victim) = (bed.hosts[0].ns.clone(), bed.hosts[1].ns.clone());
    let vxlan = vxlan_device(&member);
    let bridge = vxlan.replace("wvvx-", "wvbr-");
    // As an older agent left them: a bridge and a VXLAN device without caps
    // (b's port back in the bridge).
    let details = ok_in(&victim, &["ip", "-d", "link", "show", &vxlan]);
    let after = |key: &str| details.split_whitespace().skip_while(|w| *w != key).nth(1).map(str::to_string);
    let (vni, local) = (after("id").expect("a VNI"), after("local").expect("a local address"));
    let port = workload_port(&victim);
    let script = format!(
        "ip link del {vxlan} && ip link del {bridge} && ip link add {bridge} type bridge && \
         ip link add {vxlan} type vxlan id {vni} local {local} dstport 4789 && \
         ip link set {vxlan} master {bridge} up && ip link set {port} master {bridge} && ip link set {bridge} up"
    );
    ok_in(&victim, &["sh", "-c", &script]);
    assert!(!ok_in(&victim, &["ip", "-d", "link", "show", &vxlan]).contains("maxaddr"), "an uncapped VXLAN device");
    wait_for("the agent to make the VXLAN device again, capped", Duration::from_secs(45), || {
        // Between its removal and the new one, there is none.
        let shown = in_ns(&victim, &["ip", "-d", "link", "show", &vxlan]);
        String::from_utf8_lossy(&shown.stdout).contains(&format!("maxaddr {LIMIT}")).then_some(())
    });
    wait_for("a to reach b again", Duration::from_secs(15), || ping_once(&a, b_ip).then_some(()));
    let spoofed = || total(&scrape(&victim), "weave_spoofed_packets_dropped_total");
    let before = spoofed();
    ok_in(&member, &["python3", "-c", FLOOD, &vxlan, &(3 * LIMIT).to_string()]);
    let learned = || {
        let fdb = ok_in(&victim, &["bridge", "fdb", "show", "dev", &vxlan]);
        let flooded = |l: &&str| l.starts_with("02:77:");
        let in_vxlan = fdb.lines().filter(flooded).filter(|l| l.contains(" dst ")).count();
        (in_vxlan, fdb.lines().filter(flooded).filter(|l| l.contains(" master ")).count())
    };
    // The flood reached the victim's agent (two debug agents carry it, so it
    // may take a while on a loaded machine) ...
    wait_for("the victim's agent to drop most of the flood", Duration::from_secs(30), || {
        (spoofed() >= before + (LIMIT / 2) as f64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    // ... and not one of its MACs was learned.
    assert_eq!(learned(), (0, 0), "the flood's MACs learned (vxlan, bridge)");
    // L2 unicast across hosts (IPv6 link-local, over VXLAN) still works.
    let b_ll = link_local(&b);
    wait_for("a to reach b's link-local address", Duration::from_secs(15), || {
        in_ns(&a, &["ping", "-6", "-c", "1", "-W", "1", &b_ll]).status.success().then_some(())
    });
}

/// On a two-host bed: a workload of the member (host 0) and, on host 1, a
/// victim and its neighbour, all attached by their agents, once the
/// member's reaches the victim: (the member's workload's address, (the
/// victim's namespace, its address), the neighbour's address).
fn member_and_victim(bed: &mut Bed) -> (Ipv4Addr, (String, Ipv4Addr), Ipv4Addr) {
    let (own, own_ip) = attached_at(bed, 0, "own");
    let (victim, victim_ip) = attached_at(bed, 1, "victim");
    let (_near, near_ip) = attached_at(bed, 1, "near");
    wait_for("the member's workload to reach the victim", Duration::from_secs(15), || {
        ping_once(&own, victim_ip).then_some(())
    });
    (own_ip, (victim, victim_ip), near_ip)
}

/// A member host writes IPv4 broadcast frames into its VXLAN device (the
/// way a segment's broadcast and multicast cross hosts) with the source of
/// a workload on the receiving host. The kernel's VXLAN device cannot tell
/// which host a frame came from, and the bridge rules let IPv4 broadcast
/// pass: the receiving workload took the datagram from its neighbour's
/// address (and would answer it there). Now the receiving agent drops a
/// VXLAN frame whose IPv4 source is not one of the sending peer's
/// addresses (`weave_spoofed_packets_dropped_total`); one from the member's
/// own workload arrives as before.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_member_broadcasting_over_vxlan_from_another_hosts_workload_reaches_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let (own_ip, (victim, victim_ip), near_ip) = member_and_victim(&mut bed);
    let member = bed.hosts[0].ns.clone();
    let vxlan = vxlan_device(&member);
    let socket = bind(&victim);
    let spoofed = || total(&scrape(&bed.hosts[1].ns), "weave_spoofed_packets_dropped_total");
    let before = spoofed();
    // Every frame from the MAC of the member's own workload (any other the
    // receiving agent drops whatever its IPv4 source).
    let own_mac = workload_mac(own_ip);
    let broadcast = |src: Ipv4Addr| {
        let (src, port) = (src.to_string(), PORT.to_string());
        python(&member, SEND_IN_BROADCAST, &[&vxlan, &src, "255.255.255.255", &port, &own_mac]);
    };
    broadcast(near_ip);
    broadcast(victim_ip);
    broadcast(own_ip);
    let got = received(&socket, Duration::from_secs(2));
    let from = |ip: Ipv4Addr| got.iter().filter(|m| m.starts_with(&format!("from {ip} "))).count();
    assert!(from(own_ip) > 0, "the member's own workload's broadcast arrives: {got:?}");
    assert_eq!((from(near_ip), from(victim_ip)), (0, 0), "no broadcast from the victim host's workloads: {got:?}");
    wait_for("the victim's agent to count the forged frames", Duration::from_secs(10), || {
        (spoofed() >= before + 6.0).then_some(())
    });
}

/// A member host writes frames into its VXLAN device from the MAC of a
/// workload on a third host (weave makes every workload's MAC from its
/// address, so the member can name it; before, the MAC of any workload it
/// had heard). The victim's host learned that MAC behind the member, in its
/// VXLAN device and its bridge, and its workloads' non-IPv4 unicast to the
/// third host's workload (their IPv6) went to the member until the
/// workload spoke again. Now the victim's agent takes from a member only
/// frames from its own workloads' MACs (or its bridges'): the forged ones
/// are counted, not learned, and the victim's IPv6 reaches its neighbour.
/// Control: the same datagrams from the member's own workload's MAC arrive.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_member_claiming_another_hosts_workload_mac_over_vxlan_is_not_learned() {
    let mut bed = Bed::with_hosts(3);
    let (own, own_ip) = attached_at(&mut bed, 0, "own");
    let (victim, victim_ip) = attached_at(&mut bed, 1, "victim");
    let (target, target_ip) = attached_at(&mut bed, 2, "target");
    for (ns, ip) in [(&own, own_ip), (&victim, victim_ip), (&target, target_ip)] {
        assert_eq!(mac_of(ns), workload_mac(ip), "attach gives {ns} the MAC made from its address");
    }
    wait_for("the member's workload to reach the victim", Duration::from_secs(15), || {
        ping_once(&own, victim_ip).then_some(())
    });
    let target_ll = link_local(&target);
    let ping6 = || in_ns(&victim, &["ping", "-6", "-c", "1", "-W", "1", &target_ll]).status.success();
    wait_for("the victim to reach the target over IPv6", Duration::from_secs(15), || ping6().then_some(()));
    let (member, host) = (bed.hosts[0].ns.clone(), bed.hosts[1].ns.clone());
    let member_node = bed.wait_status(0).address.to_string();
    let vxlan = vxlan_device(&member);
    // Whether the victim's host holds `mac` behind the member (its VXLAN
    // device's entry; its bridge's then points at the VXLAN device).
    let behind_member = |mac: &str| {
        let fdb = ok_in(&host, &["bridge", "fdb", "show", "dev", &vxlan]);
        fdb.lines().any(|l| l.starts_with(mac) && l.contains(&format!(" dst {member_node} ")))
    };
    let socket = bind(&victim);
    let spoofed = || total(&scrape(&host), "weave_spoofed_packets_dropped_total");
    let before = spoofed();
    let (target_mac, own_mac) = (workload_mac(target_ip), workload_mac(own_ip));
    let send_from = |mac: &str| {
        let (src, port) = (own_ip.to_string(), PORT.to_string());
        python(&member, SEND_IN_BROADCAST, &[&vxlan, &src, "255.255.255.255", &port, mac]);
        received(&socket, Duration::from_secs(2)).len()
    };
    assert_eq!(send_from(&target_mac), 0, "datagrams from the target's MAC arrived");
    assert!(!behind_member(&target_mac), "the victim's host learned the target's MAC behind the member");
    wait_for("the victim's agent to count the forged frames", Duration::from_secs(10), || {
        (spoofed() >= before + 3.0).then_some(())
    });
    // (A few tries: one ping may be lost on a loaded machine; a learned
    // hijack would hold until the target speaks, which it does only to
    // answer.)
    assert!((0..3).any(|_| ping6()), "the victim's IPv6 to the target went astray");
    // Nor, from its own workload's MAC, "the target's address is at my MAC"
    // (the neighbour discovery twin of a forged ARP reply).
    let (own_ll, target_addr) = (link_local_address(&own), link_local_address(&target));
    assert_eq!(neighbour6(&victim, &target_addr), Some(target_mac.clone()), "the victim resolved the target");
    let before = spoofed();
    python(&member, SEND6, &[&vxlan, "33:33:00:00:00:01", &own_mac, "na", &own_ll, "ff02::1", &target_addr]);
    wait_for("the victim's agent to count the forged advertisements", Duration::from_secs(10), || {
        (spoofed() >= before + 3.0).then_some(())
    });
    assert_eq!(neighbour6(&victim, &target_addr), Some(target_mac), "the victim kept the target's MAC");
    assert!(send_from(&own_mac) > 0, "the member's own workload's datagrams arrive");
    assert!(behind_member(&own_mac), "and its MAC is learned behind the member");
}

/// `python3 -c FRAGMENTS ETH DSTMAC TUN SRC DST VNI FORGED DPORT ID` (after
/// [`UDP_IP`]): a VXLAN datagram SRC:40000 -> DST:4789 (VNI) carrying a
/// broadcast frame with a UDP datagram from FORGED to DPORT, as two IPv4
/// fragments: the first (headers and the start of the frame) out of ETH to
/// DSTMAC (the underlay), then the last into TUN (the member's agent carries
/// it through the tunnel): the fragment that completes a datagram gives it
/// its interface. Both by packet sockets, past the member's own netfilter
/// (which would hold its outgoing fragments for reassembly); IP id ID, a
/// new one each attempt (a fragment left waiting by an earlier attempt
/// would complete the next one on the underlay side).
const FRAGMENTS: &str = r#"
eth, dmac, tun, src, dst, vni, forged, dport, ident = sys.argv[1:10]
ident = int(ident)
mac = bytes.fromhex(open(f'/sys/class/net/{eth}/address').read().strip().replace(':', ''))
inner = udp_ip(forged, '255.255.255.255', int(dport), f'fragmented from {forged}'.encode())
frame = b'\xff' * 6 + b'\x02\x00\x00\x77\x77\x77' + b'\x08\x00' + inner
vxlan = struct.pack('!II', 0x08000000, int(vni) << 8) + frame
data = struct.pack('!HHHH', 40000, 4789, 8 + len(vxlan), 0) + vxlan
def frag(offset, more, part):
    flags = (0x2000 if more else 0) | (offset // 8)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(part), ident, flags, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack('!10H', ip)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ip[:10] + struct.pack('!H', ~s & 0xffff) + ip[12:] + part
under = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); under.bind((eth, 0))
under.send(bytes.fromhex(dmac.replace(':', '')) + mac + b'\x08\x00' + frag(0, True, data[:48]))
time.sleep(0.1)
tunnel = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM); tunnel.bind((tun, 0x0800))
tunnel.sendto(frag(48, False, data[48:]), (tun, 0x0800))
"#;

/// The attack on the VXLAN check above that a review found: a member sends
/// a VXLAN datagram's first fragment (node address to node address, the
/// frame's forged source inside) straight over the underlay, and its last
/// fragment through the tunnel, where the router cannot read a frame in a
/// fragment without a header. The kernel joins fragments by addresses and
/// id whatever interface each came in on, and did so before the rule that
/// drops overlay addresses from the underlay (at raw priority, after
/// defragmentation): the whole datagram then counted as from the tunnel and
/// the neighbour's forged broadcast reached the victim. Now that rule judges
/// each fragment before defragmentation. Control: with the chain back at
/// raw priority, the forged datagram arrives.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_member_splitting_forged_vxlan_between_underlay_and_tunnel_reaches_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let (_, (victim, _), near_ip) = member_and_victim(&mut bed);
    let (member, host) = (bed.hosts[0].ns.clone(), bed.hosts[1].ns.clone());
    let vni = vxlan_device(&member).trim_start_matches("wvvx-").to_string();
    let (from, to) = (bed.wait_status(0).address.to_string(), bed.wait_status(1).address.to_string());
    let host_mac = ok_in(&host, &["cat", "/sys/class/net/eth0/address"]).trim().to_string();
    let socket = bind(&victim);
    let attempts = std::cell::Cell::new(0x1000);
    let attack = || {
        attempts.set(attempts.get() + 1);
        let (forged, port, ident) = (near_ip.to_string(), PORT.to_string(), attempts.get().to_string());
        let args = ["eth0", &host_mac, "wvtun0", &from, &to, &vni, &forged, &port, &ident];
        python(&member, FRAGMENTS, &args);
        let got = received(&socket, Duration::from_secs(2));
        got.iter().filter(|m| m.starts_with("fragmented from")).count()
    };
    assert_eq!(attack(), 0, "the forged broadcast, split between underlay and tunnel, arrived");
    // Control: the chain at raw priority (after defragmentation), as before
    // (the agent's 10 s check puts back only a missing table; its full pass
    // replaces the chain, which may fall in between: so up to three times).
    let raw = "delete chain inet weave prerouting\n\
               add chain inet weave prerouting { type filter hook prerouting priority raw; policy accept; }\n\
               add rule inet weave prerouting iifname { \"lo\", \"wvtun0\" } accept\n\
               add rule inet weave prerouting iifname \"wvbr-*\" accept\n\
               add rule inet weave prerouting ip daddr @overlay drop\n\
               add rule inet weave prerouting ip saddr @overlay drop\n";
    let arrived = (0..3).any(|_| {
        let script = format!("printf '%s' '{raw}' | nft -f -");
        ok_in(&host, &["sh", "-c", &script]);
        attack() > 0
    });
    assert!(arrived, "the split datagram did not arrive even after defragmentation: the test is void");
}

/// The weave bridges in host namespace `ns`.
fn weave_bridges(ns: &str) -> Vec<String> {
    let out = ok_in(ns, &["ip", "-o", "link", "show", "type", "bridge"]);
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("wvbr"))
        .collect()
}

/// Groups in the multicast tables of `ns`'s bridges, and whether any weave bridge snoops.
fn mdb_and_snooping(ns: &str) -> (usize, bool) {
    let groups = ok_in(ns, &["bridge", "mdb", "show"]).lines().filter(|l| l.contains(" grp ")).count();
    let snooping = weave_bridges(ns)
        .iter()
        .any(|b| ok_in(ns, &["ip", "-d", "link", "show", "dev", b]).contains("mcast_snooping 1"));
    (groups, snooping)
}

/// Sockets in workload `ns` that joined `n` groups 239.77.x.y on `ip`'s
/// interface (20 each: `igmp_max_memberships`).
fn join_groups(ns: &str, ip: Ipv4Addr, n: u16, first: u16) -> Vec<UdpSocket> {
    in_netns(ns, move || {
        let mut sockets = Vec::new();
        for i in first..first + n {
            if (i - first).is_multiple_of(20) {
                sockets.push(UdpSocket::bind("0.0.0.0:0").unwrap());
            }
            let group = Ipv4Addr::new(239, 77, (i >> 8) as u8, i as u8);
            sockets.last().unwrap().join_multicast_v4(&group, &ip).unwrap();
        }
        sockets
    })
    .join()
    .unwrap()
}

/// One container's IGMP reports filled the multicast table of its
/// segment's bridge on every host (4,096 groups; they flood over VXLAN),
/// and a full table switched snooping off for good. Snooping steered nothing
/// (no querier on a segment), so the agent turns it off: a container's joins
/// fill no table on any host. Control: with snooping turned back on by hand,
/// the same joins fill the tables, and the agent's next full pass turns it
/// off again.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workloads_group_joins_fill_no_table() {
    let mut bed = Bed::with_hosts(2);
    let (a, a_ip) = attached_at(&mut bed, 0, "a");
    let (c, _) = attached_at(&mut bed, 1, "c");
    segment_up(&a, &c);
    let hosts: Vec<String> = bed.hosts.iter().map(|h| h.ns.clone()).collect();
    let joined = join_groups(&a, a_ip, 300, 0);
    std::thread::sleep(Duration::from_secs(2));
    for h in &hosts {
        assert_eq!(mdb_and_snooping(h), (0, false), "{h}: a container's joins filled a table");
    }
    drop(joined);

    // Control: snooping on by hand, and the joins are in the tables.
    for h in &hosts {
        for b in weave_bridges(h) {
            ok_in(h, &["ip", "link", "set", "dev", &b, "type", "bridge", "mcast_snooping", "1"]);
        }
    }
    let _joined = join_groups(&a, a_ip, 300, 1000);
    wait_for("the joins in host 0's table, with snooping on", Duration::from_secs(10), || {
        (mdb_and_snooping(&hosts[0]).0 >= 300).then_some(())
    });
    // The agents' next full pass (every 30 s) turns it off again.
    for h in &hosts {
        wait_for("snooping off again", Duration::from_secs(40), || (mdb_and_snooping(h) == (0, false)).then_some(()));
    }
}

/// `python3 -c OTHER_PROTOCOLS IFACE SRC DST` (after [`UDP_IP`]): broadcast
/// frames of other protocols, each carrying an IPv4 datagram SRC -> DST:
/// local experimental (0x88b5), MPLS (one label), PPPoE session, and an
/// 802.3 frame with LLC/SNAP.
const OTHER_PROTOCOLS: &str = r#"
ifc, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
mac = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
ip = udp_ip(src, dst, 9, b'other protocol')
head = b'\xff' * 6 + mac
frames = [
    head + b'\x88\xb5' + ip,
    head + b'\x88\x47' + struct.pack('!I', (16 << 12) | (1 << 8) | 64) + ip,
    head + b'\x88\x64' + struct.pack('!BBHH', 0x11, 0, 1, len(ip) + 2) + b'\x00\x21' + ip,
    head + struct.pack('!H', len(ip) + 8) + b'\xaa\xaa\x03\x00\x00\x00\x08\x00' + ip,
]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); sock.bind((ifc, 0))
for _ in range(3):
    for f in frames: sock.send(f)
"#;

/// Frames of other protocols than IPv4, ARP and IPv6 that `victims` saw
/// while `attacker` (at `src`) sent [`OTHER_PROTOCOLS`] to `dst`.
fn other_protocols_seen(bed: &Bed, attacker: &str, src: Ipv4Addr, dst: Ipv4Addr, victims: &[String]) -> usize {
    let filter = "ether proto 0x88b5 or ether proto 0x8847 or ether proto 0x8864 or ether[12:2] <= 1500";
    let captures: Vec<Capture> =
        victims.iter().map(|v| Capture::start(v, "ethwe", filter, bed.path(&format!("other-{v}.pcap")))).collect();
    python(attacker, OTHER_PROTOCOLS, &["ethwe", &src.to_string(), &dst.to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    captures.into_iter().map(|c| read_pcap(&c.stop()).1).sum()
}

/// A workload's frames of other protocols (local experimental, MPLS,
/// PPPoE, LLC/SNAP), each carrying an IPv4 packet from another workload's
/// address, reached every workload of its segment on every host: the
/// source guard reads IPv4 only where the frame says IPv4. Now a weave port
/// carries IPv4, ARP and IPv6 only. Control: without that rule the frames
/// arrive, locally and over VXLAN.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workloads_frames_of_other_protocols_reach_no_workload() {
    let mut bed = Bed::with_hosts(2);
    let (a, _) = attached_at(&mut bed, 0, "a");
    let (b, b_ip) = attached_at(&mut bed, 0, "b");
    let (c, c_ip) = attached_at(&mut bed, 1, "c");
    segment_up(&a, &c);
    let victims = [b, c];
    assert_eq!(other_protocols_seen(&bed, &a, b_ip, c_ip, &victims), 0, "frames of other protocols arrived");
    for h in 0..2 {
        let ns = bed.hosts[h].ns.clone();
        delete_rule(&ns, "ether type != { ip, arp, ip6 } drop");
    }
    let seen = other_protocols_seen(&bed, &a, b_ip, c_ip, &victims);
    assert!(seen >= 24, "without the rule: {seen} frames arrived of 12 to each victim");
}

/// `python3 -c FIRST_FRAGMENTS IFACE SRC4 SRC6 COUNT`: COUNT first
/// fragments (more to come, never sent) of 1,200-byte UDP datagrams each
/// to 239.1.2.3 in an IPv4 multicast frame and to ff02::1 in an IPv6 one,
/// from IFACE's own MAC and the given addresses, each with its own id.
const FIRST_FRAGMENTS: &str = r#"
import socket, struct, sys
ifc, src4, src6, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mac = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifc, 0))
body = b'\0' * 1200
for i in range(count):
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(body), i + 1, 0x2000, 1, 17, 0,
                     socket.inet_aton(src4), socket.inet_aton('239.1.2.3'))
    c = sum(struct.unpack('!10H', ip)); c = (c >> 16) + (c & 0xffff); c += c >> 16
    ip = ip[:10] + struct.pack('!H', ~c & 0xffff) + ip[12:]
    s.send(b'\x01\x00\x5e\x01\x02\x03' + mac + b'\x08\x00' + ip + body)
    frag = struct.pack('!BBHI', 17, 0, 1, i + 1)
    ip6 = struct.pack('!IHBB16s16s', 6 << 28, len(frag) + len(body), 44, 1,
                      socket.inet_pton(socket.AF_INET6, src6), socket.inet_pton(socket.AF_INET6, 'ff02::1'))
    s.send(b'\x33\x33\x00\x00\x00\x01' + mac + b'\x86\xdd' + ip6 + frag + body)
"#;

/// Fragments a namespace holds for reassembly: (IPv4, IPv6).
fn fragments_held(ns: &str) -> (u64, u64) {
    let inuse = |file: &str, key: &str| {
        let stat = ok_in(ns, &["cat", file]);
        let line = stat.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_string();
        line.split_whitespace().skip_while(|w| *w != "inuse").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    (inuse("/proc/net/sockstat", "FRAG:"), inuse("/proc/net/sockstat6", "FRAG6:"))
}

/// A container's first fragments in multicast frames, never completed,
/// reached every host of its segment and every workload there, each of
/// which held them for reassembly up to 30 s in the one pool its namespace
/// has: 2,000 of them (2.7 MB, sent once) filled it, and large fragmented
/// packets were dropped there while it was full (found by a review,
/// 2026-12-06). Now none enters from a weave port: no host and no other
/// workload holds one. Whole multicast datagrams still reach the segment
/// (`e2e_isolation` `multicast_reaches_its_subnet_on_every_host_and_no_other`).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_workloads_multicast_fragments_are_held_nowhere() {
    let mut bed = Bed::with_hosts(2);
    let (a, a_ip) = attached_at(&mut bed, 0, "a");
    let (b, _) = attached_at(&mut bed, 1, "b");
    let (c, _) = attached_at(&mut bed, 0, "c");
    segment_up(&a, &b);
    segment_up(&a, &c);
    let a6 = link_local_address(&a);
    // Bridged frames past netfilter's own reassembly, as on hosts without
    // `br_netfilter` (with it, the host's bridged path holds them instead,
    // IPv6 ones in a pool of netfilter's that no counter shows).
    for h in &bed.hosts {
        for family in ["iptables", "ip6tables"] {
            let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
            ok_in(&h.ns, &["sh", "-c", &format!("[ ! -e {knob} ] || echo 0 > {knob}")]);
        }
    }
    let others = [b.clone(), c.clone(), bed.hosts[0].ns.clone(), bed.hosts[1].ns.clone()];
    for ns in &others {
        assert_eq!(fragments_held(ns), (0, 0), "{ns} before");
    }
    ok_in(&a, &["python3", "-c", FIRST_FRAGMENTS, "ethwe", &a_ip.to_string(), &a6, "200"]);
    std::thread::sleep(Duration::from_millis(500));
    for ns in &others {
        assert_eq!(fragments_held(ns), (0, 0), "{ns} holds a's fragments");
    }
}
