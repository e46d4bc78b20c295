//! A dual-stack underlay: every host has 192.0.2.N and 2001:db8::N and
//! advertises both (IPv4 first). Two hosts connect over IPv4; then the IPv4
//! path between them is cut (the underlay switch drops IPv4 between exactly
//! these two; the coordinator stays reachable). Containers keep pinging:
//! within 10 s traffic runs again, over IPv6.
mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;

#[test]
#[ignore = "needs root: network namespaces"]
fn traffic_falls_back_to_ipv6_within_10s_when_the_ipv4_path_is_cut() {
    let mut bed = Bed::with_hosts_on(Underlay::Dual, 2);
    let (w1, w2) = (bed.add_workload(0, "default"), bed.add_workload(1, "default"));
    bed.wait_ping(w1, w2, Duration::from_secs(15));
    let endpoint = |bed: &Bed, i: usize| bed.status(i).unwrap().peers[0].endpoint.unwrap();
    let v4: SocketAddr = bed.hosts[1].endpoint().parse().unwrap();
    assert_eq!(endpoint(&bed, 0), v4, "connected over IPv4 first");

    let (a, b) = (bed.hosts[0].ip, bed.hosts[1].ip);
    let rules = format!(
        "table bridge cut {{\n chain forward {{\n type filter hook forward priority 0;\n \
         ip saddr {a} ip daddr {b} drop\n ip saddr {b} ip daddr {a} drop\n }}\n}}\n"
    );
    ok_in(&bed.underlay, &["nft", &rules]);
    let cut = std::time::Instant::now();
    bed.wait_ping(w1, w2, Duration::from_secs(10));
    eprintln!("traffic resumed {:?} after the IPv4 path was cut", cut.elapsed());
    assert!(cut.elapsed() < Duration::from_secs(10));
    let now = endpoint(&bed, 0);
    assert_eq!(now, bed.hosts[1].endpoint6().parse::<SocketAddr>().unwrap(), "host 1 reaches host 2 over IPv6");
    // And the other way, without a cut in between.
    let back = bed.status(1).unwrap().peers[0].endpoint.unwrap();
    assert!(back.is_ipv6(), "host 2 reaches host 1 at {back}");
    bed.wait_ping(w2, w1, Duration::from_secs(5));
}
