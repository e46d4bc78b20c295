//! The local API service: answers each [`Request`] of the Unix socket
//! (status, DNS, IPAM, attach/detach, expose/hide) from the running agent,
//! and keeps the container's DNS sockets in step with attach and detach.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::seq::SliceRandom;
use tokio::sync::watch;
use weave_proto::{
    client::{Api, retry_unavailable, retry_unavailable_or},
    v1::{AllocateRequest, NetworkMap, ReleaseRequest},
};

use weave_proto::local_api::{
    AgentStatus, Attached, Attachment, ErrorKind, Handler, LocalAddress, LocalContainer, Refusal, Reply, Request,
    Response, SegmentStatus,
};

use super::{attach::Attacher, dns::DnsServer};
use crate::{
    dataplane::{Transport, tun_udp::TunUdp},
    host::{registry::Registry, state::Identity},
    plan::kernel::bridge_name,
};

pub(super) struct LocalService {
    pub(super) api: Api,
    pub(super) identity: Identity,
    /// The coordinators' addresses, resolved at start (`host::routes::coordinator_ips`).
    pub(super) coordinator_ips: Vec<std::net::IpAddr>,
    pub(super) transport: Arc<TunUdp>,
    pub(super) maps: watch::Receiver<NetworkMap>,
    pub(super) connected: Arc<AtomicBool>,
    /// Why the coordinator turns this node's credential away, while it does.
    pub(super) refused: Arc<std::sync::Mutex<Option<String>>>,
    pub(super) dns: DnsServer,
    /// Which container is which: `--name` names and CNI ids -> DNS server
    /// key, for a detach by those (also after a restart).
    pub(super) registry: Arc<Registry>,
    pub(super) segment_mtu: u32,
    pub(super) attacher: Arc<Attacher>,
    /// Wakes the reconcile loop: an expose or hide changes the source of the host's routes.
    pub(super) reconcile_now: Arc<tokio::sync::Notify>,
}

impl Handler for LocalService {
    fn handle(&self, request: Request) -> Reply<'_> {
        Box::pin(async move {
            // An `id` is a CNI runtime's container, `cni:<id>` as weave-cni
            // sends it: `host:<this node>` took the host's own exposed
            // address, and its detach released it (found by a review, 2026-12-07).
            if let Request::Attach { id: Some(id), .. } | Request::Detach { id: Some(id), .. } = &request
                && id.strip_prefix("cni:").is_none_or(|rest| rest.is_empty())
            {
                return Response::Error(Refusal::invalid(format!(
                    "id '{id}': an attach's id names a CNI runtime's container, `cni:<container id>` (as weave-cni sends it)"
                )));
            }
            let mut dns = self.dns_plan(&request);
            let early = self.dns_early(dns.as_ref());
            let response = match request {
                Request::Status => Response::Status(self.status()),
                Request::Containers => Response::Containers(self.containers()),
                Request::DnsLookup { name } => {
                    // As the coordinator qualifies and checks it: one name,
                    // one answer and one error, whichever weavectl asks.
                    let records = self.dns.records();
                    match weave_proto::dns_name::qualify(&name, &records.domain) {
                        Ok(name) => {
                            let mut addresses: Vec<String> =
                                records.lookup(&name).iter().map(|a| a.to_string()).collect();
                            addresses.shuffle(&mut rand::rng());
                            Response::Dns { name, addresses }
                        }
                        Err(e) => Response::Error(Refusal::invalid(e)),
                    }
                }
                Request::DnsServe { netns, key } => match self.dns.serve_in(std::path::Path::new(&netns), &key).await {
                    Ok(()) => Response::Done,
                    Err(e) => Response::Error(Refusal::failed(e.to_string())),
                },
                Request::DnsStop { key } => {
                    self.dns.stop_detached(&key).await;
                    Response::Done
                }
                Request::Allocate { container, subnet } => self.allocate(container, subnet).await,
                Request::Attach {
                    container,
                    netns,
                    name,
                    id,
                    ifname,
                    addrs,
                    no_multicast,
                    exact_ifname,
                    network,
                    needs_egress,
                    address,
                    ..
                } => reply_attached(
                    self.attacher
                        .attach(
                            &container,
                            netns.as_deref(),
                            name.as_deref(),
                            id.as_deref(),
                            ifname.as_deref(),
                            &addrs,
                            !no_multicast,
                            exact_ifname,
                            network.as_deref(),
                            (needs_egress, address.as_deref()),
                        )
                        .await,
                ),
                Request::Detach { container, netns, id, ifname, addrs, .. } => {
                    let detached = self
                        .attacher
                        .detach(&container, netns.as_deref(), id.as_deref(), ifname.as_deref(), &addrs)
                        .await;
                    // Its DNS stays while it is on another subnet here (a
                    // container on two weave networks, one disconnected),
                    // and, with its record, when the id lives on elsewhere.
                    if detached.as_ref().is_ok_and(|d| !d.whole) {
                        dns = None;
                    }
                    let gone = detached.as_ref().is_ok_and(|d| !d.kept);
                    if let (true, Some(id), Some(ifname)) = (gone, &id, &ifname) {
                        self.registry.cni_gone(None, id, ifname);
                    }
                    reply_released(detached.map(|d| d.released))
                }
                Request::CniGc { network, addrs, keep } => match self.attacher.cni_gc(&network, &addrs, &keep).await {
                    Ok((released, gone)) => {
                        for id in gone {
                            if let Some(key) = self.registry.dns_key(&id) {
                                self.dns.stop(&key);
                            }
                        }
                        Response::Released(released)
                    }
                    Err(e) => Response::Error(e),
                },
                Request::Expose { addrs } => {
                    let r = reply_attached(self.attacher.expose(&addrs).await);
                    self.reconcile_now.notify_one();
                    r
                }
                Request::Hide { addrs } => {
                    let r = reply_released(self.attacher.hide(&addrs).await);
                    self.reconcile_now.notify_one();
                    r
                }
                Request::Release { container } => {
                    let req = ReleaseRequest { container, ..Default::default() };
                    // A repeat answering NOT_FOUND found the first attempt
                    // applied (cut off after the commit): released, nothing left.
                    let released = retry_unavailable_or(
                        || {
                            let (mut ipam, req) = (self.api.ipam.clone(), req.clone());
                            async move { Ok(ipam.release(req).await?.into_inner().released) }
                        },
                        |s| (s.code() == tonic::Code::NotFound).then(Vec::new),
                    )
                    .await;
                    match released {
                        Ok(r) => Response::Released(r.into_iter().map(|a| a.address).collect()),
                        Err(s) => Response::Error(Refusal::status(&s)),
                    }
                }
            };
            // Taken back with whatever `serve_missing` may have served meanwhile.
            if let Some(key) = early.filter(|_| !matches!(response, Response::Attached(_))) {
                self.dns.stop_detached(&key).await;
            }
            self.dns_after(dns, &response).await;
            response
        })
    }
}

fn reply_attached(r: Result<Vec<Attached>, Refusal>) -> Response {
    r.map_or_else(Response::Error, Response::Attached)
}

fn reply_released(r: Result<Vec<String>, Refusal>) -> Response {
    r.map_or_else(Response::Error, Response::Released)
}

/// What attach/detach mean for DNS: serve the container's namespace, or stop.
enum DnsPlan {
    /// `aliases`: the `--name` and CNI id, for a detach that names the container so.
    Serve {
        netns: DnsNetns,
        key: String,
        aliases: Vec<String>,
    },
    Stop {
        key: String,
    },
}

/// The namespace file a container argument names, without the registry of
/// names (a path, a pid, or a name under /run/netns).
fn dns_netns(container: &str) -> Option<std::path::PathBuf> {
    // A CNI DEL may name no namespace (it is gone); "" would be /run/netns itself.
    if container.is_empty() {
        return None;
    }
    let path = if container.starts_with('/') {
        std::path::PathBuf::from(container)
    } else if !container.is_empty() && container.bytes().all(|b| b.is_ascii_digit()) {
        std::path::PathBuf::from(format!("/proc/{container}/ns/net"))
    } else {
        std::path::Path::new("/run/netns").join(container)
    };
    path.exists().then_some(path)
}

/// One DNS server per container namespace, keyed by the namespace's inode.
fn dns_key(netns: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(netns).ok().map(|m| crate::host::netns::key_of(m.ino()))
}

/// The namespace to serve DNS in: a path the agent sees, or a descriptor
/// the caller passed.
enum DnsNetns {
    Path(std::path::PathBuf),
    Passed(std::sync::Arc<std::fs::File>),
}

/// The namespace and DNS key of an attach or detach request.
fn dns_target(container: &str, passed: Option<&std::sync::Arc<std::fs::File>>) -> Option<(DnsNetns, String)> {
    use std::os::unix::fs::MetadataExt;
    match passed {
        Some(f) => {
            let key = crate::host::netns::key_of(f.metadata().ok()?.ino());
            // A path the agent sees too leads to the same namespace: serve by
            // path, which DnsServer::restore serves again after a restart.
            let path = dns_netns(container).filter(|p| dns_key(p).as_deref() == Some(key.as_str()));
            Some((path.map_or_else(|| DnsNetns::Passed(f.clone()), DnsNetns::Path), key))
        }
        None => {
            let netns = dns_netns(container)?;
            let key = dns_key(&netns)?;
            Some((DnsNetns::Path(netns), key))
        }
    }
}

impl LocalService {
    fn dns_plan(&self, request: &Request) -> Option<DnsPlan> {
        match request {
            Request::Attach { no_dns: true, .. } => None,
            Request::Attach { container, netns, name, id, .. } => {
                let (netns, key) = dns_target(container, netns.as_ref())?;
                // A CNI container is found by its id alone: its name is only
                // its DNS name, which a weavectl container's `--name` on this
                // host may be too (a pod named so took that name's alias and
                // stopped that container's resolver; found by a review,
                // 2026-12-06).
                let aliases = match id {
                    Some(id) => vec![id.clone()],
                    None => name.iter().map(|n| self.attacher.alias(n)).collect(),
                };
                Some(DnsPlan::Serve { netns, key, aliases })
            }
            // Stopped only if the detach leaves the container without the
            // overlay (`Detached::whole`). By name or CNI id too: the
            // namespace may be gone by then.
            Request::Detach { container, netns, id, .. } => {
                let key = dns_target(container, netns.as_ref())
                    .map(|(_, key)| key)
                    .or_else(|| self.registry.dns_key(&self.attacher.alias_of(container)?))
                    .or_else(|| id.as_ref().and_then(|i| self.registry.dns_key(i)))?;
                Some(DnsPlan::Stop { key })
            }
            _ => None,
        }
    }

    /// An attach's DNS, recorded before the attach by the namespace's path:
    /// an agent killed between the container's interface and its resolver
    /// (served after the attach) serves it at its next start
    /// ([`super::dns::DnsServer::restore`]). A named container's resolver was
    /// lost for good so (found by a crash review, 2026-12-07). Returns the
    /// key when it was not recorded before (taken back if the attach fails).
    fn dns_early(&self, plan: Option<&DnsPlan>) -> Option<String> {
        let Some(DnsPlan::Serve { netns: DnsNetns::Path(path), key, aliases }) = plan else { return None };
        if self.registry.dns_served().iter().any(|(k, _)| k == key) {
            return None;
        }
        self.registry.serve_dns(key, Some(path.display().to_string()));
        // And its names, so that a detach by name finds it after a restart.
        self.registry.alias_dns_new(aliases, key);
        Some(key.clone())
    }

    async fn dns_after(&self, plan: Option<DnsPlan>, response: &Response) {
        match (plan, response) {
            (Some(DnsPlan::Serve { netns, key, aliases }), Response::Attached(_)) => {
                // A name that moved left a dead namespace (attach refuses a
                // live one's name): its sockets would keep it alive.
                for old in self.registry.alias_dns(&aliases, &key) {
                    self.dns.stop(&old);
                }
                let served = match &netns {
                    DnsNetns::Path(p) => self.dns.serve_in(p, &key).await,
                    DnsNetns::Passed(f) => self.dns.serve_in_file(f, &key).await,
                };
                if let Err(e) = served {
                    tracing::warn!(key, error = %e, "attached, but cannot serve DNS in the container");
                }
                // Its subnets now (the map shows the attach by now): the
                // map loop sets them on changes, but may have run before
                // this key was served.
                self.dns.scopes_from_map(&self.maps.borrow(), self.identity.node_id);
            }
            (Some(DnsPlan::Stop { key }), Response::Released(_)) => {
                // Closes the sockets and forgets the key's names (the registry).
                self.dns.stop_detached(&key).await;
            }
            _ => {}
        }
    }

    async fn allocate(&self, container: String, subnet: String) -> Response {
        // A key of weave's own paths (`host:<this node>` exposed the host or
        // printed its exposed address for a veth to take; `cni:<id>` a pod's)
        // is not a container of the caller's (found by a review, 2026-12-07).
        if ["host:", "cni:", "netns:"].iter().any(|p| container.starts_with(p))
            || crate::plan::docker::is_docker_key(&container)
        {
            return Response::Error(Refusal::invalid(format!(
                "'{container}' is a key weave's own attaches use (host:, cni:, netns:, docker:, docker-gateway): \
                 name your container otherwise"
            )));
        }
        // What it prints is for a workload on a segment (its MAC is made
        // from an IPv4 address): an IPv6 subnet is refused before anything is
        // taken, as attach refuses it.
        let known = self.maps.borrow().subnets.iter().find(|s| s.name == subnet || same_net(&s.cidr, &subnet)).cloned();
        if known.is_some_and(|s| s.cidr.parse::<ipnet::Ipv6Net>().is_ok()) {
            return Response::Error(weave_proto::local_api::addr_spec::ipv6(&subnet, "the subnet"));
        }
        let req = AllocateRequest { container: container.clone(), subnet, ..Default::default() };
        let alloc = match retry_unavailable(|| {
            let (mut ipam, req) = (self.api.ipam.clone(), req.clone());
            async move { ipam.allocate(req).await }
        })
        .await
        {
            Ok(a) => a.into_inner(),
            Err(s) => return Response::Error(Refusal::status(&s)),
        };
        if alloc.address.parse::<ipnet::Ipv4Net>().is_err() {
            // A subnet too new for the map: what was just taken goes back.
            let _ = self.attacher.release(&container, &alloc.subnet).await;
            return Response::Error(weave_proto::local_api::addr_spec::ipv6(&alloc.subnet, "the subnet"));
        }
        // The subnet's vni comes from the map; a brand-new subnet may not have
        // reached it yet.
        let mut maps = self.maps.clone();
        let vni = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(s) = maps.borrow_and_update().subnets.iter().find(|s| s.id == alloc.subnet_id) {
                    return s.vni;
                }
                if maps.changed().await.is_err() {
                    return 0;
                }
            }
        })
        .await
        .unwrap_or(0);
        if vni == 0 {
            return Response::Error(Refusal::new(
                ErrorKind::Unavailable,
                format!("subnet {} is not in this agent's map yet", alloc.subnet),
            ));
        }
        Response::Allocated(Attachment {
            address: alloc.address,
            subnet: alloc.subnet,
            bridge: bridge_name(vni),
            mtu: self.segment_mtu,
        })
    }

    /// What this node holds, by container, from the saved map (`weavectl ps`).
    fn containers(&self) -> Vec<LocalContainer> {
        use crate::plan::{kernel, netmap::allocation_address};
        let map = self.maps.borrow();
        let served = self.registry.dns_served();
        let mut all: std::collections::BTreeMap<&str, LocalContainer> = Default::default();
        for a in map.allocations.iter().filter(|a| a.node_id == self.identity.node_id) {
            let c = all.entry(&a.container).or_insert_with(|| LocalContainer {
                container: a.container.clone(),
                netns: (self.registry.get(&a.container).map(|(path, _)| path.display().to_string()))
                    .or_else(|| served.iter().find(|(key, _)| *key == a.container).map(|(_, path)| path.clone()))
                    .unwrap_or_default(),
                addresses: Vec::new(),
            });
            let mac = allocation_address(&a.address)
                .filter(|_| !a.container.starts_with("host:"))
                .map_or_else(String::new, |ip| kernel::format_mac(&kernel::workload_mac(ip)));
            let mut names: Vec<String> = (map.dns_records.iter().filter(|r| r.allocation_id == a.id))
                .map(|r| r.name.trim_end_matches('.').to_string())
                .collect();
            names.sort();
            names.dedup();
            c.addresses.push(LocalAddress { address: a.address.clone(), subnet: a.subnet.clone(), mac, names });
        }
        all.into_values().collect()
    }

    fn status(&self) -> AgentStatus {
        let map = self.maps.borrow();
        let skipped = crate::plan::netmap::underlay_conflicts(
            &map,
            &self.coordinator_ips,
            &crate::host::routes::lan(self.identity.node_id),
        );
        // This host's address on each segment, as the isolation rules read it.
        let exposed = crate::plan::reconcile::exposed_addresses(&map, self.identity.node_id);
        AgentStatus {
            node_id: self.identity.node_id,
            name: self.identity.name.clone(),
            address: self.identity.address,
            endpoint: self.identity.endpoint.to_string(),
            revision: map.revision,
            coordinator_connected: self.connected.load(Ordering::Relaxed),
            coordinator_refused: self.refused.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            segments: map
                .subnets
                .iter()
                .map(|s| SegmentStatus {
                    skipped: skipped.get(&s.vni).cloned().or_else(|| {
                        (!crate::plan::reconcile::is_segment(s))
                            .then(|| "IPv6: address management through the API only, no segment".to_string())
                    }),
                    subnet: s.cidr.clone(),
                    vni: s.vni,
                    bridge: bridge_name(s.vni),
                    mtu: self.segment_mtu,
                    egress: s.egress.then(|| exposed.get(&s.vni).map(|a| a.to_string()).unwrap_or_default()),
                })
                .collect(),
            peers: self.transport.status(),
            ip_forward: Some(crate::host::firewall::forwarding_on()),
        }
    }
}

/// Whether CIDR `a` and `b` are one network (`10.2.3.0/24` and `10.2.3.0/24`,
/// `fd00::/64` and `fd00:0::/64`); false when either is not a CIDR.
fn same_net(a: &str, b: &str) -> bool {
    matches!((a.parse::<ipnet::IpNet>(), b.parse::<ipnet::IpNet>()), (Ok(a), Ok(b)) if a.trunc() == b.trunc())
}
