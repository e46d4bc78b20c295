//! Map change application (proto/src/map.rs `apply_change` through
//! agent/src/netmap.rs `apply`): arbitrary bytes decoded as a sequence of
//! prost `WatchEvent`s, each applied to the agent's copy of the map, then
//! everything the agent derives from a map (peers, DNS records, the desired
//! segments). Invariants: no panic; every list stays sorted by id with no
//! duplicate id (the coordinator's snapshot order) after a change; the
//! revision is the event's; the map still encodes and decodes to itself.

use std::net::Ipv4Addr;

use prost::Message;
use weave_agent::plan::{dns::Records, netmap, reconcile};
use weave_proto::v1::{NetworkMap, WatchEvent, watch_event::Event};

fn sorted_unique(ids: impl Iterator<Item = u64>) -> bool {
    let ids: Vec<u64> = ids.collect();
    ids.windows(2).all(|w| w[0] < w[1])
}

fn is_sorted(map: &NetworkMap) -> bool {
    sorted_unique(map.nodes.iter().map(|n| n.id))
        && sorted_unique(map.subnets.iter().map(|s| s.id))
        && sorted_unique(map.allocations.iter().map(|a| a.id))
        && sorted_unique(map.dns_records.iter().map(|r| r.id))
}

pub fn run(data: &[u8]) {
    let mut map = NetworkMap::default();
    // Length-delimited events, as they would arrive one by one on the watch.
    let mut rest = data;
    let mut sorted = true;
    let mut count = 0;
    while !rest.is_empty() && count < 64 {
        count += 1;
        let Ok(event) = WatchEvent::decode_length_delimited(&mut rest) else { break };
        let revision = event.revision;
        let is_snapshot = matches!(event.event, Some(Event::Snapshot(_)));
        let before = map.revision;
        match netmap::apply(&mut map, event) {
            Ok(()) if is_snapshot => {
                assert!(map.revision >= revision, "snapshot revision");
                // A snapshot's order is the coordinator's: only a sorted one is checked on.
                sorted = is_sorted(&map);
            }
            Ok(()) => assert_eq!(map.revision, revision, "change revision"),
            Err(_) => assert_eq!(map.revision, before, "a refused event leaves the map"),
        }
        // Changes keep a sorted map sorted, without duplicate ids.
        if sorted {
            assert!(is_sorted(&map), "a change broke the map's order");
        }
    }
    let bytes = map.encode_to_vec();
    assert!(NetworkMap::decode(bytes.as_slice()).as_ref() == Ok(&map), "map round trip");
    // What the agent derives from the map: none of it may panic.
    let own = map.nodes.first().map(|n| n.id).unwrap_or(0);
    let _ = netmap::peers(&map, own);
    let _ = netmap::node_prefix(&map);
    let _ = Records::from_map(&map, "weave.local.");
    let _ = reconcile::remote_workloads(&map, own);
    let _ = reconcile::segment_subnets(&map);
    let _ = reconcile::Desired::from_map(&map, own, Ipv4Addr::new(10, 47, 0, 1), 1420);
}
