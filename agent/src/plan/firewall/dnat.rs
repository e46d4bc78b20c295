//! What a DNAT (a port mapping: CNI `portmap`, Docker's `-p`, kube-proxy's
//! Services) may carry past weave's rules. Into a weave device, from
//! anywhere: a mapping is the runtime's explicit way in. Out of one, its
//! replies. From a weave device to the host itself or out of weave, only
//! what the packet's first destination allowed: a workload or a member
//! whose traffic the host rewrote to its underlay address or onward to the
//! underlay went past every check that keeps a subnet without egress (and
//! the tunnel) shut, since the rules judged the rewritten packet by its
//! status alone (found by a review, 2026-12-07).

use super::{Rules, Segment, WEAVE_DEVICES};

/// The forward base chain's lines, before the per-interface map. A DNATed
/// packet from a weave device out of weave in its first direction falls to
/// its segment's chain, where only egress lets anything out.
pub(super) fn forward() -> String {
    format!(
        "    ct status dnat oifname \"{WEAVE_DEVICES}\" accept\n    \
         ct status dnat iifname != \"{WEAVE_DEVICES}\" accept\n    \
         ct status dnat ct direction reply accept\n"
    )
}

/// The input base chain's line for a segment's bridge: a port mapping's
/// replies (the host reaching a published port itself, DNATed to a
/// workload); a workload's own DNATed packets go on to its segment's chain.
pub(super) fn input() -> &'static str {
    "    ct status dnat ct direction reply accept\n"
}

/// A segment chain's line (`input_seg`): a workload reaches its host through
/// a DNAT where its first destination was the address the host was exposed
/// with there (a REDIRECT, a mapping to another local address).
pub(super) fn input_seg(s: &Segment) -> String {
    s.exposed.map(|exposed| format!("    ct status dnat ct original ip daddr {exposed} accept\n")).unwrap_or_default()
}

/// `input_tun`'s line: from the tunnel, a DNAT to the host itself is a
/// port mapping on its node address (one on an exposed address is that
/// segment's rule: its first destination), not one of a cluster IP or any
/// other address the host rewrites to itself.
pub(super) fn input_tun(rules: &Rules) -> String {
    rules.own_address.map(|own| format!("    ct status dnat ct original ip daddr {own} accept\n")).unwrap_or_default()
}
