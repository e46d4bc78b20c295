//! The network map as the agent holds it: applying watch events (pure), and
//! reading out what this host should have (peers and L2 segments).
use std::net::{Ipv4Addr, SocketAddr};

use weave_proto::v1::{MapChange, NetworkMap, WatchEvent, watch_event::Event};

use crate::error::Error;

/// Applies one watch event: a snapshot replaces the map, a change edits it
/// (with the coordinator's own rules, [`weave_proto::map::apply_change`]).
/// Either way the map's revision becomes the event's.
pub fn apply(map: &mut NetworkMap, event: WatchEvent) -> Result<(), Error> {
    match event.event {
        Some(Event::Snapshot(snapshot)) => {
            *map = snapshot;
            map.revision = event.revision.max(map.revision);
        }
        Some(Event::Change(change @ MapChange { change: Some(_) })) => {
            weave_proto::map::apply_change(map, event.revision, &change);
        }
        Some(Event::Change(MapChange { change: None })) | None => {
            return Err(Error::Map(format!("revision {} carries no event", event.revision)));
        }
    }
    Ok(())
}

/// What this host knows of its own underlay beyond the map: the networks it
/// reaches directly (no gateway, not through a weave device), each with its
/// interface, and the addresses on them it depends on (gateways, name
/// servers; not ARP neighbours, which any machine on the underlay can make
/// itself): `host::routes::lan` reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLan {
    pub networks: Vec<(ipnet::IpNet, String)>,
    /// Every route but the default ones and weave's (through a gateway, host
    /// routes), with its interface: no member's subnet may overlap one.
    pub routes: Vec<(ipnet::IpNet, String)>,
    /// Addresses the host depends on: gateways, name servers (on the LAN or
    /// reached through the default route), `--dns-upstream`.
    pub known: Vec<std::net::IpAddr>,
    /// This host's node: a subnet where it has workloads is never left out
    /// for its LAN (a route that came later, a VPN, a DHCP renewal must not
    /// cut live workloads off; it is the host's own configuration).
    pub own_node: u64,
}

impl HostLan {
    /// Why a subnet `net` would cut this host off part of its LAN: it holds
    /// a whole network of the host (a LAN swallowed), or, inside one, an
    /// address the host uses there. A subnet merely inside a broad route
    /// (a VPN's 10.0.0.0/8) with none of those is fine when the admin added
    /// it: its more specific route only shadows addresses nobody here uses
    /// (that the admin knows of). A member's subnet (`by_member`) may not lie
    /// inside any network of the host: its maker could then allocate the
    /// address of a machine there that is neither gateway nor name server (a
    /// NAS, a registry) and take this host's traffic to it, nor over any
    /// other route of the host (`routes`). For the admin's subnets, host
    /// routes (/32, /128: a point-to-point peer) are never a reason.
    fn conflict(&self, net: &ipnet::IpNet, by_member: bool) -> Option<String> {
        let host_route = |n: &ipnet::IpNet| n.prefix_len() == n.max_prefix_len();
        if let Some((lan, dev)) = self.networks.iter().find(|(n, _)| !host_route(n) && net.contains(n)) {
            return Some(format!("all of this host's network {lan} on {dev}"));
        }
        if by_member && let Some((lan, dev)) = self.networks.iter().find(|(n, _)| !host_route(n) && n.contains(net)) {
            return Some(format!(
                "part of this host's network {lan} on {dev}, and a member added it (only the admin's subnets may lie there)"
            ));
        }
        // Nor over any other route of the host: through a gateway (a network
        // behind the LAN's router, a VPN), or a host route (a Calico pod's
        // /32, a VPN peer's): the segment's routes would replace or shadow
        // it, and the member would take this host's traffic there.
        if by_member && let Some((route, dev)) = self.routes.iter().find(|(n, _)| n.contains(net) || net.contains(n)) {
            return Some(format!(
                "this host's route to {route} on {dev}, and a member added it (only the admin's subnets may lie there)"
            ));
        }
        // Nor over an address the host depends on wherever it lies: a name
        // server reached through the default route (a company's DNS across
        // the WAN) would otherwise answer from the member's node.
        if by_member && let Some(ip) = self.known.iter().find(|ip| net.contains(*ip)) {
            return Some(format!(
                "{ip}, a name server or gateway of this host, and a member added it (only the admin's subnets may hold it)"
            ));
        }
        self.networks.iter().filter(|(n, _)| n.contains(net)).find_map(|(lan, dev)| {
            let ip = self.known.iter().find(|ip| net.contains(*ip))?;
            Some(format!("{ip}, in use on this host's network {lan} on {dev}"))
        })
    }
}

/// The subnets this host must not install, by vni, each with the one line
/// that says why: a subnet holding a node's endpoint address (this host's own
/// underlay or a peer's) or the coordinator's address would route that
/// address into the overlay bridge and cut the host off; so would one
/// overlapping this host's LAN ([`HostLan`]: a whole network of it, or its
/// gateway or DNS server). The coordinator refuses subnets over known endpoints and
/// endpoints inside subnets; this is the agent's own check, for what the
/// coordinator cannot know (this host's LAN: a member may add an unnamed
/// subnet inside `--node-subnets`, which covers the private ranges) and for
/// a map from a coordinator that did not refuse (an older one).
pub fn underlay_conflicts(
    map: &NetworkMap,
    coordinator: &[std::net::IpAddr],
    lan: &HostLan,
) -> std::collections::BTreeMap<u32, String> {
    let mut out = std::collections::BTreeMap::new();
    for s in map.subnets.iter().filter(|s| s.vni != 0) {
        let Ok(net) = s.cidr.parse::<ipnet::IpNet>() else { continue };
        let endpoint = map.nodes.iter().find_map(|n| {
            // Its NAT-observed address too: peers send there (a member's
            // subnet over a CGNAT or company NAT address would otherwise
            // route this agent's WireGuard to that node into the tunnel).
            let ip = n
                .endpoints
                .iter()
                .chain(std::iter::once(&n.observed_endpoint))
                .filter_map(|e| e.parse::<SocketAddr>().ok())
                .map(|e| e.ip().to_canonical())
                .find(|ip| net.contains(ip))?;
            Some(format!("the underlay address {ip} of node {}", n.name))
        });
        let why = endpoint
            .or_else(|| {
                coordinator.iter().find(|ip| net.contains(*ip)).map(|ip| format!("the coordinator's address {ip}"))
            })
            .or_else(|| {
                let local = map.allocations.iter().any(|a| a.subnet_id == s.id && a.node_id == lan.own_node);
                if local { None } else { lan.conflict(&net, added_by_member(s)) }
            });
        if let Some(why) = why {
            out.insert(s.vni, format!("subnet {} skipped: it holds {why}", s.cidr));
        }
    }
    out
}

/// Whether a member (not the admin) added `s`: it names its node, or it is
/// marked so (its node removed since).
fn added_by_member(s: &weave_proto::v1::Subnet) -> bool {
    s.added_by_node != 0 || s.by_member
}

/// The IPv4 addresses this host depends on ([`HostLan::known`]: gateways,
/// name servers) that lie in a member's subnet it installs anyway (it has a
/// workload or an exposed address there): they must not be routed into the
/// tunnel, or the host's own DNS would go to whoever the member gave the
/// address (to the member itself, answering from an exposed subnet).
pub fn depended_on_in_member_subnets(map: &NetworkMap, lan: &HostLan) -> Vec<Ipv4Addr> {
    let member: Vec<ipnet::Ipv4Net> =
        map.subnets.iter().filter(|s| s.vni != 0 && added_by_member(s)).filter_map(|s| s.cidr.parse().ok()).collect();
    lan.known
        .iter()
        .filter_map(|ip| match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .filter(|ip| member.iter().any(|n| n.contains(ip)))
        .collect()
}

/// A remote node as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub node_id: u64,
    pub name: String,
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    /// All its endpoints (`endpoint` is the first): where to fall back to.
    pub endpoints: Vec<SocketAddr>,
    /// The IPv4 workload addresses this node hosts (its allocations), each
    /// with the VNI of its subnet (0 for a subnet without one): routed to
    /// it, and the only inner sources besides `address` accepted from it
    /// (in a VXLAN frame, only in that segment).
    pub routes: Vec<(Ipv4Addr, u32)>,
    /// The VNIs of the subnets it has an allocation in, of either family:
    /// the segments whose VXLAN frames are taken from it (the same peers
    /// each segment floods to, `reconcile::Desired::flood`).
    pub segments: std::collections::BTreeSet<u32>,
}

/// An allocation's address without its prefix length ("10.32.0.1/16").
pub fn allocation_address(address: &str) -> Option<Ipv4Addr> {
    address.split('/').next()?.parse().ok()
}

/// The addresses the map gives node `own` (its workloads' and its exposes').
pub fn held_by(map: &NetworkMap, own: u64) -> std::collections::BTreeSet<Ipv4Addr> {
    map.allocations.iter().filter(|a| a.node_id == own).filter_map(|a| allocation_address(&a.address)).collect()
}

/// Every other node of the map with a usable key and address. Nodes whose
/// entries are malformed are skipped (and named in the returned list of problems).
pub fn peers(map: &NetworkMap, own_node: u64) -> (Vec<PeerConfig>, Vec<String>) {
    let mut peers = Vec::new();
    let mut problems = Vec::new();
    let vni: std::collections::HashMap<u64, u32> =
        map.subnets.iter().filter(|s| super::reconcile::is_segment(s)).map(|s| (s.id, s.vni)).collect();
    let mut routes: std::collections::HashMap<u64, Vec<(Ipv4Addr, u32)>> = Default::default();
    let mut segments: std::collections::HashMap<u64, std::collections::BTreeSet<u32>> = Default::default();
    for a in &map.allocations {
        let vni = vni.get(&a.subnet_id).copied().unwrap_or(0);
        if vni != 0 {
            segments.entry(a.node_id).or_default().insert(vni);
        }
        if let Some(ip) = allocation_address(&a.address) {
            routes.entry(a.node_id).or_default().push((ip, vni));
        }
    }
    for n in map.nodes.iter().filter(|n| n.id != own_node) {
        let key: Option<[u8; 32]> = n.public_key.as_slice().try_into().ok();
        let address = n.address.parse::<Ipv4Addr>().ok();
        match (key, address) {
            (Some(public_key), Some(address)) => peers.push(PeerConfig {
                node_id: n.id,
                name: n.name.clone(),
                public_key,
                address,
                endpoint: n.endpoints.iter().find_map(|e| e.parse().ok()),
                // Its own endpoints, then where the coordinator saw it (behind NAT).
                endpoints: n.endpoints.iter().chain(Some(&n.observed_endpoint)).filter_map(|e| e.parse().ok()).fold(
                    Vec::new(),
                    |mut v, e| {
                        if !v.contains(&e) {
                            v.push(e);
                        }
                        v
                    },
                ),
                routes: routes.remove(&n.id).unwrap_or_default(),
                segments: segments.remove(&n.id).unwrap_or_default(),
            }),
            _ => problems.push(format!("node {} ({}) has no usable key or IPv4 address", n.id, n.name)),
        }
    }
    peers.sort_by_key(|p| p.address);
    (peers, problems)
}

/// Drops from each peer's workload addresses those in a subnet this host
/// leaves out ([`underlay_conflicts`]): here they are the host's LAN (or a
/// node's or the coordinator's address), so no packet from the tunnel may
/// carry them as its source. Else a member holding a LAN machine's address
/// in its own subnet would pass the source check and could answer this
/// host's conversations with that machine (conntrack does not care which
/// interface an answer came in on).
pub fn without_skipped(peers: &mut [PeerConfig], map: &NetworkMap, skipped: &std::collections::BTreeMap<u32, String>) {
    let left_out: std::collections::HashSet<u64> =
        map.subnets.iter().filter(|s| skipped.contains_key(&s.vni)).map(|s| s.id).collect();
    if left_out.is_empty() {
        return;
    }
    let addresses: std::collections::HashSet<Ipv4Addr> = map
        .allocations
        .iter()
        .filter(|a| left_out.contains(&a.subnet_id))
        .filter_map(|a| allocation_address(&a.address))
        .collect();
    let vnis: std::collections::HashSet<u32> = skipped.keys().copied().collect();
    for p in peers {
        p.routes.retain(|(ip, _)| !addresses.contains(ip));
        p.segments.retain(|v| !vnis.contains(v));
    }
}

/// Whether the coordinator saw this node come from an address it does not
/// advertise (it sets `observed_endpoint` only then): behind NAT.
pub fn behind_nat(map: &NetworkMap, own_node: u64) -> bool {
    map.nodes.iter().any(|n| n.id == own_node && !n.observed_endpoint.is_empty())
}

/// Prefix length of the node block, for the TUN address (default /16).
pub fn node_prefix(map: &NetworkMap) -> u8 {
    map.node_range.split_once('/').and_then(|(_, p)| p.parse().ok()).unwrap_or(16)
}

#[cfg(test)]
mod tests;
