//! What an attach records before it allocates: what lets the sweep find the
//! container should the agent be killed from then on. A CNI ADD or a
//! nameless `weavectl attach` cut short there held its address for good
//! (found by a review, 2026-12-05): the CNI record and the namespace's path
//! were written only once the attach had answered.
use std::net::Ipv4Addr;

use weave_proto::{
    local_api::{ErrorKind, Refusal},
    v1::Subnet,
};

use super::{Attacher, Detached, container::Container};
use crate::{
    host::registry::{self, CniRecord},
    plan::addr_spec::AddrSpec,
};

impl Attacher {
    /// A CNI attachment's record (its subnets the wanted ones; the finished
    /// attach writes it again), or a nameless container's namespace path (the
    /// sweep finds those by the path they are served DNS at; a named one is
    /// remembered by its name already), and the subnets it begins on, until
    /// it ends either way (`attach/unplugged.rs`; CNI's are its runtime's to
    /// retry). Returns whether that path is new, so that an attach that
    /// allocates nothing forgets it, and the subnets recorded.
    pub(super) fn record_early(
        &self,
        c: &Container,
        cni: Option<(&str, &str, &str)>,
        named: bool,
        wanted: &[(AddrSpec, Subnet)],
    ) -> (bool, Vec<String>) {
        let subnets: Vec<String> = wanted.iter().map(|(_, s)| s.cidr.clone()).collect();
        if cni.is_some() {
            self.record_cni(cni, c, subnets);
            return (false, Vec::new());
        }
        self.names.attach_began(&c.key, &subnets);
        if named || !registry::alive(&c.path, c.inode) || self.names.dns_served().iter().any(|(k, _)| *k == c.key) {
            return (false, subnets);
        }
        self.names.serve_dns(&c.key, Some(c.path.display().to_string()));
        (true, subnets)
    }

    /// What [`Attacher::record_early`] and the name wrote is on disk: an
    /// attach allocates nothing a restarted agent would not know of. With
    /// the data dir full or read-only an attach answered with its address,
    /// and once the agent restarted that address and its DNS name were
    /// held for good (found by a review, 2026-12-07).
    /// Then [`Attacher::allocate_all`].
    pub(super) async fn allocate_recorded(
        &self,
        key: &str,
        dns: &str,
        optional_name: bool,
        wanted: &[(AddrSpec, Subnet)],
    ) -> Result<Vec<(Subnet, Ipv4Addr, u8)>, Refusal> {
        self.names.on_disk().map_err(|(kind, why)| {
            let full = matches!(kind, std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded);
            let kind = if full { ErrorKind::Exhausted } else { ErrorKind::Failed };
            Refusal::new(kind, format!("{why}: nothing was allocated (an agent restarted now would not know of it)"))
        })?;
        self.allocate_all(key, dns, optional_name, wanted).await
    }

    /// An attach that failed: the name it remembered (`named`), the path it
    /// recorded (`fresh_path`) and the subnets it `began` on go; a CNI record
    /// stays (the namespace is the container's either way: the sweep or its
    /// DEL clears it).
    pub(super) fn undo_early(&self, named: Option<&str>, fresh_path: bool, key: &str, began: &[String]) {
        self.names.attach_ended(key, began);
        if let Some(n) = named {
            self.names.forget(n);
        }
        if fresh_path {
            self.names.stop_dns(key);
        }
    }

    /// The record of CNI attachment `cni` (network, IPAM key, interface) of
    /// container `c` on `subnets`, for its GC and the sweep.
    pub(super) fn record_cni(&self, cni: Option<(&str, &str, &str)>, c: &Container, subnets: Vec<String>) {
        if let Some((network, id, ifname)) = cni {
            let (id, ifname, netns) = (id.to_string(), ifname.to_string(), c.path.clone());
            let cookie = c.cookie();
            self.names.cni_added(network, CniRecord { id, ifname, netns, inode: c.inode, subnets, cookie });
        }
    }

    /// Whether CNI container `id` lives on in a namespace other than the one
    /// at `netns` (podman keeps the id across a stop and a start): a late DEL
    /// for the old namespace must not take what the IPAM key holds, the live
    /// one's address (found by a review, 2026-12-05).
    /// A DEL without a namespace is not one of an old namespace: it takes
    /// what the key holds, as before (found by a review).
    pub(super) async fn cni_id_lives_elsewhere(&self, id: &str, netns: &str) -> bool {
        !netns.is_empty()
            && self.id_lives_on(id, &self.names.cni_all(), |r| r.netns == std::path::Path::new(netns)).await
    }

    /// Whether CNI container `id` is attached in a namespace other than the
    /// one of `inode` (a DEL names), which may still live: that DEL is not
    /// the live attachment's, and takes nothing. One naming any other live
    /// namespace (an empty one, or the old one of a container podman started
    /// again, still pinned) released the live one's address, and the sweep
    /// then removed its interface (found by a review, 2026-12-07); only a
    /// namespace path that no longer existed was checked.
    pub(super) async fn cni_lives_apart(&self, id: &str, inode: u64) -> bool {
        self.id_lives_on(id, &self.names.cni_all(), |r| r.inode == inode).await
    }
}

impl Detached {
    /// Nothing released: the attachment lives on elsewhere.
    pub(super) fn kept() -> Self {
        Self { released: Vec::new(), whole: false, kept: true }
    }
}
