//! A path with a smaller MTU in the middle: host 1 on the underlay bridge
//! (1500), host 2 behind two routers joined by a 1280-byte link, its own
//! link 1500 too. Neither host sees the 1280 bytes on its interfaces; the
//! tunnel's datagrams (1480 bytes) meet the narrow link, the routers answer
//! "fragmentation needed", and the hosts fragment from then on. And both
//! containers were left at MTU 1500 (as a runtime that ignores the segment's
//! MTU leaves them): their TCP segments would not fit the tunnel, and the
//! host's "too big" cannot reach them (the isolation rules drop the host's
//! packets into a segment it is not exposed on). The TUN's MSS clamping
//! makes both ends send segments that fit: TCP transfers both ways complete
//! without stalling. (Without the clamp this test stalls.)
mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{underlay::*, *};

#[test]
#[ignore = "needs root: network namespaces"]
fn tcp_does_not_stall_across_a_1280_byte_link_nor_between_1500_byte_containers() {
    let mut bed = Bed::new();
    bed.add_host();
    // 192.0.2.1 (r1) == 1280 == r2 -- 198.51.100.0/24 (host 2).
    let r1 = bed.add_router("r1", Ipv4Addr::new(192, 0, 2, 1));
    let r2 = bed.add_bare_ns("r2");
    ok_in(&r2, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    bed.link((&r1, "mid", "203.0.113.1/30"), (&r2, "mid", "203.0.113.2/30"), 1280);
    ok_in(&r1, &["ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.2"]);
    ok_in(&r2, &["ip", "route", "add", "default", "via", "203.0.113.1"]);
    for ns in [bed.coordinator_ns.clone(), bed.hosts[0].ns.clone()] {
        ok_in(&ns, &["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);
    }
    let h2 = bed.add_host_behind(&r2, Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(198, 51, 100, 12));
    bed.wait_peers(0, 1);
    bed.wait_peers(h2, 1);
    let mtu = |ns: &str| ok_in(ns, &["cat", "/sys/class/net/eth0/mtu"]).trim().to_string();
    assert_eq!((mtu(&bed.hosts[0].ns), mtu(&bed.hosts[h2].ns)), ("1500".into(), "1500".into()));

    let w1 = bed.add_workload(0, "default");
    let w2 = bed.add_workload(h2, "default");
    // Both containers at 1500, both ends of their veths: each announces an
    // MSS of 1460, more than the tunnel carries.
    for w in [w1, w2] {
        let (ns, port, host) = (bed.workloads[w].ns.clone(), format!("wl{}", w + 1), bed.workloads[w].host);
        ok_in(&ns, &["ip", "link", "set", "ethwe", "mtu", "1500"]);
        ok_in(&bed.hosts[host].ns, &["ip", "link", "set", &port, "mtu", "1500"]);
    }
    bed.wait_ping(w1, w2, Duration::from_secs(15));

    const TOTAL: usize = 10 << 20;
    // Bytes over the 1280-byte link, both ways, read at r1's end of it.
    let mid = |dir: &str| -> u64 {
        ok_in(&r1, &["cat", &format!("/sys/class/net/mid/statistics/{dir}_bytes")]).trim().parse().unwrap()
    };
    let before = mid("tx") + mid("rx");
    let (a, b) = (&bed.workloads[w1], &bed.workloads[w2]);
    for (from, to, what) in [(a, b, "from host 1's container"), (b, a, "from host 2's container")] {
        let took = tcp_transfer(&from.ns, &to.ns, to.ip, 5201, TOTAL, Duration::from_secs(20));
        eprintln!(
            "10 MB {what} across the 1280-byte link: {:.0} Mbit/s",
            TOTAL as f64 * 8.0 / took.as_secs_f64() / 1e6
        );
    }
    // Both transfers crossed the narrow link (not some other path).
    let crossed = mid("tx") + mid("rx") - before;
    assert!(crossed >= 2 * TOTAL as u64, "only {crossed} bytes crossed the 1280-byte link");
    // How the hosts met it, for the log: the routers' "fragmentation needed"
    // answers and host 1's route (a learned path MTU is a route-cache
    // exception that any route change on the host flushes, so it is not
    // asserted).
    let too_big = |ns: &str| icmp_out_dest_unreachs(&ok_in(ns, &["cat", "/proc/net/snmp"]));
    let route = ok_in(&bed.hosts[0].ns, &["ip", "route", "get", "198.51.100.12"]);
    eprintln!("fragmentation needed sent: r1 {}, r2 {}; host 1: {}", too_big(&r1), too_big(&r2), route.trim());
}

/// `Icmp: OutDestUnreachs` from a `/proc/net/snmp` text.
fn icmp_out_dest_unreachs(snmp: &str) -> u64 {
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap_or(""), icmp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDestUnreachs")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Icmp OutDestUnreachs in /proc/net/snmp")
}
