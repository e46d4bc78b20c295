//! CNI GC (spec 1.1.0): the runtime names the attachments of a network it
//! still knows; the others this host remembers of that network (from their
//! ADD) give back their addresses. A DEL that never came (the runtime lost
//! its state, the host crashed between the container's end and the DEL)
//! left them taken for ever, as Weave Net's IPAM leaks were.
//!
//! Only what weave itself remembers of that network is looked at, so a GC
//! of one network (or one runtime) never touches another's attachments; and
//! an attachment whose namespace may still be alive is spared whatever the
//! list says: two runtimes on one host that name their weave networks alike
//! each know only their own containers (the spec's open question,
//! containernetworking/cni#1086).
use std::collections::BTreeSet;

use weave_proto::local_api::{CniAttachment, ErrorKind, Refusal};

use super::{Attacher, failed};
use crate::{
    host::registry::{self, CniRecord},
    plan::kernel::host_ifname,
};

impl Attacher {
    /// Gives back what each remembered attachment of CNI `network` holds on
    /// the subnets its ADD attached (else those of `addrs`) that is not in
    /// `keep` and whose namespace is gone. Returns the addresses released
    /// and the IPAM keys given back.
    pub async fn cni_gc(
        &self,
        network: &str,
        addrs: &[String],
        keep: &[CniAttachment],
    ) -> Result<(Vec<String>, Vec<String>), Refusal> {
        let keep: BTreeSet<(&str, &str)> = keep.iter().map(|a| (a.id.as_str(), a.ifname.as_str())).collect();
        let _one = self.lock.lock().await;
        let (mut released, mut gone) = (Vec::new(), Vec::new());
        let all = self.names.cni_all();
        for r in self.names.cni_records(network) {
            if keep.contains(&(r.id.as_str(), r.ifname.as_str())) {
                continue;
            }
            if self.may_live(&r).await? {
                tracing::warn!(
                    network, container = r.id, netns = %r.netns.display(),
                    "CNI GC: not in the runtime's list, but its namespace is alive: kept"
                );
                continue;
            }
            if let Some(live) = self.key_lives_on(&r, &all).await {
                released.extend(self.give_back_unshared(network, &r, &live).await?);
                continue;
            }
            released.extend(self.give_back(network, &r, addrs).await?);
            tracing::info!(network, container = r.id, ifname = r.ifname, "CNI GC: a stale attachment given back");
            gone.push(r.id);
        }
        Ok((released, gone))
    }

    /// What attachment `r` of `network` holds on its subnets (else those of
    /// `addrs`) goes back, and the record with it. Returns the addresses.
    async fn give_back(&self, network: &str, r: &CniRecord, addrs: &[String]) -> Result<Vec<String>, Refusal> {
        let subnets: Vec<String> = match r.subnets.is_empty() {
            true => addrs.to_vec(),
            false => r.subnets.iter().map(|c| format!("net:{c}")).collect(),
        };
        // No inode: its ports go by the addresses given back, not by a
        // name the kernel may have given another namespace's (the
        // inode is reused once the namespace is gone; found by a review).
        let released = match self.retire(&r.id, None, None, &subnets).await {
            Ok(d) => d.released,
            // Its subnet is gone: so is everything on it.
            Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        self.names.cni_gone(Some(network), &r.id, &r.ifname);
        Ok(released)
    }

    /// Every [`super::sweep::SWEEP`]: each CNI attachment whose namespace
    /// is gone for sure ([`Self::may_live`]: not by its path, no mount or
    /// process holds it, and its port went with it) gives back what it
    /// holds, as a GC would. A DEL that failed was never sent again (podman's
    /// `rm -f` while the agent was down: its address and name stayed taken
    /// for ever, the name answering with a dead address; found by a review,
    /// 2026-12-05). Not before the map has come (the ports' subnets are the
    /// map's). Returns the IPAM keys given back.
    pub async fn retire_dead_cni(&self) -> Vec<String> {
        let _one = self.lock.lock().await;
        if self.maps.borrow().revision == 0 {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let all = self.names.cni_all();
        for (network, r) in &all {
            if !matches!(self.may_live(r).await, Ok(false)) {
                continue;
            }
            if let Some(live) = self.key_lives_on(r, &all).await {
                if let Err(e) = self.give_back_unshared(network, r, &live).await {
                    tracing::warn!(network, container = r.id, error = %e.message, "cannot give back a CNI container that is gone");
                }
                continue;
            }
            match self.give_back(network, r, &[]).await {
                Ok(released) => {
                    tracing::info!(
                        network,
                        container = r.id,
                        ?released,
                        "a CNI container whose namespace is gone: given back"
                    );
                    gone.push(r.id.clone());
                }
                Err(e) => {
                    tracing::warn!(network, container = r.id, error = %e.message, "cannot give back a CNI container that is gone")
                }
            }
        }
        gone
    }

    /// The subnets of the other records of `r`'s IPAM key (the same
    /// container id in another namespace: podman keeps the id across a stop
    /// and start, the old one's DEL lost) that may be alive; None when none
    /// may. The key's addresses on those subnets are the live one's (they and
    /// its port went with the dead record; found by a review, 2026-12-05).
    async fn key_lives_on(&self, r: &CniRecord, all: &[(String, CniRecord)]) -> Option<BTreeSet<String>> {
        let mut live: Option<BTreeSet<String>> = None;
        for (_, other) in all.iter().filter(|(_, o)| o.id == r.id && o.inode != r.inode) {
            if !matches!(self.may_live(other).await, Ok(false)) {
                // A record without subnets (an agent from before 2026-12-05
                // wrote none) may be on any: all of `r`'s are shared (its
                // address went back, the live one's port with it: found by
                // a review, 2026-12-06).
                let on = if other.subnets.is_empty() { &r.subnets } else { &other.subnets };
                live.get_or_insert_with(BTreeSet::new).extend(on.iter().cloned());
            }
        }
        live
    }

    /// Dead record `r`'s addresses on subnets no live record of its key
    /// (`live`) is on go back, and the record with them: a container whose
    /// second network podman dropped while its DEL failed, then restarted
    /// on the first alone, kept that network's address and name for good,
    /// the name answering with a dead address (found by a review,
    /// 2026-12-06). Returns the addresses.
    async fn give_back_unshared(
        &self,
        network: &str,
        r: &CniRecord,
        live: &BTreeSet<String>,
    ) -> Result<Vec<String>, Refusal> {
        let unshared: Vec<String> =
            r.subnets.iter().filter(|c| !live.contains(*c)).map(|c| format!("net:{c}")).collect();
        let released = match unshared.is_empty() {
            true => Vec::new(),
            false => match self.retire(&r.id, None, None, &unshared).await {
                Ok(d) => d.released,
                Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            },
        };
        self.names.cni_gone(Some(network), &r.id, &r.ifname);
        Ok(released)
    }

    /// Whether a record of IPAM key `id` among `all`, other than those
    /// `same` picks (the namespace in question), may be alive.
    pub(super) async fn id_lives_on(
        &self,
        id: &str,
        all: &[(String, CniRecord)],
        same: impl Fn(&CniRecord) -> bool,
    ) -> bool {
        for (_, other) in all.iter().filter(|(_, o)| o.id == id && !same(o)) {
            if !matches!(self.may_live(other).await, Ok(false)) {
                return true;
            }
        }
        false
    }

    /// Whether `r`'s namespace may be alive: its path still leads to it, a
    /// mount or a process here holds it, or its port on one of its subnets
    /// is still there (the kernel removes the pair with the namespace; a
    /// namespace mounted where the agent cannot see, podman's, still has
    /// it; found by a review). A port of that name that belongs to another
    /// namespace given the same inode since keeps the record too: the safe
    /// side, until the next GC.
    async fn may_live(&self, r: &CniRecord) -> Result<bool, Refusal> {
        use crate::host::netns::{Use, in_use};
        if registry::alive(&r.netns, r.inode) {
            return Ok(true);
        }
        match in_use(r.inode, r.cookie) {
            Use::Held => return Ok(true),
            // A port of its name is the new namespace's, if any.
            Use::Gone => return Ok(false),
            Use::Unseen => {}
        }
        // A record without its subnets (none should be: they came with GC):
        // a port on any subnet keeps it.
        let vnis: Vec<u32> = {
            let map = self.maps.borrow();
            let its = |cidr: &String| r.subnets.is_empty() || r.subnets.contains(cidr);
            map.subnets.iter().filter(|s| its(&s.cidr)).map(|s| s.vni).collect()
        };
        for vni in vnis {
            if self.netlink.link_index(&host_ifname(r.inode, vni)).await.map_err(failed)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
