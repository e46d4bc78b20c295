//! The agent's commands: join (once, with a token), run (from the saved
//! identity), status, reset.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::sync::watch;
use weave_proto::{
    client::{Api, connect_lazy, error_chain},
    local_api::{self, Request, Response},
    v1::NetworkMap,
};

pub use super::join::join;
use super::{
    attach::Attacher,
    config::{AllocateArgs, ResetArgs, RunArgs, StatusArgs},
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
        firewall,
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
        // Read by the join above (which said if it could not apply it):
        // `agent run` would warn that it does not read it.
        .env_remove("WEAVE_ENDPOINT")
        .exec();
    Error::Io(format!("re-execute {} as `agent run`", exe.display()), e)
}

/// `agent run`: restart from the saved identity and map.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    args.check().map_err(Error::Usage)?;
    let dir = StateDir::new(&args.paths.data_dir);
    // Removed: exit 3 as `agent join` does, which a supervisor does not
    // restart (it said "run agent join first", exit 1, and was restarted).
    if let Some(why) = dir.removed() {
        return Err(Error::RemovedEarlier(why));
    }
    if !dir.is_joined() {
        if let Some(why) = dir.forgotten() {
            return Err(Error::ForgottenEarlier(why));
        }
        return Err(Error::State(format!(
            "no identity in {}: run `agent join --token-file <file>` first",
            dir.path().display()
        )));
    }
    let _lock = dir.lock()?;
    let (key, identity, map) = dir.load()?;
    let current = map.nodes.iter().find(|n| n.id == identity.node_id).map(|n| n.endpoints.clone()).unwrap_or_default();
    if let Some(warning) =
        std::env::var("WEAVE_ENDPOINT").ok().and_then(|e| endpoint_env_ignored(&e, args.listen_port, &current))
    {
        tracing::warn!("{warning}");
    }
    serve(dir, key, identity, map, args, shutdown).await
}

/// `WEAVE_ENDPOINT` is `agent join`'s: under `agent run` (the systemd
/// unit's, with an environment file) a new one was ignored without a word
/// (found by a review, 2026-12-06). Says so when it is not what the map
/// holds for this node (`current`); an address alone with `port`, as
/// `agent join` reads it.
fn endpoint_env_ignored(env: &str, port: u16, current: &[String]) -> Option<String> {
    // As the map writes them (`[v6]:port`), in order, once each.
    let mut given: Vec<String> = env
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            super::config::parse_endpoint(e)
                .map_or_else(|_| e.to_string(), |a| super::config::with_port(a, port).to_string())
        })
        .collect();
    given.sort();
    given.dedup();
    let mut current_sorted = current.to_vec();
    current_sorted.sort();
    (!given.is_empty() && given != current_sorted).then(|| {
        format!(
            "WEAVE_ENDPOINT ({env}) is not this node's endpoints as last known here ({}) and `agent run` does not read it: \
             `agent join --endpoint <ip:port> --data-dir <dir>` (no token needed) pins new ones",
            current.join(", ")
        )
    })
}

/// The cluster's segment MTU, asked of the coordinator (5 s at most) when
/// no saved map gives it (lost, or set aside): one derived from this host's
/// underlay built bridges and workloads of 8,870 bytes on a 9,000-byte
/// underlay in a cluster of 1,370, until a second restart (found by a
/// review, 2026-12-06). None if the coordinator does not answer.
async fn cluster_segment_mtu(api: &Api) -> Option<u32> {
    let mut maps = api.map.clone();
    let asked = maps.get_map(weave_proto::v1::GetMapRequest {});
    let map = tokio::time::timeout(Duration::from_secs(5), asked).await.ok()?.ok()?.into_inner();
    Some(map.segment_mtu).filter(|m| *m != 0)
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
    let channel = connect_lazy(&identity.coordinator, identity.pin()?).map_err(|e| Error::Connect(e.to_string()))?;
    let api = Api::new(channel, &identity.credential).map_err(|e| Error::Connect(e.to_string()))?;
    // The saved map stays as it is: without an MTU, its watch asks for a
    // whole snapshot, which saves the cluster's.
    let cluster_mtu = match map.segment_mtu {
        0 => cluster_segment_mtu(&api).await.unwrap_or(0),
        saved => saved,
    };
    let underlay = netlink.mtu_of_address(identity.endpoint.ip()).await?.unwrap_or(1500);
    let (tun_mtu, segment_mtu) = mtus(underlay, cluster_mtu);
    if let Some(warning) = mtu_warning(underlay, cluster_mtu) {
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
    let coordinator_addrs = weave_proto::client::resolve_addrs(&identity.coordinator).0;
    let rules = plan::firewall::rules(&map, identity.node_id, &coordinator_ips, &networks)
        .with_coordinators(&coordinator_addrs)
        .with_listen_port(args.listen_port);
    firewall::set_broadcast_limit(args.broadcast_limit).await;
    // No map (none saved, or a damaged one set aside) and a previous run's
    // tables, made from a real map: they stay until the coordinator sends
    // one (an empty map's rules cut the host's workloads off each other;
    // found by a review, 2026-12-05). No tables: the empty map's, nothing passes.
    let kept = map.revision == 0 && firewall::in_place().await;
    if !kept {
        firewall::apply(&rules)
            .await
            .map_err(|e| Error::Dataplane(format!("cannot install the isolation rules (nftables): {e}")))?;
    }
    firewall::limit_flows(args.flow_limit).await?;
    netlink::sysctl(&format!("net/ipv4/conf/{TUN_NAME}/forwarding"), "1")?;
    tracing::info!(node = identity.node_id, address = %identity.address, tun_mtu, segment_mtu, revision = map.revision, "data plane up");

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
    let docker_plugin = {
        let (attacher, dns, dir, host) = (attacher.clone(), dns.clone(), dir.clone(), args.docker_host.clone());
        move || {
            let state = crate::host::docker::DockerState::load(dir.path());
            Arc::new(super::docker::Plugin::new(attacher, dns, state, host))
        }
    };
    // Not bound now, the default path is served once dockerd makes its
    // directory: looked at once, an agent started before dockerd (every
    // boot where the two race) served no plugin until restarted (found by a
    // review, 2026-12-06). Decided by the bind above, not by a second look
    // at the directory, which dockerd may make in between.
    let docker_awaited = args.docker_plugin_default().filter(|_| docker_listener.is_none());
    if let Some(path) = &docker_awaited {
        tracing::info!(socket = %path.display(), "no Docker plugin directory (yet): the plugin is served once dockerd makes it");
    }
    let dyn_transport: Arc<dyn Transport> = transport.clone();
    let reconcile_now = Arc::new(tokio::sync::Notify::new());
    let probe =
        super::metrics::AgentProbe::new(identity.node_id, dyn_transport.clone(), map_rx.clone(), connected.clone());
    let last_map = map_rx.clone();
    let refused = Arc::new(std::sync::Mutex::new(None));
    let mut membership =
        tokio::spawn(control::watch_map(api.clone(), dir.clone(), map_tx, connected.clone(), refused.clone()));
    // Endpoints follow the host's addresses unless --endpoint pinned them.
    let endpoints = match identity.endpoints_pinned {
        true => tokio::spawn(super::endpoints::warn_pinned_gone(identity.node_id, map_rx.clone())),
        false => tokio::spawn(super::endpoints::keep(identity.clone(), identity.pin()?, map_rx.clone())),
    };
    let tasks = [
        tokio::spawn(control::warn_out_of_touch(identity.node_id, map_rx.clone(), connected.clone())),
        tokio::spawn(super::endpoints::watch_underlay_mtu(
            netlink.clone(),
            identity.endpoint.ip(),
            underlay,
            cluster_mtu,
        )),
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
            (coordinator_ips.clone(), coordinator_addrs, args.listen_port),
            (!kept).then_some(rules),
        )),
        tokio::spawn(control::dns_loop(dns.clone(), map_rx.clone(), identity.node_id)),
        tokio::spawn(dns.clone().serve_missing_every(map_rx.clone(), identity.node_id)),
        tokio::spawn(attacher.clone().route_on_egress()),
        tokio::spawn({
            let dns = dns.clone();
            attacher.clone().retire_dead_every(
                connected.clone(),
                move |key| {
                    dns.stop(key);
                },
                reconcile_now.clone(),
            )
        }),
        tokio::spawn(async move {
            if let Some(listener) = metrics_listener {
                super::metrics::describe();
                weave_proto::observe::serve(listener, Arc::new(probe), std::future::pending()).await;
            }
        }),
        tokio::spawn(async move {
            let listener = match (docker_listener, docker_awaited) {
                (Some(listener), _) => listener,
                (None, Some(path)) => super::docker::bind_once_made(&path).await,
                (None, None) => return,
            };
            let plugin = docker_plugin();
            let swept = tokio::spawn(plugin.clone().sweep_every());
            super::docker::serve(listener, plugin).await;
            swept.abort();
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
                refused,
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
    endpoints.abort();
    for t in &tasks {
        t.abort();
    }
    if removed.is_some() {
        dns.unredirect_all().await;
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
        match &removed {
            Error::Removed(why) => dir.forget_membership(why, false)?,
            // The next `agent join` with the token joins again.
            Error::Forgotten(why) => dir.forget_membership(why, true)?,
            _ => {}
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
    let identity = dir.load().ok().map(|(_, identity, _)| identity);
    // The containers' DNS rules, from the paths the registry saved: only
    // where a path still leads to the namespace it named (a `/proc/<pid>`
    // path may lead to another process's now; found by a review).
    let registry = Registry::load(dir.path());
    let inodes: std::collections::HashMap<String, u64> =
        registry.seen_names().into_iter().map(|(name, _, inode)| (name, inode)).collect();
    let served: Vec<(String, std::io::Result<std::fs::File>)> = registry
        .dns_served()
        .into_iter()
        .filter_map(|(key, path)| {
            let inode = crate::host::netns::inode_in_key(&key).or_else(|| inodes.get(&key).copied())?;
            crate::host::registry::alive(std::path::Path::new(&path), inode).then(|| (key, std::fs::File::open(path)))
        })
        .collect();
    tokio::task::spawn_blocking(move || super::dns::redirect::remove_in(served))
        .await
        .map_err(|e| Error::State(format!("removing the containers' DNS rules: {e}")))?;
    dir.remove()?;
    // The coordinator still lists the node, with its addresses and names,
    // and this host can no longer prove it is that node (its key is gone).
    if let Some(i) = identity {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "agent reset: node '{}' ({}) may still be a member of the cluster at {}, holding its addresses \
             and names: if `weavectl node ls` lists it, remove it with `weavectl node rm {}`",
            i.name,
            i.address,
            i.coordinator,
            i.name
        );
    }
    Ok(())
}

/// `agent status`: asks the running agent.
pub async fn status(args: StatusArgs) -> Result<String, Error> {
    match local_api::request(&args.socket, &Request::Status).await.map_err(|e| socket_error(&args.socket, e))? {
        Response::Status(s) if args.json => serde_json::to_string_pretty(&s).map_err(|e| Error::State(e.to_string())),
        Response::Status(s) => Ok(local_api::format_status(&s)),
        Response::Error(e) => Err(Error::Refused(e.kind, e.message)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// `agent allocate`: an address and a bridge for a workload, through the running agent.
pub async fn allocate(args: AllocateArgs) -> Result<String, Error> {
    let request = Request::Allocate { container: args.container, subnet: args.subnet };
    match local_api::request(&args.socket, &request).await.map_err(|e| socket_error(&args.socket, e))? {
        Response::Allocated(a) => plan::kernel::allocated_line(&a.address, &a.bridge, a.mtu).map_err(Error::State),
        Response::Error(e) => Err(Error::Refused(e.kind, e.message)),
        other => Err(Error::State(format!("unexpected answer: {other:?}"))),
    }
}

/// A failed exchange with the running agent: an answer that is not JSON, or
/// no agent to answer, said and exited (3) as weavectl does (it was the
/// socket's bare error, exit 1).
fn socket_error(socket: &std::path::Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData => Error::State(e.to_string()),
        _ => Error::Refused(
            local_api::ErrorKind::Unavailable,
            format!("cannot reach the agent at {}: {e} (is `agent run` running?)", socket.display()),
        ),
    }
}

/// Tonic's errors carry their cause deep down; one line with all of it.
pub fn describe(e: &Error) -> String {
    weave_proto::command_line::printable(&error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::endpoint_env_ignored;

    #[test]
    fn an_endpoint_in_the_environment_that_run_would_ignore_is_said() {
        let current = ["192.0.2.11:6784".to_string(), "[2001:db8::11]:6784".to_string()];
        assert!(endpoint_env_ignored("192.0.2.11:6784", 6784, &current).is_some(), "a subset drops the other");
        assert_eq!(endpoint_env_ignored("192.0.2.11:6784, [2001:db8::11]:6784", 6784, &current), None);
        assert_eq!(endpoint_env_ignored("", 6784, &current), None);
        let said = endpoint_env_ignored("192.0.2.21:6784", 6784, &current).unwrap();
        assert!(said.contains("does not read it") && said.contains("agent join --endpoint"), "{said}");
        assert!(endpoint_env_ignored("not an address", 6784, &current).is_some());
        // A node with that one alone: no change.
        assert!(endpoint_env_ignored("192.0.2.11:6784", 6784, &current[..1]).is_none());
        assert!(endpoint_env_ignored("[2001:db8::11]:6784", 6784, &current).is_some());
        // Addresses alone, as `agent join` reads them: with the listen port.
        assert_eq!(endpoint_env_ignored("192.0.2.11, 2001:db8::11", 6784, &current), None);
        assert!(endpoint_env_ignored("192.0.2.11, 2001:db8::11", 7000, &current).is_some());
    }
}
