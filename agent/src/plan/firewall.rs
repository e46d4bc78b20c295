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
//! - `bridge weave`: no ARP crosses a VXLAN device. Remote workloads are answered
//!   by proxy ARP with the local bridge's MAC (their IPv4 unicast is routed); a
//!   remote one's own ARP, or a host's proxy ARP for another's, would mislead.
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
    kernel::{BRIDGE_PREFIX, TUN_NAME, VXLAN_PORT, WEAVE_DEVICES, bridge_mac, bridge_name, format_mac},
    reconcile::{exposed_addresses, local_workloads, remote_workloads, segment_subnets},
};

pub const TABLE: &str = "weave";

/// Packets a second from the tunnel to addresses of a segment that are not
/// (yet) this host's workloads, all peers together.
const UNKNOWN_LOCAL_PER_SECOND: u32 = 50;

/// One subnet's segment as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Workloads (and exposed hosts) of the subnet on other nodes.
    pub remote: BTreeSet<Ipv4Addr>,
    /// This node's workloads of the subnet: the only destinations the host
    /// routes back into the bridge a packet came from (see `forward_seg`).
    pub local: BTreeSet<Ipv4Addr>,
    /// This host's address in the subnet (`weavectl expose`), if exposed:
    /// the one address at which workloads and remote workloads reach it.
    pub exposed: Option<Ipv4Addr>,
    /// Its workloads leave the overlay through this host ([`egress`]):
    /// the subnet's egress, on a host exposed on it.
    pub egress: bool,
}

/// Everything the rules are made of, from one map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub segments: Vec<Segment>,
    /// The other nodes' addresses: the only sources VXLAN is accepted from.
    pub peers: BTreeSet<Ipv4Addr>,
    /// The node range and every subnet: addresses the underlay never carries.
    pub overlay: BTreeSet<Ipv4Net>,
    /// The node range alone: the hosts' addresses in the tunnel.
    pub node_range: Option<Ipv4Net>,
    /// The MAC of this node's bridges (`kernel::bridge_mac`), once the map has this node.
    pub bridge_mac: Option<String>,
    /// The other nodes' IPv4 WireGuard endpoints: egress sends no
    /// WireGuard message to them ([`egress`]).
    pub endpoints: BTreeSet<(Ipv4Addr, u16)>,
    /// The coordinators' IPv4 addresses and gRPC ports: egress never
    /// reaches them ([`Rules::with_coordinators`]).
    pub coordinators: BTreeSet<(Ipv4Addr, u16)>,
    /// This node's address (in the node range), once the map has this node.
    pub own_address: Option<Ipv4Addr>,
    /// The agent's WireGuard port (0: none; [`Rules::with_listen_port`]).
    pub listen_port: u16,
}

impl Rules {
    /// These rules with the coordinators at `addrs` (the agent's list, resolved).
    pub fn with_coordinators(mut self, addrs: &[std::net::SocketAddr]) -> Self {
        self.coordinators = addrs
            .iter()
            .filter_map(|a| match a {
                std::net::SocketAddr::V4(a) => Some((*a.ip(), a.port())),
                std::net::SocketAddr::V6(_) => None,
            })
            .collect();
        self
    }

    /// These rules with the agent's WireGuard port, never egress's ([`egress::nat_chain`]).
    pub fn with_listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }
}

/// The segments of `map`, seen from `own_node`.
pub fn segments(map: &NetworkMap, own_node: u64) -> Vec<Segment> {
    let mut remote = remote_workloads(map, own_node);
    let mut local = local_workloads(map, own_node);
    let mut exposed = exposed_addresses(map, own_node);
    let egress: BTreeSet<u32> = map.subnets.iter().filter(|s| s.egress).map(|s| s.vni).collect();
    segment_subnets(map)
        .into_iter()
        .map(|(vni, subnet)| {
            let exposed = exposed.remove(&vni);
            Segment {
                bridge: bridge_name(vni),
                subnet,
                remote: remote.remove(&vni).unwrap_or_default(),
                local: local.remove(&vni).unwrap_or_default(),
                egress: exposed.is_some() && egress.contains(&vni),
                exposed,
            }
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
    let node_range = map.node_range.parse::<Ipv4Net>().ok().map(|n| n.trunc());
    let own_address = map.nodes.iter().find(|n| n.id == own_node).and_then(|n| n.address.parse().ok());
    let bridge_mac = own_address.map(|ip| format_mac(&bridge_mac(ip)));
    let endpoints = map
        .nodes
        .iter()
        .filter(|n| n.id != own_node)
        .flat_map(|n| n.endpoints.iter().chain(std::iter::once(&n.observed_endpoint)))
        .filter_map(|e| match e.parse::<std::net::SocketAddr>() {
            Ok(std::net::SocketAddr::V4(a)) => Some((*a.ip(), a.port())),
            _ => None,
        })
        .collect();
    Rules { segments, peers, overlay, node_range, bridge_mac, endpoints, own_address, ..Default::default() }
}

/// A WireGuard endpoint as an element of the `endpoints` set.
fn endpoint((ip, port): &(Ipv4Addr, u16)) -> String {
    format!("{ip} . {port}")
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

/// VXLAN between this host and its peers is not tracked (priority raw:
/// after defragmentation, before conntrack): its source port changes with
/// every inner flow, so each was an entry in the host's conntrack table that
/// nothing used (the rules above judge VXLAN without connection state), and a
/// member writing into its VXLAN device from ever new ports made up to
/// 65,536 of them on every other host (found by a review, 2026-12-03). And an
/// ICMP error quoting a VXLAN datagram is no longer "related" to anything.
fn untracked_vxlan() -> String {
    format!(
        "  chain raw_prerouting {{\n    type filter hook prerouting priority raw; policy accept;\n    \
         iifname \"{TUN_NAME}\" ip saddr @peers udp dport {VXLAN_PORT} notrack\n  }}\n  \
         chain raw_output {{\n    type filter hook output priority raw; policy accept;\n    \
         oifname \"{TUN_NAME}\" ip daddr @peers udp dport {VXLAN_PORT} notrack\n  }}\n"
    )
}

/// The three tables for these rules (pure, for tests and logs).
pub fn ruleset(rules: &Rules) -> String {
    let segments = &rules.segments;
    // Declare-then-delete, then define: one transaction, so the tables are
    // replaced atomically, sets included (`flush table` would keep set elements).
    let mut out = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    out += &format!("table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n");
    out += &format!("table arp {TABLE} {{}}\ndelete table arp {TABLE}\n");
    out += &format!("table inet {TABLE} {{\n");
    for (i, s) in segments.iter().enumerate() {
        set(&mut out, &format!("remote{i}"), "ipv4_addr", false, &s.remote);
        set(&mut out, &format!("local{i}"), "ipv4_addr", false, &s.local);
    }
    set(&mut out, "peers", "ipv4_addr", false, &rules.peers);
    set(&mut out, "endpoints", "ipv4_addr . inet_service", false, rules.endpoints.iter().map(endpoint));
    set(&mut out, "grpc", "ipv4_addr . inet_service", false, egress::grpc(rules));
    // The kernel refuses overlapping intervals: nested ranges are merged first.
    set(&mut out, "overlay", "ipv4_addr", true, Ipv4Net::aggregate(&rules.overlay.iter().copied().collect()));
    // Before defragmentation (-400), so each fragment is judged by itself:
    // the kernel joins fragments by addresses and id whatever interface each
    // came in on, and a member once sent a VXLAN datagram's first fragment
    // over the underlay (overlay source, never seen here as a whole) and its
    // last through the tunnel, where the router let a fragment without a
    // header pass; the datagram was whole again before a later hook.
    // And so before conntrack and DNAT: a port mapping's packet (to the
    // host's underlay address) passes, and is DNATed afterwards. A peer's
    // node address never comes from a bridge (a frame over VXLAN claiming
    // it could start a fragmented datagram the tunnel then completes).
    // Nothing for 127.0.0.0/8 from a weave device: the kernel drops such a
    // packet as a martian only when it routes it, which is after DNAT, so a
    // port published on 127.0.0.1 alone (`-p 127.0.0.1:8080:80`, a rule
    // `ip daddr 127.0.0.1 dnat to …`) was open to a member through the
    // tunnel and to a workload through its bridge (as in Kubernetes'
    // CVE-2020-8558; found by a review, 2026-12-03). IPv6 needs no rule: the
    // kernel drops ::1 from any other device before the first hook.
    let _ = write!(
        out,
        "  chain prerouting {{\n    type filter hook prerouting priority -450; policy accept;\n    \
         ip daddr 127.0.0.0/8 iifname \"{WEAVE_DEVICES}\" drop\n    \
         iifname {{ \"lo\", \"{TUN_NAME}\" }} accept\n    \
         iifname \"{BRIDGE_PREFIX}*\" ip saddr @peers drop\n    iifname \"{BRIDGE_PREFIX}*\" accept\n    \
         ip daddr @overlay drop\n    ip saddr @overlay drop\n  }}\n"
    );
    // VXLAN only from a peer's node address over the TUN, and only to an
    // address of this host's own (not a broadcast: a peer's datagram to
    // 255.255.255.255, first fragment over a segment, last over the
    // tunnel, would reach the VXLAN socket too).
    // Per packet, the hooks below cost the same whatever the number of
    // segments: a packet is sent to its segment's chain by one map lookup on
    // its interface (`iifname vmap`/`oifname vmap`), and only the TUN's own
    // input (new connections to the host itself) walks the segments. With a
    // rule per segment in the base chains, 64 more subnets cost one TCP
    // stream 23 % more CPU per GB (bench/ROUNDS.md, "Rules per packet").
    out += "  chain input {\n    type filter hook input priority filter - 10; policy accept;\n";
    // No "fragmentation needed" about a packet to a node address, from
    // anywhere: every host is one hop from every other through the tunnel,
    // whose MTU each knows, and no agent sends one, so such a message is
    // forged. A member (quoting another host's VXLAN flow, which conntrack
    // then calls related) or a workload of an exposed segment lowered this
    // host's path MTU to a peer for 10 minutes, and its VXLAN datagrams to
    // that peer went out in fragments (found by a review, 2026-12-03). The
    // quoted destination sits at the same offset whatever the quoted
    // header's length: the kernel reads the same bytes.
    if let Some(range) = rules.node_range {
        let (first, last) = (u32::from(range.network()), u32::from(range.broadcast()));
        let _ =
            writeln!(out, "    icmp type destination-unreachable icmp code frag-needed @th,192,32 {first}-{last} drop");
    }
    let _ = write!(
        out,
        "    iifname \"{TUN_NAME}\" ip saddr @peers fib daddr type local udp dport {VXLAN_PORT} accept\n    \
         udp dport {VXLAN_PORT} drop\n    iifname \"{TUN_NAME}\" jump input_tun\n"
    );
    // A workload reaches its host only at the address the host was exposed
    // with on that subnet: not its other addresses (node, underlay, another
    // subnet's), and never over IPv6 (the host takes no part in a segment's
    // IPv6: no link-local services, no router advertisements from a workload).
    out += dnat::input(); // A port mapping's replies: the one exception.
    // Nothing else from a bridge: no other local address (a /32 on lo or
    // kube-ipvs0 inside the subnet included), no broadcast or multicast to
    // the host's sockets unless it is exposed there.
    vmap(&mut out, "iifname", segments, "input_seg");
    // A workload port outside its bridge (its subnet removed with --force or
    // left out here, its bridge deleted by hand until the next full pass):
    // weave's other devices (`wv*`) carry nothing the rules above did not
    // let through, so the container behind it reaches nothing, IPv6
    // link-local included (fail closed; found by a review, 2026-12-02).
    let _ = writeln!(out, "    iifname \"{BRIDGE_PREFIX}*\" drop\n    iifname \"{WEAVE_DEVICES}\" drop\n  }}");
    // From a peer over the tunnel, the host takes only VXLAN (above),
    // answers to its own connections, and a subnet's remote workloads at
    // the address it was exposed with there: a member must not reach the
    // host's other services (bound to 0.0.0.0) through the tunnel, past an
    // underlay firewall that lets only WireGuard between hosts.
    out += "  chain input_tun {\n    ct state established,related accept\n";
    out += &dnat::input_tun(rules);
    for (i, s) in segments.iter().enumerate() {
        if let Some(exposed) = s.exposed {
            let _ = writeln!(out, "    ip saddr @remote{i} ct original ip daddr {exposed} accept");
        }
    }
    // A peer's node address may ping this host's (a diagnostic of the tunnel
    // itself; no service answers it).
    out += "    ip saddr @peers icmp type echo-request accept\n    drop\n  }\n";
    for (i, s) in segments.iter().enumerate() {
        let _ = writeln!(out, "  chain input_seg{i} {{");
        if let Some(exposed) = s.exposed {
            let _ = writeln!(
                out,
                "    ip daddr {exposed} accept\n    meta nfproto ipv4 fib daddr . iif type {{ broadcast, multicast }} accept"
            );
        }
        out += &dnat::input_seg(s);
        out += egress::into_host(s);
        out += "  }\n";
    }
    // Port mappings are the one explicit way in (`dnat.rs`). Within a bridge
    // anything goes; between a bridge and the TUN only the subnet's own
    // addresses and its remote workloads; nothing else in or out.
    out += "  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n";
    out += &(routed::no_options(rules) + &egress::guards(rules));
    out += &dnat::forward();
    out += &egress::replies(segments);
    if !segments.is_empty() {
        let mut targets: Vec<(String, String)> =
            segments.iter().enumerate().map(|(i, s)| (s.bridge.clone(), format!("forward_seg{i}"))).collect();
        targets.push((TUN_NAME.to_string(), "forward_tun".into()));
        vmap_of(&mut out, "iifname", &targets);
    }
    let _ = write!(
        out,
        "    iifname \"{BRIDGE_PREFIX}*\" drop\n    oifname \"{BRIDGE_PREFIX}*\" drop\n    \
         iifname \"{TUN_NAME}\" drop\n    oifname \"{TUN_NAME}\" drop\n    \
         iifname \"{WEAVE_DEVICES}\" drop\n    oifname \"{WEAVE_DEVICES}\" drop\n  }}\n"
    );
    // Back out of the bridge it came from: a frame the bridge forwards
    // (`br_netfilter` shows it here), or a packet the host routes (one sent
    // to the bridges' MAC) only to a workload of this host. A container that
    // routed its subnet through its host made the host ARP for every address
    // it named, and filled the neighbour table every namespace of the host
    // shares (found by a review, 2026-12-04).
    for (i, s) in segments.iter().enumerate() {
        let (b, net) = (&s.bridge, s.subnet);
        let within = match &rules.bridge_mac {
            Some(mac) => {
                format!("oifname \"{b}\" ether daddr != {mac} accept\n    oifname \"{b}\" ip daddr @local{i} accept")
            }
            None => format!("oifname \"{b}\" accept"),
        };
        let _ = write!(
            out,
            "  chain forward_seg{i} {{\n    {within}\n    \
             oifname \"{TUN_NAME}\" ip saddr {net} ip daddr @remote{i} accept\n{}    drop\n  }}\n",
            egress::out_of(i, s)
        );
    }
    if !segments.is_empty() {
        out += "  chain forward_tun {\n";
        vmap(&mut out, "oifname", segments, "forward_tun_seg");
        out += "    drop\n  }\n";
        // To a workload of this host; to any other address of the subnet
        // (a workload whose address this host's set does not have yet) only
        // at a trickle: a member sending to made-up addresses made the host
        // ARP for each, as a container routing through its host did (found
        // by a review, 2026-12-04).
        for (i, s) in segments.iter().enumerate() {
            let _ = write!(
                out,
                "  chain forward_tun_seg{i} {{\n    ip saddr @remote{i} ip daddr @local{i} accept\n    \
                 ip saddr @remote{i} ip daddr {} limit rate {UNKNOWN_LOCAL_PER_SECOND}/second burst \
                 {UNKNOWN_LOCAL_PER_SECOND} packets accept\n    drop\n  }}\n",
                s.subnet
            );
        }
    }
    // The host itself on a segment: only from the address it was exposed with.
    out += "  chain output {\n    type filter hook output priority filter - 10; policy accept;\n    ct status dnat accept\n";
    vmap(&mut out, "oifname", segments, "output_seg");
    let _ = writeln!(
        out,
        "    oifname \"{BRIDGE_PREFIX}*\" meta nfproto ipv6 drop\n    oifname \"{TUN_NAME}\" jump output_tun\n    \
         oifname \"{BRIDGE_PREFIX}*\" accept\n    oifname \"{WEAVE_DEVICES}\" drop\n  }}"
    );
    // And into the tunnel: to a peer's node address (VXLAN, a ping), or to a
    // subnet's remote workloads from the address the host was exposed with
    // there; nothing else. A member that adds a subnet and allocates an
    // address the host reaches through its default route (a name server or
    // registry across the WAN: no LAN check can see it) would otherwise get
    // the host's own traffic to it, and answer; now the host's packets die
    // here (its workloads' already did, in the forward chain).
    out += "  chain output_tun {\n    ip daddr @peers accept\n";
    for (i, s) in segments.iter().enumerate() {
        if let Some(exposed) = s.exposed {
            let _ = writeln!(out, "    ip saddr {exposed} ip daddr @remote{i} accept");
        }
    }
    out += "    drop\n  }\n";
    for (i, s) in segments.iter().enumerate() {
        let _ =
            write!(out, "  chain output_seg{i} {{\n{}    ip saddr != {} drop\n  }}\n", egress::from_host(s), s.subnet);
    }
    out += &mss_chain();
    out += &untracked_vxlan();
    out += &egress::nat_chain(rules);
    out += "}\n";
    out += &super::l2::bridge_table(segments);
    out += &arp_table(rules);
    out
}

/// `arp weave`: no ARP request for an overlay address (a node address on
/// the TUN, an exposed address on a bridge) is answered from outside weave's
/// devices. Linux answers ARP for any of its addresses on any interface
/// (`arp_ignore` 0), so an outsider on the underlay learned which overlay
/// addresses a host holds (found by a review, 2026-12-03). The traffic it
/// could then send was dropped already (prerouting's `@overlay` rules).
fn arp_table(rules: &Rules) -> String {
    let mut out = format!("table arp {TABLE} {{\n");
    set(&mut out, "overlay", "ipv4_addr", true, Ipv4Net::aggregate(&rules.overlay.iter().copied().collect()));
    let _ = write!(
        out,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname != \"{WEAVE_DEVICES}\" arp operation request arp daddr ip @overlay drop\n  }}\n}}\n"
    );
    out
}

/// The element changes that turn the applied `old` rules into `new`, as one
/// `nft -f` transaction, when only set elements differ (a remote workload or a
/// peer came or went: O(change), not a reload of every element); `None` when
/// the chains change (segments, overlay ranges): [`ruleset`] replaces the tables.
pub fn update(old: &Rules, new: &Rules) -> Option<String> {
    let same_chains = old.overlay == new.overlay
        && old.node_range == new.node_range
        && old.bridge_mac == new.bridge_mac
        && old.coordinators == new.coordinators
        && old.own_address == new.own_address
        && old.segments.len() == new.segments.len()
        && old.segments.iter().zip(&new.segments).all(|(a, b)| {
            a.bridge == b.bridge && a.subnet == b.subnet && a.exposed == b.exposed && a.egress == b.egress
        });
    if !same_chains {
        return None;
    }
    let mut out = String::new();
    for (i, (a, b)) in old.segments.iter().zip(&new.segments).enumerate() {
        elements(&mut out, &format!("remote{i}"), &a.remote, &b.remote);
        elements(&mut out, &format!("local{i}"), &a.local, &b.local);
    }
    elements(&mut out, "peers", &old.peers, &new.peers);
    let endpoints = |r: &Rules| -> BTreeSet<String> { r.endpoints.iter().map(endpoint).collect() };
    elements(&mut out, "endpoints", &endpoints(old), &endpoints(new));
    elements(&mut out, "grpc", &egress::grpc(old), &egress::grpc(new));
    Some(out)
}

/// `delete element` / `add element` lines for set `name` from `old` to `new` (only those become text).
fn elements<T: Ord + std::fmt::Display>(out: &mut String, name: &str, old: &BTreeSet<T>, new: &BTreeSet<T>) {
    for (verb, mut items) in [("delete", old.difference(new)), ("add", new.difference(old))] {
        if let Some(first) = items.next() {
            let _ = write!(out, "{verb} element inet {TABLE} {name} {{ {first}");
            for a in items {
                let _ = write!(out, ", {a}");
            }
            out.push_str(" }\n");
        }
    }
}

mod dnat;
mod egress;
mod routed;
#[cfg(test)]
mod tests;
