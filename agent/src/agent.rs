//! The agent's commands: join (once, with a token), run (from the saved
//! identity), status, reset.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::seq::SliceRandom;
use tokio::sync::watch;
use weave_proto::{
    client::{Api, connect, connect_lazy, error_chain},
    token::JoinToken,
    v1::{AllocateRequest, ChallengeRequest, JoinRequest, NetworkMap, ReleaseRequest},
};

use crate::{
    config::{AllocateArgs, JoinArgs, ResetArgs, RunArgs, StatusArgs},
    control,
    dataplane::{Transport, tun_udp::TunUdp},
    dns::{self, DnsServer},
    error::Error,
    local_api::{self, AgentStatus, Attachment, Handler, Reply, Request, Response, SegmentStatus},
    netlink::Netlink,
    netmap,
    reconcile::{self, bridge_name},
    state::{Identity, NodeKey, StateDir},
};

/// The TUN device that holds the node address.
pub const TUN_NAME: &str = "wvtun0";
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `agent join`: joins with the token unless this host already has an
/// identity. Returns once the identity is saved; the caller then becomes
/// `agent run` ([`exec_run`]), so the long-running process never holds the
/// token. No interface is created here. The private key is written before
/// the join is sent (a join the coordinator committed must never leave a
/// host that cannot prove it is that node), and removed again when the
/// coordinator refused the join.
pub async fn join(args: &JoinArgs) -> Result<(), Error> {
    let dir = StateDir::new(&args.run.paths.data_dir);
    if let Some(why) = dir.removed() {
        return Err(Error::RemovedEarlier(why));
    }
    if dir.is_joined() {
        tracing::info!(data_dir = %dir.path().display(), "already joined; restarting from the saved identity");
        return Ok(());
    }
    let secret = read_token(args)?;
    let token = JoinToken::parse(&secret).map_err(|e| Error::Token(e.to_string()))?;
    let endpoint = match args.endpoint {
        Some(e) => e,
        None => SocketAddr::new(default_address()?, args.run.listen_port),
    };
    let name = match &args.name {
        Some(n) => n.clone(),
        None => hostname()?,
    };
    let channel = connect(&token.coordinator, token.pin).await.map_err(|e| Error::Connect(e.to_string()))?;
    let mut api = Api::new(channel, "-").map_err(|e| Error::Connect(e.to_string()))?;
    let (key, created) = match dir.load_key()? {
        Some(key) => {
            tracing::info!("reusing this host's saved key (an earlier join was interrupted, or the node was removed)");
            (key, false)
        }
        None => {
            let key = NodeKey::generate();
            dir.save_key(&key)?;
            (key, true)
        }
    };
    let (challenge, proof) = prove(&mut api, &key, &name, &token.coordinator).await?;
    let request = JoinRequest {
        token: secret.trim().to_string(),
        name: name.clone(),
        public_key: key.public().as_bytes().to_vec(),
        endpoints: vec![endpoint.to_string()],
        challenge,
        proof,
    };
    let response = match tokio::time::timeout(JOIN_TIMEOUT, api.join.join(request)).await {
        Err(_) => {
            return Err(Error::Connect(format!("the coordinator at {} did not answer the join", token.coordinator)));
        }
        Ok(Err(status)) => {
            // An answer that says no: nothing was committed, leave nothing behind.
            if created && refused(&status) {
                let _ = dir.remove();
            }
            return Err(Error::JoinRefused(status.message().to_string()));
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let node = response.node.ok_or_else(|| Error::JoinRefused("the answer names no node".into()))?;
    let address: Ipv4Addr =
        node.address.parse().map_err(|_| Error::JoinRefused(format!("node address '{}' is not IPv4", node.address)))?;
    let identity = Identity {
        node_id: node.id,
        name: node.name,
        address,
        coordinator: token.coordinator.clone(),
        pin: token.pin.to_string(),
        credential: response.credential,
        endpoint,
        listen_port: args.run.listen_port,
    };
    let map = response.map.unwrap_or_default();
    dir.save_join(&key, &identity, &map)?;
    tracing::info!(node = identity.node_id, name = %identity.name, address = %address, "joined");
    Ok(())
}

/// The join token from --token (`-`: stdin), --token-file or WEAVE_TOKEN.
fn read_token(args: &JoinArgs) -> Result<String, Error> {
    match (&args.token, &args.token_file) {
        (Some(t), _) if t.trim() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Error::Io("read the join token from stdin".into(), e))?;
            Ok(text.trim().to_string())
        }
        (Some(t), _) => Ok(t.trim().to_string()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| Error::Io(format!("--token-file {}", path.display()), e)),
        (None, None) => Err(Error::Token(
            "this host has not joined yet: pass --token-file PATH, --token - (stdin) or WEAVE_TOKEN".into(),
        )),
    }
}

/// Whether a failed join call is a refusal (the coordinator answered and
/// committed nothing) rather than a lost answer.
fn refused(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::NotFound
    )
}

/// Answers a join challenge: proof that this host holds `key` (see
/// `weave_proto::proof`). A coordinator without challenges gets no proof:
/// a first join needs none.
async fn prove(api: &mut Api, key: &NodeKey, name: &str, coordinator: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let challenge = match tokio::time::timeout(JOIN_TIMEOUT, api.join.challenge(ChallengeRequest {})).await {
        Err(_) => return Err(Error::Connect(format!("the coordinator at {coordinator} did not answer"))),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => return Ok((Vec::new(), Vec::new())),
        Ok(Err(s)) => return Err(Error::JoinRefused(s.message().to_string())),
        Ok(Ok(c)) => c.into_inner(),
    };
    let theirs: [u8; 32] = challenge
        .coordinator_key
        .as_slice()
        .try_into()
        .map_err(|_| Error::JoinRefused("the coordinator's challenge key is not 32 bytes".into()))?;
    let shared = key.secret().diffie_hellman(&boringtun::x25519::PublicKey::from(theirs));
    let proof = weave_proto::proof::compute(shared.as_bytes(), &challenge.nonce, name, key.public().as_bytes());
    Ok((challenge.nonce, proof.to_vec()))
}

/// Replaces this process with `agent run` and the same run settings: the
/// token leaves the command line (`/proc/<pid>/cmdline`) and the environment
/// with it. Returns only if the exec failed.
pub fn exec_run(args: &RunArgs) -> Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Error::Io("find the agent's own executable".into(), e),
    };
    tracing::info!("continuing as `agent run` (the token is not kept)");
    let e = std::process::Command::new(&exe)
        .args(args.to_args())
        .env_remove("WEAVE_TOKEN")
        .env_remove("WEAVE_TOKEN_FILE")
        .exec();
    Error::Io(format!("re-execute {} as `agent run`", exe.display()), e)
}

/// `agent run`: restart from the saved identity and map.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let dir = StateDir::new(&args.paths.data_dir);
    if !dir.is_joined() {
        return Err(Error::State(format!("no identity in {}: run `agent join --token …` first", dir.path().display())));
    }
    let (key, identity, map) = dir.load()?;
    serve(dir, key, identity, map, args, shutdown).await
}

struct Running {
    api: Api,
    identity: Identity,
    transport: Arc<TunUdp>,
    maps: watch::Receiver<NetworkMap>,
    connected: Arc<AtomicBool>,
    dns: DnsServer,
    /// `attach --name` names and CNI ids -> DNS server key, for a detach by those.
    dns_names: std::sync::Mutex<std::collections::HashMap<String, String>>,
    segment_mtu: u32,
    attacher: crate::attach::Attacher,
    /// Wakes the reconcile loop: an expose or hide changes the source of the host's routes.
    reconcile_now: Arc<tokio::sync::Notify>,
}

impl Handler for Running {
    fn handle(&self, request: Request) -> Reply<'_> {
        Box::pin(async move {
            let dns = self.dns_plan(&request);
            let response = match request {
                Request::Status => Response::Status(self.status()),
                Request::DnsLookup { name } => {
                    let records = self.dns.records();
                    let mut addresses: Vec<String> = records.lookup(&name).iter().map(|a| a.to_string()).collect();
                    addresses.shuffle(&mut rand::rng());
                    Response::Dns { name: dns::qualify(&name, &records.domain), addresses }
                }
                Request::DnsServe { netns, key } => match self.dns.serve_in(std::path::Path::new(&netns), &key).await {
                    Ok(()) => Response::Done,
                    Err(e) => Response::Error(e.to_string()),
                },
                Request::DnsStop { key } => {
                    self.dns.stop(&key);
                    Response::Done
                }
                Request::Allocate { container, subnet } => self.allocate(container, subnet).await,
                Request::Attach { container, netns, name, id, ifname, addrs, no_multicast, .. } => reply_attached(
                    self.attacher
                        .attach(
                            &container,
                            netns.as_deref(),
                            name.as_deref(),
                            id.as_deref(),
                            ifname.as_deref(),
                            &addrs,
                            !no_multicast,
                        )
                        .await,
                ),
                Request::Detach { container, netns, id, ifname, addrs, .. } => reply_released(
                    self.attacher.detach(&container, netns.as_deref(), id.as_deref(), ifname.as_deref(), &addrs).await,
                ),
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
                    match self.api.ipam.clone().release(req).await {
                        Ok(r) => Response::Released(r.into_inner().released.into_iter().map(|a| a.address).collect()),
                        Err(s) => Response::Error(s.message().to_string()),
                    }
                }
            };
            self.dns_after(dns, &response).await;
            response
        })
    }
}

fn reply_attached(r: Result<Vec<crate::attach::Attached>, String>) -> Response {
    r.map_or_else(Response::Error, Response::Attached)
}

fn reply_released(r: Result<Vec<String>, String>) -> Response {
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
    std::fs::metadata(netns).ok().map(|m| format!("netns:{}", m.ino()))
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
            let key = format!("netns:{}", f.metadata().ok()?.ino());
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

impl Running {
    fn dns_plan(&self, request: &Request) -> Option<DnsPlan> {
        let names = || self.dns_names.lock().unwrap_or_else(|e| e.into_inner());
        match request {
            Request::Attach { container, netns, name, id, .. } => {
                let (netns, key) = dns_target(container, netns.as_ref())?;
                Some(DnsPlan::Serve { netns, key, aliases: name.iter().chain(id).cloned().collect() })
            }
            // Only a detach of every subnet leaves the container without the
            // overlay. By name or CNI id too: the namespace may be gone by then.
            Request::Detach { container, netns, id, addrs, .. } if addrs.is_empty() => {
                let key = dns_target(container, netns.as_ref())
                    .map(|(_, key)| key)
                    .or_else(|| names().get(container).cloned())
                    .or_else(|| id.as_ref().and_then(|i| names().get(i).cloned()))?;
                Some(DnsPlan::Stop { key })
            }
            _ => None,
        }
    }

    async fn dns_after(&self, plan: Option<DnsPlan>, response: &Response) {
        match (plan, response) {
            (Some(DnsPlan::Serve { netns, key, aliases }), Response::Attached(_)) => {
                let gone: Vec<String> = {
                    let mut names = self.dns_names.lock().unwrap_or_else(|e| e.into_inner());
                    let moved: Vec<String> = aliases
                        .into_iter()
                        .filter_map(|a| names.insert(a, key.clone()))
                        .filter(|k| *k != key)
                        .collect();
                    // A name that moved left a dead namespace (attach refuses
                    // a live one's name): its sockets would keep it alive.
                    names.retain(|_, k| !moved.contains(k));
                    moved
                };
                for old in gone {
                    self.dns.stop(&old);
                }
                let served = match &netns {
                    DnsNetns::Path(p) => self.dns.serve_in(p, &key).await,
                    DnsNetns::Passed(f) => self.dns.serve_in_file(f, &key).await,
                };
                if let Err(e) = served {
                    tracing::warn!(key, error = %e, "attached, but cannot serve DNS in the container");
                }
            }
            (Some(DnsPlan::Stop { key }), Response::Released(_)) => {
                self.dns.stop(&key);
                self.dns_names.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, k| *k != key);
            }
            _ => {}
        }
    }

    async fn allocate(&self, container: String, subnet: String) -> Response {
        let req = AllocateRequest { container, subnet, ..Default::default() };
        let alloc = match self.api.ipam.clone().allocate(req).await {
            Ok(a) => a.into_inner(),
            Err(s) => return Response::Error(s.message().to_string()),
        };
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
            return Response::Error(format!("subnet {} is not in this agent's map yet", alloc.subnet));
        }
        Response::Allocated(Attachment {
            address: alloc.address,
            subnet: alloc.subnet,
            bridge: bridge_name(vni),
            mtu: self.segment_mtu,
        })
    }

    fn status(&self) -> AgentStatus {
        let map = self.maps.borrow();
        AgentStatus {
            node_id: self.identity.node_id,
            name: self.identity.name.clone(),
            address: self.identity.address,
            endpoint: self.identity.endpoint.to_string(),
            revision: map.revision,
            coordinator_connected: self.connected.load(Ordering::Relaxed),
            segments: map
                .subnets
                .iter()
                .map(|s| SegmentStatus {
                    subnet: s.cidr.clone(),
                    vni: s.vni,
                    bridge: bridge_name(s.vni),
                    mtu: self.segment_mtu,
                })
                .collect(),
            peers: self.transport.status(),
        }
    }
}

async fn serve(
    dir: StateDir,
    key: NodeKey,
    identity: Identity,
    map: NetworkMap,
    args: RunArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let netlink = Netlink::connect()?;
    let underlay = netlink.mtu_of_address(identity.endpoint.ip()).await?.unwrap_or(1500);
    let (tun_mtu, segment_mtu) = reconcile::mtus(underlay);
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), args.listen_port);
    let transport = TunUdp::start(TUN_NAME, tun_mtu as u16, listen, key.secret().clone())
        .map_err(|e| Error::Dataplane(format!("start {TUN_NAME} and udp {listen}: {e}")))?;
    let transport = Arc::new(transport);
    netlink.setup_tun(TUN_NAME, identity.address, netmap::node_prefix(&map), tun_mtu).await?;
    // The isolation rules go in before anything is routed, and the agent
    // does not run without them. Forwarding is then turned on for the TUN
    // only (and for each bridge as it is made), not host-wide.
    let rules = crate::firewall::rules(&map, identity.node_id);
    crate::firewall::apply(&rules)
        .await
        .map_err(|e| Error::Dataplane(format!("cannot install the isolation rules (nftables): {e}")))?;
    crate::netlink::sysctl(&format!("net/ipv4/conf/{TUN_NAME}/forwarding"), "1")?;
    tracing::info!(node = identity.node_id, address = %identity.address, tun_mtu, segment_mtu, revision = map.revision, "data plane up");

    let channel = connect_lazy(&identity.coordinator, identity.pin()?).map_err(|e| Error::Connect(e.to_string()))?;
    let api = Api::new(channel, &identity.credential).map_err(|e| Error::Connect(e.to_string()))?;
    // Records come from the saved map first, so names resolve before (or
    // without) the coordinator.
    let registry = dir.path().join(dns::REGISTRY_FILE);
    let dns = DnsServer::with_registry(dns::DEFAULT_DOMAIN, dns_upstreams(&args), &registry);
    dns.update(&map);
    // Containers attached before a restart get their resolver back.
    dns.restore().await;
    let (map_tx, map_rx) = watch::channel(map);
    let connected = Arc::new(AtomicBool::new(false));
    let listener = local_api::bind(&args.paths.socket)?;
    let metrics_listener = match args.metrics_addr().map_err(Error::State)? {
        Some(addr) => Some(
            weave_proto::observe::bind(addr)
                .await
                .map_err(|e| Error::State(format!("--metrics-listen {addr}: {e}")))?,
        ),
        None => None,
    };

    let attacher = crate::attach::Attacher::new(
        api.clone(),
        map_rx.clone(),
        identity.node_id,
        identity.name.clone(),
        segment_mtu,
        netlink.clone(),
        dir.path().join("names.json"),
    );
    let dyn_transport: Arc<dyn Transport> = transport.clone();
    let reconcile_now = Arc::new(tokio::sync::Notify::new());
    let probe =
        crate::metrics::AgentProbe::new(identity.node_id, dyn_transport.clone(), map_rx.clone(), connected.clone());
    let mut membership = tokio::spawn(control::watch_map(api.map.clone(), dir.clone(), map_tx, connected.clone()));
    let tasks = [
        tokio::spawn(control::reconcile_loop(
            netlink.clone(),
            dyn_transport,
            identity.node_id,
            identity.address,
            segment_mtu,
            map_rx.clone(),
            reconcile_now.clone(),
        )),
        tokio::spawn(crate::firewall::keep(map_rx.clone(), identity.node_id, Some(rules))),
        tokio::spawn(control::dns_loop(dns.clone(), map_rx.clone())),
        tokio::spawn(async move {
            if let Some(listener) = metrics_listener {
                crate::metrics::describe();
                weave_proto::observe::serve(listener, Arc::new(probe), std::future::pending()).await;
            }
        }),
        tokio::spawn(local_api::serve(
            listener,
            Arc::new(Running {
                api: api.clone(),
                identity,
                transport: transport.clone(),
                maps: map_rx,
                connected,
                dns: dns.clone(),
                dns_names: Default::default(),
                segment_mtu,
                attacher,
                reconcile_now,
            }),
        )),
    ];
    // Runs until a signal, or until the coordinator says this node is no
    // longer a member (the watch task ends only then).
    let removed = tokio::select! {
        () = shutdown => None,
        r = &mut membership => r.ok(),
    };
    membership.abort();
    for t in &tasks {
        t.abort();
    }
    dns.stop_all();
    for t in tasks {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(&args.paths.socket);
    if let Some(removed) = removed {
        // Not a member: no tunnel may stay up, no peer may stay reachable.
        transport.set_peers(&[]);
        netlink.remove_all(TUN_NAME).await?;
        crate::firewall::remove().await?;
        if let Error::Removed(why) = &removed {
            dir.forget_membership(why)?;
        }
        drop(transport);
        return Err(removed);
    }
    if args.cleanup_on_exit {
        netlink.remove_all(TUN_NAME).await?;
        crate::firewall::remove().await?;
        tracing::info!("removed this agent's interfaces and isolation rules");
    } else {
        tracing::info!("bridges and VXLAN devices stay up for the next start (`agent reset` removes them)");
    }
    drop(transport);
    Ok(())
}

/// `agent reset`: removes every interface and file this agent created.
pub async fn reset(args: ResetArgs) -> Result<(), Error> {
    let netlink = Netlink::connect()?;
    netlink.remove_all(TUN_NAME).await?;
    crate::firewall::remove().await?;
    match std::fs::remove_file(&args.paths.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io(args.paths.socket.display().to_string(), e)),
    }
    let _ = std::fs::remove_file(args.paths.data_dir.join(dns::REGISTRY_FILE));
    StateDir::new(&args.paths.data_dir).remove()
}

/// `agent status`: asks the running agent.
pub async fn status(args: StatusArgs) -> Result<String, Error> {
    match local_api::request(&args.socket, &Request::Status).await? {
        Response::Status(s) if args.json => serde_json::to_string_pretty(&s).map_err(|e| Error::State(e.to_string())),
        Response::Status(s) => Ok(local_api::format_status(&s)),
        Response::Error(e) => Err(Error::State(e)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// `agent allocate`: an address and a bridge for a workload, through the running agent.
pub async fn allocate(args: AllocateArgs) -> Result<String, Error> {
    let request = Request::Allocate { container: args.container, subnet: args.subnet };
    match local_api::request(&args.socket, &request).await? {
        Response::Allocated(a) => Ok(format!("{} {} {}\n", a.address, a.bridge, a.mtu)),
        Response::Error(e) => Err(Error::State(e)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// `--dns-upstream`, or else the nameservers of the host's /etc/resolv.conf.
fn dns_upstreams(args: &RunArgs) -> Vec<SocketAddr> {
    if !args.dns_upstream.is_empty() {
        return args.dns_upstream.clone();
    }
    let found = std::fs::read_to_string("/etc/resolv.conf").map(|t| dns::parse_resolv_conf(&t)).unwrap_or_default();
    if found.is_empty() {
        tracing::warn!("no nameserver in /etc/resolv.conf and no --dns-upstream: only cluster names will resolve");
    }
    found
}

fn default_address() -> Result<IpAddr, Error> {
    let addrs = if_addrs::get_if_addrs().map_err(|e| Error::Io("list addresses".into(), e))?;
    addrs
        .iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .ok_or_else(|| Error::State("no IPv4 address to advertise: pass --endpoint ip:port".into()))
}

fn hostname() -> Result<String, Error> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .map_err(|e| Error::Io("/proc/sys/kernel/hostname".into(), e))
}

/// Tonic's errors carry their cause deep down; one line with all of it.
pub fn describe(e: &Error) -> String {
    error_chain(e)
}
