//! Egress (`weavectl subnet add --egress`, `subnet set --egress on`): the
//! workloads of such a subnet leave the overlay through their own host, the
//! way a Kubernetes pod reaches Services, cluster DNS and the world. Only on
//! a host exposed on the subnet (the host's address there is the workloads'
//! default gateway), only for this host's own workloads of it, only to
//! addresses outside every weave range (the node range and every subnet:
//! another subnet stays as far away as before), only out of a device that
//! is not weave's, and masqueraded to the host's own address there. Back in
//! only as replies to those connections.
//!
//! Masqueraded, a workload speaks with its host's address, so two things
//! that count what a host's address sends stay out of its reach, also
//! through a DNAT (a Kubernetes Service in front of them): the coordinators'
//! gRPC ports (their failed-authentication limit is per address: a workload
//! sending bad credentials locked its own host's agent out; found by a
//! review, 2026-12-05) and WireGuard messages to another node's endpoint
//! (its handshake limiter, per address, is the host's to spend). Only
//! datagrams shaped as WireGuard messages: a member announces its endpoints
//! itself, and one that announced a public DNS server's address must not
//! cut every egress workload off from it (found by the same review).
use std::fmt::Write;

use super::{BRIDGE_PREFIX, Rules, Segment, TUN_NAME, WEAVE_DEVICES};

/// The first four bytes of each WireGuard message (its type, then three
/// zero bytes), as nftables reads the payload: big-endian.
const WIREGUARD_TYPES: &str = "0x01000000, 0x02000000, 0x03000000, 0x04000000";

/// Forward-chain lines (the base chain, first: before DNATed traffic is let
/// through) that keep egress off what counts its host's address.
pub(super) fn guards(rules: &Rules) -> String {
    if !rules.segments.iter().any(|s| s.egress) {
        return String::new();
    }
    // To a coordinator's address, or to any node's at a coordinator's port
    // (a coordinator on a host network, Kubernetes', is reached at its
    // node's address, which the agent's list does not have), also where a
    // DNAT sent it (this hook sees the destination after it); or to an
    // address the agent knows a coordinator by that a DNAT sent elsewhere (a
    // Service's cluster IP, what the Kubernetes manifests advertise).
    let mut out = format!("    iifname \"{BRIDGE_PREFIX}*\" ip daddr . tcp dport @grpc drop\n");
    for (ip, port) in &rules.coordinators {
        let _ = writeln!(
            out,
            "    iifname \"{BRIDGE_PREFIX}*\" meta l4proto tcp ct original ip daddr {ip} ct original proto-dst {port} drop"
        );
    }
    let _ = writeln!(
        out,
        "    iifname \"{BRIDGE_PREFIX}*\" ip daddr . udp dport @endpoints @th,64,32 {{ {WIREGUARD_TYPES} }} drop"
    );
    out
}

/// Forward-chain lines (the base chain, before the per-interface map):
/// replies to an egress connection, back to the workload that made it.
pub(super) fn replies(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate().filter(|(_, s)| s.egress) {
        let _ =
            writeln!(out, "    oifname \"{}\" ct direction reply ct status snat ip daddr @local{i} accept", s.bridge);
    }
    out
}

/// The elements of the `grpc` set: the coordinators, and every node's
/// endpoint address at each coordinator's port.
pub(super) fn grpc(rules: &Rules) -> std::collections::BTreeSet<String> {
    let ports: std::collections::BTreeSet<u16> = rules.coordinators.iter().map(|(_, p)| *p).collect();
    let nodes = rules.endpoints.iter().flat_map(|(ip, _)| ports.iter().map(move |p| (*ip, *p)));
    rules.coordinators.iter().copied().chain(nodes).map(|(ip, port)| format!("{ip} . {port}")).collect()
}

/// The line of segment `i`'s forward chain (traffic from its bridge) that
/// lets its workloads out.
pub(super) fn out_of(i: usize, s: &Segment) -> String {
    if !s.egress {
        return String::new();
    }
    format!("    ip saddr @local{i} ip daddr != @overlay oifname != \"{WEAVE_DEVICES}\" accept\n")
}

/// The NAT chain: egress leaves with the host's address on the way out.
/// And to a workload of an egress subnet on another host (over the TUN or
/// the segment), what comes from outside weave's ranges or from the node
/// itself (an outside client through a Service or NodePort DNAT, the host)
/// leaves from this host's address there, which every host takes as the
/// subnet's: kube-proxy
/// masqueraded the node's own to the TUN's address, a node address the
/// other host refuses, and an outside client's went unchanged, its answer
/// then leaving through the other host (found by a review, 2026-12-05).
/// Before kube-proxy's masquerade (srcnat + 0): a connection's first SNAT
/// is the one that holds. A workload of this host keeps seeing the client.
pub(super) fn nat_chain(rules: &Rules) -> String {
    let segments = &rules.segments;
    let egress: Vec<&Segment> = segments.iter().filter(|s| s.egress).collect();
    if egress.is_empty() {
        return String::new();
    }
    let mut out =
        "  chain egress_nat {\n    type nat hook postrouting priority srcnat - 10; policy accept;\n".to_string();
    // Sources outside weave's ranges, the node's own address and the other
    // nodes' (a kubelet whose node IP is its weave address, at a NodePort
    // here): never a workload of another subnet, which a DNAT on this host
    // (a Service's) would otherwise have carried into this segment as this
    // host (found by a review, 2026-12-05).
    let mut sources = vec!["ip saddr != @overlay".to_string(), "ip saddr @peers".to_string()];
    sources.extend(rules.own_address.map(|a| format!("ip saddr {a}")));
    for (i, s) in segments.iter().enumerate().filter(|(_, s)| s.egress) {
        if let Some(exposed) = s.exposed {
            let bridge = &s.bridge;
            for from in &sources {
                let _ = writeln!(
                    out,
                    "    oifname {{ \"{TUN_NAME}\", \"{bridge}\" }} ip daddr @remote{i} {from} snat ip to {exposed}"
                );
            }
        }
    }
    let nets = egress.iter().map(|s| s.subnet.to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "    oifname \"{WEAVE_DEVICES}\" return");
    // Never from the agent's WireGuard port: neither kept (Linux keeps a
    // flow's port while the tuple is free, the tunnel to that peer idle and
    // its conntrack entry gone) nor picked for a flow whose port clashed
    // (from a default range that holds it). The peer's every datagram to
    // this host's endpoint was then the reply of the workload's flow,
    // delivered to it, the peer cut off from this host (found by reviews,
    // 2026-12-06). UDP gets ranges without it; a kept port stays kept.
    let port = rules.listen_port;
    if port > 0 {
        let from = format!("    ip saddr {{ {nets} }} ip daddr != @overlay udp sport");
        if port > 1 {
            let _ = writeln!(out, "{from} < {port} masquerade to :1-{}", port - 1);
        }
        if port < 65535 {
            let _ = writeln!(out, "{from} > {port} masquerade to :{}-65535", port + 1);
        }
        let range = if port > 32768 { format!("1024-{}", port - 1) } else { format!("{}-65535", port + 1) };
        let _ = writeln!(out, "{from} {port} masquerade to :{range}");
    }
    let _ = write!(out, "    ip saddr {{ {nets} }} ip daddr != @overlay masquerade\n  }}\n");
    out
}

/// The line of segment `i`'s input chain (traffic from its bridge to this
/// host) for an egress segment: its workloads reach the host at any of its
/// addresses outside weave's ranges, as they reach every other host (a
/// Kubernetes pod reaches its own node's kubelet, a node-local DNS cache);
/// not the node address or another subnet's exposed address.
pub(super) fn into_host(s: &Segment) -> &'static str {
    if s.egress { "    ip daddr != @overlay accept\n" } else { "" }
}

/// And the host's answers from those addresses (the output chain lets the
/// host speak on a segment only from the subnet's addresses otherwise).
pub(super) fn from_host(s: &Segment) -> &'static str {
    if s.egress { "    ct direction reply ip saddr != @overlay accept\n" } else { "" }
}
