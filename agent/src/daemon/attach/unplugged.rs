//! Addresses a live container holds on this host that no port carries: an
//! attach cut short (the agent killed between the allocation and the port's
//! record: no interface yet, or a pair still down without an address), or a
//! port someone deleted by hand. The address and its DNS record stayed
//! held, answered by nothing, until someone attached or detached that
//! container again, with nothing in the logs (found by a crash review,
//! 2026-12-07). They are given back, as a detach of those subnets would,
//! once [`GRACE`] has passed: a retry of the attach cut short (a script's,
//! a runtime's) gets the address held for it until then.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use super::Attacher;
use crate::host::{
    netns::{inode_in_key, key_of},
    registry::alive,
};

/// How long an address stays held with no port carrying it.
pub(super) const GRACE: Duration = Duration::from_secs(30);

/// The addresses suspected, as (key, subnet), with when each was first.
pub(super) type Suspects = BTreeMap<(String, String), Instant>;

impl Attacher {
    /// Gives back each address a live container attached here (by name, or
    /// nameless by its namespace's path) holds that no recorded port of this
    /// host carries, found so by every sweep for [`GRACE`] (an attach holds
    /// the same lock from its allocation to its port's record, and the map
    /// may lag the coordinator). Returns the suspects still held, and the
    /// DNS keys of the containers left on no subnet.
    pub(super) async fn release_unplugged(&self, last: &Suspects) -> (Suspects, Vec<String>) {
        let _one = self.lock.lock().await;
        let (mut suspects, mut off) = (Suspects::new(), Vec::new());
        let now = Instant::now();
        let Ok(pinned) = self.netlink.pinned_ports().await else { return (suspects, off) };
        let carried: BTreeSet<std::net::Ipv4Addr> = pinned.iter().map(|(_, ip, _)| *ip).collect();
        // Registered names, then nameless containers (served DNS by path);
        // CNI's and Docker's attachments are their runtimes' to finish.
        let mut containers: Vec<(String, Option<String>, u64)> = self
            .names
            .seen_names()
            .into_iter()
            .filter(|(_, path, inode)| alive(path, *inode))
            .map(|(name, _, inode)| (name.clone(), Some(name), inode))
            .collect();
        for (key, path) in self.names.dns_served() {
            if let Some(inode) = inode_in_key(&key).filter(|i| alive(std::path::Path::new(&path), *i)) {
                containers.push((key, None, inode));
            }
        }
        for (key, name, inode) in containers {
            let unported: Vec<String> = {
                let map = self.maps.borrow();
                if map.revision == 0 {
                    return (suspects, off);
                }
                map.allocations
                    .iter()
                    .filter(|a| a.node_id == self.node_id && a.container == key)
                    .filter(|a| {
                        crate::plan::netmap::allocation_address(&a.address).is_some_and(|ip| !carried.contains(&ip))
                    })
                    .filter_map(|a| map.subnets.iter().find(|s| s.id == a.subnet_id).map(|s| s.cidr.clone()))
                    .collect()
            };
            let mut confirmed = Vec::new();
            for cidr in unported {
                let suspect = (key.clone(), cidr.clone());
                let since = last.get(&suspect).copied().unwrap_or(now);
                match now.duration_since(since) >= GRACE {
                    true => confirmed.push(format!("net:{cidr}")),
                    false => {
                        suspects.insert(suspect, since);
                    }
                }
            }
            if confirmed.is_empty() {
                continue;
            }
            match self.retire(&key, Some(inode), name.as_deref(), &confirmed).await {
                Ok(done) => {
                    tracing::warn!(
                        container = key, released = ?done.released,
                        "a container held addresses no port of this host carries (an attach cut short, or its \
                         port deleted): given back; attach it again"
                    );
                    if done.whole {
                        off.push(key_of(inode));
                    }
                }
                Err(e) => {
                    tracing::warn!(container = key, error = %e.message, "cannot give back addresses no port carries");
                    let again =
                        confirmed.iter().map(|c| ((key.clone(), c.trim_start_matches("net:").to_string()), now));
                    suspects.extend(again);
                }
            }
        }
        (suspects, off)
    }
}
