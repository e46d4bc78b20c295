//! Ports whose address was released without a detach: an admin's or a
//! script's `Release` of this node's container through the API, or
//! `subnet rm --force`. The port, locked and guarded for an address that is
//! no longer the container's, stayed with its interface in the container
//! until someone detached it: the container kept the address, and whoever
//! was given it next (on any host, once its hold ran out) shared the
//! address and its MAC on the segment with it. Now the port goes (the
//! container's end with it) once the map shows the address gone.
//!
//! Only a port the map showed with its address first, on this node, and
//! that is still the same port (its interface index), is removed: a port an
//! attach made a moment ago, before the map caught up, is never taken for
//! one whose address went.
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::Attacher;
use crate::error::Error;

impl Attacher {
    /// Removes released ports after every map change, for as long as the map flows.
    pub async fn reclaim_loop(self: std::sync::Arc<Self>) {
        let mut maps = self.maps.clone();
        let mut confirmed = HashMap::new();
        loop {
            match self.reclaim(&mut confirmed).await {
                Ok(removed) => {
                    for (port, ip) in removed {
                        tracing::warn!(port, %ip, "the address of this workload port was released without a detach (an API Release, subnet rm --force): the port and the container's interface are removed");
                        metrics::counter!("weave_released_ports_removed_total").increment(1);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "removing workload ports whose address was released"),
            }
            if maps.changed().await.is_err() {
                return;
            }
        }
    }

    /// One pass: `confirmed` holds, by interface index, the ports the map
    /// showed with their address on this node at the last pass.
    async fn reclaim(&self, confirmed: &mut HashMap<u32, Ipv4Addr>) -> Result<Vec<(String, Ipv4Addr)>, Error> {
        // No attach or detach meanwhile: each reads, then changes.
        let _one = self.lock.lock().await;
        let own: HashSet<Ipv4Addr> = {
            let map = self.maps.borrow();
            let mine = map.allocations.iter().filter(|a| a.node_id == self.node_id);
            mine.filter_map(|a| a.address.split('/').next()?.parse().ok()).collect()
        };
        let mut removed = Vec::new();
        let mut now = HashMap::new();
        for (port, index, ip) in self.netlink.pinned_port_indexes().await? {
            if own.contains(&ip) {
                now.insert(index, ip);
            } else if confirmed.get(&index) == Some(&ip) {
                self.netlink.delete_link_at(index).await?;
                removed.push((port, ip));
            }
        }
        if !removed.is_empty() {
            crate::host::firewall::guard_ports(&self.netlink).await?;
        }
        *confirmed = now;
        Ok(removed)
    }
}
