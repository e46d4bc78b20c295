//! Egress (`weavectl subnet add --egress`, `subnet set --egress on`): the
//! workloads of such a subnet leave the overlay through their own host, the
//! way a Kubernetes pod reaches Services, cluster DNS and the world. Only on
//! a host exposed on the subnet (the host's address there is the workloads'
//! default gateway), only for this host's own workloads of it, only to
//! addresses outside every weave range (the node range and every subnet:
//! another subnet stays as far away as before), only out of a device that
//! is not weave's, and masqueraded to the host's own address there. Back in
//! only as replies to those connections. Not to another node's WireGuard
//! endpoint over UDP: a workload would speak to a peer from its host's
//! address and port range, and what a peer does with unauthenticated
//! datagrams from a host (its handshake limiter) is the host's to spend.
use std::fmt::Write;

use super::{Segment, TUN_NAME, WEAVE_DEVICES};

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

/// The line of segment `i`'s forward chain (traffic from its bridge) that
/// lets its workloads out.
pub(super) fn out_of(i: usize, s: &Segment) -> String {
    if !s.egress {
        return String::new();
    }
    format!(
        "    ip daddr . udp dport @endpoints drop\n    \
         ip saddr @local{i} ip daddr != @overlay oifname != \"{WEAVE_DEVICES}\" accept\n"
    )
}

/// The NAT chain: egress leaves with the host's address on the way out.
pub(super) fn nat_chain(segments: &[Segment]) -> String {
    let nets: Vec<String> = segments.iter().filter(|s| s.egress).map(|s| s.subnet.to_string()).collect();
    if nets.is_empty() {
        return String::new();
    }
    format!(
        "  chain egress_nat {{\n    type nat hook postrouting priority srcnat + 10; policy accept;\n    \
         oifname \"{WEAVE_DEVICES}\" return\n    oifname \"{TUN_NAME}\" return\n    \
         ip saddr {{ {} }} ip daddr != @overlay masquerade\n  }}\n",
        nets.join(", ")
    )
}
