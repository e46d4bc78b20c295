//! One segment per subnet across hosts: IPv4 unicast to a remote workload is
//! routed (proxy ARP answers with the local bridge's MAC), while IPv6
//! neighbour discovery and multicast cross hosts at L2; nothing crosses
//! between subnets.
mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::*;

fn mac(ns: &str, ifname: &str) -> String {
    let out = ok_in(ns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
    out.trim().to_string()
}

/// The one weave bridge of a host with a single subnet.
fn bridge(ns: &str) -> String {
    let out = ok_in(ns, &["ls", "/sys/class/net"]);
    out.split_whitespace().find(|n| n.starts_with("wvbr-")).expect("a weave bridge").to_string()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn arp_and_multicast_cross_hosts() {
    let mut bed = Bed::with_hosts(3);
    for h in 0..3 {
        bed.add_workload(h, "default");
    }
    let (w1, w2) = (&bed.workloads[0], &bed.workloads[1]);
    // ARP: w1 resolves w2 on the other host to its own host's bridge, which
    // routes the packet through the TUN (and w2 resolves w1 likewise).
    bed.wait_ping(0, 1, Duration::from_secs(10));
    let (h1, h2) = (&bed.hosts[0].ns, &bed.hosts[1].ns);
    let neigh = ok_in(&w1.ns, &["ip", "neigh", "show", &w2.ip.to_string(), "dev", "ethwe"]);
    assert!(neigh.contains(&mac(h1, &bridge(h1))), "w1 resolved w2 to host 1's bridge by proxy ARP: {neigh}");
    assert!(!neigh.contains(&mac(&w2.ns, "ethwe")), "w2's own MAC never reached w1: {neigh}");
    let neigh = ok_in(&w2.ns, &["ip", "neigh", "show", &w1.ip.to_string(), "dev", "ethwe"]);
    assert!(neigh.contains(&mac(h2, &bridge(h2))), "w2 resolved w1 to host 2's bridge: {neigh}");
    let route = ok_in(h1, &["ip", "route", "get", &w2.ip.to_string()]);
    assert!(route.contains("dev wvtun0"), "host 1 routes w2 through the TUN: {route}");

    // IPv6 neighbour discovery: link-local addresses resolve across hosts too.
    let ll = wait_for("w2's IPv6 link-local address", Duration::from_secs(10), || {
        let out = ok_in(&w2.ns, &["ip", "-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link"]);
        (!out.contains("tentative"))
            .then(|| out.split_whitespace().nth(3).map(|a| a.split('/').next().unwrap().to_string()))?
    });
    wait_for("w1 to ping w2's link-local address", Duration::from_secs(10), || {
        in_ns(&w1.ns, &["ping", "-6", "-c1", "-W1", &format!("{ll}%ethwe")]).status.success().then_some(())
    });

    // Multicast: one datagram from host 1 reaches listeners on hosts 2 and 3.
    let group = Ipv4Addr::new(239, 1, 2, 3);
    for w in &bed.workloads {
        ok_in(&w.ns, &["ip", "route", "add", "224.0.0.0/4", "dev", "ethwe"]);
    }
    let listeners: Vec<_> = bed.workloads[1..].iter().map(|w| listen_multicast(&w.ns, w.ip, group, 20)).collect();
    let sender_ip = bed.workloads[0].ip;
    let sender = in_netns(&bed.workloads[0].ns, move || {
        let s = UdpSocket::bind(SocketAddr::from((sender_ip, 0))).unwrap();
        s.set_multicast_ttl_v4(4).unwrap();
        // Repeat: IGMP snooping state may need a moment after the joins.
        for _ in 0..40 {
            s.send_to(b"weave multicast", SocketAddr::from((group, 5000))).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    for (i, l) in listeners.into_iter().enumerate() {
        let from = l.join().unwrap();
        assert_eq!(from, Some(sender_ip.into()), "workload {} got the multicast datagram", i + 2);
    }
    sender.join().unwrap();
    // All of that crossed hosts over VXLAN, and no host tracked any of it
    // (each inner flow's source port was an entry; `notrack` at raw priority).
    // Control: conntrack is on there: a ping between node addresses is tracked.
    for h in &bed.hosts {
        let table = ok_in(&h.ns, &["cat", "/proc/net/nf_conntrack"]);
        let vxlan = table.lines().filter(|l| l.contains("dport=4789")).count();
        assert_eq!(vxlan, 0, "{} tracked VXLAN flows:\n{table}", h.ns);
    }
    let node2 = bed.status(1).unwrap().address.to_string();
    ok_in(h1, &["ping", "-c1", "-W2", &node2]);
    let table = ok_in(h1, &["cat", "/proc/net/nf_conntrack"]);
    assert!(table.lines().any(|l| l.contains("icmp") && l.contains(&format!("dst={node2} "))), "{table}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn subnets_are_isolated_even_with_a_foreign_address() {
    let mut bed = Bed::with_hosts(2);
    let other = bed.admin(|mut api| async move {
        let req =
            weave_proto::v1::AddSubnetRequest { cidr: "10.40.0.0/24".into(), name: "other".into(), egress: false };
        api.subnets.add_subnet(req).await.unwrap().into_inner()
    });
    let a = bed.add_workload(0, "default");
    let b = bed.add_workload(1, "other");
    let c = bed.add_workload(0, "other");
    assert_eq!(bed.workloads[b].subnet, other.cidr);
    // Same subnet across hosts works...
    bed.wait_ping(c, b, Duration::from_secs(10));
    // ...but a default-subnet workload that gives itself an address in the
    // other subnet still cannot reach it: different segment, different VNI.
    let (wa, wb) = (&bed.workloads[a], &bed.workloads[b]);
    ok_in(&wa.ns, &["ip", "addr", "add", "10.40.0.200/24", "dev", "ethwe"]);
    for _ in 0..3 {
        assert!(!ping_once(&wa.ns, wb.ip), "traffic crossed from the default subnet into 'other'");
    }
    assert!(!ping_once(&wb.ns, Ipv4Addr::new(10, 40, 0, 200)), "and not the other way either");
    bed.wait_ping(c, b, Duration::from_secs(10));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn routes_and_proxy_entries_follow_remote_workloads() {
    let mut bed = Bed::with_hosts(2);
    let here = bed.add_workload(0, "default");
    let ns = bed.add_container("far");
    let path = format!("/run/netns/{ns}");
    let far = bed.weavectl_attach(1, &ns, &[&path])[0];
    let ip = bed.workloads[far].ip.to_string();
    let h1 = bed.hosts[0].ns.clone();
    let has_route = |h: &str| ok_in(h, &["ip", "route", "show", "proto", "87", "dev", "wvtun0"]).contains(&ip);
    let has_proxy = |h: &str| ok_in(h, &["ip", "neigh", "show", "proxy"]).contains(&ip);
    // Attached on host 2: host 1 routes it through the TUN and answers ARP for it.
    wait_for("host 1 to route the new workload", Duration::from_secs(15), || {
        (has_route(&h1) && has_proxy(&h1)).then_some(())
    });
    bed.wait_ping(here, far, Duration::from_secs(10));
    // Its own host pinned its MAC on the bridge (it never ARPs for it).
    let h2 = bed.hosts[1].ns.clone();
    let pinned = |h: &str| ok_in(h, &["ip", "neigh", "show", &ip, "nud", "permanent"]).contains(&ip);
    assert!(pinned(&h2), "{}", ok_in(&h2, &["ip", "neigh", "show"]));
    // A workload without an IPAM address is not routed across hosts (and no
    // ARP crosses the VXLAN to find it): the documented price of the fast path.
    ok_in(&ns, &["ip", "addr", "add", "10.32.255.250/16", "dev", "ethwe"]);
    assert!(!ping_once(&bed.workloads[here].ns, "10.32.255.250".parse().unwrap()), "a hand-made address was reached");
    // Detached: the route and the proxy entry go, and with them the reach.
    let out = bed.weavectl(1, &["detach", &path]);
    assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    let in_rules = |h: &str| {
        let rules = ok_in(h, &["nft", "list", "table", "inet", "weave"]);
        rules.contains(&format!("{ip},")) || rules.contains(&format!("{ip} "))
    };
    let forgot = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !has_route(&h1) && !has_proxy(&h1) && !in_rules(&h1) && !pinned(&h2)
    });
    assert!(
        forgot,
        "{ip} is still known 5 s after the detach: route {}, proxy {}, rules {}, pinned {}; allocations {:?}",
        has_route(&h1),
        has_proxy(&h1),
        in_rules(&h1),
        pinned(&h2),
        bed.allocations()
    );
}

/// No host writes its addresses into a workload's IPv4 options: a Record
/// Route ping to a remote workload came back with both hosts' underlay and
/// node addresses, which weave keeps from workloads otherwise (found by a
/// review, 2026-12-07). What a host routes with options is dropped, as
/// clouds' networks do; bridged, to a workload of the same host, they pass
/// untouched, as on a switch.
#[test]
#[ignore = "needs root: network namespaces"]
fn no_host_writes_its_addresses_into_a_workloads_record_route() {
    let mut bed = Bed::with_hosts(2);
    let (a, b, c) = (bed.add_workload(0, "default"), bed.add_workload(1, "default"), bed.add_workload(0, "default"));
    bed.wait_ping(a, b, Duration::from_secs(15));
    bed.wait_ping(b, a, Duration::from_secs(5));
    let record_route =
        |to: usize| in_ns(&bed.workloads[a].ns, &["ping", "-c1", "-W2", "-R", &bed.workloads[to].ip.to_string()]);
    let out = record_route(b);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    for host in &bed.hosts {
        assert!(!said.contains(&host.ip.to_string()), "{} in a workload's record route: {said}", host.ip);
    }
    assert!(!said.contains("10.47."), "a node address in a workload's record route: {said}");
    assert!(!out.status.success(), "routed with its options: {said}");
    let out = record_route(c);
    assert!(out.status.success(), "bridged options dropped: {}", String::from_utf8_lossy(&out.stdout));
    assert!(ping_within(&bed.workloads[a].ns, bed.workloads[b].ip, 2), "plain IPv4 stopped");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn workloads_with_reverse_path_filtering_are_reachable_from_other_hosts() {
    let mut bed = Bed::with_hosts(2);
    let far = bed.add_workload(0, "default");
    let ns = bed.add_container("strict");
    // As on hosts whose sysctl defaults (inherited by new namespaces) turn on
    // reverse-path filtering: strict, with no default route in the container.
    ok_in(&ns, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1"]);
    let path = format!("/run/netns/{ns}");
    let here = bed.weavectl_attach(1, &ns, &[&path])[0];
    // The remote workload speaks first: host 2 must resolve the container's MAC itself.
    bed.wait_ping(far, here, Duration::from_secs(10));
    // Host 2 exposed, then hidden: the bridge's last address gone, the
    // kernel flushes its neighbour table, pins too. They come back with the
    // hide; before, host 2 ARPed from its underlay address, which the
    // container ignores, until it was attached again (found by a review,
    // 2026-12-05).
    for verb in ["expose", "hide"] {
        let out = bed.weavectl(1, &[verb]);
        assert!(out.status.success(), "{verb}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let bridge = bed.wait_status(1).segments[0].bridge.clone();
    let ip = bed.workloads[here].ip.to_string();
    let neigh = ok_in(&bed.hosts[1].ns, &["ip", "neigh", "show", "dev", &bridge]);
    assert!(neigh.lines().any(|l| l.starts_with(&format!("{ip} ")) && l.contains("PERMANENT")), "{neigh}");
    let (from, to) = (&bed.workloads[far].ns, bed.workloads[here].ip);
    assert!(ping_within(from, to, 5), "the container with rp_filter is cut off after expose and hide");
    // A pin removed by someone else (`ip addr flush`, `ip neigh del`) is put
    // back by the next full pass (every 30 s).
    ok_in(&bed.hosts[1].ns, &["ip", "neigh", "del", &ip, "dev", &bridge]);
    wait_for("the pin to come back", Duration::from_secs(40), || {
        let neigh = ok_in(&bed.hosts[1].ns, &["ip", "neigh", "show", "dev", &bridge]);
        neigh.lines().any(|l| l.starts_with(&format!("{ip} ")) && l.contains("PERMANENT")).then_some(())
    });
}

/// This host's exposed address, flushed from its bridge by someone else
/// (`ip addr flush`), is put back: its workloads reach it again, and so
/// does a remote workload (whose route from this host has it as source,
/// a route the flush took away). And one the coordinator no longer gives
/// this host (`ipam release host:<node>`) is taken off the bridge. Before,
/// the pins came back and the address did not: an egress subnet's
/// containers lost their gateway while `agent status` still named it; and
/// a released address stayed, answering for one IPAM hands to others (found
/// by a review, 2026-12-06).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_exposed_address_is_kept_in_step_with_the_map_on_its_bridge() {
    let mut bed = Bed::with_hosts(2);
    let ns = bed.add_container("local");
    let here = bed.weavectl_attach(0, &ns, &[&format!("/run/netns/{ns}")])[0];
    let far = bed.add_workload(1, "default");
    let out = bed.weavectl(0, &["expose"]);
    assert!(out.status.success(), "expose: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let ip: Ipv4Addr = printed.split(|c: char| c.is_whitespace() || c == '/').next().unwrap().parse().unwrap();
    let h1 = bed.hosts[0].ns.clone();
    let bridge = bed.wait_status(0).segments[0].bridge.clone();
    let on_bridge =
        || ok_in(&h1, &["ip", "-4", "-o", "addr", "show", "dev", &bridge]).contains(&format!(" inet {ip}/"));
    assert!(on_bridge(), "expose put {ip} on {bridge}: {printed}");
    assert!(ping_within(&bed.workloads[here].ns, ip, 5), "the local workload reaches the exposed address");
    assert!(ping_within(&bed.workloads[far].ns, ip, 5), "the remote workload reaches the exposed address");

    ok_in(&h1, &["ip", "addr", "flush", "dev", &bridge]);
    assert!(!on_bridge());
    // Two sweeps (5 s each) see it missing, then it is put back.
    wait_for("the exposed address back on its bridge", Duration::from_secs(30), || on_bridge().then_some(()));
    assert!(ping_within(&bed.workloads[here].ns, ip, 10), "the local workload reaches it again");
    assert!(ping_within(&bed.workloads[far].ns, ip, 10), "the remote workload reaches it again");
    assert!(bed.log(0).contains("exposed address was gone from its bridge: put back"), "{}", bed.log(0));

    let name = bed.hosts[0].name.clone();
    let out = bed.weavectl_admin(&["ipam", "release", &format!("host:{name}"), "--node", &name]);
    assert!(out.status.success(), "release: {}", String::from_utf8_lossy(&out.stderr));
    // Exposed again at once, at another address: the released one is the
    // bridge's primary, the new one a secondary, which the kernel removes
    // with the primary (`promote_secondaries` 0, as in any new namespace).
    // The new one stays (it went for two sweeps; found by a review).
    let octets = ip.octets();
    let again = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3] + 100);
    let addrs = || ok_in(&h1, &["ip", "-4", "-o", "addr", "show", "dev", &bridge]);
    let shown = addrs();
    let len = shown.split(&format!(" inet {ip}/")).nth(1).and_then(|l| l.split_whitespace().next()).unwrap();
    let out = bed.weavectl(0, &["expose", &format!("ip:{again}/{len}")]);
    assert!(out.status.success(), "expose again: {}", String::from_utf8_lossy(&out.stderr));
    assert!(addrs().contains(&format!(" inet {again}/")), "{}", addrs());
    wait_for("the released address off the bridge", Duration::from_secs(30), || (!on_bridge()).then_some(()));
    assert!(bed.log(0).contains("removed an address this host does not hold from its bridge"), "{}", bed.log(0));
    wait_for("the new exposed address kept", Duration::from_millis(500), || {
        addrs().contains(&format!(" inet {again}/")).then_some(())
    });
    assert!(bed.log(0).contains("exposed address went with the removed one: put back"), "{}", bed.log(0));
    // The workload itself was never touched.
    bed.wait_ping(far, here, Duration::from_secs(10));
}

/// A bridge deleted by hand (or while its subnet was left out) is made again
/// by the next full pass, and the workloads attached to it are put back into
/// it: their ports remember their bridge (an alias). Before, the bridge came
/// back empty and the workloads stayed cut off (found by a review).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_bridge_deleted_by_hand_comes_back_with_its_workloads() {
    let mut bed = Bed::with_hosts(2);
    let (a, b) = (bed.add_container("a"), bed.add_container("b"));
    let wa = bed.weavectl_attach(0, &a, &[&format!("/run/netns/{a}")])[0];
    let wb = bed.weavectl_attach(1, &b, &[&format!("/run/netns/{b}")])[0];
    bed.wait_ping(wa, wb, Duration::from_secs(10));
    let subnet = bed.workloads[wa].subnet.clone();
    let seg = bed.wait_status(0).segments.into_iter().find(|s| s.subnet == subnet).expect("a's segment");
    let h1 = bed.hosts[0].ns.clone();
    ok_in(&h1, &["ip", "link", "del", &seg.bridge]);
    // Unless the agent's full pass (every 30 s) fell inside the ping and
    // made the bridge again.
    let reached = ping_once(&a, bed.workloads[wb].ip);
    assert!(
        !reached || in_ns(&h1, &["ip", "link", "show", &seg.bridge]).status.success(),
        "a still reaches b without its bridge"
    );
    // The next full pass (every 30 s) makes the bridge, puts a's port back
    // and pins a's address again (the entry went with the bridge), so the
    // first packet may come from the other host: b pings a, not a b.
    let a_ip = bed.workloads[wa].ip.to_string();
    wait_for("a's port back in its bridge, pinned", Duration::from_secs(60), || {
        let pins = in_ns(&h1, &["ip", "neigh", "show", "dev", &seg.bridge]);
        let pins = String::from_utf8_lossy(&pins.stdout).to_string();
        pins.lines().any(|l| l.starts_with(&format!("{a_ip} ")) && l.contains("PERMANENT")).then_some(())
    });
    bed.wait_ping(wb, wa, Duration::from_secs(10));
    let port = workload_port(&h1, &seg.bridge);
    // Locked to a's MAC again, as at attach.
    let detail = ok_in(&h1, &["bridge", "-d", "link", "show", "dev", &port]);
    assert!(detail.contains("locked on"), "{port} is not locked again: {detail}");
    assert!(bed.log(0).contains("workload ports put back into their bridges"), "{}", bed.log(0));
    // And said (it was put back without a word; a review, 2026-12-07).
    let log = bed.log(0);
    let said = log.lines().find(|l| l.contains("bridge or VXLAN device was deleted or changed: made again"));
    assert!(said.is_some_and(|l| l.contains(&seg.bridge)), "{log}");
    let metrics = scrape(&h1);
    assert!(metrics.lines().any(|l| l == "weave_segment_repairs_total 1"), "{metrics}");
    assert!(scrape(&bed.hosts[1].ns).lines().any(|l| l == "weave_segment_repairs_total 0"));
}

/// An address that moves to another host is reached there at once by the
/// containers left behind, as on a switch: they knew it at its old port's
/// MAC (`0a:58:<ip>`, the same on every host), which nothing carries once
/// the port is gone, and until their entry aged out (9-50 s, longer with a
/// longer reachable time) they could not reach it; the proxy-ARP entry the
/// move brings is announced on the bridge and corrects them (found by a
/// review, 2026-12-07).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_address_that_leaves_a_host_is_reached_at_its_new_one_at_once() {
    let mut bed = Bed::with_hosts(2);
    let (stay, _) = attached_at(&mut bed, 0, "stay");
    let mover = bed.add_container("mover");
    let w = bed.weavectl_attach(0, &mover, &["--name", "mover", &format!("/run/netns/{mover}")])[0];
    let (addr, prefix) = (bed.workloads[w].ip, bed.workloads[w].prefix);
    // A fresh entry that stays REACHABLE for a minute at least, without the announcement.
    ok_in(&stay, &["sysctl", "-qw", "net.ipv4.neigh.ethwe.base_reachable_time_ms=120000"]);
    ok_in(&stay, &["ip", "neigh", "flush", "dev", "ethwe"]);
    assert!(ping_within(&stay, addr, 5), "stay reaches mover on its host");
    let neigh = || ok_in(&stay, &["ip", "-4", "neigh", "show", &addr.to_string()]);
    let old_mac = mac(&mover, "ethwe");
    assert!(neigh().contains(&old_mac) && neigh().contains("REACHABLE"), "{}", neigh());

    let out = bed.weavectl(0, &["detach", "mover"]);
    assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    let name = bed.hosts[0].name.clone();
    let out = bed.weavectl_admin(&["ipam", "release", "mover", "--node", &name]);
    assert!(out.status.success(), "release: {}", String::from_utf8_lossy(&out.stderr));
    let there = bed.add_container("there");
    let ip = format!("{addr}/{prefix}");
    let w2 = bed.weavectl_attach(1, &there, &[&ip, &format!("/run/netns/{there}")])[0];
    assert_eq!(bed.workloads[w2].ip, addr);
    assert_eq!(mac(&there, "ethwe"), old_mac, "the address keeps its MAC on its new host");
    assert!(ping_within(&stay, addr, 5), "stay reaches the address on its new host: {}", neigh());
    let bridge_mac = mac(&bed.hosts[0].ns, &bridge(&bed.hosts[0].ns));
    assert!(neigh().contains(&bridge_mac), "through this host's bridge now: {}", neigh());
}
