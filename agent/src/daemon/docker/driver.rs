//! `NetworkDriver.*`: a Docker network is a weave subnet; an endpoint is a
//! veth whose host end is on the subnet's bridge (as attach's are) and whose
//! other end Docker moves into the container as `ethwe<n>`; its address is
//! the one [`super::ipam`] got from the coordinator. Join also serves weave
//! DNS in the container (at [`crate::daemon::dns::DOCKER_LISTEN`]) and
//! registers the container's name in the cluster domain.
use std::{net::Ipv4Addr, os::unix::fs::MetadataExt, path::PathBuf, sync::Arc, time::Duration};

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::{Refused, engine, ipam::parse};
use crate::plan::docker::GATEWAY_KEY;
use crate::{
    daemon::{
        attach::Attacher,
        dns::{DOCKER_KEY_PREFIX, DnsServer},
    },
    host::docker::{DockerState, Endpoint},
    plan::{
        docker::{self as wire, CreateNetwork, EndpointRequest, IMPLEMENTS},
        kernel::{bridge_name, format_mac, workload_mac},
    },
};

/// How long Join waits for a new subnet's bridge (the reconcile makes it).
/// How long after a Join the agent looks for the container's name.
pub(super) const NAME_WAIT: Duration = Duration::from_secs(30);

pub struct Plugin {
    pub(super) attacher: Arc<Attacher>,
    pub(super) dns: DnsServer,
    pub(super) state: DockerState,
    /// Docker's API socket (for container names only).
    pub(super) docker_host: PathBuf,
    /// One endpoint change at a time.
    pub(super) lock: tokio::sync::Mutex<()>,
}

impl Plugin {
    pub fn new(attacher: Arc<Attacher>, dns: DnsServer, state: DockerState, docker_host: PathBuf) -> Self {
        Self { attacher, dns, state, docker_host, lock: tokio::sync::Mutex::new(()) }
    }

    /// One request: `/Plugin.Activate`, `/NetworkDriver.<m>`, `/IpamDriver.<m>`.
    pub async fn handle(self: &Arc<Self>, path: &str, body: &[u8]) -> Result<Value, Refused> {
        let path = path.trim_start_matches('/');
        if path == "Plugin.Activate" {
            return Ok(json!({"Implements": IMPLEMENTS}));
        }
        match path.split_once('.') {
            Some(("NetworkDriver", m)) => self.driver(m, body).await,
            Some(("IpamDriver", m)) => self.ipam(m, body).await,
            _ => Err(Refused::not_found(format!("unknown plugin method /{path}"))),
        }
    }

    async fn driver(self: &Arc<Self>, method: &str, body: &[u8]) -> Result<Value, Refused> {
        match method {
            // Local: each host's dockerd has its own network object (the
            // same command on every host); global: it reaches other hosts.
            "GetCapabilities" => Ok(json!({"Scope": "local", "ConnectivityScope": "global"})),
            "CreateNetwork" => self.create_network(&parse(body)?).await,
            "DeleteNetwork" => self.delete_network(&parse(body)?).await,
            "CreateEndpoint" => self.create_endpoint(&parse(body)?).await,
            "DeleteEndpoint" => self.delete_endpoint(&parse(body)?).await,
            "EndpointOperInfo" => {
                let req: EndpointRequest = parse(body)?;
                self.known(&req.endpoint_id)?;
                Ok(json!({"Value": {}}))
            }
            "Join" => self.join(&parse(body)?).await,
            "Leave" => self.leave(&parse(body)?).await,
            // Nothing to learn from Docker's node discovery (the coordinator
            // knows the hosts), nor to program for external connectivity.
            "DiscoverNew"
            | "DiscoverDelete"
            | "ProgramExternalConnectivity"
            | "RevokeExternalConnectivity"
            | "AllocateNetwork"
            | "FreeNetwork" => Ok(json!({})),
            _ => Err(Refused::not_found(format!("unknown network driver method {method}"))),
        }
    }

    fn known(&self, endpoint_id: &str) -> Result<Endpoint, Refused> {
        self.state.endpoint(endpoint_id).ok_or_else(|| Refused::not_found(format!("unknown endpoint {endpoint_id}")))
    }

    async fn create_network(self: &Arc<Self>, req: &CreateNetwork) -> Result<Value, Refused> {
        let network = wire::network_of(req).map_err(Refused::bad)?;
        wire::mtu_check(req, self.attacher.mtu).map_err(Refused::bad)?;
        // Two Docker networks on one weave subnet would be one segment: a
        // user expects them apart (found by a review, 2026-12-04).
        if let Some(other) = self.state.network_on(&network.cidr).filter(|id| *id != req.network_id)
            && !self.stale(&other).await
        {
            return Err(Refused::bad(format!(
                "weave subnet {} is Docker network {} on this host already: one Docker network per weave subnet \
                 (connect containers to that one, or give this one another --subnet)",
                network.cidr,
                other.chars().take(12).collect::<String>()
            )));
        }
        let subnet = self.subnet(&network.cidr).await?;
        wire::internal_check(&network, subnet.egress).map_err(Refused::bad)?;
        tracing::info!(network = req.network_id, subnet = network.cidr, "Docker network on a weave subnet");
        // Its subnet is a network's now: kept when Docker releases the pool.
        self.state.take_pool(&network.cidr);
        self.state.add_network(&req.network_id, network);
        tokio::spawn(self.clone().note_shown(req.network_id.clone()));
        Ok(json!({}))
    }

    /// Whether network `id`, which Docker showed before, is gone from Docker
    /// (removed while the agent was not listening, and not swept yet): then
    /// it is taken down now. A network on its subnet was refused, naming a
    /// network `docker network ls` did not show (found by a review,
    /// 2026-12-05).
    async fn stale(&self, id: &str) -> bool {
        let Some(seen_by) = self.state.network(id).map(|n| n.seen_by).filter(|d| !d.is_empty()) else {
            return false;
        };
        let asked = tokio::time::timeout(Duration::from_secs(5), async {
            let daemon = engine::daemon_id(&self.docker_host).await?;
            Ok::<_, String>((daemon, engine::network(&self.docker_host, id).await?))
        })
        .await;
        if !matches!(asked, Ok(Ok((daemon, None))) if daemon == seen_by) {
            return false;
        }
        self.take_down_network(id, &self.state.endpoints(), true).await;
        true
    }

    /// Forgets the network; with the last one on its subnet goes this host's
    /// gateway address there (Docker releases it before it deletes the
    /// network, while the network still holds it: it stayed held for good,
    /// and `subnet rm` refused; found by a review, 2026-12-04).
    pub(super) async fn delete_network(&self, req: &EndpointRequest) -> Result<Value, Refused> {
        let network = self.state.network(&req.network_id);
        self.state.remove_network(&req.network_id);
        if let Some(n) = network
            && self.state.networks_on(&n.cidr) == 0
        {
            // Nothing held there (released already): fine.
            self.attacher.release(GATEWAY_KEY, &n.cidr).await.map_err(|r| Refused::bad(r.message))?;
        }
        Ok(json!({}))
    }

    /// The VNI of subnet `cidr`, once the map has it.
    async fn subnet(&self, cidr: &str) -> Result<weave_proto::v1::Subnet, Refused> {
        let mut maps = self.attacher.maps.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = maps.borrow_and_update().subnets.iter().find(|s| s.cidr == cidr) {
                return Ok(s.clone());
            }
            if tokio::time::timeout_at(deadline, maps.changed()).await.is_err() {
                return Err(Refused::bad(format!(
                    "weave subnet {cidr} is not in this host's map (is the agent connected?)"
                )));
            }
        }
    }

    async fn create_endpoint(&self, req: &EndpointRequest) -> Result<Value, Refused> {
        let _one = self.lock.lock().await;
        if self.state.network(&req.network_id).is_none() {
            return Err(Refused::not_found(format!("unknown network {}", req.network_id)));
        }
        let iface = req.interface.as_ref();
        let address = iface.map(|i| i.address.clone()).unwrap_or_default();
        let Ok(net) = address.parse::<Ipv4Net>() else {
            return Err(Refused::bad("a weave endpoint needs an IPv4 address from weave's IPAM (--ipam-driver weave)"));
        };
        if iface.is_some_and(|i| !i.address_ipv6.is_empty()) {
            return Err(Refused::bad("weave networks are IPv4 only"));
        }
        // Every weave workload's MAC is made from its address, which is how
        // the other hosts tell its frames from a member's forgery
        // (`kernel::workload_mac`): a `--mac-address` of another kind would
        // leave the container without IPv6 or broadcast to other hosts.
        let mac = format_mac(&workload_mac(net.addr()));
        let given = iface.map(|i| i.mac_address.clone()).filter(|m| !m.is_empty());
        if let Some(m) = &given
            && parse_mac(m).map(|m| format_mac(&m)).as_ref() != Some(&mac)
        {
            return Err(Refused::bad(format!(
                "a container on a weave network has the MAC made from its address ({mac} for {}): \
                 leave out --mac-address {m}",
                net.addr()
            )));
        }
        let endpoint = Endpoint { network: req.network_id.clone(), address, mac: mac.clone(), ..Default::default() };
        self.state.set_endpoint(&req.endpoint_id, endpoint);
        // Docker sets the MAC it is told (its own `--mac-address`, the same, wins).
        Ok(match given {
            Some(_) => json!({"Interface": null}),
            None => json!({"Interface": {"MacAddress": mac}}),
        })
    }

    pub(super) async fn delete_endpoint(&self, req: &EndpointRequest) -> Result<Value, Refused> {
        let _one = self.lock.lock().await;
        let host_if = wire::host_ifname(&req.endpoint_id).map_err(Refused::bad)?;
        let known = self.state.endpoint(&req.endpoint_id);
        // Its veth is gone with a Leave; after a crash it may not be.
        self.attacher.netlink.delete_link(&host_if).await.map_err(|e| Refused::bad(e.to_string()))?;
        match known {
            Some(_) => {
                self.state.remove_endpoint(&req.endpoint_id);
                Ok(json!({}))
            }
            None => Err(Refused::not_found(format!("unknown endpoint {}", req.endpoint_id))),
        }
    }

    async fn join(self: &Arc<Self>, req: &EndpointRequest) -> Result<Value, Refused> {
        let _one = self.lock.lock().await;
        let mut ep = self.known(&req.endpoint_id)?;
        let network = self
            .state
            .network(&req.network_id)
            .ok_or_else(|| Refused::not_found(format!("unknown network {}", req.network_id)))?;
        let subnet = self.subnet(&network.cidr).await?;
        wire::internal_check(&network, subnet.egress).map_err(Refused::bad)?;
        // An egress subnet's way out is this host (exposed there first),
        // before anything of the endpoint's is made.
        let address: Ipv4Net = ep.address.parse().map_err(|_| Refused::bad(format!("bad address '{}'", ep.address)))?;
        let gateway = match subnet.egress {
            true => {
                Some(self.attacher.egress_gateway(&subnet, address.addr()).await.map_err(|e| Refused::bad(e.message))?)
            }
            false => None,
        };
        let bridge = bridge_name(subnet.vni);
        self.attacher.netlink.wait_bridge(&bridge, || false).await.map_err(|e| Refused::bad(e.to_string()))?;
        let host_if = wire::host_ifname(&req.endpoint_id).map_err(Refused::bad)?;
        let peer = format!("{host_if}p");
        let mac = parse_mac(&ep.mac).ok_or_else(|| Refused::bad(format!("bad MAC '{}'", ep.mac)))?;
        let nl = &self.attacher.netlink;
        let kernel = |e: crate::error::Error| Refused::bad(e.to_string());
        // A Join Docker retries after a failure finds the old pair.
        nl.delete_link(&host_if).await.map_err(kernel)?;
        // Another container's port pinned to this address, which was
        // released behind its back, goes as attach's does: it stayed, locked
        // to the MAC that goes with the address, and refused this Join and
        // every later one at the address (the address held here again, the
        // sweep of orphaned ports spared it; found by a review, 2026-12-06).
        nl.remove_ports_pinned_to(address.addr(), &host_if).await.map_err(kernel)?;
        // Up at once: its other end waits, down, outside any container until
        // Docker moves it in after this Join, which guards it first.
        nl.veth_on_bridge(&host_if, &peer, &bridge, self.attacher.mtu, Some(&mac), true).await.map_err(kernel)?;
        let pinned = match nl.lock_port(&host_if, &mac).await {
            Ok(()) => match nl.pin_neighbour(&bridge, address.addr(), &mac).await {
                // Recorded on the port, so a bridge made again pins and locks it again.
                Ok(()) => match nl.remember_pin(&host_if, &bridge, address.addr(), &mac).await {
                    // Held to its address (the source guard).
                    Ok(()) => crate::host::firewall::guard_ports(nl).await.map(drop),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = pinned {
            let _ = nl.delete_link(&host_if).await;
            return Err(kernel(e));
        }
        // One 224.0.0.0/4 route per container: the first weave interface's.
        let multicast = network.multicast && !self.state.multicast_in(&req.sandbox_key, &req.endpoint_id);
        ep.sandbox_path = req.sandbox_key.clone();
        self.state.set_endpoint(&req.endpoint_id, ep);
        tokio::spawn(self.clone().after_join(
            req.network_id.clone(),
            req.endpoint_id.clone(),
            req.sandbox_key.clone(),
            address.addr(),
        ));
        Ok(wire::join_response(&peer, multicast, gateway))
    }

    pub(super) async fn leave(&self, req: &EndpointRequest) -> Result<Value, Refused> {
        let _one = self.lock.lock().await;
        let mut ep = self.known(&req.endpoint_id)?;
        let host_if = wire::host_ifname(&req.endpoint_id).map_err(Refused::bad)?;
        self.attacher.netlink.delete_link(&host_if).await.map_err(|e| Refused::bad(e.to_string()))?;
        let bridge = self.state.network(&ep.network).and_then(|n| {
            self.attacher.maps.borrow().subnets.iter().find(|s| s.cidr == n.cidr).map(|s| bridge_name(s.vni))
        });
        if let (Some(bridge), Ok(a)) = (bridge, ep.address.parse::<Ipv4Net>())
            && let Err(e) = self.attacher.netlink.unpin_neighbour(&bridge, a.addr()).await
        {
            tracing::debug!(error = %e, "unpin on leave");
        }
        let sandbox = std::mem::take(&mut ep.sandbox);
        ep.sandbox_path.clear();
        self.state.set_endpoint(&req.endpoint_id, ep);
        match (sandbox.is_empty(), self.state.sandbox_in_use(&sandbox, &req.endpoint_id)) {
            (true, _) => {}
            (false, false) => drop(self.dns.stop(&sandbox)),
            // Its other networks' scopes stay; this one's go.
            (false, true) => self.rescope(&sandbox),
        }
        Ok(json!({}))
    }

    /// Once the container runs: weave DNS in its namespace (Docker makes the
    /// namespace at the container's start, after the Join), then its name.
    pub(super) async fn after_join(
        self: Arc<Self>,
        network_id: String,
        endpoint_id: String,
        sandbox: String,
        ip: Ipv4Addr,
    ) {
        let deadline = tokio::time::Instant::now() + NAME_WAIT;
        let key = loop {
            if let Some(key) = dns_key(&sandbox) {
                break Some(key);
            }
            if tokio::time::Instant::now() >= deadline || self.state.endpoint(&endpoint_id).is_none() {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match key {
            Some(key) => match self.dns.serve_in(std::path::Path::new(&sandbox), &key).await {
                Ok(()) => {
                    let _one = self.lock.lock().await;
                    if let Some(mut ep) = self.state.endpoint(&endpoint_id) {
                        ep.sandbox = key.clone();
                        self.state.set_endpoint(&endpoint_id, ep);
                        self.rescope(&key);
                    }
                }
                Err(e) => tracing::warn!(sandbox, error = %e, "cannot serve weave DNS in a Docker container"),
            },
            None => tracing::warn!(sandbox, "the Docker container's namespace did not appear: no weave DNS in it"),
        }
        self.register_names(network_id, endpoint_id, ip).await;
    }
}

/// The DNS key of a sandbox, once it is a network namespace: one server
/// per namespace, however many weave networks the container is on.
fn dns_key(sandbox: &str) -> Option<String> {
    let file = std::fs::File::open(sandbox).ok()?;
    let nsfs = nix::sys::statfs::fstatfs(&file).ok()?.filesystem_type() == nix::sys::statfs::NSFS_MAGIC;
    nsfs.then(|| file.metadata().ok().map(|m| format!("{DOCKER_KEY_PREFIX}{}", m.ino())))?
}

fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let mac: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect::<Option<_>>()?;
    (mac.len() == 6).then_some(mac)
}
