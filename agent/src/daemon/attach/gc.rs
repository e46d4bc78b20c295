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
            let subnets: Vec<String> = match r.subnets.is_empty() {
                true => addrs.to_vec(),
                false => r.subnets.iter().map(|c| format!("net:{c}")).collect(),
            };
            // No inode: its ports go by the addresses given back, not by a
            // name the kernel may have given another namespace's (the
            // inode is reused once the namespace is gone; found by a review).
            match self.retire(&r.id, None, None, &subnets).await {
                Ok(d) => released.extend(d.released),
                // Its subnet is gone: so is everything on it.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.names.cni_gone(Some(network), &r.id, &r.ifname);
            tracing::info!(network, container = r.id, ifname = r.ifname, "CNI GC: a stale attachment given back");
            gone.push(r.id);
        }
        Ok((released, gone))
    }

    /// Whether `r`'s namespace may be alive: its path still leads to it, a
    /// mount or a process here holds it, or its port on one of its subnets
    /// is still there (the kernel removes the pair with the namespace; a
    /// namespace mounted where the agent cannot see, podman's, still has
    /// it; found by a review). A port of that name that belongs to another
    /// namespace given the same inode since keeps the record too: the safe
    /// side, until the next GC.
    async fn may_live(&self, r: &CniRecord) -> Result<bool, Refusal> {
        if registry::alive(&r.netns, r.inode) || crate::host::netns::in_use(r.inode) {
            return Ok(true);
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
