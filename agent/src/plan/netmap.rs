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
            let ip = n
                .endpoints
                .iter()
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
                if local { None } else { lan.conflict(&net, s.added_by_node != 0 || s.by_member) }
            });
        if let Some(why) = why {
            out.insert(s.vni, format!("subnet {} skipped: it holds {why}", s.cidr));
        }
    }
    out
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

/// Every other node of the map with a usable key and address. Nodes whose
/// entries are malformed are skipped (and named in the returned list of problems).
pub fn peers(map: &NetworkMap, own_node: u64) -> (Vec<PeerConfig>, Vec<String>) {
    let mut peers = Vec::new();
    let mut problems = Vec::new();
    let vni: std::collections::HashMap<u64, u32> = map.subnets.iter().map(|s| (s.id, s.vni)).collect();
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
mod tests {
    use weave_proto::v1::{Allocation, Node, Subnet};

    use super::*;
    use weave_proto::v1::map_change::Change;

    fn node(id: u64, addr: &str) -> Node {
        Node {
            id,
            name: format!("h{id}"),
            public_key: vec![id as u8; 32],
            endpoints: vec![format!("192.0.2.{}:6784", 10 + id)],
            address: addr.into(),
            joined_at: 0,
            observed_endpoint: String::new(),
        }
    }

    fn change(revision: u64, change: Change) -> WatchEvent {
        WatchEvent { revision, event: Some(Event::Change(MapChange { change: Some(change) })) }
    }

    #[test]
    fn snapshot_then_changes() {
        let mut map = NetworkMap::default();
        let snap = NetworkMap { revision: 5, nodes: vec![node(1, "10.47.0.1")], ..Default::default() };
        apply(&mut map, WatchEvent { revision: 5, event: Some(Event::Snapshot(snap)) }).unwrap();
        assert_eq!(map.revision, 5);
        apply(&mut map, change(6, Change::NodeUpserted(node(2, "10.47.0.2")))).unwrap();
        let mut moved = node(2, "10.47.0.2");
        moved.endpoints = vec!["192.0.2.99:6784".into()];
        apply(&mut map, change(7, Change::NodeUpserted(moved))).unwrap();
        assert_eq!(map.nodes.len(), 2);
        assert_eq!(map.nodes[1].endpoints, vec!["192.0.2.99:6784".to_string()]);
        let subnet = Subnet { id: 3, cidr: "10.32.0.0/16".into(), vni: 77, ..Default::default() };
        apply(&mut map, change(8, Change::SubnetAdded(subnet))).unwrap();
        let alloc = Allocation { id: 9, node_id: 2, subnet_id: 3, ..Default::default() };
        apply(&mut map, change(9, Change::AllocationAdded(alloc))).unwrap();
        apply(&mut map, change(10, Change::NodeRemoved(2))).unwrap();
        assert_eq!(map.nodes.len(), 1);
        assert!(map.allocations.is_empty(), "a removed node's allocations go with it");
        apply(&mut map, change(11, Change::SubnetRemoved(3))).unwrap();
        assert!(map.subnets.is_empty());
        assert_eq!(map.revision, 11);
        assert!(apply(&mut map, WatchEvent { revision: 12, event: None }).is_err());
    }

    /// Allocation `id` of node 2 in subnet `subnet_id`.
    fn alloc(id: u64, subnet_id: u64, address: &str) -> Allocation {
        Allocation { id, node_id: 2, subnet_id, address: address.into(), ..Default::default() }
    }

    #[test]
    fn a_left_out_subnets_addresses_are_no_peers_sources() {
        let map = NetworkMap {
            nodes: vec![node(2, "10.47.0.2")],
            subnets: vec![
                Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 5, ..Default::default() },
                Subnet { id: 2, cidr: "192.0.2.48/29".into(), vni: 6, added_by_node: 2, ..Default::default() },
            ],
            allocations: vec![alloc(1, 1, "10.32.0.5/16"), alloc(2, 2, "192.0.2.50/29")],
            ..Default::default()
        };
        let (mut all, _) = peers(&map, 1);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(all[0].routes, [(ip("10.32.0.5"), 5), (ip("192.0.2.50"), 6)]);
        assert_eq!(all[0].segments, [5, 6].into());
        without_skipped(&mut all, &map, &Default::default());
        assert_eq!(all[0].routes.len(), 2, "nothing left out, nothing dropped");
        let skipped = [(6, "subnet 192.0.2.48/29 skipped: …".to_string())].into_iter().collect();
        without_skipped(&mut all, &map, &skipped);
        assert_eq!(all[0].routes, [(ip("10.32.0.5"), 5)], "the LAN machine's address is not the peer's here");
        assert_eq!(all[0].segments, [5].into(), "nor is the skipped segment");
    }

    #[test]
    fn an_allocation_of_either_family_makes_its_node_a_member_of_the_segment() {
        let map = NetworkMap {
            nodes: vec![node(2, "10.47.0.2")],
            subnets: vec![
                Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 5, ..Default::default() },
                Subnet { id: 2, cidr: "fd00:1::/64".into(), vni: 6, ..Default::default() },
                Subnet { id: 3, cidr: "10.3.0.0/24".into(), vni: 7, ..Default::default() },
            ],
            allocations: vec![alloc(1, 1, "10.32.0.5/16"), alloc(2, 2, "fd00:1::5/64")],
            ..Default::default()
        };
        let (all, _) = peers(&map, 1);
        assert_eq!(all[0].routes, [("10.32.0.5".parse().unwrap(), 5)], "IPv4 addresses only");
        assert_eq!(all[0].segments, [5, 6].into(), "both segments, not the one it has nothing in");
    }

    #[test]
    fn peers_skip_self_and_malformed_nodes() {
        let mut bad = node(3, "not-an-ip");
        bad.public_key = vec![1, 2];
        let alloc =
            |id, node_id, address: &str| Allocation { id, node_id, address: address.into(), ..Default::default() };
        let map = NetworkMap {
            node_range: "10.47.0.0/16".into(),
            nodes: vec![node(2, "10.47.0.2"), node(1, "10.47.0.1"), bad],
            allocations: vec![alloc(1, 2, "10.32.0.5/16"), alloc(2, 1, "10.32.0.6/16"), alloc(3, 2, "bad")],
            ..Default::default()
        };
        let (peers, problems) = peers(&map, 1);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].routes, [("10.32.0.5".parse::<Ipv4Addr>().unwrap(), 0)], "its own allocations only");
        assert_eq!(peers[0].address, "10.47.0.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(peers[0].endpoint, Some("192.0.2.12:6784".parse().unwrap()));
        assert_eq!(problems.len(), 1);
        assert_eq!(node_prefix(&map), 16);
    }

    #[test]
    fn an_observed_endpoint_is_the_last_candidate_and_marks_its_own_node_behind_nat() {
        let mut natted = node(2, "10.47.0.2");
        natted.endpoints = vec!["198.51.100.12:6784".into()];
        natted.observed_endpoint = "192.0.2.1:6784".into();
        let map = NetworkMap { nodes: vec![node(1, "10.47.0.1"), natted], ..Default::default() };
        let (peers, _) = peers(&map, 1);
        assert_eq!(peers[0].endpoint, Some("198.51.100.12:6784".parse().unwrap()), "its own endpoint first");
        assert_eq!(peers[0].endpoints, ["198.51.100.12:6784".parse().unwrap(), "192.0.2.1:6784".parse().unwrap()]);
        assert!(behind_nat(&map, 2));
        assert!(!behind_nat(&map, 1));
    }

    /// The agent's own guard, for a map from a coordinator that did not
    /// refuse (an older one, or a subnet and a join racing).
    #[test]
    fn a_subnet_holding_a_node_endpoint_the_coordinator_or_part_of_the_lan_is_left_out() {
        let subnet = |vni: u32, cidr: &str| Subnet { vni, cidr: cidr.into(), ..Default::default() };
        let map = NetworkMap {
            nodes: vec![node(1, "10.47.0.1")], // endpoint 192.0.2.11:6784
            // This host (node 1) has a workload in 192.168.1.0/30: kept, whatever the LAN.
            allocations: vec![
                Allocation { subnet_id: 13, node_id: 1, ..Default::default() },
                Allocation { subnet_id: 17, node_id: 1, ..Default::default() },
            ],
            subnets: vec![
                subnet(0, "192.0.2.0/24"),
                subnet(7, "192.0.2.8/29"),
                subnet(8, "10.2.3.0/24"),
                subnet(9, "10.2.4.0/24"),
                subnet(10, "192.168.1.0/28"),
                subnet(12, "192.168.1.32/28"),
                Subnet { id: 13, ..subnet(13, "192.168.1.0/30") },
                subnet(11, "192.168.0.0/16"),
                // A member's (node 2's) subnets: none inside a network of the host.
                Subnet { added_by_node: 2, ..subnet(14, "192.168.1.48/29") },
                Subnet { added_by_node: 2, ..subnet(15, "10.9.0.0/24") },
                Subnet { added_by_node: 2, ..subnet(16, "172.20.0.0/24") },
                Subnet { id: 17, added_by_node: 2, ..subnet(17, "192.168.1.64/29") },
                // A removed member's: no node named any more, still a member's.
                Subnet { by_member: true, ..subnet(18, "192.168.1.80/29") },
                // A member's over a host route (a Calico pod) and inside a
                // network behind a gateway; the admin's over the same: kept.
                Subnet { added_by_node: 2, ..subnet(19, "100.64.1.0/24") },
                Subnet { added_by_node: 2, ..subnet(20, "172.30.5.0/24") },
                subnet(21, "100.64.2.0/24"),
                // A member's over a name server reached through the default
                // route (in no network or route of the host); the admin's: kept.
                Subnet { added_by_node: 2, ..subnet(22, "172.29.0.0/24") },
                subnet(23, "172.31.9.0/24"),
            ],
            ..Default::default()
        };
        let lan = HostLan {
            networks: vec![
                ("192.168.1.0/24".parse().unwrap(), "eth0".to_string()),
                ("10.0.0.0/8".parse().unwrap(), "wg0".to_string()),
                ("10.2.3.7/32".parse().unwrap(), "tun0".to_string()),
            ],
            routes: vec![
                ("100.64.1.5/32".parse().unwrap(), "cali1".to_string()),
                ("100.64.2.9/32".parse().unwrap(), "cali2".to_string()),
                ("172.30.0.0/16".parse().unwrap(), "eth0".to_string()),
            ],
            known: ["192.168.1.1", "192.168.1.53", "172.29.0.53", "172.31.9.53"].map(|a| a.parse().unwrap()).to_vec(),
            own_node: 1,
        };
        let skipped = underlay_conflicts(&map, &["10.2.4.1".parse().unwrap()], &lan);
        assert_eq!(
            skipped.into_iter().collect::<Vec<_>>(),
            [
                (7, "subnet 192.0.2.8/29 skipped: it holds the underlay address 192.0.2.11 of node h1".to_string()),
                (9, "subnet 10.2.4.0/24 skipped: it holds the coordinator's address 10.2.4.1".to_string()),
                (10, "subnet 192.168.1.0/28 skipped: it holds 192.168.1.1, in use on this host's network 192.168.1.0/24 on eth0".into()),
                (11, "subnet 192.168.0.0/16 skipped: it holds all of this host's network 192.168.1.0/24 on eth0".into()),
                (14, "subnet 192.168.1.48/29 skipped: it holds part of this host's network 192.168.1.0/24 on eth0, \
                      and a member added it (only the admin's subnets may lie there)".into()),
                (15, "subnet 10.9.0.0/24 skipped: it holds part of this host's network 10.0.0.0/8 on wg0, \
                      and a member added it (only the admin's subnets may lie there)".into()),
                (18, "subnet 192.168.1.80/29 skipped: it holds part of this host's network 192.168.1.0/24 on eth0, \
                      and a member added it (only the admin's subnets may lie there)".into()),
                (19, "subnet 100.64.1.0/24 skipped: it holds this host's route to 100.64.1.5/32 on cali1, \
                      and a member added it (only the admin's subnets may lie there)".into()),
                (20, "subnet 172.30.5.0/24 skipped: it holds this host's route to 172.30.0.0/16 on eth0, \
                      and a member added it (only the admin's subnets may lie there)".into()),
                (22, "subnet 172.29.0.0/24 skipped: it holds 172.29.0.53, a name server or gateway of this host, \
                      and a member added it (only the admin's subnets may hold it)".into()),
            ],
            "kept: vni 0 (not an L2 segment); 10.2.3.0/24, inside the broad 10.0.0.0/8 and over a /32 route, \
             holding no address in use; 192.168.1.32/28, in the LAN but away from what the host uses (the \
             admin's); a member's 172.20.0.0/24 outside the LAN and its routes; a member's 192.168.1.64/29 \
             where this host has a workload; the admin's 100.64.2.0/24 over a host route and 172.31.9.0/24 \
             over a name server beyond the LAN"
        );
    }
}
