//! The map-to-interfaces reconcile as a pure diff: what the host should have
//! ([`Desired`]) against what the kernel has ([`Observed`]) gives an ordered
//! list of [`Change`]s. The netlink module carries them out; nothing here
//! touches the system.
//!
//! One L2 segment per subnet: a bridge `wvbr-<vni>` and a VXLAN device
//! `wvvx-<vni>` (local address = this node's address, port 4789) enslaved to
//! it, plus one all-zero-MAC flood entry in the VXLAN's FDB per peer that
//! hosts a workload in the segment (a peer without one gets none of its
//! broadcasts, and the router takes no frames for the segment from it). The
//! VXLAN carries broadcast, multicast and IPv6.
//!
//! IPv4 unicast to a workload on another host is routed instead (the fast
//! path: the TUN takes whole TCP super-packets, the kernel's VXLAN cannot):
//! a /32 route per remote workload through the TUN, a proxy-ARP entry for it
//! on its subnet's bridge (so local workloads get the bridge's MAC for it),
//! and a route for the subnet onto its bridge (for packets from the TUN to
//! local workloads). These carry [`super::kernel::ROUTE_PROTOCOL`] so they are recognised as ours.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use weave_proto::v1::NetworkMap;

use super::{
    kernel::{SEGMENT_LEARNED_MACS, bridge_mac},
    netmap::allocation_address,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub local: Ipv4Addr,
    pub mtu: u32,
    /// vni -> subnet CIDR (for logs and status).
    pub segments: BTreeMap<u32, String>,
    /// vni -> the node addresses of the peers with a workload (or an
    /// exposed address) in it: where the segment's broadcast goes.
    pub flood: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    /// Remote workload -> source address for this host's own traffic to it
    /// (the host's exposed address on that subnet, if it has one).
    pub routes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// vni -> the remote workloads of that segment (proxy ARP on its bridge).
    pub proxies: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    /// vni -> the subnet, routed onto its bridge.
    pub subnets: BTreeMap<u32, Ipv4Net>,
    /// vni -> the workloads of this node (attach pins their MACs on the bridge).
    pub local_workloads: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
}

/// The workloads (and exposed hosts) on other nodes, by segment.
pub fn remote_workloads(map: &NetworkMap, own_node: u64) -> BTreeMap<u32, BTreeSet<Ipv4Addr>> {
    addresses_by_segment(map, |a| a.node_id != own_node)
}

/// This host's workloads per segment, by vni (not its exposed addresses).
pub fn local_workloads(map: &NetworkMap, own_node: u64) -> BTreeMap<u32, BTreeSet<Ipv4Addr>> {
    addresses_by_segment(map, |a| a.node_id == own_node && !a.container.starts_with("host:"))
}

/// The addresses of the allocations `keep` takes, by segment (every segment
/// has an entry, empty or not).
fn addresses_by_segment(
    map: &NetworkMap,
    keep: impl Fn(&weave_proto::v1::Allocation) -> bool,
) -> BTreeMap<u32, BTreeSet<Ipv4Addr>> {
    let vni: BTreeMap<u64, u32> = map.subnets.iter().filter(|s| s.vni != 0).map(|s| (s.id, s.vni)).collect();
    let mut out: BTreeMap<u32, BTreeSet<Ipv4Addr>> = vni.values().map(|v| (*v, BTreeSet::new())).collect();
    for a in map.allocations.iter().filter(|a| keep(a)) {
        if let (Some(v), Some(ip)) = (vni.get(&a.subnet_id), allocation_address(&a.address)) {
            out.entry(*v).or_default().insert(ip);
        }
    }
    out
}

/// The allocation key of node `name`'s own (exposed) address on a segment:
/// `host:<name>` (the coordinator refuses it to any other node).
pub fn host_key(name: &str) -> String {
    format!("host:{name}")
}

/// This host's exposed address (its `host:` allocation) per segment, by vni.
pub fn exposed_addresses(map: &NetworkMap, own_node: u64) -> BTreeMap<u32, Ipv4Addr> {
    let vni_of: BTreeMap<u64, u32> = map.subnets.iter().filter(|s| s.vni != 0).map(|s| (s.id, s.vni)).collect();
    // Its own name's key only: `host:<another>` is no exposed address of
    // this host's (the same review as the coordinator's refusal of it).
    let Some(own) = map.nodes.iter().find(|n| n.id == own_node).map(|n| host_key(&n.name)) else {
        return BTreeMap::new();
    };
    map.allocations
        .iter()
        .filter(|a| a.node_id == own_node && a.container == own)
        .filter_map(|a| Some((*vni_of.get(&a.subnet_id)?, allocation_address(&a.address)?)))
        .collect()
}

/// Whether subnet `s` has a segment (a bridge and VXLAN device on every
/// host): a vni and IPv4. An IPv6 subnet is address management through the
/// API alone (workloads are IPv4, and a frame's IPv6 source must be its
/// workload's link-local), so no host builds a segment for it.
pub fn is_segment(s: &weave_proto::v1::Subnet) -> bool {
    s.vni != 0 && s.cidr.parse::<Ipv4Net>().is_ok()
}

/// The subnets with a segment, by vni.
pub fn segment_subnets(map: &NetworkMap) -> BTreeMap<u32, Ipv4Net> {
    map.subnets
        .iter()
        .filter(|s| is_segment(s))
        .filter_map(|s| Some((s.vni, s.cidr.parse::<Ipv4Net>().ok()?.trunc())))
        .collect()
}

impl Desired {
    pub fn from_map(map: &NetworkMap, own_node: u64, local: Ipv4Addr, mtu: u32) -> Self {
        let segments = map.subnets.iter().filter(|s| is_segment(s)).map(|s| (s.vni, s.cidr.clone())).collect();
        let peers: BTreeMap<u64, Ipv4Addr> = map
            .nodes
            .iter()
            .filter(|n| n.id != own_node)
            .filter_map(|n| Some((n.id, n.address.parse().ok()?)))
            .filter(|(_, a)| *a != local)
            .collect();
        let vni_of: BTreeMap<u64, u32> = map.subnets.iter().filter(|s| is_segment(s)).map(|s| (s.id, s.vni)).collect();
        let mut flood: BTreeMap<u32, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for a in &map.allocations {
            if let (Some(&vni), Some(&peer)) = (vni_of.get(&a.subnet_id), peers.get(&a.node_id))
                && vni != 0
            {
                flood.entry(vni).or_default().insert(peer);
            }
        }
        let proxies = remote_workloads(map, own_node);
        // This host's exposed address per segment: the source of its own traffic to remote workloads.
        let exposed = exposed_addresses(map, own_node);
        let routes = proxies
            .iter()
            .flat_map(|(vni, ips)| ips.iter().map(|ip| (*ip, exposed.get(vni).copied())))
            .filter(|(ip, _)| *ip != local)
            .collect();
        let mut workloads: BTreeMap<u32, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for a in map.allocations.iter().filter(|a| a.node_id == own_node) {
            if let (Some(&vni), Some(ip)) = (vni_of.get(&a.subnet_id), allocation_address(&a.address)) {
                workloads.entry(vni).or_default().insert(ip);
            }
        }
        Self { local, mtu, segments, flood, routes, proxies, subnets: segment_subnets(map), local_workloads: workloads }
    }
}

impl Desired {
    /// The peers segment `vni`'s broadcast goes to.
    pub fn flood_of(&self, vni: u32) -> &BTreeSet<Ipv4Addr> {
        static NONE: BTreeSet<Ipv4Addr> = BTreeSet::new();
        self.flood.get(&vni).unwrap_or(&NONE)
    }

    /// Without the segments `vnis` (and the routes to their workloads): the
    /// subnets [`super::netmap::underlay_conflicts`] names are never installed.
    pub fn without<T>(mut self, vnis: &BTreeMap<u32, T>) -> Self {
        let dropped: Vec<Ipv4Net> = vnis.keys().filter_map(|v| self.subnets.get(v).copied()).collect();
        for vni in vnis.keys() {
            self.segments.remove(vni);
            self.flood.remove(vni);
            self.proxies.remove(vni);
            self.subnets.remove(vni);
            self.local_workloads.remove(vni);
        }
        self.routes.retain(|ip, _| !dropped.iter().any(|n| n.contains(ip)));
        self
    }

    /// Without routes (or proxy entries) to `addrs`: addresses this host
    /// reaches another way and must keep reaching so
    /// ([`super::netmap::depended_on_in_member_subnets`]).
    pub fn without_routes_to(mut self, addrs: &[Ipv4Addr]) -> Self {
        for a in addrs {
            self.routes.remove(a);
            for p in self.proxies.values_mut() {
                p.remove(a);
            }
        }
        self
    }
}

/// One segment as found in the kernel; missing parts are `None`/`false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedSegment {
    pub bridge_mtu: Option<u32>,
    /// A bridge made before its MAC was fixed is completed (MAC, proxy delay).
    pub bridge_mac: Option<Vec<u8>>,
    /// The bridge learns MACs without [`SEGMENT_LEARNED_MACS`] as its cap
    /// (one an older agent made, on a kernel that has the cap: 6.8 and later).
    pub bridge_uncapped: bool,
    /// The bridge snoops multicast (one an older agent made): it is turned
    /// off (`Netlink::no_snooping` says why).
    pub bridge_snooping: bool,
    pub vxlan: Option<ObservedVxlan>,
    pub flood: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVxlan {
    pub local: Option<Ipv4Addr>,
    pub mtu: u32,
    /// Enslaved to the segment's bridge.
    pub in_bridge: bool,
    /// The cap on MACs it learns (0: none). The kernel cannot change it on
    /// a device: one made without [`SEGMENT_LEARNED_MACS`] (by an older
    /// agent) is made again.
    pub learned_max: u32,
}

impl ObservedVxlan {
    /// Made for this node's address, with the cap on learned MACs: else it
    /// is rebuilt, with its flood entries.
    fn current(&self, local: Ipv4Addr) -> bool {
        self.local == Some(local) && self.learned_max == SEGMENT_LEARNED_MACS
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub segments: BTreeMap<u32, ObservedSegment>,
    /// Our /32 routes through the TUN, with their preferred source.
    pub routes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// The MTU each of those routes carries (absent: none, the TUN's).
    pub route_mtus: BTreeMap<Ipv4Addr, u32>,
    /// Proxy-ARP entries on our bridges, by vni.
    pub proxies: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    /// Our subnet routes on our bridges.
    pub subnets: BTreeSet<(u32, Ipv4Net)>,
    /// Permanent neighbour entries on our bridges, by vni.
    pub pinned: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
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
    RemoveRoute {
        dst: Ipv4Addr,
    },
    RemoveProxy {
        vni: u32,
        addr: Ipv4Addr,
    },
    /// A pinned neighbour whose workload is no longer this node's.
    Unpin {
        vni: u32,
        addr: Ipv4Addr,
    },
    RemoveSubnetRoute {
        vni: u32,
        net: Ipv4Net,
    },
    AddSubnetRoute {
        vni: u32,
        net: Ipv4Net,
    },
    AddProxy {
        vni: u32,
        addr: Ipv4Addr,
    },
    /// Adds or replaces the route (the source may have changed), with the
    /// segments' MTU: the TUN's is larger by VXLAN's 50 bytes, and a host's
    /// own packet of a size between the two (its exposed address's, with
    /// DF) was dropped at the far bridge, whose "fragmentation needed" no
    /// host lets back into the tunnel (found by a review, 2026-12-07). With
    /// the route's MTU the sender is told at once (EMSGSIZE, or PMTU).
    AddRoute {
        dst: Ipv4Addr,
        src: Option<Ipv4Addr>,
        mtu: u32,
    },
}

/// Ordered: removals first (routes, proxy entries, flood entries, stale
/// segments), then creations, then what needs the segment's devices: flood
/// entries, subnet routes, proxy entries, and last the routes that draw
/// traffic into all of that.
pub fn diff(desired: &Desired, observed: &Observed) -> Vec<Change> {
    let mut changes = Vec::new();
    for dst in observed.routes.keys().filter(|d| !desired.routes.contains_key(d)) {
        changes.push(Change::RemoveRoute { dst: *dst });
    }
    let none = BTreeSet::new();
    for (vni, addrs) in &observed.proxies {
        // A removed segment takes its proxy entries and routes with its bridge.
        if !desired.segments.contains_key(vni) {
            continue;
        }
        for addr in addrs.difference(desired.proxies.get(vni).unwrap_or(&none)) {
            changes.push(Change::RemoveProxy { vni: *vni, addr: *addr });
        }
    }
    // Only a pin whose address now belongs to another node is removed: an
    // address missing from the map may be one attach just allocated whose
    // allocation has not reached the map yet (detach unpins its own).
    for (vni, addrs) in &observed.pinned {
        for addr in addrs.intersection(desired.proxies.get(vni).unwrap_or(&none)) {
            changes.push(Change::Unpin { vni: *vni, addr: *addr });
        }
    }
    for &(vni, net) in &observed.subnets {
        if desired.segments.contains_key(&vni) && desired.subnets.get(&vni) != Some(&net) {
            changes.push(Change::RemoveSubnetRoute { vni, net });
        }
    }
    changes.extend(diff_segments(desired, observed));
    for (&vni, &net) in &desired.subnets {
        let bridge_kept = observed.segments.get(&vni).is_some_and(|s| s.bridge_mtu.is_some());
        if !(bridge_kept && observed.subnets.contains(&(vni, net))) {
            changes.push(Change::AddSubnetRoute { vni, net });
        }
    }
    for (&vni, addrs) in &desired.proxies {
        let bridge_kept = observed.segments.get(&vni).is_some_and(|s| s.bridge_mtu.is_some());
        for &addr in addrs {
            if !(bridge_kept && observed.proxies.get(&vni).is_some_and(|o| o.contains(&addr))) {
                changes.push(Change::AddProxy { vni, addr });
            }
        }
    }
    for (&dst, &src) in &desired.routes {
        if observed.routes.get(&dst) != Some(&src) || observed.route_mtus.get(&dst) != Some(&desired.mtu) {
            changes.push(Change::AddRoute { dst, src, mtu: desired.mtu });
        }
    }
    changes
}

/// Bridges, VXLAN devices and flood entries.
fn diff_segments(desired: &Desired, observed: &Observed) -> Vec<Change> {
    let mut remove_flood = Vec::new();
    let mut remove = Vec::new();
    let mut ensure = Vec::new();
    let mut add_flood = Vec::new();
    for (&vni, seg) in &observed.segments {
        if !desired.segments.contains_key(&vni) {
            remove.push(Change::RemoveSegment { vni });
            continue;
        }
        let vxlan_ok = seg.vxlan.as_ref().is_some_and(|v| v.current(desired.local));
        if seg.vxlan.is_some() && !vxlan_ok {
            // A VXLAN with another local address (the node was re-addressed)
            // or without the cap on learned MACs: rebuild it, and its flood
            // entries with it.
            remove.push(Change::RemoveVxlan { vni });
            continue;
        }
        for peer in seg.flood.difference(desired.flood_of(vni)) {
            remove_flood.push(Change::RemoveFlood { vni, peer: *peer });
        }
    }
    for &vni in desired.segments.keys() {
        let seg = observed.segments.get(&vni);
        let complete = seg.is_some_and(|s| {
            s.bridge_mtu == Some(desired.mtu)
                && s.bridge_mac.as_deref().is_none_or(|m| m == bridge_mac(desired.local))
                && !s.bridge_uncapped
                && !s.bridge_snooping
                && s.vxlan.as_ref().is_some_and(|v| v.current(desired.local) && v.mtu == desired.mtu && v.in_bridge)
        });
        if !complete {
            ensure.push(Change::EnsureSegment { vni, local: desired.local, mtu: desired.mtu });
        }
        let rebuilt = seg.is_none_or(|s| s.vxlan.as_ref().is_none_or(|v| !v.current(desired.local)));
        for peer in desired.flood_of(vni) {
            let present = !rebuilt && seg.is_some_and(|s| s.flood.contains(peer));
            if !present {
                add_flood.push(Change::AddFlood { vni, peer: *peer });
            }
        }
    }
    remove_flood.into_iter().chain(remove).chain(ensure).chain(add_flood).collect()
}

impl Observed {
    /// What the kernel holds after `change` was carried out (as
    /// `host::netlink` does it) on what `self` describes. The control loop
    /// keeps the state it last applied this way, so a map change costs a diff
    /// against memory instead of dumping links, FDB, routes and neighbours;
    /// a periodic and an on-error full pass re-read the kernel.
    pub fn record(&mut self, change: &Change) {
        match *change {
            Change::RemoveFlood { vni, peer } => {
                if let Some(s) = self.segments.get_mut(&vni) {
                    s.flood.remove(&peer);
                }
            }
            Change::RemoveSegment { vni } => {
                // The bridge takes its proxy entries, pins and subnet route with it.
                self.segments.remove(&vni);
                self.forget_bridge(vni);
            }
            Change::RemoveVxlan { vni } => {
                if let Some(s) = self.segments.get_mut(&vni) {
                    s.vxlan = None;
                    s.flood.clear();
                }
            }
            Change::EnsureSegment { vni, local, mtu } => {
                let s = self.segments.entry(vni).or_default();
                let new_bridge = s.bridge_mtu.is_none();
                s.bridge_mtu = Some(mtu);
                s.bridge_mac = Some(bridge_mac(local));
                s.bridge_uncapped = false;
                s.bridge_snooping = false;
                match &mut s.vxlan {
                    Some(v) => {
                        v.mtu = mtu;
                        v.in_bridge = true;
                    }
                    None => {
                        s.vxlan = Some(ObservedVxlan {
                            local: Some(local),
                            mtu,
                            in_bridge: true,
                            learned_max: SEGMENT_LEARNED_MACS,
                        });
                        s.flood.clear();
                    }
                }
                if new_bridge {
                    self.forget_bridge(vni);
                }
            }
            Change::AddFlood { vni, peer } => {
                self.segments.entry(vni).or_default().flood.insert(peer);
            }
            Change::RemoveRoute { dst } => {
                self.routes.remove(&dst);
                self.route_mtus.remove(&dst);
            }
            Change::AddRoute { dst, src, mtu } => {
                self.routes.insert(dst, src);
                self.route_mtus.insert(dst, mtu);
            }
            Change::RemoveProxy { vni, addr } => {
                if let Some(p) = self.proxies.get_mut(&vni) {
                    p.remove(&addr);
                }
            }
            Change::AddProxy { vni, addr } => {
                self.proxies.entry(vni).or_default().insert(addr);
            }
            Change::Unpin { vni, addr } => {
                if let Some(p) = self.pinned.get_mut(&vni) {
                    p.remove(&addr);
                }
            }
            Change::RemoveSubnetRoute { vni, net } => {
                self.subnets.remove(&(vni, net));
            }
            Change::AddSubnetRoute { vni, net } => {
                self.subnets.insert((vni, net));
            }
        }
    }

    fn forget_bridge(&mut self, vni: u32) {
        self.proxies.remove(&vni);
        self.pinned.remove(&vni);
        self.subnets.retain(|(v, _)| *v != vni);
    }
}

#[cfg(test)]
mod tests;
