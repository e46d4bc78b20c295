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
        flood: vnis.iter().map(|v| (*v, peers.iter().map(|p| ip(p)).collect())).collect(),
        routes: Default::default(),
        proxies: Default::default(),
        subnets: Default::default(),
        local_workloads: Default::default(),
    }
}

fn complete(flood: &[&str]) -> ObservedSegment {
    ObservedSegment {
        bridge_mtu: Some(1370),
        bridge_mac: None,
        bridge_uncapped: false,
        bridge_snooping: false,
        vxlan: Some(ObservedVxlan {
            local: Some(ip("10.47.0.1")),
            mtu: 1370,
            in_bridge: true,
            learned_max: SEGMENT_LEARNED_MACS,
        }),
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
    let observed = Observed { segments: [(5, complete(&["10.47.0.2"]))].into(), ..Default::default() };
    assert!(diff(&desired(&[5], &["10.47.0.2"]), &observed).is_empty());
}

#[test]
fn removed_peer_and_subnet_go_first() {
    let observed = Observed {
        segments: [(5, complete(&["10.47.0.2", "10.47.0.3"])), (6, complete(&[]))].into(),
        ..Default::default()
    };
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
    let observed = Observed { segments: [(5, seg)].into(), ..Default::default() };
    assert_eq!(
        diff(&desired(&[5], &["10.47.0.2"]), &observed),
        vec![
            Change::RemoveVxlan { vni: 5 },
            Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 },
            Change::AddFlood { vni: 5, peer: ip("10.47.0.2") },
        ]
    );
}

/// Segments an older agent made: a VXLAN device without the cap on learned
/// MACs (which the kernel cannot add to it) is rebuilt like a re-addressed
/// one; a bridge without it (on a kernel that has one) is completed in place.
#[test]
fn a_segment_without_the_cap_on_learned_macs_gets_it() {
    let rebuilt = vec![
        Change::RemoveVxlan { vni: 5 },
        Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 },
        Change::AddFlood { vni: 5, peer: ip("10.47.0.2") },
    ];
    let mut seg = complete(&["10.47.0.2"]);
    seg.vxlan.as_mut().unwrap().learned_max = 0;
    let observed = Observed { segments: [(5, seg)].into(), ..Default::default() };
    assert_eq!(diff(&desired(&[5], &["10.47.0.2"]), &observed), rebuilt);
    let mut seg = complete(&["10.47.0.2"]);
    seg.bridge_uncapped = true;
    let observed = Observed { segments: [(5, seg)].into(), ..Default::default() };
    let ensure = vec![Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 }];
    assert_eq!(diff(&desired(&[5], &["10.47.0.2"]), &observed), ensure);
    // A bridge that snoops multicast (an older agent's) is completed the same way.
    let mut seg = complete(&["10.47.0.2"]);
    seg.bridge_snooping = true;
    let observed = Observed { segments: [(5, seg)].into(), ..Default::default() };
    assert_eq!(diff(&desired(&[5], &["10.47.0.2"]), &observed), ensure);
}

#[test]
fn partial_segment_is_completed_without_touching_good_flood_entries() {
    let mut seg = complete(&["10.47.0.2"]);
    seg.vxlan.as_mut().unwrap().in_bridge = false;
    seg.bridge_mtu = Some(1500);
    let observed = Observed { segments: [(5, seg)].into(), ..Default::default() };
    assert_eq!(
        diff(&desired(&[5], &["10.47.0.2"]), &observed),
        vec![Change::EnsureSegment { vni: 5, local: ip("10.47.0.1"), mtu: 1370 }]
    );
}

/// Nodes 1 (this one, 10.47.0.1) and 2 (10.47.0.2).
fn two_nodes() -> Vec<Node> {
    [1, 2]
        .map(|id| Node { id, name: format!("h{id}"), address: format!("10.47.0.{id}"), ..Default::default() })
        .to_vec()
}

#[test]
fn desired_from_map_skips_self_and_vni_zero_and_floods_only_to_members() {
    use weave_proto::v1::Allocation;
    let alloc = |id, node_id, subnet_id| Allocation { id, node_id, subnet_id, ..Default::default() };
    let mut nodes = two_nodes();
    nodes.push(Node { id: 3, name: "h3".into(), address: "10.47.0.3".into(), ..Default::default() });
    let map = NetworkMap {
        nodes,
        subnets: vec![
            Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 100, ..Default::default() },
            Subnet { id: 2, cidr: "10.2.0.0/24".into(), vni: 0, ..Default::default() },
            Subnet { id: 3, cidr: "10.3.0.0/24".into(), vni: 300, ..Default::default() },
            // IPv6: the API's addresses alone, no segment (no bridge, no flood).
            Subnet { id: 4, cidr: "fd00:4::/64".into(), vni: 400, ..Default::default() },
        ],
        // Node 2 has a workload in the first two subnets (and an address in
        // the IPv6 one), this node in all three, node 3 in none; one
        // allocation names a node not in the map.
        allocations: vec![
            alloc(1, 2, 1),
            alloc(2, 2, 2),
            alloc(3, 1, 1),
            alloc(4, 1, 3),
            alloc(5, 9, 3),
            alloc(6, 2, 4),
            alloc(7, 1, 4),
        ],
        ..Default::default()
    };
    let d = Desired::from_map(&map, 1, ip("10.47.0.1"), 1370);
    assert_eq!(d.segments.keys().copied().collect::<Vec<_>>(), vec![100, 300]);
    assert_eq!(d.flood, [(100, [ip("10.47.0.2")].into())].into());
    assert!(d.flood_of(300).is_empty());
    let changes = diff(&d, &Observed::default());
    let flood: Vec<&Change> = changes.iter().filter(|c| matches!(c, Change::AddFlood { .. })).collect();
    assert_eq!(flood, [&Change::AddFlood { vni: 100, peer: ip("10.47.0.2") }]);
    // Node 2's last workload in the segment goes: so does its flood entry.
    let observed = Observed { segments: [(100, complete(&["10.47.0.2"]))].into(), ..Default::default() };
    let left = NetworkMap { allocations: vec![alloc(2, 2, 2)], ..map };
    let changes = diff(&Desired::from_map(&left, 1, ip("10.47.0.1"), 1370), &observed);
    assert!(changes.contains(&Change::RemoveFlood { vni: 100, peer: ip("10.47.0.2") }), "{changes:?}");
}

#[test]
fn remote_workloads_get_routes_proxy_entries_and_their_subnet_a_route() {
    use weave_proto::v1::Allocation;
    let alloc = |id, node_id, subnet_id, address: &str, container: &str| Allocation {
        id,
        node_id,
        subnet_id,
        address: address.into(),
        container: container.into(),
        ..Default::default()
    };
    let map = NetworkMap {
        nodes: two_nodes(),
        subnets: vec![
            Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 100, ..Default::default() },
            Subnet { id: 2, cidr: "10.2.3.0/24".into(), vni: 200, ..Default::default() },
        ],
        allocations: vec![
            alloc(1, 1, 1, "10.32.0.1/16", "local"),
            alloc(2, 2, 1, "10.32.0.2/16", "remote"),
            alloc(3, 2, 2, "10.2.3.2/24", "remote"),
            alloc(4, 1, 2, "10.2.3.1/24", "host:h1"),
        ],
        ..Default::default()
    };
    let d = Desired::from_map(&map, 1, ip("10.47.0.1"), 1370);
    // Own traffic to a subnet the host is exposed on leaves from its exposed address.
    assert_eq!(d.routes, [(ip("10.32.0.2"), None), (ip("10.2.3.2"), Some(ip("10.2.3.1")))].into());
    assert_eq!(d.proxies, [(100, [ip("10.32.0.2")].into()), (200, [ip("10.2.3.2")].into())].into());
    assert_eq!(d.subnets, [(100, "10.32.0.0/16".parse().unwrap()), (200, "10.2.3.0/24".parse().unwrap())].into());

    // From nothing: segments first, then subnet routes, proxy entries, routes.
    let changes = diff(&d, &Observed::default());
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| match c {
            Change::EnsureSegment { .. } => "segment",
            Change::AddFlood { .. } => "flood",
            Change::AddSubnetRoute { .. } => "subnet",
            Change::AddProxy { .. } => "proxy",
            Change::AddRoute { .. } => "route",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["segment", "segment", "flood", "flood", "subnet", "subnet", "proxy", "proxy", "route", "route"]);

    // Converged, then the remote workload moves away and the host is hidden.
    let observed = Observed {
        segments: [(100, complete(&["10.47.0.2"])), (200, complete(&["10.47.0.2"]))].into(),
        routes: d.routes.clone(),
        route_mtus: d.routes.keys().map(|r| (*r, 1370)).collect(),
        proxies: d.proxies.clone(),
        subnets: d.subnets.iter().map(|(v, n)| (*v, *n)).collect(),
        pinned: [(100, [ip("10.32.0.1")].into())].into(),
    };
    assert!(diff(&d, &observed).is_empty(), "{:?}", diff(&d, &observed));
    // A route without the segments' MTU (an older agent's, or one changed
    // by hand) is replaced with it.
    let mut no_mtu = observed.clone();
    no_mtu.route_mtus.remove(&ip("10.32.0.2"));
    no_mtu.route_mtus.insert(ip("10.2.3.2"), 1420);
    assert_eq!(
        diff(&d, &no_mtu),
        vec![
            Change::AddRoute { dst: ip("10.2.3.2"), src: Some(ip("10.2.3.1")), mtu: 1370 },
            Change::AddRoute { dst: ip("10.32.0.2"), src: None, mtu: 1370 },
        ]
    );
    let mut moved = map.clone();
    moved.allocations.retain(|a| a.id != 2 && a.id != 4);
    let d2 = Desired::from_map(&moved, 1, ip("10.47.0.1"), 1370);
    assert_eq!(
        diff(&d2, &observed),
        vec![
            Change::RemoveRoute { dst: ip("10.32.0.2") },
            Change::RemoveProxy { vni: 100, addr: ip("10.32.0.2") },
            // Node 2 has no workload left in segment 100.
            Change::RemoveFlood { vni: 100, peer: ip("10.47.0.2") },
            Change::AddRoute { dst: ip("10.2.3.2"), src: None, mtu: 1370 },
        ]
    );
    // A pinned address that is not in the map (yet) stays pinned; one that
    // now belongs to another node is unpinned.
    moved.allocations.retain(|a| a.id != 1);
    let d2 = Desired::from_map(&moved, 1, ip("10.47.0.1"), 1370);
    assert!(!diff(&d2, &observed).iter().any(|c| matches!(c, Change::Unpin { .. })));
    let mut elsewhere = moved.clone();
    elsewhere.allocations.push(weave_proto::v1::Allocation {
        id: 9,
        node_id: 2,
        subnet_id: 1,
        address: "10.32.0.1/16".into(),
        ..Default::default()
    });
    let d3 = Desired::from_map(&elsewhere, 1, ip("10.47.0.1"), 1370);
    assert!(diff(&d3, &observed).contains(&Change::Unpin { vni: 100, addr: ip("10.32.0.1") }));
    // A removed subnet: its bridge goes, and with it its entries; only the routes are removed one by one.
    let mut gone = map.clone();
    gone.subnets.retain(|s| s.id != 2);
    gone.allocations.retain(|a| a.subnet_id != 2);
    let d3 = Desired::from_map(&gone, 1, ip("10.47.0.1"), 1370);
    assert_eq!(
        diff(&d3, &observed),
        vec![Change::RemoveRoute { dst: ip("10.2.3.2") }, Change::RemoveSegment { vni: 200 }]
    );
}

/// A small deterministic generator (xorshift) for the model tests.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn addrs(&mut self, base: [u8; 3], n: u64) -> BTreeSet<Ipv4Addr> {
        (0..n).filter(|_| self.chance()).map(|i| Ipv4Addr::new(base[0], base[1], base[2], 1 + i as u8)).collect()
    }
}

fn random_desired(g: &mut Gen) -> Desired {
    let mut d = desired(&[], &[]);
    for vni in [5u32, 6, 7] {
        if !g.chance() {
            continue;
        }
        d.segments.insert(vni, format!("net{vni}"));
        let mut flood = g.addrs([10, 47, 0], 5);
        flood.remove(&d.local);
        d.flood.insert(vni, flood);
        d.subnets.insert(vni, Ipv4Net::new(Ipv4Addr::new(10, vni as u8, 0, 0), 16 + g.pick(2) as u8).unwrap());
        let remote = g.addrs([10, vni as u8, 1], 6);
        for r in &remote {
            let src = g.chance().then(|| Ipv4Addr::new(10, vni as u8, 0, 1));
            d.routes.insert(*r, src);
        }
        d.proxies.insert(vni, remote);
    }
    d
}

fn random_observed(g: &mut Gen) -> Observed {
    let mut o = Observed::default();
    for vni in [5u32, 6, 7, 8] {
        if !g.chance() {
            continue;
        }
        let bridge = g.pick(4) != 0;
        let local = if g.pick(4) == 0 { ip("10.47.0.9") } else { ip("10.47.0.1") };
        let seg = ObservedSegment {
            bridge_mtu: bridge.then(|| if g.chance() { 1370 } else { 1400 }),
            bridge_mac: bridge.then(|| bridge_mac(if g.chance() { ip("10.47.0.1") } else { ip("10.47.0.9") })),
            bridge_uncapped: bridge && g.pick(4) == 0,
            bridge_snooping: bridge && g.pick(4) == 0,
            vxlan: (g.pick(4) != 0).then(|| ObservedVxlan {
                local: Some(local),
                mtu: if g.chance() { 1370 } else { 1500 },
                in_bridge: bridge && g.chance(),
                learned_max: if g.pick(4) == 0 { 0 } else { SEGMENT_LEARNED_MACS },
            }),
            flood: g.addrs([10, 47, 0], 5),
        };
        o.segments.insert(vni, seg);
        o.routes.extend(g.addrs([10, vni as u8, 1], 6).into_iter().map(|a| (a, None)));
        if bridge {
            o.proxies.insert(vni, g.addrs([10, vni as u8, 1], 6));
            o.pinned.insert(vni, g.addrs([10, vni as u8, 1], 6));
            if g.chance() {
                o.subnets.insert((vni, Ipv4Net::new(Ipv4Addr::new(10, vni as u8, 0, 0), 16).unwrap()));
            }
        }
    }
    o
}

/// `o` after carrying out its diff to `d`, as the control loop records it.
fn converge(d: &Desired, o: &Observed) -> Observed {
    let mut after = o.clone();
    for c in diff(d, o) {
        after.record(&c);
    }
    after
}

/// Equal up to empty per-vni sets (the kernel has no "empty" entry).
fn normal(o: &Observed) -> Observed {
    let mut o = o.clone();
    o.proxies.retain(|_, s| !s.is_empty());
    o.pinned.retain(|_, s| !s.is_empty());
    o
}

#[test]
fn the_recorded_state_after_a_diff_is_converged_and_is_what_the_map_asks_for() {
    let mut g = Gen(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        let (d, o) = (random_desired(&mut g), random_observed(&mut g));
        let after = converge(&d, &o);
        assert!(diff(&d, &after).is_empty(), "round {round}: {d:?}\n{o:?}\n{:?}", diff(&d, &after));
        assert_eq!(after.routes, d.routes, "round {round}");
        assert_eq!(after.subnets, d.subnets.iter().map(|(v, n)| (*v, *n)).collect(), "round {round}");
        let wanted: BTreeMap<u32, BTreeSet<Ipv4Addr>> =
            d.proxies.iter().filter(|(_, s)| !s.is_empty()).map(|(v, s)| (*v, s.clone())).collect();
        assert_eq!(normal(&after).proxies, wanted, "round {round}");
        assert_eq!(after.segments.keys().collect::<Vec<_>>(), d.segments.keys().collect::<Vec<_>>());
        for (vni, s) in &after.segments {
            assert_eq!(&s.flood, d.flood_of(*vni), "round {round} vni {vni}");
            assert_eq!(s.bridge_mtu, Some(d.mtu));
            let vxlan =
                ObservedVxlan { local: Some(d.local), mtu: d.mtu, in_bridge: true, learned_max: SEGMENT_LEARNED_MACS };
            assert_eq!(s.vxlan, Some(vxlan));
            assert!(!s.bridge_uncapped && !s.bridge_snooping, "round {round}");
        }
        for (vni, pins) in &after.pinned {
            assert!(pins.is_disjoint(d.proxies.get(vni).unwrap_or(&BTreeSet::new())), "round {round}");
        }
    }
}

#[test]
fn incremental_passes_end_where_one_full_pass_from_the_start_ends() {
    let mut g = Gen(0xDEAD_BEEF_1234_5678);
    for round in 0..500 {
        let start = random_observed(&mut g);
        let steps: Vec<Desired> = (0..4).map(|_| random_desired(&mut g)).collect();
        let mut model = start.clone();
        for d in &steps {
            model = converge(d, &model);
        }
        let last = steps.last().unwrap();
        let full = converge(last, &start);
        assert_eq!(normal(&model).routes, normal(&full).routes, "round {round}");
        assert_eq!(normal(&model).proxies, normal(&full).proxies, "round {round}");
        assert_eq!(model.subnets, full.subnets, "round {round}");
        assert_eq!(model.segments, full.segments, "round {round}");
        // Pins are only ever removed: the incremental path removes at least what one full pass would.
        for (vni, pins) in &normal(&model).pinned {
            assert!(full.pinned.get(vni).is_some_and(|f| pins.is_subset(f)), "round {round}");
        }
    }
}

#[test]
fn one_more_remote_workload_is_two_changes() {
    let mut d = desired(&[5], &["10.47.0.2"]);
    d.subnets.insert(5, "10.5.0.0/16".parse().unwrap());
    d.proxies.insert(5, (1..=200).map(|i| Ipv4Addr::new(10, 5, 1, i)).collect());
    d.routes = d.proxies[&5].iter().map(|a| (*a, None)).collect();
    let model = converge(&d, &Observed::default());
    d.proxies.get_mut(&5).unwrap().insert(ip("10.5.2.1"));
    d.routes.insert(ip("10.5.2.1"), None);
    assert_eq!(
        diff(&d, &model),
        vec![
            Change::AddProxy { vni: 5, addr: ip("10.5.2.1") },
            Change::AddRoute { dst: ip("10.5.2.1"), src: None, mtu: d.mtu }
        ]
    );
}

#[test]
fn a_skipped_segment_leaves_no_bridge_route_or_workload_route() {
    use weave_proto::v1::Allocation;
    let alloc = |id, node_id, subnet_id, address: &str| Allocation {
        id,
        node_id,
        subnet_id,
        address: address.into(),
        container: format!("c{id}"),
        ..Default::default()
    };
    let map = NetworkMap {
        nodes: two_nodes(),
        subnets: vec![
            Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 100, ..Default::default() },
            Subnet { id: 2, cidr: "192.0.2.0/24".into(), vni: 200, ..Default::default() },
        ],
        allocations: vec![
            alloc(1, 2, 1, "10.32.0.2/16"),
            alloc(2, 2, 2, "192.0.2.2/24"),
            alloc(3, 1, 2, "192.0.2.3/24"),
        ],
        ..Default::default()
    };
    let full = Desired::from_map(&map, 1, ip("10.47.0.1"), 1370);
    assert!(full.routes.contains_key(&ip("192.0.2.2")), "without the filter the underlay address is hijacked");
    let d = full.without(&[(200, ())].into_iter().collect());
    assert_eq!(d.segments.keys().copied().collect::<Vec<_>>(), [100]);
    assert_eq!(d.subnets.keys().copied().collect::<Vec<_>>(), [100]);
    assert_eq!(d.routes.keys().copied().collect::<Vec<_>>(), [ip("10.32.0.2")]);
    assert!(!d.proxies.contains_key(&200) && !d.local_workloads.contains_key(&200));
}
