//! The agent's commands: join (once, with a token), run (from the saved
//! identity), status, reset.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::sync::watch;
use weave_proto::{
    client::{Api, connect, connect_lazy, error_chain},
    local_api::{self, Request, Response},
    token::JoinToken,
    v1::{ChallengeRequest, GetMapRequest, JoinRequest, NetworkMap},
};

use super::{
    attach::Attacher,
    config::{AllocateArgs, JoinArgs, ResetArgs, RunArgs, StatusArgs},
    control,
    dns::DnsServer,
    service::LocalService,
};
use crate::{
    dataplane::{
        Transport,
        tun_udp::{TunUdp, Tuning},
    },
    error::Error,
    host::{
        addresses, firewall,
        netlink::{self, Netlink},
        registry::Registry,
        state::{Identity, NodeKey, StateDir},
    },
    plan::{
        self,
        kernel::{TUN_NAME, mtu_warning, mtus},
        netmap,
    },
};

const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `agent join`: joins with the token unless this host already has an
/// identity. Returns once the identity is saved; the caller then becomes
/// `agent run` ([`exec_run`]), so the long-running process never holds the
/// token. No interface is created here. The private key is written before
/// the join is sent (a join the coordinator committed must never leave a
/// host that cannot prove it is that node), and removed again when the
/// coordinator refused the join.
pub async fn join(args: &JoinArgs) -> Result<(), Error> {
    args.run.check().map_err(Error::Usage)?;
    let dir = StateDir::new(&args.run.paths.data_dir);
    let lock = dir.lock()?;
    let joined = join_locked(args, &dir).await;
    if joined.is_err() {
        // A join that failed leaves no directory it made for its lock.
        dir.unlock_if_empty(lock);
    }
    joined
}

async fn join_locked(args: &JoinArgs, dir: &StateDir) -> Result<(), Error> {
    if let Some(why) = dir.removed() {
        return Err(Error::RemovedEarlier(why));
    }
    if dir.is_joined() {
        tracing::info!(data_dir = %dir.path().display(), "already joined; restarting from the saved identity");
        return Ok(());
    }
    let secret = super::config::read_token(args)?;
    let token = JoinToken::parse(&secret).map_err(|e| Error::Token(e.to_string()))?;
    let endpoints = match &args.endpoint[..] {
        [] => {
            let ips = addresses::advertised()?;
            if ips.is_empty() {
                return Err(Error::State(
                    "no IPv4 or global IPv6 address to advertise: pass --endpoint ip:port".into(),
                ));
            }
            ips.into_iter().map(|ip| SocketAddr::new(ip, args.run.listen_port)).collect()
        }
        pinned => pinned.to_vec(),
    };
    let name = match &args.name {
        Some(n) => n.clone(),
        None => hostname()?,
    };
    let channel = connect(&token.coordinator, token.pin).await.map_err(|e| Error::Connect(e.to_string()))?;
    let mut api = Api::new(channel.clone(), "-").map_err(|e| Error::Connect(e.to_string()))?;
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
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        challenge,
        proof,
        // The answer carries only the cluster settings; see `whole_map`.
        map_by_watch: true,
    };
    let response = match tokio::time::timeout(JOIN_TIMEOUT, api.join.join(request)).await {
        Err(_) => {
            return Err(Error::Connect(format!("the coordinator at {} did not answer the join", token.coordinator)));
        }
        Ok(Err(status)) => {
            // An answer that says no: nothing was committed, leave nothing behind.
            if created && refused(&status) {
                dir.forget_key();
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
        endpoint: endpoints[0],
        listen_port: args.run.listen_port,
        endpoints_pinned: !args.endpoint.is_empty(),
    };
    let map = whole_map(channel, &identity.credential, response.map.unwrap_or_default()).await;
    dir.save_join(&key, &identity, &map)?;
    tracing::info!(node = identity.node_id, name = %identity.name, address = %address, "joined");
    Ok(())
}

/// The whole map after a join whose answer carried only `settings`: by
/// GetMap, a unary call whose buffers go with it (a watch stream keeps a
/// buffer the size of the largest message it sent for as long as it stays
/// open, so snapshots over watches would cost the coordinator a map per
/// agent). If that fails, `settings` (revision 0): `agent run`'s first watch
/// then starts with a snapshot.
async fn whole_map(channel: tonic::transport::Channel, credential: &str, settings: NetworkMap) -> NetworkMap {
    let Ok(mut api) = Api::new(channel, credential) else { return settings };
    match tokio::time::timeout(JOIN_TIMEOUT, api.map.get_map(GetMapRequest {})).await {
        Ok(Ok(map)) => map.into_inner(),
        Ok(Err(status)) => {
            tracing::warn!(message = status.message(), "cannot read the map now; the first watch will bring it");
            settings
        }
        Err(_) => {
            tracing::warn!("the coordinator did not send the map in time; the first watch will bring it");
            settings
        }
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
    args.check().map_err(Error::Usage)?;
    let dir = StateDir::new(&args.paths.data_dir);
    if !dir.is_joined() {
        return Err(Error::State(format!("no identity in {}: run `agent join --token …` first", dir.path().display())));
    }
    let _lock = dir.lock()?;
    let (key, identity, map) = dir.load()?;
    serve(dir, key, identity, map, args, shutdown).await
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
    let (tun_mtu, segment_mtu) = mtus(underlay, map.segment_mtu);
    if let Some(warning) = mtu_warning(underlay, map.segment_mtu) {
        tracing::warn!(underlay, segment_mtu, "{warning}");
    }
    // Both families (IPv4 only on a kernel without IPv6).
    let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), args.listen_port);
    // Before the transport exists: boringtun makes its session keys with it.
    args.aead.apply().map_err(Error::Dataplane)?;
    let tuning = Tuning {
        queues: args.queues.map_or_else(Tuning::default_queues, usize::from),
        queue_threads: usize::from(args.queue_threads),
        spin: Duration::from_micros(args.spin_us),
        cpu_latency_hold: Duration::from_millis(args.cpu_latency_hold_ms),
        nat_keepalive: args.nat_keepalive,
        broadcast_limit: args.broadcast_limit,
        ignore_ipv6_packet_too_big: args.ignore_ipv6_packet_too_big,
    };
    let transport = TunUdp::start(TUN_NAME, tun_mtu as u16, listen, key.secret().clone(), &tuning)
        .map_err(|e| Error::Dataplane(format!("start {TUN_NAME} and udp {listen}: {e}")))?;
    let transport = Arc::new(transport);
    netlink.setup_tun(TUN_NAME, identity.address, netmap::node_prefix(&map), tun_mtu).await?;
    // The isolation rules go in before anything is routed, and the agent
    // does not run without them. Forwarding is then turned on for the TUN
    // only (and for each bridge as it is made), not host-wide.
    // The servers the DNS server forwards to (resolv.conf's as read now, if no
    // --dns-upstream): a later DHCP change must not drop them from what this host depends on.
    let upstreams = args.dns_upstreams();
    crate::host::routes::set_dns_upstreams(&upstreams);
    let networks = crate::host::routes::lan(identity.node_id);
    let coordinator_ips = crate::host::routes::coordinator_ips(&identity.coordinator);
    let rules = plan::firewall::rules(&map, identity.node_id, &coordinator_ips, &networks);
    firewall::set_broadcast_limit(args.broadcast_limit).await;
    firewall::apply(&rules)
        .await
        .map_err(|e| Error::Dataplane(format!("cannot install the isolation rules (nftables): {e}")))?;
    firewall::limit_flows(args.flow_limit).await?;
    netlink::sysctl(&format!("net/ipv4/conf/{TUN_NAME}/forwarding"), "1")?;
    tracing::info!(node = identity.node_id, address = %identity.address, tun_mtu, segment_mtu, revision = map.revision, "data plane up");

    let channel = connect_lazy(&identity.coordinator, identity.pin()?).map_err(|e| Error::Connect(e.to_string()))?;
    let api = Api::new(channel, &identity.credential).map_err(|e| Error::Connect(e.to_string()))?;
    // Records come from the saved map first: names resolve before (or without) the coordinator.
    let registry = Arc::new(Registry::load(dir.path()));
    let dns = DnsServer::with_registry(plan::dns::DEFAULT_DOMAIN, upstreams, registry.clone())
        .with_forward_rates(args.dns_forward_rate, args.dns_forward_rate_host);
    dns.update(&map);
    // Containers attached before a restart get their resolver back.
    dns.restore().await;
    let (map_tx, map_rx) = watch::channel(map);
    let connected = Arc::new(AtomicBool::new(false));
    let listener =
        local_api::bind(&args.paths.socket).map_err(|e| Error::Io(args.paths.socket.display().to_string(), e))?;
    let metrics_listener = match args.metrics_addr().map_err(Error::Usage)? {
        Some(addr) => Some(
            weave_proto::observe::bind(addr)
                .await
                .map_err(|e| Error::State(format!("--metrics-listen {addr}: {e}")))?,
        ),
        None => None,
    };

    let docker_listener = match args.docker_plugin_path() {
        Some(path) => {
            tracing::info!(socket = %path.display(), "serving the Docker network and IPAM plugin");
            Some(super::docker::bind(&path)?)
        }
        None => None,
    };
    let attacher = Arc::new(Attacher::new(
        api.clone(),
        map_rx.clone(),
        identity.node_id,
        identity.name.clone(),
        segment_mtu,
        netlink.clone(),
        registry.clone(),
    ));
    let docker_plugin = docker_listener.map(|l| {
        let state = crate::host::docker::DockerState::load(dir.path());
        let plugin = super::docker::Plugin::new(attacher.clone(), dns.clone(), state, args.docker_host.clone());
        (l, Arc::new(plugin))
    });
    let dyn_transport: Arc<dyn Transport> = transport.clone();
    let reconcile_now = Arc::new(tokio::sync::Notify::new());
    let probe =
        super::metrics::AgentProbe::new(identity.node_id, dyn_transport.clone(), map_rx.clone(), connected.clone());
    let last_map = map_rx.clone();
    let mut membership = tokio::spawn(control::watch_map(api.map.clone(), dir.clone(), map_tx, connected.clone()));
    // Endpoints follow the host's addresses unless --endpoint pinned them.
    let endpoints = match identity.endpoints_pinned {
        true => None,
        false => Some(tokio::spawn(super::endpoints::keep(identity.clone(), identity.pin()?, map_rx.clone()))),
    };
    let tasks = [
        tokio::spawn(control::reconcile_loop(
            netlink.clone(),
            dyn_transport,
            identity.node_id,
            identity.address,
            segment_mtu,
            coordinator_ips.clone(),
            map_rx.clone(),
            reconcile_now.clone(),
        )),
        tokio::spawn(firewall::keep(
            netlink.clone(),
            map_rx.clone(),
            identity.node_id,
            coordinator_ips.clone(),
            Some(rules),
        )),
        tokio::spawn(control::dns_loop(dns.clone(), map_rx.clone())),
        tokio::spawn(async move {
            if let Some(listener) = metrics_listener {
                super::metrics::describe();
                weave_proto::observe::serve(listener, Arc::new(probe), std::future::pending()).await;
            }
        }),
        tokio::spawn(async move {
            if let Some((listener, plugin)) = docker_plugin {
                super::docker::serve(listener, plugin).await;
            }
        }),
        tokio::spawn(local_api::serve(
            listener,
            Arc::new(LocalService {
                api: api.clone(),
                identity,
                coordinator_ips,
                transport: transport.clone(),
                maps: map_rx,
                connected,
                dns: dns.clone(),
                registry,
                segment_mtu,
                attacher,
                reconcile_now,
            }),
        )),
    ];
    // Runs until a signal, or until the coordinator says this node is no
    // longer a member (the watch task ends only then).
    let (removed, signalled) = tokio::select! {
        () = shutdown => (None, true),
        r = &mut membership => (r.ok(), false),
    };
    membership.abort();
    if signalled {
        // The watch saves a burst only once it is over: save what it applied.
        let _ = (&mut membership).await;
        if let Err(e) = dir.save_map(&last_map.borrow()) {
            tracing::warn!(error = %e, "cannot save the network map");
        }
    }
    if let Some(e) = &endpoints {
        e.abort();
    }
    for t in &tasks {
        t.abort();
    }
    dns.stop_all();
    for t in tasks {
        let _ = t.await;
    }
    let _ = local_api::remove_socket(&args.paths.socket);
    if let Some(p) = args.docker_plugin_path() {
        let _ = local_api::remove_socket(&p);
    }
    if let Some(removed) = removed {
        // Not a member: no tunnel may stay up, no peer may stay reachable.
        transport.set_peers(&[]);
        netlink.remove_all(TUN_NAME, true).await?;
        firewall::remove().await?;
        if let Error::Removed(why) = &removed {
            dir.forget_membership(why)?;
        }
        drop(transport);
        return Err(removed);
    }
    if args.cleanup_on_exit {
        netlink.remove_all(TUN_NAME, false).await?;
        firewall::remove().await?;
        tracing::info!("removed this agent's interfaces and isolation rules");
    } else {
        tracing::info!("bridges and VXLAN devices stay up for the next start (`agent reset` removes them)");
    }
    drop(transport);
    Ok(())
}

/// `agent reset`: removes every interface and file this agent created.
pub async fn reset(args: ResetArgs) -> Result<(), Error> {
    let socket = &args.paths.socket;
    if local_api::probe(socket).is_ok_and(|p| p == local_api::SocketPath::Served) {
        return Err(Error::Usage(format!("{}: an agent is serving on it: stop it first", socket.display())));
    }
    // Not under an agent that uses the data dir with another --socket.
    let dir = StateDir::new(&args.paths.data_dir);
    let _lock = dir.lock()?;
    let netlink = Netlink::connect()?;
    netlink.remove_all(TUN_NAME, true).await?;
    firewall::remove().await?;
    local_api::remove_socket(socket).map_err(|e| Error::Io(socket.display().to_string(), e))?;
    dir.remove()
}

/// `agent status`: asks the running agent.
pub async fn status(args: StatusArgs) -> Result<String, Error> {
    match local_api::request(&args.socket, &Request::Status).await.map_err(|e| socket_error(&args.socket, e))? {
        Response::Status(s) if args.json => serde_json::to_string_pretty(&s).map_err(|e| Error::State(e.to_string())),
        Response::Status(s) => Ok(local_api::format_status(&s)),
        Response::Error(e) => Err(Error::State(e.message)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// `agent allocate`: an address and a bridge for a workload, through the running agent.
pub async fn allocate(args: AllocateArgs) -> Result<String, Error> {
    let request = Request::Allocate { container: args.container, subnet: args.subnet };
    match local_api::request(&args.socket, &request).await.map_err(|e| socket_error(&args.socket, e))? {
        Response::Allocated(a) => plan::kernel::allocated_line(&a.address, &a.bridge, a.mtu).map_err(Error::State),
        Response::Error(e) => Err(Error::State(e.message)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// A failed exchange with the running agent: the socket's error, or an answer that is not JSON.
fn socket_error(socket: &std::path::Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData => Error::State(e.to_string()),
        _ => Error::Io(socket.display().to_string(), e),
    }
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
