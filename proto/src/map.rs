//! Applying map changes to a [`NetworkMap`]: the one definition the
//! coordinator (its in-memory map) and agents (their copy) share.
//! Every list stays sorted by id, so a map built from a snapshot plus changes
//! equals a fresh snapshot.
use crate::v1::{MapChange, NetworkMap, map_change::Change};

fn upsert<T>(list: &mut Vec<T>, item: T, id: impl Fn(&T) -> u64) {
    match list.binary_search_by_key(&id(&item), &id) {
        Ok(i) => list[i] = item,
        Err(i) => list.insert(i, item),
    }
}

/// Applies `change` (at `revision`) to `map`.
pub fn apply_change(map: &mut NetworkMap, revision: u64, change: &MapChange) {
    if let Some(change) = &change.change {
        match change.clone() {
            Change::NodeUpserted(node) => upsert(&mut map.nodes, node, |n| n.id),
            Change::NodeRemoved(id) => {
                map.nodes.retain(|n| n.id != id);
                map.allocations.retain(|a| a.node_id != id);
            }
            Change::SubnetAdded(subnet) => upsert(&mut map.subnets, subnet, |s| s.id),
            Change::SubnetRemoved(id) => {
                map.subnets.retain(|s| s.id != id);
                map.allocations.retain(|a| a.subnet_id != id);
            }
            Change::AllocationAdded(a) => upsert(&mut map.allocations, a, |a| a.id),
            Change::AllocationRemoved(id) => map.allocations.retain(|a| a.id != id),
            Change::DnsRecordAdded(r) => upsert(&mut map.dns_records, r, |r| r.id),
            Change::DnsRecordRemoved(id) => map.dns_records.retain(|r| r.id != id),
        }
    }
    map.revision = revision;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Allocation, Node};

    fn change(c: Change) -> MapChange {
        MapChange { change: Some(c) }
    }

    #[test]
    fn keeps_lists_sorted_and_replaces_by_id() {
        let mut map = NetworkMap::default();
        for id in [3, 1, 2] {
            apply_change(&mut map, id, &change(Change::NodeUpserted(Node { id, ..Default::default() })));
        }
        assert_eq!(map.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3]);
        let renamed = Node { id: 2, name: "b".into(), ..Default::default() };
        apply_change(&mut map, 4, &change(Change::NodeUpserted(renamed)));
        assert_eq!((map.nodes.len(), map.nodes[1].name.as_str(), map.revision), (3, "b", 4));
        let a = Allocation { id: 9, node_id: 2, ..Default::default() };
        apply_change(&mut map, 5, &change(Change::AllocationAdded(a)));
        apply_change(&mut map, 6, &change(Change::NodeRemoved(2)));
        assert!(map.allocations.is_empty(), "a removed node's allocations go with it");
        assert_eq!(map.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 3]);
    }
}
