//! What a container whose namespace is gone still holds, given back: its
//! ports, its addresses and its name.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weave_proto::{local_api::Refusal, v1::Subnet};

use super::{Attacher, failed, held_address, not_at};
use crate::plan::{
    addr_spec::AddrSpec,
    kernel::{bridge_name, host_ifname},
};

impl Attacher {
    /// What a container whose namespace is gone still holds: the host ends of
    /// its veths (deleting one takes its `ethwe*` with it, should the
    /// namespace live on where we cannot see it), its addresses on the
    /// subnets of `addrs` (all if none) and, for all of them, its name.
    pub(super) async fn retire(
        &self,
        key: &str,
        inode: Option<u64>,
        name: Option<&str>,
        addrs: &[String],
    ) -> Result<Detached, Refusal> {
        let subnets: Vec<Subnet> = if addrs.is_empty() {
            self.maps.borrow().subnets.clone()
        } else {
            let specs = AddrSpec::parse_all(addrs)?;
            let wanted = self.subnets(&specs).await?;
            let held = self.held(key);
            for (spec, s) in &wanted {
                if let (AddrSpec::Ip(ip, _), Some(has)) = (spec, held_address(&held, s))
                    && *ip != has
                {
                    return Err(not_at(&format!("container '{key}'"), "attached", *ip, has, s));
                }
            }
            wanted.into_iter().map(|(_, s)| s).collect()
        };
        let whole =
            addrs.is_empty() || self.holds_only(key, &subnets.iter().map(|s| s.cidr.clone()).collect::<Vec<_>>());
        if let Some(inode) = inode {
            for s in &subnets {
                self.netlink.delete_link(&host_ifname(inode, s.vni)).await.map_err(failed)?;
            }
        }
        let released = if addrs.is_empty() {
            self.release(key, "").await?
        } else {
            let mut released = Vec::new();
            for s in &subnets {
                released.extend(self.release(key, &s.cidr).await?);
            }
            released
        };
        // And the ports recorded for the addresses released: without an inode
        // (a CNI DEL by id alone) nothing above named them, and a container
        // that had moved its end of a pair into a namespace that outlived it
        // kept its port, locked and guarded, for an address given back (found
        // by a review, 2026-12-03).
        let given_back: Vec<Ipv4Addr> =
            released.iter().filter_map(|a| a.parse::<Ipv4Net>().ok()).map(|n| n.addr()).collect();
        if !given_back.is_empty() {
            for (port, _, _) in
                self.netlink.pinned_ports().await.map_err(failed)?.iter().filter(|p| given_back.contains(&p.1))
            {
                self.netlink.delete_link(port).await.map_err(failed)?;
            }
        }
        // And their permanent neighbour entries on the bridges, as a detach
        // of a live container removes them (they stayed, one per container
        // gone; found by a review, 2026-12-05). Best effort, as there.
        for ip in &given_back {
            let vni = self
                .maps
                .borrow()
                .subnets
                .iter()
                .find(|s| s.cidr.parse::<Ipv4Net>().is_ok_and(|n| n.contains(ip)))
                .map(|s| s.vni);
            if let Some(vni) = vni
                && let Err(e) = self.netlink.unpin_neighbour(&bridge_name(vni), *ip).await
            {
                tracing::debug!(error = %e, "unpin on retire");
            }
        }
        if whole && let Some(n) = name {
            self.names.forget(n);
        }
        tracing::info!(
            container = key,
            ?released,
            "released the addresses of a container (its namespace gone, or an attach of it cut short)"
        );
        Ok(Detached { released, whole, kept: false })
    }
}

/// What a detach released, and whether the container is now off every
/// subnet on this node (all were named, or the named ones were all it had).
pub struct Detached {
    pub released: Vec<String>,
    pub whole: bool,
    /// Nothing was touched: a late CNI DEL for a container id that lives on
    /// in another namespace (its record and DNS stay the live one's).
    pub kept: bool,
}
