//! Which peers, routes and subnets a map gives this host.
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
        forget_after_seconds: 0,
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
fn an_ipv4_allocation_makes_its_node_a_member_of_the_segment_an_ipv6_subnet_has_none() {
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
    // An IPv6 subnet has no segment (address management through the API
    // alone), so no VXLAN is taken from a peer for it.
    assert_eq!(all[0].segments, [5].into(), "its IPv4 segment, not the one it has nothing in");
}

#[test]
fn peers_skip_self_and_malformed_nodes() {
    let mut bad = node(3, "not-an-ip");
    bad.public_key = vec![1, 2];
    let alloc = |id, node_id, address: &str| Allocation { id, node_id, address: address.into(), ..Default::default() };
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

/// A member's subnet this host installs (it has a workload there) may
/// hold its name server: that address is not routed into the tunnel.
#[test]
fn the_hosts_name_server_in_a_members_subnet_is_not_routed_into_the_tunnel() {
    let subnet = |id: u64, cidr: &str, by: u64| Subnet {
        id,
        vni: id as u32 * 100,
        cidr: cidr.into(),
        added_by_node: by,
        ..Default::default()
    };
    let alloc = |node_id, subnet_id, address: &str| Allocation {
        node_id,
        subnet_id,
        address: address.into(),
        container: format!("c-{address}"),
        ..Default::default()
    };
    let map = NetworkMap {
        nodes: vec![node(1, "10.47.0.1"), node(2, "10.47.0.2")],
        subnets: vec![subnet(1, "172.29.0.0/24", 2), subnet(2, "172.30.0.0/24", 0)],
        allocations: vec![
            alloc(2, 1, "172.29.0.53/24"),
            alloc(2, 1, "172.29.0.54/24"),
            alloc(1, 1, "172.29.0.2/24"),
            alloc(2, 2, "172.30.0.53/24"),
            alloc(1, 2, "172.30.0.2/24"),
        ],
        ..Default::default()
    };
    let lan = HostLan {
        known: ["172.29.0.53", "::ffff:172.30.0.53", "192.0.2.1"].map(|a| a.parse().unwrap()).to_vec(),
        own_node: 1,
        ..Default::default()
    };
    let held = depended_on_in_member_subnets(&map, &lan);
    assert_eq!(held, ["172.29.0.53".parse::<Ipv4Addr>().unwrap()], "the member's subnet only");
    let d = crate::plan::reconcile::Desired::from_map(&map, 1, "10.47.0.1".parse().unwrap(), 1370);
    let d = d.without_routes_to(&held);
    let routed: Vec<String> = d.routes.keys().map(|a| a.to_string()).collect();
    assert_eq!(routed, ["172.29.0.54", "172.30.0.53"], "the admin's subnet is the admin's choice");
    assert!(!d.proxies[&100].contains(&held[0]));
}

/// The agent's own guard, for a map from a coordinator that did not
/// refuse (an older one, or a subnet and a join racing).
#[test]
fn a_subnet_holding_a_node_endpoint_the_coordinator_or_part_of_the_lan_is_left_out() {
    let subnet = |vni: u32, cidr: &str| Subnet { vni, cidr: cidr.into(), ..Default::default() };
    // Node 3 behind a NAT: peers send to the address the coordinator saw.
    let natted = Node { observed_endpoint: "100.64.9.7:6784".into(), ..node(3, "10.47.0.3") };
    let map = NetworkMap {
        nodes: vec![node(1, "10.47.0.1"), natted], // endpoints 192.0.2.11:6784, 192.0.2.13:6784
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
            subnet(24, "100.64.9.0/24"),
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
            (24, "subnet 100.64.9.0/24 skipped: it holds the underlay address 100.64.9.7 of node h3".into()),
        ],
        "kept: vni 0 (not an L2 segment); 10.2.3.0/24, inside the broad 10.0.0.0/8 and over a /32 route, \
         holding no address in use; 192.168.1.32/28, in the LAN but away from what the host uses (the \
         admin's); a member's 172.20.0.0/24 outside the LAN and its routes; a member's 192.168.1.64/29 \
         where this host has a workload; the admin's 100.64.2.0/24 over a host route and 172.31.9.0/24 \
         over a name server beyond the LAN"
    );
}

#[test]
fn held_by_is_the_nodes_own_addresses() {
    let map = NetworkMap {
        allocations: vec![
            Allocation { node_id: 1, ..alloc(1, 1, "10.32.0.1/16") },
            Allocation { node_id: 2, ..alloc(2, 1, "10.32.0.2/16") },
            Allocation { node_id: 1, ..alloc(3, 2, "10.9.0.7/24") },
        ],
        ..Default::default()
    };
    let held: Vec<String> = held_by(&map, 1).iter().map(ToString::to_string).collect();
    assert_eq!(held, ["10.9.0.7", "10.32.0.1"]);
}
