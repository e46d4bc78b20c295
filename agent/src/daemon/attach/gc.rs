//! CNI GC (spec 1.1.0): the runtime names the attachments of a network it
//! still knows; the others this host remembers of that network (from their
//! ADD) give back their addresses. A DEL that never came (the runtime lost
//! its state, the host crashed between the container's end and the DEL)
//! left them taken for ever, as Weave Net's IPAM leaks were.
//!
//! Only what weave itself remembers of that network is looked at, so a GC
//! of one network (or one runtime) never touches another's attachments; and
//! an attachment whose namespace is still alive at the path the runtime gave
//! is spared whatever the list says: two runtimes on one host that name
//! their weave networks alike each know only their own containers (the
//! spec's open question, containernetworking/cni#1086).
use std::collections::BTreeSet;

use weave_proto::local_api::{CniAttachment, ErrorKind, Refusal};

use super::Attacher;
use crate::host::registry;

impl Attacher {
    /// Gives back, on the subnet of `addrs`, what each remembered attachment
    /// of CNI `network` holds that is not in `keep` and whose namespace is
    /// gone. Returns the addresses released and the IPAM keys given back.
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
            if registry::alive(&r.netns, r.inode) {
                tracing::warn!(
                    network, container = r.id, netns = %r.netns.display(),
                    "CNI GC: not in the runtime's list, but its namespace is alive: kept"
                );
                continue;
            }
            match self.retire(&r.id, Some(r.inode), None, addrs).await {
                Ok(d) => released.extend(d.released),
                // The network's subnet is gone: so is everything on it.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.names.cni_gone(Some(network), &r.id, &r.ifname);
            tracing::info!(network, container = r.id, ifname = r.ifname, "CNI GC: a stale attachment given back");
            gone.push(r.id);
        }
        Ok((released, gone))
    }
}
