//! IPv4 options on what the host routes for the overlay. A router on the
//! way writes its address into a Record Route (or timestamp) option, and the
//! address a host picks for a bridge without one of its own is its underlay
//! address: a workload's `ping -R` to a remote peer came back with both
//! hosts' underlay and node addresses, which weave otherwise keeps from
//! workloads (found by a review, 2026-12-07). A switch writes nothing, and
//! neither do clouds' networks, which drop such packets: so does this, for
//! what is routed (sent to the bridges' MAC, or in from the TUN). Bridged
//! frames keep their options: IGMP's Router Alert, within a segment.
use super::{BRIDGE_PREFIX, Rules, TUN_NAME};

/// Forward-chain lines (the base chain, first).
pub(super) fn no_options(rules: &Rules) -> String {
    let mut out = format!("    iifname \"{TUN_NAME}\" ip hdrlength != 5 drop\n");
    if let Some(mac) = &rules.bridge_mac {
        out += &format!("    iifname \"{BRIDGE_PREFIX}*\" ether daddr {mac} ip hdrlength != 5 drop\n");
    }
    out
}
