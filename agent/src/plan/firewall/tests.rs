//! The ruleset's text: what each hook's chains accept and drop.
use super::*;

/// The body of chain `name` in a ruleset (its rules, one per line).
fn chain<'a>(r: &'a str, name: &str) -> &'a str {
    let head = format!("  chain {name} {{\n");
    let start = r.find(&head).unwrap_or_else(|| panic!("chain {name} in\n{r}")) + head.len();
    let body = &r[start..start + r[start..].find("  }\n").unwrap()];
    // Base chains: without their hook line.
    body.strip_prefix("    type ").map_or(body, |b| &b[b.find('\n').unwrap() + 1..])
}

/// A segment of `subnet` on vni `vni` with `remote` workloads, not exposed.
fn seg(vni: u32, subnet: &str, remote: &[&str]) -> Segment {
    Segment {
        bridge: bridge_name(vni),
        subnet: subnet.parse().unwrap(),
        remote: remote.iter().map(|a| a.parse().unwrap()).collect(),
        local: BTreeSet::new(),
        exposed: None,
        egress: false,
    }
}

#[test]
fn a_packet_meets_as_many_rules_with_64_segments_as_with_one() {
    let segs = |n: u32| Rules {
        segments: (0..n)
            .map(|i| Segment {
                bridge: bridge_name(i + 1),
                subnet: format!("10.100.{i}.0/24").parse().unwrap(),
                remote: [format!("10.100.{i}.9").parse().unwrap()].into(),
                local: [format!("10.100.{i}.2").parse().unwrap()].into(),
                exposed: Some(format!("10.100.{i}.1").parse().unwrap()),
                egress: false,
            })
            .collect(),
        ..Default::default()
    };
    let (one, many) = (ruleset(&segs(1)), ruleset(&segs(64)));
    // The base chains (what every packet of a hook meets) and a segment's
    // own chains have as many rules; only the maps grow.
    for name in [
        "prerouting",
        "input",
        "forward",
        "output",
        "mss",
        "input_seg0",
        "forward_seg0",
        "forward_tun",
        "forward_tun_seg0",
        "output_seg0",
    ] {
        assert_eq!(chain(&one, name).lines().count(), chain(&many, name).lines().count(), "chain {name}");
    }
    assert!(chain(&many, "forward").contains("\"wvbr-64\" : jump forward_seg63"), "{many}");
    assert!(chain(&many, "output_seg63").contains("ip saddr != 10.100.63.0/24 drop"), "{many}");
    // Only the TUN's input to the host itself (a new connection from a
    // remote workload to its host's exposed address) walks the segments.
    assert_eq!(chain(&many, "input_tun").lines().count(), 64 + 3);
    // No segments: no maps (nft refuses an empty one) and no segment chains.
    let none = ruleset(&Rules::default());
    assert!(!none.contains("vmap") && !none.contains("_seg"), "{none}");
}

#[test]
fn the_ruleset_replaces_the_tables_and_routes_only_within_a_subnet() {
    let segments = vec![seg(5, "10.32.0.0/16", &["10.32.0.7", "10.32.0.9"]), seg(9, "10.2.3.0/24", &[])];
    let rules = Rules { segments, ..Default::default() };
    let r = ruleset(&rules);
    assert!(r.starts_with("table inet weave {}\ndelete table inet weave\ntable bridge weave {}\n"), "{r}");
    assert!(r.contains("elements = { 10.32.0.7, 10.32.0.9 }"), "{r}");
    // One map lookup on the input interface picks the segment's chain;
    // anything else into or out of a bridge or the TUN is dropped.
    let forward = chain(&r, "forward");
    assert!(
        forward.contains(
            "    ct status dnat oifname \"wv*\" accept\n    ct status dnat iifname != \"wv*\" accept\n    \
             ct status dnat ct direction reply accept\n    iifname vmap { \"wvbr-5\" : jump forward_seg0, \
             \"wvbr-9\" : jump forward_seg1, \"wvtun0\" : jump forward_tun }\n    iifname \"wvbr-*\" drop\n    \
             oifname \"wvbr-*\" drop\n    iifname \"wvtun0\" drop\n    oifname \"wvtun0\" drop\n"
        ),
        "{forward}"
    );
    // Within a bridge what the bridge forwards; what the host routes back
    // into it (sent to the bridges' MAC) only to this host's workloads; from
    // it to the TUN only the subnet to its remote workloads.
    assert_eq!(
        chain(&r, "forward_seg1"),
        "    oifname \"wvbr-9\" accept\n    \
         oifname \"wvtun0\" ip saddr 10.2.3.0/24 ip daddr @remote1 accept\n    drop\n",
        "no bridge MAC (this node not in the map yet): as before"
    );
    let r = ruleset(&Rules { bridge_mac: Some("02:57:0a:2f:00:01".into()), ..rules });
    assert_eq!(
        chain(&r, "forward_seg0"),
        "    oifname \"wvbr-5\" ether daddr != 02:57:0a:2f:00:01 accept\n    \
         oifname \"wvbr-5\" ip daddr @local0 accept\n    \
         oifname \"wvtun0\" ip saddr 10.32.0.0/16 ip daddr @remote0 accept\n    drop\n"
    );
    // From the TUN only a segment's remote workloads to the segment.
    assert_eq!(
        chain(&r, "forward_tun"),
        "    oifname vmap { \"wvbr-5\" : jump forward_tun_seg0, \"wvbr-9\" : jump forward_tun_seg1 }\n    drop\n"
    );
    assert_eq!(
        chain(&r, "forward_tun_seg1"),
        "    ip saddr @remote1 ip daddr @local1 accept\n    \
         ip saddr @remote1 ip daddr 10.2.3.0/24 limit rate 50/second burst 50 packets accept\n    drop\n"
    );
    // The host on a segment only from its address there.
    assert!(
        chain(&r, "output").contains(
            "    oifname vmap { \"wvbr-5\" : jump output_seg0, \"wvbr-9\" : jump output_seg1 }\n    \
             oifname \"wvbr-*\" meta nfproto ipv6 drop\n"
        ),
        "{r}"
    );
    assert_eq!(chain(&r, "output_seg1"), "    ip saddr != 10.2.3.0/24 drop\n");
    assert!(r.contains("iifname \"wvvx-*\" ether type arp drop"), "{r}");
    // TCP through the TUN has its MSS clamped to the route's MTU, both ways.
    let mss = &r[r.find("chain mss").unwrap()..r.find("table bridge weave {\n").unwrap()];
    assert!(mss.contains("hook forward priority mangle;"), "{mss}");
    assert!(mss.contains("oifname \"wvtun0\" tcp flags syn tcp option maxseg size set rt mtu\n"), "{mss}");
    assert!(mss.contains("iifname \"wvtun0\" tcp flags syn tcp option maxseg size set rt mtu\n"), "{mss}");
}

#[test]
fn workloads_reach_their_host_only_at_its_exposed_address_and_never_over_ipv6() {
    let on = Segment { exposed: Some("10.2.3.1".parse().unwrap()), ..seg(9, "10.2.3.0/24", &[]) };
    let r = ruleset(&Rules { segments: vec![seg(5, "10.32.0.0/16", &[]), on], ..Default::default() });
    let input = chain(&r, "input");
    let exposed = input.find("iifname vmap { \"wvbr-5\" : jump input_seg0, \"wvbr-9\" : jump input_seg1 }\n");
    let exposed = exposed.expect("each bridge to its segment's chain");
    // Exposed on 10.2.3.0/24: that one address, and the segment's
    // broadcasts and multicast (the host is a member of it). Not exposed
    // on 10.32.0.0/16: nothing; neither any other local address in the
    // subnet (a /32 on lo or kube-ipvs0: a review found it reached).
    // (`. iif`: the broadcast of this bridge, not the LAN's or another
    // segment's; IPv4 only: ff02::1 is multicast too, a review found.)
    let seg1 =
        "    ip daddr 10.2.3.1 accept\n    meta nfproto ipv4 fib daddr . iif type { broadcast, multicast } accept\n";
    let seg1 = format!("{seg1}    ct status dnat ct original ip daddr 10.2.3.1 accept\n");
    assert_eq!(chain(&r, "input_seg1"), seg1, "own exposed address, also as a DNATed packet's first destination");
    assert_eq!(chain(&r, "input_seg0"), "", "not exposed: nothing");
    assert!(input.find("ct status dnat ct direction reply accept").is_some_and(|d| d < exposed), "{input}");
    // Then everything else from a bridge, IPv6 included, is dropped.
    // So is anything from a workload port outside its bridge (its subnet
    // removed with --force, the bridge deleted by hand): fail closed.
    assert!(input[exposed..].ends_with("}\n    iifname \"wvbr-*\" drop\n    iifname \"wv*\" drop\n"), "{input}");
    assert!(chain(&r, "forward").ends_with("    iifname \"wv*\" drop\n    oifname \"wv*\" drop\n"), "{r}");
    let output = chain(&r, "output");
    assert!(
        output.ends_with(
            "    oifname \"wvbr-*\" meta nfproto ipv6 drop\n    oifname \"wvtun0\" jump output_tun\n    \
             oifname \"wvbr-*\" accept\n    oifname \"wv*\" drop\n"
        ),
        "{r}"
    );
    // Into the tunnel the host sends only to peers' node addresses, and to
    // remote workloads from the address it was exposed with there: not from
    // its node address to whatever a member allocated (a name server the
    // host reaches through its default route; found by a review).
    assert_eq!(
        chain(&r, "output_tun"),
        "    ip daddr @peers accept\n    ip saddr 10.2.3.1 ip daddr @remote1 accept\n    drop\n"
    );
    // IPv4 unicast never crosses VXLAN (it is routed): a member cannot
    // inject frames with another node's workload as their source.
    assert!(
        r.contains("iifname \"wvvx-*\" ether type ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop"),
        "{r}"
    );
}

#[test]
fn the_overlay_is_sealed_from_the_underlay_and_vxlan_comes_only_from_peers_over_the_tun() {
    use weave_proto::v1::{Allocation, Node, Subnet};
    let node = |id, address: &str| Node { id, name: format!("h{id}"), address: address.into(), ..Default::default() };
    let subnet = |cidr: &str, vni: u32| Subnet { id: vni.into(), cidr: cidr.into(), vni, ..Default::default() };
    let host = |node_id, subnet_id, address: &str| Allocation {
        node_id,
        subnet_id,
        container: format!("host:h{node_id}"),
        address: address.into(),
        ..Default::default()
    };
    let map = NetworkMap {
        node_range: "10.47.0.0/16".into(),
        nodes: vec![node(1, "10.47.0.1"), node(2, "10.47.0.2"), node(3, "10.47.0.3")],
        // Nested ranges merge into one interval (the kernel refuses overlaps):
        // the default subnet and the node range lie inside 10.32.0.0/12.
        subnets: vec![subnet("10.32.0.0/12", 0), subnet("10.32.0.0/16", 5), subnet("10.2.3.0/24", 9)],
        // Exposed on 10.2.3.0/24 (and another node on 10.32.0.0/16).
        allocations: vec![host(1, 9, "10.2.3.1/24"), host(2, 5, "10.32.0.2/16")],
        ..Default::default()
    };
    let rules = rules(&map, 1, &[], &Default::default());
    assert_eq!(rules.peers, ["10.47.0.2", "10.47.0.3"].iter().map(|a| a.parse().unwrap()).collect());
    let r = ruleset(&rules);
    assert!(r.contains("set peers {\n    type ipv4_addr\n    elements = { 10.47.0.2, 10.47.0.3 }\n"), "{r}");
    assert!(r.contains("flags interval\n    elements = { 10.2.3.0/24, 10.32.0.0/12 }\n"), "{r}");
    // From the underlay, nothing to or from an overlay address; before
    // defragmentation (-400: each fragment judged alone) and DNAT.
    let pre = &r[r.find("chain prerouting").expect("a prerouting chain")..];
    assert!(pre.starts_with("chain prerouting {\n    type filter hook prerouting priority -450;"), "{r}");
    // Nothing for loopback from a weave device, before anything is accepted
    // (a DNAT of 127.0.0.1 would open a port published on it alone).
    assert!(chain(&r, "prerouting").starts_with("    ip daddr 127.0.0.0/8 iifname \"wv*\" drop\n    iifname {"), "{r}");
    let accept = pre
        .find("iifname { \"lo\", \"wvtun0\" } accept\n    iifname \"wvbr-*\" ip saddr @peers drop\n    iifname \"wvbr-*\" accept\n")
        .unwrap();
    assert!(accept < pre.find("ip daddr @overlay drop\n    ip saddr @overlay drop").unwrap(), "{r}");
    // No "fragmentation needed" about a node address (10.47.0.0/16), from
    // anywhere, before anything is accepted (a forged one is "related").
    assert!(
        chain(&r, "input").starts_with(
            "    icmp type destination-unreachable icmp code frag-needed @th,192,32 170852352-170917887 drop\n"
        ),
        "{r}"
    );
    // VXLAN: from the TUN, by a peer's node address, else dropped.
    assert!(
        r.contains(
            "iifname \"wvtun0\" ip saddr @peers fib daddr type local udp dport 4789 accept\n    udp dport 4789 drop\n"
        ),
        "{r}"
    );
    // Nothing else from a peer over the TUN reaches the host: answers to
    // its own connections, and a subnet's remote workloads at the
    // host's (exposed) address in that subnet.
    assert!(chain(&r, "input").contains("udp dport 4789 drop\n    iifname \"wvtun0\" jump input_tun\n"), "{r}");
    // Only where this host is exposed (10.2.3.0/24, segment 1 in vni
    // order), and only at that address: not at any other local address
    // in a subnet (a review: a member's subnet around a kube-ipvs0 /32).
    // Through a DNAT: a port mapping on its node address or (its first
    // destination) on that exposed one, nothing else (a review, 2026-12-07).
    let tun = "    ct state established,related accept\n    ct status dnat ct original ip daddr 10.47.0.1 accept\n    \
               ip saddr @remote1 ct original ip daddr 10.2.3.1 accept\n    \
               ip saddr @peers icmp type echo-request accept\n    drop\n";
    assert_eq!(chain(&r, "input_tun"), tun, "{r}");
    assert_eq!(ruleset(&Rules::default()).matches("set peers {\n    type ipv4_addr\n  }").count(), 1);
}

#[test]
fn element_changes_update_the_sets_and_anything_else_replaces_the_tables() {
    let peers = |p: &[&str]| p.iter().map(|a| a.parse().unwrap()).collect();
    let old = Rules {
        segments: vec![seg(5, "10.32.0.0/16", &["10.32.0.7", "10.32.0.9"]), seg(9, "10.2.3.0/24", &[])],
        peers: peers(&["10.47.0.2"]),
        overlay: ["10.32.0.0/12".parse().unwrap()].into(),
        node_range: Some("10.47.0.0/16".parse().unwrap()),
        bridge_mac: Some("02:57:0a:2f:00:01".into()),
        endpoints: BTreeSet::new(),
        coordinators: BTreeSet::new(),
        own_address: None,
        listen_port: 6784,
    };
    let mut new = old.clone();
    new.segments[0].remote.remove(&"10.32.0.9".parse().unwrap());
    new.segments[0].local.insert("10.32.0.3".parse().unwrap());
    new.segments[1].remote.extend(["10.2.3.4".parse::<Ipv4Addr>().unwrap(), "10.2.3.5".parse().unwrap()]);
    new.peers = peers(&["10.47.0.3"]);
    assert_eq!(
        update(&old, &new).unwrap(),
        "delete element inet weave remote0 { 10.32.0.9 }\n\
         add element inet weave local0 { 10.32.0.3 }\n\
         add element inet weave remote1 { 10.2.3.4, 10.2.3.5 }\n\
         delete element inet weave peers { 10.47.0.2 }\n\
         add element inet weave peers { 10.47.0.3 }\n"
    );
    assert_eq!(update(&old, &old).unwrap(), "");
    let mut other = new.clone();
    other.segments.pop();
    assert_eq!(update(&old, &other), None, "a segment went: the chains change");
    let mut other = new.clone();
    other.overlay.insert("10.2.3.0/24".parse().unwrap());
    assert_eq!(update(&old, &other), None, "the overlay changed");
    let mut other = new.clone();
    other.node_range = Some("10.48.0.0/16".parse().unwrap());
    assert_eq!(update(&old, &other), None, "the node range changed");
    let mut other = new.clone();
    other.bridge_mac = None;
    assert_eq!(update(&old, &other), None, "the bridges' MAC changed");
}

#[test]
fn no_arp_for_an_overlay_address_is_answered_from_outside_weaves_devices() {
    let rules = Rules {
        overlay: ["10.32.0.0/12".parse().unwrap(), "10.2.3.0/24".parse().unwrap()].into(),
        ..Default::default()
    };
    let r = ruleset(&rules);
    assert!(r.contains("table arp weave {}\ndelete table arp weave\n"), "replaced with the others: {r}");
    let arp = r.split("table arp weave {\n").nth(1).expect("the arp table");
    assert!(arp.contains("elements = { 10.2.3.0/24, 10.32.0.0/12 }"), "{arp}");
    assert!(arp.contains("iifname != \"wv*\" arp operation request arp daddr ip @overlay drop"), "{arp}");
}

#[test]
fn egress_lets_only_an_exposed_segments_own_workloads_out_and_their_replies_back() {
    let shut = Segment { exposed: Some("10.2.3.1".parse().unwrap()), ..seg(9, "10.2.3.0/24", &[]) };
    let out = Segment {
        exposed: Some("10.44.0.1".parse().unwrap()),
        local: ["10.44.0.2".parse().unwrap()].into(),
        egress: true,
        ..seg(5, "10.44.0.0/24", &["10.44.0.9"])
    };
    let endpoints = [("192.0.2.2".parse().unwrap(), 6784)].into();
    let rules = Rules {
        segments: vec![shut.clone(), out.clone()],
        endpoints,
        own_address: Some("10.47.0.1".parse().unwrap()),
        ..Default::default()
    };
    let coordinators = ["192.0.2.9:6783".parse().unwrap(), "[2001:db8::9]:6783".parse().unwrap()];
    let r = ruleset(&rules.clone().with_coordinators(&coordinators).with_listen_port(6784));
    let forward = chain(&r, "forward");
    // First, before DNATed traffic is let through: no coordinator's gRPC port
    // (also behind a DNAT), no WireGuard message to a peer's endpoint.
    let coordinator = forward.find("iifname \"wvbr-*\" ip daddr . tcp dport @grpc drop").expect(forward);
    // The coordinator, and every node's address at its port (a coordinator on a node's host network).
    assert!(r.contains("elements = { 192.0.2.2 . 6783, 192.0.2.9 . 6783 }"), "{r}");
    let behind_dnat = forward
        .find("iifname \"wvbr-*\" meta l4proto tcp ct original ip daddr 192.0.2.9 ct original proto-dst 6783 drop")
        .expect(forward);
    assert!(behind_dnat < forward.find("ct status dnat oifname").unwrap(), "{forward}");
    let wireguard = forward
        .find("iifname \"wvbr-*\" ip daddr . udp dport @endpoints @th,64,32 { 0x01000000, 0x02000000, 0x03000000, 0x04000000 } drop")
        .expect(forward);
    let dnat = forward.find("ct status dnat oifname").unwrap();
    assert!(coordinator < dnat && wireguard < dnat, "{forward}");
    assert!(!forward.contains("2001:db8"), "IPv4 only: {forward}");
    // Replies back into the egress bridge only, to its own workloads.
    assert!(
        forward
            .contains(&format!("oifname \"{}\" ct direction reply ct status snat ip daddr @local1 accept", out.bridge)),
        "{forward}"
    );
    assert!(!forward.contains(&format!("oifname \"{}\" ct direction reply", shut.bridge)), "{forward}");
    // Out of the egress bridge: its own workloads, not to weave's ranges or devices, nor a peer's endpoint.
    let seg1 = chain(&r, "forward_seg1");
    assert!(seg1.contains("ip saddr @local1 ip daddr != @overlay oifname != \"wv*\" accept"), "{seg1}");
    assert!(!chain(&r, "forward_seg0").contains("@overlay"), "no egress for the other segment");
    assert!(r.contains("elements = { 192.0.2.2 . 6784 }"), "{r}");
    // Masqueraded, the egress subnet only, never into weave's devices.
    let nat = chain(&r, "egress_nat");
    assert!(nat.contains("ip saddr { 10.44.0.0/24 } ip daddr != @overlay masquerade"), "{nat}");
    // Never from the agent's WireGuard port, first; a port above the middle
    // of the range gets the range below it.
    let away = "ip saddr { 10.44.0.0/24 } ip daddr != @overlay udp sport 6784 masquerade to :6785-65535";
    assert!(nat.find(away).expect(nat) < nat.find("@overlay masquerade\n").expect(nat), "{nat}");
    // Nor picked for a flow whose own port clashed: UDP from either side of
    // it is given a range on that side.
    assert!(nat.contains("@overlay udp sport < 6784 masquerade to :1-6783"), "{nat}");
    assert!(nat.contains("@overlay udp sport > 6784 masquerade to :6785-65535"), "{nat}");
    let high = ruleset(&rules.with_listen_port(51820));
    let high = chain(&high, "egress_nat");
    assert!(high.contains("udp sport 51820 masquerade to :1024-51819"), "{high}");
    assert!(nat.contains("oifname \"wv*\" return"), "{nat}");
    // To the subnet's remote workloads from elsewhere (the host, a NodePort's
    // client): from the host's address there, before kube-proxy's masquerade.
    // Only from outside weave's ranges or from the node itself: never another subnet's workload.
    let snat = format!(
        "oifname {{ \"wvtun0\", \"{}\" }} ip daddr @remote1 ip saddr != @overlay snat ip to 10.44.0.1",
        out.bridge
    );
    let tun = nat.find(&snat).expect(nat);
    let own = format!(
        "oifname {{ \"wvtun0\", \"{}\" }} ip daddr @remote1 ip saddr 10.47.0.1 snat ip to 10.44.0.1",
        out.bridge
    );
    assert!(nat.contains(&own), "{nat}");
    assert!(nat.contains("ip daddr @remote1 ip saddr @peers snat ip to 10.44.0.1"), "{nat}");
    assert!(tun < nat.find("oifname \"wv*\" return").unwrap(), "{nat}");
    assert!(r.contains("type nat hook postrouting priority srcnat - 10;"), "{r}");
    // Its workloads reach the host at its addresses outside weave's ranges; the other segment's do not.
    assert!(chain(&r, "input_seg1").contains("ip daddr != @overlay accept"), "{r}");
    assert!(!chain(&r, "input_seg0").contains("!= @overlay"), "{r}");
    assert!(chain(&r, "output_seg1").starts_with("    ct direction reply ip saddr != @overlay accept\n"), "{r}");
    assert!(!chain(&r, "output_seg0").contains("ct direction"), "{r}");
    // Without an egress segment: no NAT chain, nothing let out.
    let none = ruleset(&Rules { segments: vec![shut, Segment { egress: false, ..out.clone() }], ..Default::default() });
    assert!(
        !none.contains("egress_nat") && !none.contains("ct status snat") && !none.contains("!= @overlay"),
        "{none}"
    );
    assert!(!none.contains("ct original proto-dst") && !none.contains("@th,64,32"), "no guards without egress: {none}");
    // Turning it on or off replaces the tables; an endpoint changes an element.
    let on = Rules { segments: vec![out.clone()], ..Default::default() };
    let off = Rules { segments: vec![Segment { egress: false, ..out }], ..Default::default() };
    assert!(update(&on, &off).is_none());
    let moved = Rules { endpoints: [("192.0.2.3".parse().unwrap(), 6784)].into(), ..on.clone() };
    let script = update(&on, &moved).unwrap();
    assert_eq!(script, "add element inet weave endpoints { 192.0.2.3 . 6784 }\n");
    let with = |r: &Rules| r.clone().with_coordinators(&["192.0.2.9:6783".parse().unwrap()]);
    let script = update(&with(&on), &with(&moved)).unwrap();
    assert!(script.contains("add element inet weave grpc { 192.0.2.3 . 6783 }\n"), "{script}");
}
