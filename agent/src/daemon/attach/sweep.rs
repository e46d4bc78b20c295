//! Containers whose namespace went away without a detach (`ip netns del`,
//! their process ended): what they held is given back, as a detach would.
//! And ports whose address was released behind their container's back go.
//! The agent's own DNS sockets in such a namespace kept it alive, with its
//! veth and address answering, and its addresses and names stayed taken for
//! ever: enough of them filled a subnet (found by a review, 2026-12-05).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::Attacher;
use weave_proto::v1::ListAllocationsRequest;

use crate::{
    host::{
        netns::{Use, in_use, inode_in_key, key_of},
        registry::alive,
    },
    plan::netmap::{allocation_address, held_by},
};

/// How often the namespaces are looked at (a `stat` each).
pub const SWEEP: Duration = Duration::from_secs(5);

impl Attacher {
    /// Every `SWEEP`, [`Self::retire_dead`]; `gone` is told each DNS key
    /// whose namespace went (its server is to stop).
    /// Ports are looked at only while `connected` (the map watch is open):
    /// a map saved before an attach's allocation reached it, and not brought
    /// up to date since (the coordinator unreachable), must not pass for the
    /// coordinator's word.
    /// So are this host's exposed addresses on their bridges
    /// ([`Self::repair_exposures`]); `reconcile` is told when one changed.
    /// Every other sweep, left-out DNS names are tried again
    /// ([`Self::register_left_out_names`]).
    pub async fn retire_dead_every(
        self: Arc<Self>,
        connected: Arc<AtomicBool>,
        gone: impl Fn(&str),
        reconcile: Arc<tokio::sync::Notify>,
    ) {
        let mut every = tokio::time::interval(SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut orphans, mut mismatches) = (BTreeSet::new(), BTreeSet::new());
        let mut unplugged = super::unplugged::Suspects::new();
        let mut cut = super::unplugged::Cut::default();
        let mut odd = false;
        loop {
            every.tick().await;
            odd = !odd;
            self.names.save_if_unsaved();
            for key in self.retire_dead().await {
                gone(&key);
            }
            // Their DNS servers stop too, as after a GC.
            for id in self.retire_dead_cni().await {
                if let Some(key) = self.names.dns_key(&id) {
                    gone(&key);
                }
            }
            (orphans, mismatches, unplugged) = match connected.load(Ordering::Relaxed) {
                true => {
                    let orphans = self.remove_orphan_ports(&orphans).await;
                    let (unplugged, off) = self.release_unplugged(&unplugged).await;
                    for key in off {
                        gone(&key);
                    }
                    let (mismatches, changed) = self.repair_exposures(&mismatches).await;
                    if changed {
                        reconcile.notify_one();
                    }
                    if odd {
                        self.register_left_out_names().await;
                    }
                    self.say_cut_off(&mut cut).await;
                    (orphans, mismatches, unplugged)
                }
                false => (BTreeSet::new(), BTreeSet::new(), super::unplugged::Suspects::new()),
            };
        }
    }

    /// Removes each workload port pinned to an address the map no longer
    /// gives this host, found so on this sweep and the last (an attach's
    /// allocation reaches the map before the attach ends, `map_shows`; the
    /// second look spares a port whose allocation the map has not yet shown):
    /// its container's address was released behind its back (`subnet rm
    /// --force`, `ipam release`, a coordinator restored from a backup taken
    /// before the attach). Left, it kept answering for an address IPAM gives
    /// to others, and a subnet removed and added again took it back,
    /// locked to that address's MAC, refusing every attach of the address on
    /// this host (found by a review, 2026-12-05). Returns this sweep's orphans.
    pub async fn remove_orphan_ports(&self, last: &BTreeSet<String>) -> BTreeSet<String> {
        let _one = self.lock.lock().await;
        let (revision, held) = {
            let map = self.maps.borrow();
            (map.revision, held_by(&map, self.node_id))
        };
        let pinned = match self.netlink.pinned_ports().await {
            Ok(p) if revision != 0 => p,
            _ => return BTreeSet::new(),
        };
        let suspects: Vec<(String, Ipv4Addr)> =
            pinned.into_iter().filter(|(_, ip, _)| !held.contains(ip)).map(|(port, ip, _)| (port, ip)).collect();
        // Twice suspected: the coordinator has the last word (the map may
        // lag it: a watch catching up, or hung on a coordinator that stopped
        // answering; an allocation whose `map_shows` gave up; Docker's,
        // which does not wait for the map). Unanswered: nothing goes.
        let confirmed = match suspects.iter().any(|(port, _)| last.contains(port)) {
            true => self.holds_now().await,
            false => None,
        };
        let mut orphans = BTreeSet::new();
        for (port, ip) in suspects {
            if !last.contains(&port) || confirmed.as_ref().is_none_or(|now| now.contains(&ip)) {
                orphans.insert(port);
                continue;
            }
            match self.netlink.delete_link(&port).await {
                Ok(()) => tracing::warn!(port, %ip, "removed a workload port whose address this host no longer holds"),
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot remove a port whose address this host no longer holds");
                    orphans.insert(port);
                }
            }
        }
        orphans
    }

    /// The addresses the coordinator says this host holds (None: no answer).
    pub(super) async fn holds_now(&self) -> Option<BTreeSet<Ipv4Addr>> {
        let req = ListAllocationsRequest { node: self.node_id.to_string(), ..Default::default() };
        let mut ipam = self.api.ipam.clone();
        let answer = tokio::time::timeout(Duration::from_secs(5), ipam.list_allocations(req)).await;
        let list = answer.ok()?.ok()?.into_inner().allocations;
        Some(list.iter().filter(|a| a.node_id == self.node_id).filter_map(|a| allocation_address(&a.address)).collect())
    }

    /// Gives back what each container whose namespace is gone holds: the
    /// registered names whose path no longer leads to their namespace, and
    /// the namespaces served DNS by path (attached without a name) that are
    /// gone; in each case, a namespace no one else uses ([`in_use`]: the
    /// agent's DNS sockets keep it in being). Returns their DNS keys. A container that cannot be given back
    /// now (the coordinator unreachable) is tried again next time.
    pub async fn retire_dead(&self) -> Vec<String> {
        let _one = self.lock.lock().await;
        // Each namespace whose path no longer leads to it, once, with its
        // name: one seen by path, else one passed by descriptor (attached by
        // pid), which only the path it is served DNS in shows gone.
        let mut dead: BTreeMap<u64, Option<String>> = BTreeMap::new();
        for (name, path, inode) in self.names.seen_names() {
            if !alive(&path, inode) {
                dead.insert(inode, Some(name));
            }
        }
        for (key, path) in self.names.dns_served() {
            let Some(inode) = inode_in_key(&key) else { continue };
            if !alive(Path::new(&path), inode) {
                dead.entry(inode).or_insert_with(|| self.names.name_of(inode));
            }
        }
        let mut gone = Vec::new();
        for (inode, name) in dead {
            // No cookie: the agent's DNS sockets hold these namespaces while
            // they are recorded, so none is given their inode.
            if in_use(inode, None) != Use::Unseen {
                continue;
            }
            let key = key_of(inode);
            match self.retire(name.as_deref().unwrap_or(&key), Some(inode), name.as_deref(), &[]).await {
                Ok(_) => gone.push(key),
                Err(e) => {
                    tracing::warn!(container = key, ?name, error = %e.message, "cannot give back a container that is gone")
                }
            }
        }
        gone
    }
}
