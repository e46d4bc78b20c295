//! Attach/detach of running containers (network namespaces) and
//! expose/hide of this host, for the local API.
//!
//! One `ethwe*` interface per subnet (`ethwe`, `ethwe1`, …): each is a veth
//! whose host side is plugged into that subnet's bridge, so a container on two
//! subnets sits on two separate L2 segments and nothing else joins them.
//! Addresses come from the coordinator's IPAM (the truth, so they survive
//! agent and coordinator restarts); interfaces change only through
//! [`crate::host::netlink`]. Every request checks everything it can before it
//! changes anything, and undoes its own steps if a later one fails.
use std::{fs::File, sync::Arc, time::Duration};

use ipnet::Ipv4Net;
use tokio::sync::watch;
use weave_proto::{
    client::Api,
    local_api::{Attached, Refusal},
    v1::{NetworkMap, Subnet},
};

mod allocate;
mod checks;
mod container;
mod early;
mod egress;
mod exposures;
mod gc;
mod host;
mod left_out;
mod retire;
pub mod sweep;
mod unplug;
mod unplugged;

pub use retire::Detached;

use checks::{failed, held_address, not_at, on_subnet, once_each, own_mac};

use crate::{
    host::{
        netlink::{self, Netlink, WorkloadInterface},
        registry::{self, Registry},
    },
    plan::{
        addr_spec::{AddrSpec, NamesSubnet},
        kernel::{bridge_name, format_mac, host_ifname, is_workload_if, next_ifname, workload_mac},
    },
};

pub struct Attacher {
    pub api: Api,
    pub maps: watch::Receiver<NetworkMap>,
    pub node_id: u64,
    pub node_name: String,
    pub mtu: u32,
    /// The agent's own namespace (bridges, host veth ends).
    pub netlink: Netlink,
    /// One attach/detach at a time: each one reads, then changes.
    lock: tokio::sync::Mutex<()>,
    /// Names given with `--name` (the container registry).
    names: Arc<Registry>,
}

impl Attacher {
    pub fn new(
        api: Api,
        maps: watch::Receiver<NetworkMap>,
        node_id: u64,
        node_name: String,
        mtu: u32,
        netlink: Netlink,
        registry: Arc<Registry>,
    ) -> Self {
        Self { api, maps, node_id, node_name, mtu, netlink, lock: tokio::sync::Mutex::new(()), names: registry }
    }

    /// The subnets `specs` name, checked against the map (waits a little for
    /// a subnet that was just added to reach it).
    async fn subnets(&self, specs: &[AddrSpec]) -> Result<Vec<(AddrSpec, Subnet)>, Refusal> {
        let mut maps = self.maps.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let found: Result<Vec<_>, Refusal> = {
                let map = maps.borrow_and_update();
                specs.iter().map(|s| s.subnet(&map).map(|sub| (s.clone(), sub.clone()))).collect()
            };
            match found {
                Ok(f) => return once_each(f),
                Err(e) => {
                    if tokio::time::timeout_at(deadline, maps.changed()).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Whether namespace `inode` still has a veth on one of the map's
    /// segments (a namespace takes its veths with it when it dies): the
    /// liveness of a namespace the agent got by descriptor and cannot open.
    /// Whether namespace `inode` has a veth on segment `vni` (its host end,
    /// whatever the container named its own).
    async fn plugged_on(&self, inode: u64, vni: u32) -> Result<bool, Refusal> {
        Ok(self.netlink.link_index(&host_ifname(inode, vni)).await.map_err(failed)?.is_some())
    }

    /// Whether namespace `inode`'s port on `subnet` is one an attach began
    /// and never finished (its agent was killed after it made the pair, and
    /// before it brought the port up): then it is taken away, with the
    /// container's end, so that the attach can start over. The port is down
    /// and unrecorded, and no `ethwe*` of the container holds an address on
    /// the subnet: a second network of a CNI runtime on the same subnet has
    /// its port up and recorded (refused).
    async fn unfinished(&self, inside: &Netlink, inode: u64, subnet: &Subnet) -> Result<bool, Refusal> {
        let port = host_ifname(inode, subnet.vni);
        if !self.netlink.unfinished_port(&port).await.map_err(failed)?
            || on_subnet(&inside.workload_interfaces(None).await.map_err(failed)?, &subnet.cidr).is_some()
        {
            return Ok(false);
        }
        self.netlink.delete_link(&port).await.map_err(failed)?;
        tracing::info!(port, subnet = %subnet.cidr, "removed the port of an attach that was cut short");
        Ok(true)
    }

    async fn plugged(&self, inode: u64) -> bool {
        let vnis: Vec<u32> = self.maps.borrow().subnets.iter().map(|s| s.vni).collect();
        for vni in vnis {
            if let Ok(true) = self.plugged_on(inode, vni).await {
                return true;
            }
        }
        false
    }

    /// `attach`: one `ethwe*` per subnet, addressed from IPAM. Idempotent.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach(
        &self,
        container: &str,
        passed: Option<&File>,
        name: Option<&str>,
        id: Option<&str>,
        ifname: Option<&str>,
        addrs: &[String],
        multicast: bool,
        exact_ifname: bool,
        network: Option<&str>,
        (needs_egress, address): (bool, Option<&str>),
    ) -> Result<Vec<Attached>, Refusal> {
        let specs = AddrSpec::parse_all(addrs)?;
        if exact_ifname && (ifname.is_none() || specs.len() > 1) {
            return Err(Refusal::invalid("an exact interface name is for one interface: one ADDR and its name"));
        }
        // Canonical, or the spelling an agent from before registered it in.
        let name = name.map(|n| self.canonical(n).map(|c| self.registered(n).map_or(c, |(k, ..)| k)));
        let name = name.transpose().map_err(Refusal::invalid)?;
        if let Some(n) = name.as_deref().filter(|_| id.is_none()) {
            container::check_key_free(n).map_err(Refusal::invalid)?;
        }
        let (name, _one) = (name.as_deref(), self.lock.lock().await);
        let c = self.resolve(container, passed, name, id)?;
        // With an `id` (a CNI runtime) the name is only the DNS name: the
        // runtime keeps its names unique, and DEL comes by id.
        let registered = name.filter(|_| id.is_none());
        let stale = match registered {
            Some(n) => {
                let holder_plugged = match self.names.get(n) {
                    // Dead by its path, but a process still runs in it (its
                    // path deleted and made again for the next one: the next
                    // attach cut a live container off; found by a review,
                    // 2026-12-06), or, where the path cannot tell (a
                    // namespace the agent sees dies at `ip netns del`), its
                    // veths linger.
                    Some((path, ino)) if ino != c.inode && !registry::alive(&path, ino) => {
                        use crate::host::netns::{Use, in_use};
                        in_use(ino, None) != Use::Unseen || (self.names.unseen(n) && self.plugged(ino).await)
                    }
                    _ => false,
                };
                let own = (c.inode, c.cookie());
                self.names
                    .check(n, container, own, passed.map(|_| c.path.as_path()), holder_plugged)
                    .map_err(Refusal::conflict)?
            }
            None => None,
        };
        let wanted = checks::fixed_address(self.subnets(&specs).await?, address)?;
        checks::egress_for_ports(&wanted, needs_egress)?;
        // A name for a container attached without one would be a second IPAM
        // key, with a second address on its interface (found by a review, 2026-12-05).
        if let Some(n) = registered.filter(|_| !self.held(&crate::host::netns::key_of(c.inode)).is_empty()) {
            return Err(Refusal::conflict(format!(
                "container '{container}' is attached without a name: detach it first to attach it as '{n}'"
            )));
        }
        // The name's namespace is gone: this one takes the name over, and
        // nothing of the dead one (addresses, DNS name, veths) carries over.
        if let (Some(n), Some(inode)) = (registered, stale) {
            self.retire(n, Some(inode), Some(n), &[]).await?;
        }
        let inside = Netlink::in_netns(&c.netns).await.map_err(failed)?;
        let mut before = inside.workload_interfaces(ifname).await.map_err(failed)?;
        let mut unfinished = false;
        // An explicit address that differs from the one the container has on
        // that subnet is a conflict, not a second interface.
        for (spec, subnet) in &wanted {
            if let (AddrSpec::Ip(ip, _), Some((_, have))) = (spec, on_subnet(&before, &subnet.cidr))
                && have != *ip
            {
                return Err(Refusal::conflict(format!(
                    "container '{container}' already has {have} on subnet {}",
                    subnet.cidr
                )));
            }
            // An interface it has keeps its MAC (`own_mac`): before any change.
            if let Some((i, have)) = on_subnet(&before, &subnet.cidr) {
                own_mac(&i.name, &i.mac, have)?;
            } else if self.plugged_on(c.inode, subnet.vni).await? {
                // A port an attach cut short left (looked at only here: it
                // reads every link) goes, and the attach starts over. Else it
                // is plugged into the segment under a name not looked at here
                // (a CNI runtime's second network on the same subnet): the new
                // pair would collide with it, and undoing that took the first
                // one's address and interface (found by a review, 2026-12-04).
                if !self.unfinished(&inside, c.inode, subnet).await? {
                    return Err(Refusal::conflict(format!(
                        "container '{container}' already has an interface on subnet {} (another network on the \
                         same weave subnet?): one interface per weave subnet per container",
                        subnet.cidr
                    )));
                }
                unfinished = true;
            }
        }
        if unfinished {
            before = inside.workload_interfaces(ifname).await.map_err(failed)?;
        }
        if let Some(n) = ifname.filter(|_| exact_ifname) {
            for (_, subnet) in &wanted {
                checks::exact_ifname(&inside, container, n, &before, subnet).await?;
            }
        }
        // An egress subnet's default gateway, this host (exposed there
        // first, and taken back if the attach is refused): before anything
        // of the container's changes.
        let (gateways, exposed) = self.gateways(&wanted).await?;
        // The name before anything is allocated for it: an agent killed from
        // here on leaves a container that a detach by that name finds.
        let named = match registered {
            Some(n) if self.names.get(n).is_none_or(|(_, ino)| ino != c.inode) => Some(n),
            _ => None,
        };
        if let Some(n) = registered {
            let unseen = passed.is_some() && !registry::alive(&c.path, c.inode);
            self.names.remember(n, c.path.clone(), c.inode, c.cookie(), unseen);
        }
        let cni = network.zip(id).zip(ifname).map(|((n, i), f)| (n, i, f));
        // Named: by `--name`, or by the name its namespace was registered under.
        let (fresh_path, began) = self.record_early(&c, cni, c.name.is_some() || id.is_some(), &wanted);
        let previously = self.held(&c.key);
        let allocated =
            match self.allocate_recorded(&c.key, c.name.as_deref().unwrap_or(""), id.is_some(), &wanted).await {
                Ok(a) => a,
                Err(e) => {
                    self.undo_early(named, fresh_path, &c.key, &began);
                    self.unexpose(&exposed).await;
                    return Err(e);
                }
            };
        let mut created: Vec<String> = Vec::new();
        let mut result = Vec::new();
        let mut used: Vec<String> = before.iter().map(|i| i.name.clone()).collect();
        for (subnet, ip, len) in &allocated {
            let bridge = bridge_name(subnet.vni);
            let step = async {
                let ifname = match on_subnet(&before, &subnet.cidr) {
                    // Another address there: the container is attached under
                    // another key (its name, a CNI id). Added beside it, that
                    // address stayed on the interface when the MAC check
                    // refused the attach (found by a review, 2026-12-06).
                    Some((i, have)) if have != *ip => {
                        let why = match self.key_here(&c, have) {
                            Some(k) => format!("attached as '{k}': attach or detach it by that"),
                            None => "which weave gave no attachment of this container: take it off".into(),
                        };
                        return Err(Refusal::conflict(format!(
                            "{} in the container has {have} on {} already, {why}",
                            i.name, subnet.cidr
                        )));
                    }
                    Some((i, _)) => i.name.clone(),
                    None => {
                        // The CNI runtime's name, for the first interface it asks for.
                        let ifname = match ifname {
                            Some(n) if !used.iter().any(|u| u == n) => n.to_string(),
                            _ => next_ifname(&used),
                        };
                        let host_if = host_ifname(c.inode, subnet.vni);
                        self.bridge_of(subnet).await?;
                        let mac = workload_mac(*ip);
                        let plug = (ifname.as_str(), mac.as_slice());
                        self.netlink.plug_veth(&host_if, &bridge, &c.netns, plug, self.mtu).await.map_err(failed)?;
                        created.push(ifname.clone());
                        used.push(ifname.clone());
                        ifname
                    }
                };
                // Before the interface comes up: no router advertisement lands first.
                netlink::harden_workload(&c.netns, &ifname).map_err(failed)?;
                inside.configure_workload(&ifname, *ip, *len, multicast).await.map_err(failed)?;
                let gateway = match gateways.get(&subnet.id) {
                    Some(gw) => inside.default_route(&ifname, *gw).await.map_err(failed)?.then_some(*gw),
                    None => None,
                };
                // Remembered until the host is hidden there: the container
                // keeps that route when egress goes off (see `hide`).
                if gateway.is_some() {
                    self.names.gave_gateway(subnet.id, *ip);
                }
                let mac = inside
                    .workload_interfaces(Some(&ifname))
                    .await
                    .map_err(failed)?
                    .into_iter()
                    .find(|i| i.name == ifname)
                    .map(|i| i.mac)
                    .ok_or_else(|| Refusal::failed(format!("{ifname} vanished from the container")))?;
                // Again for a new one: the container may have changed it since.
                own_mac(&ifname, &mac, *ip)?;
                // The lock first: it refuses a MAC another workload's port holds,
                // before anything is pinned or recorded for it.
                let port = host_ifname(c.inode, subnet.vni);
                // Another port of this host pinned to the address IPAM just gave
                // this container is a container's whose address was released
                // behind its back (`subnet rm --force`, `ipam release`): it goes.
                self.netlink.remove_ports_pinned_to(*ip, &port).await.map_err(failed)?;
                if self.netlink.link_index(&port).await.map_err(failed)?.is_some() {
                    self.netlink.lock_port(&port, &mac).await.map_err(failed)?;
                }
                self.netlink.pin_neighbour(&bridge, *ip, &mac).await.map_err(failed)?;
                self.netlink.remember_pin(&port, &bridge, *ip, &mac).await.map_err(failed)?;
                // And held to its address: no other source, no ARP for another.
                crate::host::firewall::guard_ports(&self.netlink).await.map_err(failed)?;
                // Only now up: a new port carries nothing before it is locked
                // and guarded (an old one is up already; up again is a no-op).
                // Its MAC for the CNI result (chained plugins find the port there).
                let host_mac = self.netlink.link_mac(&port).await.map_err(failed)?;
                if host_mac.is_some() {
                    self.netlink.set_up(&port).await.map_err(failed)?;
                }
                let host_port = host_mac.map(|m| (port, format_mac(&m))).unwrap_or_default();
                Ok::<_, Refusal>((ifname, mac, gateway, host_port))
            };
            match step.await {
                Ok((ifname, mac, gateway, (host_interface, host_mac))) => result.push(Attached {
                    address: format!("{ip}/{len}"),
                    subnet: subnet.cidr.clone(),
                    interface: ifname,
                    bridge,
                    mtu: self.mtu,
                    mac: format_mac(&mac),
                    gateway: gateway.map(|g| g.to_string()),
                    host_interface,
                    host_mac,
                }),
                Err(e) => {
                    for ifname in &created {
                        let _ = inside.delete_link(ifname).await;
                    }
                    for (s, _, _) in &allocated {
                        if !previously.contains_key(&s.id) {
                            let _ = self.release(&c.key, &s.cidr).await;
                        }
                    }
                    self.undo_early(named, fresh_path, &c.key, &began);
                    self.unexpose(&exposed).await;
                    return Err(self.or_removed(subnet, e));
                }
            }
        }
        self.record_cni(cni, &c, result.iter().map(|a| a.subnet.clone()).collect());
        self.names.attach_ended(&c.key, &began);
        Ok(result)
    }

    /// `detach`: removes the given subnets (all if none) and releases their
    /// addresses (and DNS records). A subnet the container is not on is an
    /// error, and then nothing changes. Idempotent, also once the namespace
    /// is gone (a CNI DEL after the runtime removed it, by its `id`; a
    /// registered name): then what it held is released.
    pub async fn detach(
        &self,
        container: &str,
        passed: Option<&File>,
        id: Option<&str>,
        ifname: Option<&str>,
        addrs: &[String],
    ) -> Result<Detached, Refusal> {
        let _one = self.lock.lock().await;
        // A name a detach cut short forgot (its agent killed) still leads to
        // its namespace through the DNS alias: detached by that path (it
        // was "unknown container" for ever; found by a review, 2026-12-05).
        let by_name = self.registered(container);
        let aliased = match (&by_name, id, passed) {
            (None, None, None) => self
                .alias_of(container)
                .and_then(|alias| self.names.dns_path(&alias))
                .filter(|(inode, path)| registry::alive(std::path::Path::new(path), *inode)),
            _ => None,
        };
        let target = aliased.as_ref().map_or(container, |(_, path)| path.as_str());
        // Under its name, its IPAM key.
        let c = match self.resolve(target, passed, aliased.as_ref().map(|_| container), id) {
            Ok(c) => c,
            Err(e) => {
                // A CNI DEL once the namespace is gone: the container is, and
                // everything it held goes (a DEL for each network follows).
                if let Some(id) = id {
                    return match self.cni_id_lives_elsewhere(id, container).await {
                        true => Ok(Detached::kept()),
                        false => self.retire(id, None, None, &[]).await,
                    };
                }
                return match by_name {
                    Some((n, _, inode)) => self.retire(&n, Some(inode), Some(&n), addrs).await,
                    None => Err(e),
                };
            }
        };
        if let Some(id) = id
            && self.cni_lives_apart(id, c.inode).await
        {
            return Ok(Detached::kept());
        }
        let inside = Netlink::in_netns(&c.netns).await.map_err(failed)?;
        let before = inside.workload_interfaces(ifname).await.map_err(failed)?;
        let key = self.detach_key(&c, &before, id).await;
        let held = self.held(&key);
        let subnets: Vec<String> = if addrs.is_empty() {
            let map = self.maps.borrow();
            let mut all: Vec<String> =
                map.subnets.iter().filter(|s| held.contains_key(&s.id)).map(|s| s.cidr.clone()).collect();
            for s in &map.subnets {
                if on_subnet(&before, &s.cidr).is_some() && !all.contains(&s.cidr) {
                    all.push(s.cidr.clone());
                }
            }
            all
        } else if id.is_some() {
            self.del_subnets(c.inode, &held, &before, ifname, addrs).await?
        } else {
            let specs = AddrSpec::parse_all(addrs)?;
            let wanted = self.subnets(&specs).await?;
            for (spec, s) in &wanted {
                let has = held_address(&held, s).or_else(|| on_subnet(&before, &s.cidr).map(|(_, ip)| ip));
                let Some(has) = has else {
                    return Err(Refusal::not_found(format!(
                        "container '{container}' is not attached to subnet {}",
                        s.cidr
                    )));
                };
                // An address names that address, not its subnet (as attach reads it).
                if let AddrSpec::Ip(ip, _) = spec
                    && *ip != has
                {
                    return Err(not_at(&format!("container '{container}'"), "attached", *ip, has, s));
                }
            }
            wanted.into_iter().map(|(_, s)| s.cidr).collect()
        };
        let whole = addrs.is_empty() || self.holds_only(&key, &subnets);
        let released = self.release_then_unplug(&key, c.inode, &inside, &before, &held, &subnets).await?;
        // Detaching all: also `ethwe*` interfaces on subnets the map no longer
        // has (`subnet rm --force` leaves them; IPAM freed their addresses
        // then, so none is reported released here). Only weave's own names
        // (a CNI runtime's interface name may be another plugin's interface),
        // and a CNI DEL's own `CNI_IFNAME` if weave made it (its MAC is the
        // one weave gives its address: when that name was taken, ADD used an
        // `ethwe*` name, and the name is another plugin's interface).
        let nets: Vec<Ipv4Net> = self.maps.borrow().subnets.iter().filter_map(|s| s.cidr.parse().ok()).collect();
        let made = |i: &WorkloadInterface| i.addresses.iter().any(|(ip, _)| i.mac == workload_mac(*ip));
        let ours = |i: &WorkloadInterface| {
            (addrs.is_empty() && is_workload_if(&i.name))
                || (id.is_some() && ifname == Some(i.name.as_str()) && made(i))
        };
        let orphan = |i: &&WorkloadInterface| {
            ours(i)
                && !i.addresses.iter().any(|(ip, len)| nets.iter().any(|n| n.contains(ip) && *len == n.prefix_len()))
        };
        for i in before.iter().filter(orphan) {
            inside.delete_link(&i.name).await.map_err(failed)?;
            tracing::info!(container, interface = %i.name, "removed an interface on a subnet that is gone");
        }
        if whole && let Some(n) = &c.name {
            self.names.forget(n);
        }
        Ok(Detached { released, whole, kept: false })
    }
}
