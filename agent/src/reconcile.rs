//! The map-to-interfaces reconcile as a pure diff: what the host should have
//! ([`Desired`]) against what the kernel has ([`Observed`]) gives an ordered
//! list of [`Change`]s. The netlink module carries them out; nothing here
//! touches the system.
//!
//! One L2 segment per subnet: a bridge `wvbr-<vni>` and a VXLAN device
//! `wvvx-<vni>` (local address = this node's address, port 4789) enslaved to
//! it, plus one all-zero-MAC flood entry per peer in the VXLAN's FDB.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use weave_proto::v1::NetworkMap;

pub const BRIDGE_PREFIX: &str = "wvbr-";
pub const VXLAN_PREFIX: &str = "wvvx-";
pub const VXLAN_PORT: u16 = 4789;
/// IPv4 + UDP + VXLAN + inner Ethernet.
pub const VXLAN_OVERHEAD: u32 = 50;
/// WireGuard over IPv6 (the larger of the two underlays): 40 + 8 + 32.
pub const WIREGUARD_OVERHEAD: u32 = 80;

pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// MTUs of the TUN (node addresses) and of every segment, from the underlay's.
pub fn mtus(underlay: u32) -> (u32, u32) {
    let tun = underlay.saturating_sub(WIREGUARD_OVERHEAD).max(1280);
    (tun, tun - VXLAN_OVERHEAD)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub local: Ipv4Addr,
    pub mtu: u32,
    /// vni -> subnet CIDR (for logs and status).
    pub segments: BTreeMap<u32, String>,
    pub peers: BTreeSet<Ipv4Addr>,
}

impl Desired {
    pub fn from_map(map: &NetworkMap, own_node: u64, local: Ipv4Addr, mtu: u32) -> Self {
        let segments = map.subnets.iter().filter(|s| s.vni != 0).map(|s| (s.vni, s.cidr.clone())).collect();
        let peers = map
            .nodes
            .iter()
            .filter(|n| n.id != own_node)
            .filter_map(|n| n.address.parse().ok())
            .filter(|a| *a != local)
            .collect();
        Self { local, mtu, segments, peers }
    }
}

/// One segment as found in the kernel; missing parts are `None`/`false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedSegment {
    pub bridge_mtu: Option<u32>,
    pub vxlan: Option<ObservedVxlan>,
    pub flood: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVxlan {
    pub local: Option<Ipv4Addr>,
    pub mtu: u32,
    /// Enslaved to the segment's bridge.
    pub in_bridge: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub segments: BTreeMap<u32, ObservedSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    RemoveFlood {
        vni: u32,
        peer: Ipv4Addr,
    },
    /// Deletes the VXLAN device and the bridge.
    RemoveSegment {
        vni: u32,
    },
    /// Deletes only the VXLAN device (it must be rebuilt with other settings);
    /// the bridge, and the workloads on it, stay.
    RemoveVxlan {
        vni: u32,
    },
    /// Creates whatever part is missing: bridge, VXLAN, enslavement, MTU, up.
    EnsureSegment {
        vni: u32,
        local: Ipv4Addr,
        mtu: u32,
    },
    AddFlood {
        vni: u32,
        peer: Ipv4Addr,
    },
}

/// Ordered: removals of flood entries and stale segments first, then
/// creations, then new flood entries (which need their VXLAN device).
pub fn diff(desired: &Desired, observed: &Observed) -> Vec<Change> {
    let mut remove_flood = Vec::new();
    let mut remove = Vec::new();
    let mut ensure = Vec::new();
    let mut add_flood = Vec::new();
    for (&vni, seg) in &observed.segments {
        if !desired.segments.contains_key(&vni) {
            remove.push(Change::RemoveSegment { vni });
            continue;
        }
        let vxlan_ok = seg.vxlan.as_ref().is_some_and(|v| v.local == Some(desired.local));
        if seg.vxlan.is_some() && !vxlan_ok {
            // A VXLAN with another local address (the node was re-addressed):
            // rebuild it, and its flood entries with it.
            remove.push(Change::RemoveVxlan { vni });
            continue;
        }
        for peer in seg.flood.difference(&desired.peers) {
            remove_flood.push(Change::RemoveFlood { vni, peer: *peer });
        }
    }
    for &vni in desired.segments.keys() {
        let seg = observed.segments.get(&vni);
        let complete = seg.is_some_and(|s| {
            s.bridge_mtu == Some(desired.mtu)
                && s.vxlan
                    .as_ref()
                    .is_some_and(|v| v.local == Some(desired.local) && v.mtu == desired.mtu && v.in_bridge)
        });
        if !complete {
            ensure.push(Change::EnsureSegment { vni, local: desired.local, mtu: desired.mtu });
        }
        let rebuilt = seg.is_none_or(|s| s.vxlan.as_ref().is_none_or(|v| v.local != Some(desired.local)));
        for peer in &desired.peers {
            let present = !rebuilt && seg.is_some_and(|s| s.flood.contains(peer));
            if !present {
                add_flood.push(Change::AddFlood { vni, peer: *peer });
            }
        }
    }
    remove_flood.into_iter().chain(remove).chain(ensure).chain(add_flood).collect()
}

#[cfg(test)]
mod tests {
    use weave_proto::v1::{Node, Subnet};

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn desired(vnis: &[u32], peers: &[&str]) -> Desired {
        Desired {
            local: ip("10.47.0.1"),
            mtu: 1370,
            segments: vnis.iter().map(|v| (*v, format!("net{v}"))).collect(),
            peers: peers.iter().map(|p| ip(p)).collect(),
        }
    }

    fn complete(flood: &[&str]) -> ObservedSegment {
        ObservedSegment {
            bridge_mtu: Some(1370),
            vxlan: Some(ObservedVxlan { local: Some(ip("10.47.0.1")), mtu: 1370, in_bridge: true }),
            flood: flood.iter().map(|p| ip(p)).collect(),
        }
    }

    #[test]
    fn empty_host_gets_segments_then_flood_entries() {
        let changes = diff(&desired(&[5, 9], &["10.47.0.2", "10.47.0.3"]), &Observed::default());
        assert_eq!(
            changes,
            vec![
                Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 },
                Change::EnsureSegment { vni: 9, local: ip("10.47.0.1"), mtu: 1370 },
                Change::AddFlood { vni: 5, peer: ip("10.47.0.2") },
                Change::AddFlood { vni: 5, peer: ip("10.47.0.3") },
                Change::AddFlood { vni: 9, peer: ip("10.47.0.2") },
                Change::AddFlood { vni: 9, peer: ip("10.47.0.3") },
            ]
        );
    }

    #[test]
    fn converged_host_needs_nothing() {
        let observed = Observed { segments: [(5, complete(&["10.47.0.2"]))].into() };
        assert!(diff(&desired(&[5], &["10.47.0.2"]), &observed).is_empty());
    }

    #[test]
    fn removed_peer_and_subnet_go_first() {
        let observed = Observed { segments: [(5, complete(&["10.47.0.2", "10.47.0.3"])), (6, complete(&[]))].into() };
        let changes = diff(&desired(&[5, 7], &["10.47.0.2", "10.47.0.4"]), &observed);
        assert_eq!(
            changes,
            vec![
                Change::RemoveFlood { vni: 5, peer: ip("10.47.0.3") },
                Change::RemoveSegment { vni: 6 },
                Change::EnsureSegment { vni: 7, local: ip("10.47.0.1"), mtu: 1370 },
                Change::AddFlood { vni: 5, peer: ip("10.47.0.4") },
                Change::AddFlood { vni: 7, peer: ip("10.47.0.2") },
                Change::AddFlood { vni: 7, peer: ip("10.47.0.4") },
            ]
        );
    }

    #[test]
    fn wrong_local_address_rebuilds_vxlan_and_its_flood_entries() {
        let mut seg = complete(&["10.47.0.2"]);
        seg.vxlan.as_mut().unwrap().local = Some(ip("10.47.0.9"));
        let observed = Observed { segments: [(5, seg)].into() };
        assert_eq!(
            diff(&desired(&[5], &["10.47.0.2"]), &observed),
            vec![
                Change::RemoveVxlan { vni: 5 },
                Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 },
                Change::AddFlood { vni: 5, peer: ip("10.47.0.2") },
            ]
        );
    }

    #[test]
    fn partial_segment_is_completed_without_touching_good_flood_entries() {
        let mut seg = complete(&["10.47.0.2"]);
        seg.vxlan.as_mut().unwrap().in_bridge = false;
        seg.bridge_mtu = Some(1500);
        let observed = Observed { segments: [(5, seg)].into() };
        assert_eq!(
            diff(&desired(&[5], &["10.47.0.2"]), &observed),
            vec![Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 }]
        );
    }

    #[test]
    fn desired_from_map_skips_self_and_vni_zero() {
        let map = NetworkMap {
            nodes: vec![
                Node { id: 1, address: "10.47.0.1".into(), ..Default::default() },
                Node { id: 2, address: "10.47.0.2".into(), ..Default::default() },
            ],
            subnets: vec![
                Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 100, ..Default::default() },
                Subnet { id: 2, cidr: "10.2.0.0/24".into(), vni: 0, ..Default::default() },
            ],
            ..Default::default()
        };
        let d = Desired::from_map(&map, 1, ip("10.47.0.1"), 1370);
        assert_eq!(d.peers, [ip("10.47.0.2")].into());
        assert_eq!(d.segments.keys().copied().collect::<Vec<_>>(), vec![100]);
    }

    #[test]
    fn mtus_leave_room_for_wireguard_and_vxlan() {
        assert_eq!(mtus(1500), (1420, 1370));
        assert_eq!(mtus(9000), (8920, 8870));
        assert_eq!(bridge_name(16_777_215).len(), 13);
    }
}
