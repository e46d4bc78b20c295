//! A detach's interface work, done once the coordinator recorded the
//! release: a detach the coordinator cannot record changes nothing here.
use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use weave_proto::local_api::Refusal;

use super::{Attacher, failed, on_subnet};
use crate::{
    host::netlink::{Netlink, WorkloadInterface},
    plan::kernel::{bridge_name, host_ifname},
};

impl Attacher {
    /// Releases the container `key`'s addresses on `subnets` (CIDRs), then
    /// unplugs it from each subnet released: its interface there (`inside`,
    /// as `before` listed them), the host's end, the bridge's pin of the
    /// address it held (`held`, by subnet id). The coordinator goes first:
    /// unplugging first cut the container off and then answered "try
    /// again" with the coordinator down, its address and name kept in the
    /// cluster until someone did (found by a chaos review, 2026-12-06). A
    /// release that fails after others did unplugs those (each subnet is
    /// either detached whole or not at all) and returns its error.
    pub(super) async fn release_then_unplug(
        &self,
        key: &str,
        inode: u64,
        inside: &Netlink,
        before: &[WorkloadInterface],
        held: &BTreeMap<u64, String>,
        subnets: &[String],
    ) -> Result<Vec<String>, Refusal> {
        let mut released = Vec::new();
        let mut done = Vec::new();
        let mut refused = None;
        for cidr in subnets {
            match self.release(key, cidr).await {
                Ok(r) => {
                    released.extend(r);
                    done.push(cidr);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        for cidr in done {
            if let Some((i, _)) = on_subnet(before, cidr) {
                inside.delete_link(&i.name).await.map_err(failed)?;
            }
            // And the host's end, whatever the container did with its own: a
            // container that renamed its interface (or took its address off)
            // was not found above, kept its port, lock and guard entry after
            // its address was released, and then answered for whoever got the
            // address next (found by a review, 2026-12-03). Deleting the host's
            // end removes the pair.
            let subnet = self.maps.borrow().subnets.iter().find(|s| s.cidr == *cidr).cloned();
            if let Some(s) = &subnet {
                self.netlink.delete_link(&host_ifname(inode, s.vni)).await.map_err(failed)?;
            }
            // The address it held, not the one it shows (a neighbour's). Best
            // effort: the reconcile also removes pins of addresses no longer ours.
            let held = subnet.and_then(|s| Some((bridge_name(s.vni), held.get(&s.id)?.parse::<Ipv4Net>().ok()?)));
            if let Some((bridge, ip)) = held
                && let Err(e) = self.netlink.unpin_neighbour(&bridge, ip.addr()).await
            {
                tracing::debug!(error = %e, "unpin on detach");
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }
}
