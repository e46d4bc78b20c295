//! The `bridge` family: what frames may enter a bridge from a weave port.
//!
//! - `bridge weave` (part of [`super::firewall::ruleset`], replaced with it):
//!   no ARP over VXLAN, IPv4 in an L2 broadcast only for a group, no router
//!   advertisements, redirects or DHCPv6 servers from a weave port.
//! - `bridge weave_guard` ([`guard_ruleset`], replaced when ports come and
//!   go): each workload port carries IPv4, ARP and IPv6 only from its own
//!   addresses.
use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::{
    firewall::{Segment, TABLE},
    kernel::{VXLAN_PREFIX, WEAVE_DEVICES},
};

/// Where IPv4 in an L2 broadcast or multicast frame may go: multicast, the
/// limited broadcast, and each segment's directed broadcast.
fn l2_group_destinations(segments: &[Segment]) -> Vec<String> {
    let multicast: Ipv4Net = "224.0.0.0/4".parse().expect("a network");
    let mut out = vec![multicast.to_string(), Ipv4Addr::BROADCAST.to_string()];
    let directed: BTreeSet<Ipv4Addr> = segments
        .iter()
        .filter(|s| s.subnet.prefix_len() <= 30)
        .map(|s| s.subnet.broadcast())
        .filter(|b| !multicast.contains(b) && *b != Ipv4Addr::BROADCAST)
        .collect();
    out.extend(directed.iter().map(Ipv4Addr::to_string));
    out
}

/// The `bridge` table. No weave port carries a VLAN-tagged frame, in or
/// out: every rule below reads the frame's own `ether type`, which a tag
/// hides (0x8100 or 0x88a8 instead of ARP or IPv4), and a workload's kernel
/// takes a VLAN 0 (priority) tag as none. A member host that sent tagged
/// ARP and IPv4 unicast through its VXLAN device would otherwise get both
/// past these rules into every segment on every host (`e2e_l2_guard`:
/// `a_member_sending_vlan_tagged_frames_over_vxlan_poisons_and_reaches_no_workload`).
/// Nor anything but IPv4, ARP and IPv6: MPLS, PPPoE, LLC/SNAP or a local
/// experimental type carried a forged IPv4 packet past every rule to
/// whichever workload would decapsulate it (found by a review, 2026-12-04;
/// `a_workloads_frames_of_other_protocols_reach_no_workload`).
/// Its chains see every frame entering a port of any
/// bridge on the host, so each rule names weave's ports: `wvvx-*` (VXLAN)
/// and `wv*` (VXLAN and every workload port the agent makes: `wv<hash>` for
/// attach and CNI, `wvd<id>` for Docker); other bridges (docker0) are left
/// alone. Without bridge meta support in every kernel, a port's bridge
/// cannot be matched (`meta ibrname`), hence the names.
/// No echo request to an IPv6 multicast address enters from a weave port:
/// every workload of the segment answered one ping to `ff02::1` with a
/// unicast reply, which every member host encrypted and sent (a container's
/// 27 MB of pings brought back 62 MB; found by a review, 2026-12-03); IPv4
/// ignores broadcast pings by default (`icmp_echo_ignore_broadcasts`).
/// No multicast listener query (MLD) or IGMP membership query enters from a
/// weave port: every workload of the segment, on every host, answered each
/// with its reports (each encrypted once per member host), and a querier on
/// a segment turns the bridges' snooping on its terms; no weave bridge is a
/// querier, so without one the bridges flood multicast, as before (found by
/// a review, 2026-12-04).
/// No IPv4 or IPv6 fragment in an L2 broadcast or multicast frame enters
/// from a weave port: each reached every host of the segment, and the
/// kernel of each (the host's own stack, or `br_netfilter` on the bridged
/// path) and every workload held it for reassembly, up to 30 s, from one
/// pool a namespace has (4 MB by default). A container's 2,000 first
/// fragments, 2.7 MB sent once, filled that pool on every host of its
/// segment and in every workload there, and large fragmented packets
/// (other subnets' traffic, the tunnel's own on an underlay that splits
/// them) were dropped on all of them for as long as it went on (found by a
/// review, 2026-12-06). Whole multicast datagrams pass as before.
/// IPv4 unicast never leaves for the VXLAN device: it crosses hosts routed,
/// through the TUN, and every host drops it arriving over VXLAN (the
/// prerouting rule above). Dropped before it goes, a container's IPv4 to
/// MACs its bridge does not know (which the bridge floods to every port)
/// costs no host an encrypted copy per member.
const UNICAST_IP_OUT: &str =
    "oifname \"wvvx-*\" ether type ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop";

pub(super) fn bridge_table(segments: &[Segment]) -> String {
    let groups = l2_group_destinations(segments).join(", ");
    let port = WEAVE_DEVICES;
    format!(
        "table bridge {TABLE} {{\n  chain prerouting {{\n    type filter hook prerouting priority filter; policy accept;\n    \
         iifname \"{port}\" ether type != {{ ip, arp, ip6 }} drop\n    \
         iifname \"{VXLAN_PREFIX}*\" ether type arp drop\n    \
         iifname \"{VXLAN_PREFIX}*\" ether type ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop\n    \
         iifname \"{port}\" ether type ip ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 ip daddr != {{ {groups} }} drop\n    \
         iifname \"{port}\" ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 ip frag-off & 0x3fff != 0 drop\n    \
         iifname \"{port}\" ether type ip6 ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 exthdr frag exists drop\n    \
         iifname \"{port}\" icmpv6 type {{ nd-router-advert, nd-redirect }} drop\n    \
         iifname \"{port}\" icmpv6 type mld-listener-query drop\n    \
         iifname \"{port}\" igmp type membership-query drop\n    \
         iifname \"{port}\" ip6 daddr ff00::/8 icmpv6 type echo-request drop\n    \
         iifname \"{port}\" ether type ip6 udp sport 547 drop\n  \
         }}\n  chain forward {{\n    \
         type filter hook forward priority filter; policy accept;\n    \
         oifname \"{VXLAN_PREFIX}*\" ether type {{ arp, vlan, 8021ad }} drop\n    \
         {UNICAST_IP_OUT}\n  }}\n  \
         chain output {{\n    type filter hook output priority filter; policy accept;\n    \
         oifname \"{VXLAN_PREFIX}*\" ether type {{ arp, vlan, 8021ad }} drop\n    \
         {UNICAST_IP_OUT}\n  }}\n}}\n"
    )
}

/// The table that holds each workload port to its own address.
pub const GUARD_TABLE: &str = "weave_guard";

/// Why it drops, each counted in its named counter `<reason>_drops`: frames
/// a port sent that were not its own (another source address or MAC, a VLAN
/// tag), and frames past its storm meters
/// (`weave_port_frames_dropped_total{reason="guard"|"storm"}`).
pub const GUARD_DROP_REASONS: [&str; 2] = ["guard", "storm"];

/// Source guard for workload ports, as one `nft -f` transaction that
/// replaces the table `bridge weave_guard`: a frame from a port the agent
/// made for a workload (`ports`: its name, and the address and MAC the agent
/// recorded for the workload there) carries IPv4 only from that address, ARP
/// only as that address at that MAC (or 0.0.0.0, a probe, at that MAC; IPv4
/// over Ethernet only), and no VLAN tag. So a container cannot take another
/// workload's address, its host's, or any other: not as the source of its
/// packets, not in ARP (another workload's traffic on the same host would
/// follow a forged ARP reply to it), nor announce its own address at a
/// neighbour's MAC. IPv6 from the port comes only from the workload's
/// link-local address (`kernel::link_local` of its MAC; attach asks the
/// kernel for that one), or from `::` as MLD reports and a solicitation for
/// that address (duplicate address detection), and a neighbour
/// advertisement from it speaks only for that address: no
/// workload takes another's IPv6 address, as the source of its packets or
/// in neighbour discovery (the twin of a forged ARP reply). Ports not
/// listed (VXLAN, other bridges' ports, ports of older agents) pass
/// untouched. Its own table, apart
/// from `bridge weave`: the agent replaces that one when segments change,
/// this one when ports come and go.
///
/// Storm control (`broadcast_limit` > 0): each workload port puts at most
/// that many broadcast and multicast frames a second (a tenth of that at
/// once) into its segment, and as many unicast frames out to other hosts;
/// the rest are dropped at the port, before the bridge copies them to its
/// other ports and the VXLAN device, and the agent encrypts each copy once
/// per member host. Meters keyed by the port's name (dynamic sets, full
/// again when the table is replaced).
pub fn guard_ruleset(ports: &[(String, Ipv4Addr, Vec<u8>)], broadcast_limit: u32) -> String {
    let t = GUARD_TABLE;
    let mut out = format!("table bridge {t} {{}}\ndelete table bridge {t}\ntable bridge {t} {{\n");
    for r in GUARD_DROP_REASONS {
        out += &format!("  counter {r}_drops {{\n  }}\n");
    }
    let [guard, storm] = GUARD_DROP_REASONS.map(|r| format!("counter name \"{r}_drops\" drop"));
    let names: BTreeSet<String> = ports.iter().map(|(p, _, _)| format!("\"{p}\"")).collect();
    let sources: BTreeSet<String> = ports.iter().map(|(p, ip, _)| format!("\"{p}\" . {ip}")).collect();
    let senders: BTreeSet<String> = ports
        .iter()
        .flat_map(|(p, ip, mac)| {
            let mac = super::kernel::format_mac(mac);
            [format!("\"{p}\" . {ip} . {mac}"), format!("\"{p}\" . 0.0.0.0 . {mac}")]
        })
        .collect();
    let sources6: BTreeSet<String> = ports
        .iter()
        .flat_map(|(p, _, mac)| [format!("\"{p}\" . ::"), format!("\"{p}\" . {}", super::kernel::link_local(mac))])
        .collect();
    for (name, kind, elements) in [
        ("guarded", "ifname", names),
        ("sources", "ifname . ipv4_addr", sources),
        ("senders", "ifname . ipv4_addr . ether_addr", senders),
        ("sources6", "ifname . ipv6_addr", sources6),
    ] {
        super::firewall::set(&mut out, name, kind, false, elements);
    }
    // Two meters a port, each a dynamic set keyed by the port's name: its
    // broadcast and multicast into the segment (ARP aside: it never leaves
    // the host, and an application's multicast must not starve its address
    // resolution), and its unicast that leaves for the VXLAN device (which
    // the bridge also floods to every member host while it does not know
    // the MAC; IPv4 unicast never leaves, `bridge weave`). A tenth of a
    // second's worth passes at once.
    let (group, unicast) = if broadcast_limit > 0 {
        // Unicast to other hosts gets ten times the rate: most of it is to
        // MACs the bridge knows (IPv6 between containers), and a flood of
        // it is copied once per member, not to every local port too.
        let meter = |set: &str, rate: u32| {
            let burst = (rate / 10).max(1);
            format!("update @{set} {{ iifname limit rate over {rate}/second burst {burst} packets }} {storm}")
        };
        for set in ["storm", "unicast_out"] {
            out += &format!(
                "  set {set} {{\n    type ifname\n    flags dynamic, timeout\n    size 65536\n    timeout 60s\n  }}\n"
            );
        }
        (
            format!(
                "ether type != arp ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 {}\n    ",
                meter("storm", broadcast_limit)
            ),
            // IPv4 never leaves this way (`bridge weave` drops it after this
            // chain): it must not use up the budget.
            format!(
                "  chain forward {{\n    type filter hook forward priority filter - 5; policy accept;\n    \
                 oifname \"{VXLAN_PREFIX}*\" iifname @guarded ether type != ip \
                 ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 {}\n  }}\n",
                meter("unicast_out", broadcast_limit.saturating_mul(10))
            ),
        )
    } else {
        (String::new(), String::new())
    };
    out += "  chain prerouting {\n    type filter hook prerouting priority filter - 5; policy accept;\n    \
            iifname != @guarded accept\n    ";
    out += &group;
    out += &format!(
        "ether type ip iifname . ip saddr @sources accept\n    \
         ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
         iifname . arp saddr ip . arp saddr ether @senders accept\n    \
         ether type {{ ip, arp, vlan, 8021ad }} {guard}\n    \
         ether type ip6 iifname . ip6 saddr != @sources6 {guard}\n    \
         ip6 saddr :: meta l4proto != ipv6-icmp {guard}\n    \
         ip6 saddr :: icmpv6 type != {{ mld-listener-report, mld-listener-done, mld2-listener-report, \
         nd-neighbor-solicit }} {guard}\n"
    );
    // A neighbour advertisement's target address, and that of a solicitation
    // from `::` (duplicate address detection), must be the port's own (bits
    // 64-191 of the ICMPv6 message; nft 1.0.6 has no name for them and no
    // set of such raw fields): two rules a port.
    for (port, _, mac) in ports {
        let own = format!("@th,64,128 != 0x{:032x} {guard}\n", u128::from(super::kernel::link_local(mac)));
        out += &format!("    iifname \"{port}\" icmpv6 type nd-neighbor-advert {own}");
        out += &format!("    iifname \"{port}\" ip6 saddr :: icmpv6 type nd-neighbor-solicit {own}");
    }
    out += "  }\n";
    out += &unicast;
    out += "}\n";
    out
}

#[cfg(test)]
mod tests {
    use super::{
        super::firewall::{Rules, ruleset},
        *,
    };
    use crate::plan::kernel::bridge_name;

    #[test]
    fn ipv4_in_an_l2_broadcast_from_a_weave_port_is_only_for_a_group() {
        let seg = |vni, subnet: &str| Segment {
            bridge: bridge_name(vni),
            subnet: subnet.parse().unwrap(),
            remote: BTreeSet::new(),
            local: BTreeSet::new(),
            exposed: None,
            egress: false,
        };
        // Two segments with the same broadcast, a /31 and a /32 (no directed broadcast).
        let segments =
            vec![seg(5, "10.32.0.0/16"), seg(6, "10.32.0.0/16"), seg(9, "10.2.3.0/24"), seg(7, "10.9.0.0/31")];
        let r = ruleset(&Rules { segments: [segments, vec![seg(8, "10.9.1.1/32")]].concat(), ..Default::default() });
        let pre = &r[r.find("table bridge weave {\n  chain prerouting").unwrap()
            ..r.find("chain forward {\n    type filter hook forward priority filter;").unwrap()];
        assert!(
            pre.contains(
                "iifname \"wv*\" ether type ip ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 \
                 ip daddr != { 224.0.0.0/4, 255.255.255.255, 10.2.3.255, 10.32.255.255 } drop\n"
            ),
            "{pre}"
        );
        let empty = ruleset(&Rules::default());
        assert!(empty.contains("ip daddr != { 224.0.0.0/4, 255.255.255.255 } drop\n"), "{empty}");
    }

    #[test]
    fn no_weave_port_carries_router_advertisements_redirects_dhcpv6_servers_or_queries() {
        let r = ruleset(&Rules::default());
        let pre = &r[r.find("table bridge weave {\n  chain prerouting").unwrap()..];
        let pre = &pre[..pre.find("  }\n").unwrap()];
        assert!(pre.contains("iifname \"wv*\" icmpv6 type { nd-router-advert, nd-redirect } drop\n"), "{pre}");
        assert!(pre.contains("iifname \"wv*\" ip6 daddr ff00::/8 icmpv6 type echo-request drop\n"), "{pre}");
        assert!(pre.contains("iifname \"wv*\" ether type ip6 udp sport 547 drop\n"), "{pre}");
        assert!(pre.contains("iifname \"wv*\" icmpv6 type mld-listener-query drop\n"), "{pre}");
        assert!(pre.contains("iifname \"wv*\" igmp type membership-query drop\n"), "{pre}");
    }

    #[test]
    fn no_weave_port_carries_a_vlan_tag_in_or_out() {
        let r = ruleset(&Rules::default());
        let table = &r[r.find("table bridge weave {\n").unwrap()..];
        // First in prerouting: IPv4, ARP and IPv6 only (no VLAN tag, which would
        // hide the `ether type` every later rule reads; no MPLS, PPPoE or LLC
        // carrying an IPv4 packet past them).
        assert!(
            table.contains(
                "policy accept;\n    iifname \"wv*\" ether type != { ip, arp, ip6 } drop\n    iifname \"wvvx-*\""
            ),
            "{table}"
        );
        let out = "oifname \"wvvx-*\" ether type { arp, vlan, 8021ad } drop\n";
        assert_eq!(table.matches(out).count(), 2, "forward and output: {table}");
        assert_eq!(table.matches(&format!("{UNICAST_IP_OUT}\n")).count(), 2, "forward and output: {table}");
        assert!(UNICAST_IP_OUT.starts_with(&format!("oifname \"{VXLAN_PREFIX}*\"")));
    }

    #[test]
    fn a_guarded_port_carries_ipv4_and_arp_only_from_its_own_address() {
        let mac = |last| vec![0x02, 0x42, 0, 0, 0, last];
        let ports = [
            ("wv1a2b".to_string(), "10.32.0.5".parse().unwrap(), mac(5)),
            ("wvd7".into(), "10.2.3.4".parse().unwrap(), mac(7)),
        ];
        let g = guard_ruleset(&ports, 0);
        assert!(g.starts_with("table bridge weave_guard {}\ndelete table bridge weave_guard\n"), "{g}");
        assert!(g.contains("type ifname\n    elements = { \"wv1a2b\", \"wvd7\" }\n"), "{g}");
        assert!(g.contains("elements = { \"wv1a2b\" . 10.32.0.5, \"wvd7\" . 10.2.3.4 }\n"), "{g}");
        // ARP: the port's address or a probe's 0.0.0.0, each only at the port's MAC.
        assert!(
            g.contains(
                "elements = { \"wv1a2b\" . 0.0.0.0 . 02:42:00:00:00:05, \"wv1a2b\" . 10.32.0.5 . 02:42:00:00:00:05, \
                 \"wvd7\" . 0.0.0.0 . 02:42:00:00:00:07, \"wvd7\" . 10.2.3.4 . 02:42:00:00:00:07 }\n"
            ),
            "{g}"
        );
        assert!(g.contains(
            "type filter hook prerouting priority filter - 5; policy accept;\n    iifname != @guarded accept\n    \
             ether type ip iifname . ip saddr @sources accept\n    \
             ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
             iifname . arp saddr ip . arp saddr ether @senders accept\n    \
             ether type { ip, arp, vlan, 8021ad } counter name \"guard_drops\" drop\n    \
             ether type ip6 iifname . ip6 saddr != @sources6 counter name \"guard_drops\" drop\n    \
             ip6 saddr :: meta l4proto != ipv6-icmp counter name \"guard_drops\" drop\n    \
             ip6 saddr :: icmpv6 type != { mld-listener-report, mld-listener-done, mld2-listener-report, \
             nd-neighbor-solicit } counter name \"guard_drops\" drop\n"
        ));
        // IPv6: from the link-local address of the port's MAC or ::, and
        // neighbour advertisements only for that address.
        assert!(
            g.contains(
                "type ifname . ipv6_addr\n    elements = { \"wv1a2b\" . ::, \"wv1a2b\" . fe80::42:ff:fe00:5, \
                 \"wvd7\" . ::, \"wvd7\" . fe80::42:ff:fe00:7 }\n"
            ),
            "{g}"
        );
        assert!(
            g.contains(
                "    iifname \"wv1a2b\" icmpv6 type nd-neighbor-advert @th,64,128 != 0xfe80000000000000004200fffe000005 counter name \"guard_drops\" drop\n\
                 \x20   iifname \"wv1a2b\" ip6 saddr :: icmpv6 type nd-neighbor-solicit \
                 @th,64,128 != 0xfe80000000000000004200fffe000005 counter name \"guard_drops\" drop\n"
            ),
            "{g}"
        );
        // No ports: empty sets (nft refuses an empty elements list), nothing guarded.
        let none = guard_ruleset(&[], 0);
        assert!(!none.contains("elements") && none.contains("iifname != @guarded accept"), "{none}");
        assert!(!g.contains("set storm"), "no limit: no meter");
        // Every drop counted, by why (`weave_port_frames_dropped_total`).
        assert!(g.contains("  counter guard_drops {\n  }\n  counter storm_drops {\n  }\n"), "{g}");
        assert_eq!(g.matches(" drop\n").count(), g.matches("counter name \"guard_drops\" drop\n").count(), "{g}");
    }

    #[test]
    fn a_broadcast_limit_meters_each_guarded_port() {
        let ports = [("wv1a2b".to_string(), "10.32.0.5".parse().unwrap(), vec![2, 0x42, 0, 0, 0, 5])];
        let g = guard_ruleset(&ports, 500);
        assert!(g.contains("set storm {\n    type ifname\n    flags dynamic, timeout\n"), "{g}");
        assert!(g.contains("set unicast_out {\n    type ifname\n    flags dynamic, timeout\n"), "{g}");
        // After the ports it does not guard leave, before anything is accepted.
        assert!(
            g.contains(
                "iifname != @guarded accept\n    ether type != arp ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 \
                 update @storm { iifname limit rate over 500/second burst 50 packets } counter name \"storm_drops\" drop\n    \
                 ether type ip iifname . ip saddr @sources accept\n"
            ),
            "{g}"
        );
        assert!(
            g.contains(
                "type filter hook forward priority filter - 5; policy accept;\n    oifname \"wvvx-*\" iifname @guarded \
                 ether type != ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 \
                 update @unicast_out { iifname limit rate over 5000/second burst 500 packets } counter name \"storm_drops\" drop\n"
            ),
            "{g}"
        );
    }
}
