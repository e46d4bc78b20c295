//! This host's exposed addresses kept on their bridges. `expose` puts one
//! there once; an `ip addr flush` of the bridge, or a bridge someone deleted
//! and the reconcile made again, left it without: the pin of each workload
//! came back, the address did not, and an egress subnet's containers lost
//! their gateway while `agent status` still named it (found by a review,
//! 2026-12-06). And the reverse: an address the map no longer gives this
//! host (`ipam release host:<node>`) stayed on the bridge, answering for
//! an address IPAM hands to others.
use std::{collections::BTreeSet, net::Ipv4Addr};

use super::Attacher;
use crate::plan::{
    kernel::bridge_name,
    reconcile::{exposed_addresses, segment_subnets},
};

/// A bridge's address found out of step with the map: missing (`true`) or
/// not this host's (`false`), with its prefix length.
pub(super) type Mismatch = (String, Ipv4Addr, u8, bool);

impl Attacher {
    /// Puts back each exposed address missing from its bridge and removes
    /// each IPv4 address of a segment's subnet that the map does not give
    /// this host there; each only once found so on this sweep and the last
    /// (as [`Self::remove_orphan_ports`]: the attach lock orders this after
    /// any expose or hide, whose map may still be a moment behind), and a
    /// removal only once the coordinator says this host holds no such
    /// address. Returns this sweep's mismatches and whether anything changed
    /// (routes whose source was a flushed address went with it: the
    /// reconcile's next pass puts them back).
    pub(super) async fn repair_exposures(&self, last: &BTreeSet<Mismatch>) -> (BTreeSet<Mismatch>, bool) {
        let _one = self.lock.lock().await;
        let (revision, exposed, segments) = {
            let map = self.maps.borrow();
            (map.revision, exposed_addresses(&map, self.node_id), segment_subnets(&map))
        };
        if revision == 0 {
            return (BTreeSet::new(), false);
        }
        let Ok(links) = self.netlink.ipv4_by_link().await else { return (BTreeSet::new(), false) };
        let mut found = BTreeSet::new();
        for (vni, net) in &segments {
            let bridge = bridge_name(*vni);
            // No bridge (yet, or a skipped segment): the reconcile's to make.
            let Some(have) = links.get(&bridge) else { continue };
            let wanted = exposed.get(vni);
            if let Some(ip) = wanted
                && !have.iter().any(|(a, _)| a == ip)
            {
                found.insert((bridge.clone(), *ip, net.prefix_len(), true));
            }
            for (a, len) in have.iter().filter(|(a, _)| net.contains(a) && Some(a) != wanted) {
                found.insert((bridge.clone(), *a, *len, false));
            }
        }
        let confirmed = match found.iter().any(|m| !m.3 && last.contains(m)) {
            true => self.holds_now().await,
            false => None,
        };
        let (mut left, mut changed, mut emptied) = (BTreeSet::new(), false, BTreeSet::new());
        // Removals first: see below.
        let (removals, additions): (Vec<Mismatch>, Vec<Mismatch>) = found.into_iter().partition(|m| !m.3);
        for m in removals.into_iter().chain(additions) {
            let (bridge, ip, len, missing) = &m;
            let sure = last.contains(&m) && (*missing || confirmed.as_ref().is_some_and(|now| !now.contains(ip)));
            if !sure {
                left.insert(m);
                continue;
            }
            match self.netlink.set_address(bridge, *ip, *len, *missing).await {
                Ok(()) if *missing => {
                    tracing::warn!(bridge, %ip, "this host's exposed address was gone from its bridge: put back");
                    changed = true;
                }
                Ok(()) => {
                    tracing::warn!(bridge, %ip, "removed an address this host does not hold from its bridge");
                    changed = true;
                    emptied.insert(bridge.clone());
                }
                Err(e) => {
                    tracing::warn!(bridge, %ip, error = %e, "cannot bring a bridge's address in step with the map");
                    left.insert(m);
                }
            }
        }
        // The kernel takes an address's secondaries with it when it goes
        // (`promote_secondaries` is 0 in a new namespace, and wherever
        // systemd does not set it): the exposed address made after the one
        // removed went too, and was back only two sweeps later, its
        // containers' gateway gone meanwhile (found by a review,
        // 2026-12-06). It is put back at once.
        if !emptied.is_empty()
            && let Ok(links) = self.netlink.ipv4_by_link().await
        {
            for (vni, ip) in &exposed {
                let (bridge, len) = (bridge_name(*vni), segments.get(vni).map_or(32, |n| n.prefix_len()));
                let gone = links.get(&bridge).is_some_and(|have| !have.iter().any(|(a, _)| a == ip));
                if emptied.contains(&bridge) && gone {
                    match self.netlink.set_address(&bridge, *ip, len, true).await {
                        Ok(()) => {
                            tracing::warn!(bridge, %ip, "this host's exposed address went with the removed one: put back")
                        }
                        Err(e) => {
                            tracing::warn!(bridge, %ip, error = %e, "cannot put back this host's exposed address")
                        }
                    }
                }
            }
        }
        (left, changed)
    }
}
