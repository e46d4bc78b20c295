//! Subnet isolation in the host's forwarding path, as the nftables ruleset
//! (a tested value; [`crate::host::firewall`] applies it). Two tables,
//! replaced as a whole when their chains change ([`update`] changes only
//! set elements when nothing else did):
//!
//! - `inet weave`: its forward chain lets traffic stay inside one bridge
//!   (`wvbr-*`, also when `br_netfilter` passes bridged frames through the IP
//!   hooks), lets the fast path route between a bridge and the TUN only for
//!   that subnet's addresses (from the subnet to a remote workload of it, and
//!   back), keeps connections a port mapping DNATed (the CNI `portmap`
//!   plugin's rules, an explicit opt-in of the runtime), and drops everything
//!   else routed into or out of a bridge or the TUN. So a workload that adds a
//!   foreign address or route, a host with IP forwarding on, or a peer that
//!   sends a packet for somewhere else still cannot carry traffic between
//!   subnets (or between a subnet and anything else). Its output chain keeps
//!   the host itself off a subnet it is not exposed on.
//! - `bridge weave`: no ARP crosses a VXLAN device. Remote workloads are
//!   answered by proxy ARP with the local bridge's MAC (their IPv4 unicast is
//!   routed); a remote workload's own ARP would point workloads back at the
//!   slow path, and a host would answer proxy ARP for another host's workloads.
//!   IPv4 in an L2 broadcast or multicast frame from a weave port (workload or
//!   VXLAN) must be for a group: multicast, 255.255.255.255 or a segment's
//!   directed broadcast. Linux takes unicast IP out of an L2 broadcast, so a
//!   forged source (another host's workload) would otherwise flood past the
//!   unicast rule to every host of the segment. No weave port carries router
//!   advertisements, redirects or DHCPv6 server traffic: a workload would
//!   become every container's IPv6 router (and DNS server) on every host.
use std::{collections::BTreeSet, fmt::Write, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weave_proto::v1::NetworkMap;

use super::{
    kernel::{BRIDGE_PREFIX, TUN_NAME, VXLAN_PORT, bridge_name},
    reconcile::{remote_workloads, segment_subnets},
};

pub const TABLE: &str = "weave";

/// One subnet's segment as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Workloads (and exposed hosts) of the subnet on other nodes.
    pub remote: BTreeSet<Ipv4Addr>,
}

/// Everything the rules are made of, from one map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub segments: Vec<Segment>,
    /// The other nodes' addresses: the only sources VXLAN is accepted from.
    pub peers: BTreeSet<Ipv4Addr>,
    /// The node range and every subnet: addresses the underlay never carries.
    pub overlay: BTreeSet<Ipv4Net>,
}

/// The segments of `map`, seen from `own_node`.
pub fn segments(map: &NetworkMap, own_node: u64) -> Vec<Segment> {
    let mut remote = remote_workloads(map, own_node);
    segment_subnets(map)
        .into_iter()
        .map(|(vni, subnet)| Segment {
            bridge: bridge_name(vni),
            subnet,
            remote: remote.remove(&vni).unwrap_or_default(),
        })
        .collect()
}

/// The rules for `map`, seen from `own_node`.
/// A subnet that holds an underlay address (of a node, or `coordinator`) is
/// left out ([`super::netmap::underlay_conflicts`]): dropping it as overlay
/// traffic at the underlay would cut this host off as surely as routing it.
pub fn rules(map: &NetworkMap, own_node: u64, coordinator: &[std::net::IpAddr], lan: &super::netmap::HostLan) -> Rules {
    let skip = super::netmap::underlay_conflicts(map, coordinator, lan);
    let peers = map.nodes.iter().filter(|n| n.id != own_node).filter_map(|n| n.address.parse().ok()).collect();
    let overlay = std::iter::once(&map.node_range)
        .chain(map.subnets.iter().filter(|s| !skip.contains_key(&s.vni)).map(|s| &s.cidr))
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .collect();
    let skipped: BTreeSet<String> = skip.keys().map(|v| bridge_name(*v)).collect();
    let segments = segments(map, own_node).into_iter().filter(|s| !skipped.contains(&s.bridge)).collect();
    Rules { segments, peers, overlay }
}

/// `set <name> { type <kind>; elements = { .. } }` (no elements line when empty).
pub(super) fn set<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    interval: bool,
    elements: impl IntoIterator<Item = T>,
) {
    let _ = write!(out, "  set {name} {{\n    type {kind}\n");
    if interval {
        out.push_str("    flags interval\n");
    }
    let elements: Vec<String> = elements.into_iter().map(|e| e.to_string()).collect();
    if !elements.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
    }
    out.push_str("  }\n");
}

/// `<key> vmap { "<bridge0>" : jump <prefix>0, … }`: one lookup sends a
/// packet to its segment's chain (nothing when there are no segments).
fn vmap(out: &mut String, key: &str, segments: &[Segment], prefix: &str) {
    let targets: Vec<(String, String)> =
        segments.iter().enumerate().map(|(i, s)| (s.bridge.clone(), format!("{prefix}{i}"))).collect();
    vmap_of(out, key, &targets);
}

fn vmap_of(out: &mut String, key: &str, targets: &[(String, String)]) {
    if targets.is_empty() {
        return;
    }
    let entries: Vec<String> = targets.iter().map(|(ifname, chain)| format!("\"{ifname}\" : jump {chain}")).collect();
    let _ = writeln!(out, "    {key} vmap {{ {} }}", entries.join(", "));
}

/// TCP MSS clamping for connections through the TUN: a SYN's MSS becomes
/// the route's MTU − 40 on the way out (the TUN's) and on the way in (the
/// segment's bridge), so neither end sends a segment the tunnel or the
/// other segment cannot carry, even when its own interface's MTU is larger
/// (a runtime that left a container at 1500). Path MTU discovery cannot
/// stand in: the host's ICMP "too big" to a workload would come from an
/// address outside the segment, which the output chain drops.
fn mss_chain() -> String {
    format!(
        "  chain mss {{\n    type filter hook forward priority mangle; policy accept;\n    \
         oifname \"{TUN_NAME}\" tcp flags syn tcp option maxseg size set rt mtu\n    \
         iifname \"{TUN_NAME}\" tcp flags syn tcp option maxseg size set rt mtu\n  }}\n"
    )
}

/// Both tables for these rules (pure, for tests and logs).
pub fn ruleset(rules: &Rules) -> String {
    let segments = &rules.segments;
    // Declare-then-delete, then define: one transaction, so the tables are
    // replaced atomically, sets included (`flush table` would keep set elements).
    let mut out = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    out += &format!("table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n");
    out += &format!("table inet {TABLE} {{\n");
    for (i, s) in segments.iter().enumerate() {
        set(&mut out, &format!("remote{i}"), "ipv4_addr", false, &s.remote);
    }
    set(&mut out, "peers", "ipv4_addr", false, &rules.peers);
    // The kernel refuses overlapping intervals: nested ranges are merged first.
    set(&mut out, "overlay", "ipv4_addr", true, Ipv4Net::aggregate(&rules.overlay.iter().copied().collect()));
    // At raw priority: before conntrack and DNAT, so a port mapping's packet
    // (to the host's underlay address) passes, and is DNATed afterwards.
    let _ = write!(
        out,
        "  chain prerouting {{\n    type filter hook prerouting priority raw; policy accept;\n    \
         iifname {{ \"lo\", \"{TUN_NAME}\" }} accept\n    iifname \"{BRIDGE_PREFIX}*\" accept\n    \
         ip daddr @overlay drop\n    ip saddr @overlay drop\n  }}\n"
    );
    // Per packet, the hooks below cost the same whatever the number of
    // segments: a packet is sent to its segment's chain by one map lookup on
    // its interface (`iifname vmap`/`oifname vmap`), and only the TUN's own
    // input (new connections to the host itself) walks the segments. With a
    // rule per segment in the base chains, 64 more subnets cost one TCP
    // stream 23 % more CPU per GB (README, "Rules per packet").
    let _ = write!(
        out,
        "  chain input {{\n    type filter hook input priority filter - 10; policy accept;\n    \
         iifname \"{TUN_NAME}\" ip saddr @peers udp dport {VXLAN_PORT} accept\n    \
         udp dport {VXLAN_PORT} drop\n    iifname \"{TUN_NAME}\" jump input_tun\n"
    );
    // A workload reaches its host only at the address the host was exposed
    // with on that subnet: not its other addresses (node, underlay, another
    // subnet's), and never over IPv6 (the host takes no part in a segment's
    // IPv6: no link-local services, no router advertisements from a workload).
    // A port mapping's replies (the host reaching a published port itself,
    // DNATed to a workload) are the one exception, as in the other chains.
    out += "    ct status dnat accept\n";
    vmap(&mut out, "iifname", segments, "input_seg");
    let _ = write!(
        out,
        "    iifname \"{BRIDGE_PREFIX}*\" meta nfproto ipv6 drop\n    \
         iifname \"{BRIDGE_PREFIX}*\" fib daddr type local drop\n  }}\n"
    );
    // From a peer over the tunnel, the host takes only VXLAN (above),
    // answers to its own connections, and a subnet's remote workloads at
    // the address it was exposed with there: a member must not reach the
    // host's other services (bound to 0.0.0.0) through the tunnel, past an
    // underlay firewall that lets only WireGuard between hosts.
    out += "  chain input_tun {\n    ct state established,related accept\n    ct status dnat accept\n";
    for (i, s) in segments.iter().enumerate() {
        let _ = writeln!(out, "    ip saddr @remote{i} ip daddr {} accept", s.subnet);
    }
    // A peer's node address may ping this host's (a diagnostic of the tunnel
    // itself; no service answers it).
    out += "    ip saddr @peers icmp type echo-request accept\n    drop\n  }\n";
    for (i, s) in segments.iter().enumerate() {
        let _ = write!(out, "  chain input_seg{i} {{\n    ip daddr {} accept\n  }}\n", s.subnet);
    }
    // Port mappings (CNI portmap, DNAT) are the one explicit way in. Within a
    // bridge anything goes; between a bridge and the TUN only the subnet's
    // own addresses and its remote workloads; nothing else into or out of a
    // bridge or the TUN.
    out += "  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n    \
            ct status dnat accept\n";
    if !segments.is_empty() {
        let mut targets: Vec<(String, String)> =
            segments.iter().enumerate().map(|(i, s)| (s.bridge.clone(), format!("forward_seg{i}"))).collect();
        targets.push((TUN_NAME.to_string(), "forward_tun".into()));
        vmap_of(&mut out, "iifname", &targets);
    }
    let _ = write!(
        out,
        "    iifname \"{BRIDGE_PREFIX}*\" drop\n    oifname \"{BRIDGE_PREFIX}*\" drop\n    \
         iifname \"{TUN_NAME}\" drop\n    oifname \"{TUN_NAME}\" drop\n  }}\n"
    );
    for (i, s) in segments.iter().enumerate() {
        let (b, net) = (&s.bridge, s.subnet);
        let _ = write!(
            out,
            "  chain forward_seg{i} {{\n    oifname \"{b}\" accept\n    \
             oifname \"{TUN_NAME}\" ip saddr {net} ip daddr @remote{i} accept\n    drop\n  }}\n"
        );
    }
    if !segments.is_empty() {
        out += "  chain forward_tun {\n";
        vmap(&mut out, "oifname", segments, "forward_tun_seg");
        out += "    drop\n  }\n";
        for (i, s) in segments.iter().enumerate() {
            let _ = write!(
                out,
                "  chain forward_tun_seg{i} {{\n    ip saddr @remote{i} ip daddr {} accept\n    drop\n  }}\n",
                s.subnet
            );
        }
    }
    // The host itself on a segment: only from the address it was exposed with.
    out += "  chain output {\n    type filter hook output priority filter - 10; policy accept;\n    ct status dnat accept\n";
    vmap(&mut out, "oifname", segments, "output_seg");
    let _ = writeln!(out, "    oifname \"{BRIDGE_PREFIX}*\" meta nfproto ipv6 drop");
    out += "  }\n";
    for (i, s) in segments.iter().enumerate() {
        let _ = write!(out, "  chain output_seg{i} {{\n    ip saddr != {} drop\n  }}\n", s.subnet);
    }
    out += &mss_chain();
    out += "}\n";
    out += &super::l2::bridge_table(segments);
    out
}

/// The element changes that turn the applied `old` rules into `new`, as one
/// `nft -f` transaction, when only set elements differ (a remote workload or
/// a peer came or went: the common case, O(change) instead of a reload of
/// every element); `None` when the chains themselves change (segments,
/// overlay ranges) and the tables must be replaced with [`ruleset`].
pub fn update(old: &Rules, new: &Rules) -> Option<String> {
    let same_chains = old.overlay == new.overlay
        && old.segments.len() == new.segments.len()
        && old.segments.iter().zip(&new.segments).all(|(a, b)| a.bridge == b.bridge && a.subnet == b.subnet);
    if !same_chains {
        return None;
    }
    let mut out = String::new();
    let mut elements = |name: &str, old: &BTreeSet<Ipv4Addr>, new: &BTreeSet<Ipv4Addr>| {
        for (verb, mut items) in [("delete", old.difference(new)), ("add", new.difference(old))] {
            if let Some(first) = items.next() {
                let _ = write!(out, "{verb} element inet {TABLE} {name} {{ {first}");
                for a in items {
                    let _ = write!(out, ", {a}");
                }
                out.push_str(" }\n");
            }
        }
    };
    for (i, (a, b)) in old.segments.iter().zip(&new.segments).enumerate() {
        elements(&format!("remote{i}"), &a.remote, &b.remote);
    }
    elements("peers", &old.peers, &new.peers);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of chain `name` in a ruleset (its rules, one per line).
    fn chain<'a>(r: &'a str, name: &str) -> &'a str {
        let head = format!("  chain {name} {{\n");
        let start = r.find(&head).unwrap_or_else(|| panic!("chain {name} in\n{r}")) + head.len();
        let body = &r[start..start + r[start..].find("  }\n").unwrap()];
        // Base chains: without their hook line.
        body.strip_prefix("    type ").map_or(body, |b| &b[b.find('\n').unwrap() + 1..])
    }

    #[test]
    fn a_packet_meets_as_many_rules_with_64_segments_as_with_one() {
        let segs = |n: u32| Rules {
            segments: (0..n)
                .map(|i| Segment {
                    bridge: bridge_name(i + 1),
                    subnet: format!("10.100.{i}.0/24").parse().unwrap(),
                    remote: [format!("10.100.{i}.9").parse().unwrap()].into(),
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
        assert_eq!(chain(&many, "input_tun").lines().count(), 64 + 4);
        // No segments: no maps (nft refuses an empty one) and no segment chains.
        let none = ruleset(&Rules::default());
        assert!(!none.contains("vmap") && !none.contains("_seg"), "{none}");
    }

    #[test]
    fn the_ruleset_replaces_the_tables_and_routes_only_within_a_subnet() {
        let seg = |vni, subnet: &str, remote: &[&str]| Segment {
            bridge: bridge_name(vni),
            subnet: subnet.parse().unwrap(),
            remote: remote.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let segments = vec![seg(5, "10.32.0.0/16", &["10.32.0.7", "10.32.0.9"]), seg(9, "10.2.3.0/24", &[])];
        let r = ruleset(&Rules { segments, ..Default::default() });
        assert!(r.starts_with("table inet weave {}\ndelete table inet weave\ntable bridge weave {}\n"), "{r}");
        assert!(r.contains("elements = { 10.32.0.7, 10.32.0.9 }"), "{r}");
        // One map lookup on the input interface picks the segment's chain;
        // anything else into or out of a bridge or the TUN is dropped.
        let forward = chain(&r, "forward");
        assert!(
            forward.contains(
                "    ct status dnat accept\n    iifname vmap { \"wvbr-5\" : jump forward_seg0, \
                 \"wvbr-9\" : jump forward_seg1, \"wvtun0\" : jump forward_tun }\n    iifname \"wvbr-*\" drop\n    \
                 oifname \"wvbr-*\" drop\n    iifname \"wvtun0\" drop\n    oifname \"wvtun0\" drop\n"
            ),
            "{forward}"
        );
        // Within a bridge anything; from it to the TUN only the subnet to its remote workloads.
        assert_eq!(
            chain(&r, "forward_seg0"),
            "    oifname \"wvbr-5\" accept\n    \
             oifname \"wvtun0\" ip saddr 10.32.0.0/16 ip daddr @remote0 accept\n    drop\n"
        );
        assert_eq!(
            chain(&r, "forward_seg1"),
            "    oifname \"wvbr-9\" accept\n    \
             oifname \"wvtun0\" ip saddr 10.2.3.0/24 ip daddr @remote1 accept\n    drop\n"
        );
        // From the TUN only a segment's remote workloads to the segment.
        assert_eq!(
            chain(&r, "forward_tun"),
            "    oifname vmap { \"wvbr-5\" : jump forward_tun_seg0, \"wvbr-9\" : jump forward_tun_seg1 }\n    drop\n"
        );
        assert_eq!(chain(&r, "forward_tun_seg1"), "    ip saddr @remote1 ip daddr 10.2.3.0/24 accept\n    drop\n");
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
        let seg = |vni, subnet: &str| Segment {
            bridge: bridge_name(vni),
            subnet: subnet.parse().unwrap(),
            remote: BTreeSet::new(),
        };
        let r = ruleset(&Rules { segments: vec![seg(5, "10.32.0.0/16"), seg(9, "10.2.3.0/24")], ..Default::default() });
        let input = chain(&r, "input");
        let exposed = input.find("iifname vmap { \"wvbr-5\" : jump input_seg0, \"wvbr-9\" : jump input_seg1 }\n");
        let exposed = exposed.expect("each bridge to its segment's chain");
        assert_eq!(chain(&r, "input_seg1"), "    ip daddr 10.2.3.0/24 accept\n", "own subnet's address");
        assert!(input.find("ct status dnat accept").is_some_and(|d| d < exposed), "{input}");
        let v6 = input.find("iifname \"wvbr-*\" meta nfproto ipv6 drop").expect("no IPv6 to the host");
        let local = input.find("iifname \"wvbr-*\" fib daddr type local drop").expect("no other host address");
        assert!(exposed < v6 && v6 < local, "{input}");
        assert!(chain(&r, "output").contains("oifname \"wvbr-*\" meta nfproto ipv6 drop"), "{r}");
        // IPv4 unicast never crosses VXLAN (it is routed): a member cannot
        // inject frames with another node's workload as their source.
        assert!(
            r.contains("iifname \"wvvx-*\" ether type ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop"),
            "{r}"
        );
    }

    #[test]
    fn the_overlay_is_sealed_from_the_underlay_and_vxlan_comes_only_from_peers_over_the_tun() {
        use weave_proto::v1::{Node, Subnet};
        let node = |id, address: &str| Node { id, address: address.into(), ..Default::default() };
        let subnet = |cidr: &str, vni| Subnet { cidr: cidr.into(), vni, ..Default::default() };
        let map = NetworkMap {
            node_range: "10.47.0.0/16".into(),
            nodes: vec![node(1, "10.47.0.1"), node(2, "10.47.0.2"), node(3, "10.47.0.3")],
            // Nested ranges merge into one interval (the kernel refuses overlaps):
            // the default subnet and the node range lie inside 10.32.0.0/12.
            subnets: vec![subnet("10.32.0.0/12", 0), subnet("10.32.0.0/16", 5), subnet("10.2.3.0/24", 9)],
            ..Default::default()
        };
        let rules = rules(&map, 1, &[], &Default::default());
        assert_eq!(rules.peers, ["10.47.0.2", "10.47.0.3"].iter().map(|a| a.parse().unwrap()).collect());
        let r = ruleset(&rules);
        assert!(r.contains("set peers {\n    type ipv4_addr\n    elements = { 10.47.0.2, 10.47.0.3 }\n"), "{r}");
        assert!(r.contains("flags interval\n    elements = { 10.2.3.0/24, 10.32.0.0/12 }\n"), "{r}");
        // From the underlay, nothing to or from an overlay address; raw priority (before DNAT).
        let pre = &r[r.find("chain prerouting").expect("a prerouting chain")..];
        assert!(pre.starts_with("chain prerouting {\n    type filter hook prerouting priority raw;"), "{r}");
        let accept = pre.find("iifname { \"lo\", \"wvtun0\" } accept\n    iifname \"wvbr-*\" accept\n").unwrap();
        assert!(accept < pre.find("ip daddr @overlay drop\n    ip saddr @overlay drop").unwrap(), "{r}");
        // VXLAN: from the TUN, by a peer's node address, else dropped.
        assert!(
            r.contains("iifname \"wvtun0\" ip saddr @peers udp dport 4789 accept\n    udp dport 4789 drop\n"),
            "{r}"
        );
        // Nothing else from a peer over the TUN reaches the host: answers to
        // its own connections, and a subnet's remote workloads at the
        // host's (exposed) address in that subnet.
        assert!(chain(&r, "input").contains("udp dport 4789 drop\n    iifname \"wvtun0\" jump input_tun\n"), "{r}");
        let tun = "    ct state established,related accept\n    ct status dnat accept\n    \
                   ip saddr @remote0 ip daddr 10.32.0.0/16 accept\n    \
                   ip saddr @remote1 ip daddr 10.2.3.0/24 accept\n    \
                   ip saddr @peers icmp type echo-request accept\n    drop\n";
        assert_eq!(chain(&r, "input_tun"), tun, "{r}");
        assert_eq!(ruleset(&Rules::default()).matches("set peers {\n    type ipv4_addr\n  }").count(), 1);
    }

    #[test]
    fn element_changes_update_the_sets_and_anything_else_replaces_the_tables() {
        let seg = |vni, subnet: &str, remote: &[&str]| Segment {
            bridge: bridge_name(vni),
            subnet: subnet.parse().unwrap(),
            remote: remote.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let peers = |p: &[&str]| p.iter().map(|a| a.parse().unwrap()).collect();
        let old = Rules {
            segments: vec![seg(5, "10.32.0.0/16", &["10.32.0.7", "10.32.0.9"]), seg(9, "10.2.3.0/24", &[])],
            peers: peers(&["10.47.0.2"]),
            overlay: ["10.32.0.0/12".parse().unwrap()].into(),
        };
        let mut new = old.clone();
        new.segments[0].remote.remove(&"10.32.0.9".parse().unwrap());
        new.segments[1].remote.extend(["10.2.3.4".parse::<Ipv4Addr>().unwrap(), "10.2.3.5".parse().unwrap()]);
        new.peers = peers(&["10.47.0.3"]);
        assert_eq!(
            update(&old, &new).unwrap(),
            "delete element inet weave remote0 { 10.32.0.9 }\n\
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
    }
}
