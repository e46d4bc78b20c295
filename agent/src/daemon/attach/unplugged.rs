//! Addresses a live container holds on this host that no port carries,
//! on the subnets of an attach cut short (the agent killed between the
//! allocation and the port's record: no interface yet, or a pair still down
//! without an address; `Registry::attach_began`). The address and its DNS record stayed
//! held, answered by nothing, until someone attached or detached that
//! container again, with nothing in the logs (found by a crash review,
//! 2026-12-07). They are given back, as a detach of those subnets would,
//! once [`GRACE`] has passed: a retry of the attach cut short (a script's,
//! a runtime's) gets the address held for it until then.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use super::{Attacher, held_address};
use crate::host::{
    netns::{inode_in_key, key_of},
    registry::alive,
};

/// How long an address stays held with no port carrying it.
pub(super) const GRACE: Duration = Duration::from_secs(30);

/// The addresses suspected, as (key, subnet), with when each was first.
pub(super) type Suspects = BTreeMap<(String, String), Instant>;

impl Attacher {
    /// Gives back each address a live container holds, on a subnet an attach
    /// of it began on and never ended, that no recorded port of this host
    /// carries, found so by every sweep for [`GRACE`] (an attach holds
    /// the same lock from its allocation to its port's record, and the map
    /// may lag the coordinator). Returns the suspects still held, and the
    /// DNS keys of the containers left on no subnet.
    pub(super) async fn release_unplugged(&self, last: &Suspects) -> (Suspects, Vec<String>) {
        let _one = self.lock.lock().await;
        let (mut suspects, mut off) = (Suspects::new(), Vec::new());
        let now = Instant::now();
        let Ok(pinned) = self.netlink.pinned_ports().await else { return (suspects, off) };
        let carried: BTreeSet<std::net::Ipv4Addr> = pinned.iter().map(|(_, ip, _)| *ip).collect();
        // The attaches begun and not ended (their agent killed), of live
        // containers; a dead one's are `retire_dead`'s.
        let served = self.names.dns_served();
        let mut containers: Vec<(String, Option<String>, u64, BTreeSet<String>)> = Vec::new();
        for (key, subnets) in self.names.attaching() {
            let (name, found) = match inode_in_key(&key) {
                Some(inode) => (None, served.iter().find(|(k, _)| *k == key).map(|(_, p)| (p.into(), inode))),
                None => (Some(key.clone()), self.names.get(&key)),
            };
            match found {
                Some((path, inode)) if alive(std::path::Path::new(&path), inode) => {
                    containers.push((key, name, inode, subnets));
                }
                Some(_) => {}
                // Nothing leads to it: nothing to finish.
                None => self.names.attach_ended(&key, &subnets.into_iter().collect::<Vec<_>>()),
            }
        }
        if self.maps.borrow().revision == 0 {
            return (suspects, off);
        }
        for (key, name, inode, subnets) in containers {
            // Whether (key, subnet) has been so for the grace (else it is
            // kept suspected, since when it was first).
            let mut due = |cidr: &str| {
                let suspect = (key.clone(), cidr.to_string());
                let since = last.get(&suspect).copied().unwrap_or(now);
                let due = now.duration_since(since) >= GRACE;
                if !due {
                    suspects.insert(suspect, since);
                }
                due
            };
            // Per subnet begun: its address carried by a port (the attach got
            // that far: settled), held and not carried (given back once due),
            // or not held (settled once the map has had the grace to show it).
            let held = self.held(&key);
            let (mut settled, mut confirmed) = (Vec::new(), Vec::new());
            for cidr in subnets {
                let subnet = self.maps.borrow().subnets.iter().find(|s| s.cidr == cidr).cloned();
                match subnet.and_then(|s| held_address(&held, &s)) {
                    Some(ip) if carried.contains(&ip) => settled.push(cidr),
                    Some(_) if due(&cidr) => confirmed.push(cidr),
                    None if due(&cidr) => settled.push(cidr),
                    _ => {}
                }
            }
            self.names.attach_ended(&key, &settled);
            if confirmed.is_empty() {
                continue;
            }
            let specs: Vec<String> = confirmed.iter().map(|c| format!("net:{c}")).collect();
            match self.retire(&key, Some(inode), name.as_deref(), &specs).await {
                Ok(done) => {
                    self.names.attach_ended(&key, &confirmed);
                    tracing::warn!(
                        container = key, released = ?done.released,
                        "a container held addresses no port of this host carries (an attach cut short by \
                         the agent's end, not tried again): given back; attach it again"
                    );
                    if done.whole {
                        off.push(key_of(inode));
                    }
                }
                Err(e) => {
                    tracing::warn!(container = key, error = %e.message, "cannot give back addresses no port carries");
                    suspects.extend(confirmed.into_iter().map(|c| ((key.clone(), c), now)));
                }
            }
        }
        (suspects, off)
    }
}

/// What [`Attacher::say_cut_off`] keeps between sweeps, by (key, address):
/// the addresses a port of weave's carried since this agent started, those
/// carried no more (since when), and those said.
#[derive(Default)]
pub(super) struct Cut {
    plugged: BTreeSet<(String, std::net::Ipv4Addr)>,
    since: BTreeMap<(String, std::net::Ipv4Addr), Instant>,
    said: BTreeSet<(String, std::net::Ipv4Addr)>,
}

impl Attacher {
    /// Says each address a live container weave attached holds on this host
    /// whose port (one weave made, seen carrying it since the agent
    /// started) is gone, seen so by every sweep for [`GRACE`]: its
    /// interface was deleted behind the agent's back (the container has no
    /// network there, and nothing noticed; found by a review, 2026-12-07).
    /// An address weave never plugged (`agent allocate`, a veth plugged by
    /// hand) is not its to say. Said once each, counted in
    /// `weave_workload_ports_missing`; nothing is released (the container
    /// may be attached again, which plugs it again, or detached).
    pub(super) async fn say_cut_off(&self, cut: &mut Cut) {
        let _one = self.lock.lock().await;
        let Ok(pinned) = self.netlink.pinned_ports().await else { return };
        if self.maps.borrow().revision == 0 {
            return;
        }
        let carried: BTreeSet<std::net::Ipv4Addr> = pinned.iter().map(|(_, ip, _)| *ip).collect();
        let attaching: BTreeSet<String> = self.names.attaching().into_iter().map(|(k, _)| k).collect();
        // The containers weave attached whose namespace lives: by name, by
        // namespace (a nameless attach's DNS key), by CNI id.
        let mut live: Vec<String> =
            self.names.seen_names().into_iter().filter(|(_, p, i)| alive(p, *i)).map(|(n, ..)| n).collect();
        live.extend(
            self.names
                .dns_served()
                .into_iter()
                .filter(|(k, p)| inode_in_key(k).is_some_and(|i| alive(std::path::Path::new(p), i)))
                .map(|(k, _)| k),
        );
        live.extend(self.names.cni_all().into_iter().filter(|(_, r)| alive(&r.netns, r.inode)).map(|(_, r)| r.id));
        let live: BTreeSet<String> = live.into_iter().filter(|k| !attaching.contains(k)).collect();
        // Their addresses on this node, from one pass over the map.
        let held: BTreeSet<(String, std::net::Ipv4Addr)> = self
            .maps
            .borrow()
            .allocations
            .iter()
            .filter(|a| a.node_id == self.node_id && live.contains(&a.container))
            .filter_map(|a| Some((a.container.clone(), a.address.parse::<ipnet::Ipv4Net>().ok()?.addr())))
            .collect();
        let now = Instant::now();
        for pair in &held {
            if carried.contains(&pair.1) {
                cut.plugged.insert(pair.clone());
                cut.since.remove(pair);
                cut.said.remove(pair);
                continue;
            }
            if !cut.plugged.contains(pair) {
                continue;
            }
            let since = *cut.since.entry(pair.clone()).or_insert(now);
            if now.duration_since(since) >= GRACE && cut.said.insert(pair.clone()) {
                let (key, ip) = pair;
                tracing::warn!(
                    container = key, %ip,
                    "a container's interface on weave is gone (deleted behind the agent's back): it has no \
                     network there; attach it again to plug it, or detach it to give the address back"
                );
            }
        }
        cut.plugged.retain(|p| held.contains(p));
        cut.since.retain(|p, _| held.contains(p));
        cut.said.retain(|p| held.contains(p));
        metrics::gauge!("weave_workload_ports_missing").set(cut.said.len() as f64);
    }
}
