//! `weave-cni`: a CNI 1.1 plugin (ADD, DEL, CHECK, GC, STATUS, VERSION). The runtime
//! passes the command and container in `CNI_*` variables and the network
//! configuration on stdin; ADD and DEL go to the local agent's socket, which
//! does the attach/detach (see weave_agent::attach). Results and errors are
//! the spec's JSON on stdout.
use std::{fs::File, io::Read, path::Path, process::ExitCode, sync::Arc};

use weave_agent::{
    host::netlink::Netlink,
    plan::cni::{self, CniError, NetConf, code},
};
use weave_proto::local_api::{self, Request, Response};

fn env(name: &str) -> Result<String, CniError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CniError::new(code::BAD_ENV, format!("{name} is not set"), "the runtime must set it"))
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&CniError::new(code::TRY_AGAIN, "cannot start", e.to_string()), None),
    };
    // The configuration's version, once read: errors answer in it too (they
    // said 1.1.0 to a 0.3.1 configuration; found by a review, 2026-12-06).
    let mut version = None;
    match runtime.block_on(run(&mut version)) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&e, version.as_deref()),
    }
}

fn fail(e: &CniError, version: Option<&str>) -> ExitCode {
    println!("{}", e.to_json_in(version));
    ExitCode::FAILURE
}

async fn run(version: &mut Option<String>) -> Result<Option<serde_json::Value>, CniError> {
    let command = env("CNI_COMMAND")?;
    if command == "VERSION" {
        return Ok(Some(cni::version_result()));
    }
    if !matches!(command.as_str(), "ADD" | "DEL" | "CHECK" | "GC" | "STATUS") {
        return Err(CniError::new(
            code::BAD_ENV,
            format!("unknown CNI_COMMAND {command}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        ));
    }
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(code::BAD_CONFIG, "cannot read the configuration", e.to_string()))?;
    // Before the whole configuration is read: one it refuses names its
    // version too.
    let raw = serde_json::from_slice::<serde_json::Value>(&stdin).ok();
    *version = raw.as_ref().and_then(|v| v["cniVersion"].as_str()).map(str::to_string);
    let conf = NetConf::parse(&stdin)?;
    // Neither names a container: the runtime passes no CNI_CONTAINERID.
    if matches!(command.as_str(), "GC" | "STATUS") {
        if !conf.has_gc() {
            let why = format!("{command} is in CNI 1.1.0 and later; the configuration says {}", conf.cni_version);
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI version", why));
        }
        return match command.as_str() {
            "GC" => gc(&conf).await,
            _ => status(&conf).await,
        }
        .map(|()| None);
    }
    if command != "DEL" {
        conf.check_subnet()?;
    }
    let (raw_id, ifname) = (env("CNI_CONTAINERID")?, env("CNI_IFNAME")?);
    if let Err(why) = cni::check_env(&raw_id, &ifname) {
        // Nothing was ever added under such values: their DEL succeeds.
        if command == "DEL" {
            return Ok(None);
        }
        return Err(CniError::new(code::BAD_ENV, "invalid CNI environment", why));
    }
    let id = cni::container_key(&raw_id);
    match command.as_str() {
        "ADD" => {
            let args = std::env::var("CNI_ARGS").unwrap_or_default();
            let refused = |why| CniError::new(code::REFUSED, "weave-cni cannot take the requested address", why);
            let address = cni::requested_address(&args, &conf.runtime_ips().map_err(refused)?).map_err(refused)?;
            let name = cni::dns_name(&args);
            add(&conf, &env("CNI_NETNS")?, &id, name, &ifname, address).await.map(Some)
        }
        "DEL" => del(&conf, std::env::var("CNI_NETNS").unwrap_or_default(), &id, &ifname).await.map(|()| None),
        _ => check(&conf, &env("CNI_NETNS")?).await.map(|()| None),
    }
}

async fn ask(conf: &NetConf, request: Request) -> Result<Response, CniError> {
    match local_api::request(Path::new(conf.socket()), &request).await {
        Ok(Response::Error(e)) => Err(cni::refusal(&e)),
        Ok(r) => Ok(r),
        Err(e) => Err(CniError::new(code::TRY_AGAIN, "the weave agent is not reachable", unreachable(conf, e))),
    }
}

/// Why the agent's socket did not answer, naming it: a mistyped `socket`
/// and a stopped agent said the same (found by a review, 2026-12-05).
fn unreachable(conf: &NetConf, e: impl std::fmt::Display) -> String {
    format!("{e} (the configuration's socket: {})", conf.socket())
}

/// The runtime's namespace, opened here: the agent gets the descriptor, so
/// it needs no view of the runtime's mounts (podman mounts `CNI_NETNS` in
/// its own mount namespace).
fn open_netns(netns: &str) -> Result<Arc<File>, CniError> {
    File::open(netns)
        .map(Arc::new)
        .map_err(|e| CniError::new(code::UNKNOWN_CONTAINER, format!("cannot open {netns}"), e.to_string()))
}

async fn add(
    conf: &NetConf,
    netns: &str,
    id: &str,
    name: Option<String>,
    ifname: &str,
    address: Option<std::net::Ipv4Addr>,
) -> Result<serde_json::Value, CniError> {
    let multicast = conf.multicast();
    let request = Request::Attach {
        container: netns.to_string(),
        netns_fd: true,
        netns: Some(open_netns(netns)?),
        name,
        id: Some(id.to_string()),
        ifname: Some(ifname.to_string()),
        addrs: vec![conf.addr()],
        no_multicast: !multicast,
        // The spec: the runtime's name or an error. After another plugin's
        // interface in a chain (a prevResult), weave adds an ethwe* of its own.
        exact_ifname: conf.prev_result.is_none(),
        no_dns: !conf.resolver.unwrap_or(true),
        network: Some(conf.name.clone()),
        needs_egress: conf.publishes_ports(),
        address: address.map(|a| a.to_string()),
    };
    match ask(conf, request).await? {
        Response::Attached(list) if !list.is_empty() => {
            let addresses: Vec<String> = list.iter().map(|a| a.address.clone()).collect();
            // An agent from before CNI_ARGS IP= was taken ignores it: the
            // runtime gets its address or an error, never another (a review).
            let given = addresses.iter().filter_map(|a| a.split('/').next()?.parse().ok()).collect::<Vec<_>>();
            if let Some(asked) = address.filter(|a| !given.contains(a)) {
                return Err(CniError::new(
                    code::REFUSED,
                    "the weave agent did not give the requested address",
                    format!("asked {asked}, got {} (an agent older than weave-cni? restart it)", addresses.join(", ")),
                ));
            }
            let a = &list[0];
            let host = (!a.host_interface.is_empty()).then_some((a.host_interface.as_str(), a.host_mac.as_str()));
            Ok(conf.add_result(netns, &a.interface, &a.mac, &addresses, a.gateway.as_deref(), host))
        }
        other => Err(CniError::new(code::REFUSED, "unexpected answer from the agent", format!("{other:?}"))),
    }
}

/// Idempotent, as the spec asks: a namespace that is gone (or not given) or
/// nothing attached is success. Only this network's subnet is detached: a
/// container on two weave networks (Multus, `podman network disconnect`)
/// keeps the other. It is named by the previous result's address where the
/// runtime passes one, else by the configuration; the agent detaches the
/// previous result's addresses the container holds, else the subnet of its
/// interface `CNI_IFNAME`, else the configured subnet if held (the conflist
/// may have been edited since the ADD), else nothing
/// (`Attacher::del_subnets`). A namespace that is gone: the agent releases
/// everything the container id holds.
async fn del(conf: &NetConf, netns: String, id: &str, ifname: &str) -> Result<(), CniError> {
    // A namespace that is gone is no error: the agent releases by id.
    let passed = (!netns.is_empty()).then(|| open_netns(&netns).ok()).flatten();
    // Weave's interface in the previous result (by its MAC: an `ethwe*` when
    // chained after another plugin's `CNI_IFNAME`), else what is on `CNI_IFNAME`.
    let mine = match conf.prev_weave_interface() {
        Some((_, _, addresses)) => addresses,
        None => conf.prev_addresses_on(ifname),
    };
    let request = Request::Detach {
        container: netns,
        netns_fd: passed.is_some(),
        netns: passed,
        id: Some(id.to_string()),
        ifname: Some(ifname.to_string()),
        addrs: if mine.is_empty() { vec![conf.addr()] } else { mine },
    };
    ask(conf, request).await.map(|_| ())
}

/// GC: what this host remembers of the network's attachments that the
/// runtime's list leaves out, and whose namespace is gone, is given back
/// (`Attacher::cni_gc`). Without a list, nothing: an empty one would be
/// every attachment.
async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let keep = conf.gc_keep().ok_or_else(|| {
        CniError::new(code::BAD_CONFIG, "GC needs cni.dev/valid-attachments", "the runtime must pass the list")
    })?;
    let keep = keep
        .iter()
        .map(|a| local_api::CniAttachment { id: cni::container_key(&a.container_id), ifname: a.ifname.clone() })
        .collect();
    let request = Request::CniGc { network: conf.name.clone(), addrs: vec![conf.addr()], keep };
    ask(conf, request).await.map(|_| ())
}

/// STATUS: ready when the agent answers with a map (it can allocate). An
/// agent that does not answer is the data plane of every container here
/// (51); one without a map yet cannot serve ADD (50). A coordinator that is
/// away is not reported: ADD then fails with "try again" for a while, but
/// a runtime that took it for "network not ready" would mark every node of
/// the cluster not ready at once (Kubernetes then evicts their pods).
async fn status(conf: &NetConf) -> Result<(), CniError> {
    match local_api::request(Path::new(conf.socket()), &Request::Status).await {
        Ok(Response::Status(s)) if s.revision > 0 => Ok(()),
        Ok(Response::Status(_)) => Err(CniError::new(
            code::NOT_AVAILABLE,
            "the weave agent has not received the network map yet",
            "it is joining or has not reached the coordinator since it started",
        )),
        Ok(other) => Err(CniError::new(code::NOT_AVAILABLE, "unexpected answer from the agent", format!("{other:?}"))),
        Err(e) => {
            Err(CniError::new(code::NOT_AVAILABLE_LIMITED, "the weave agent is not reachable", unreachable(conf, e)))
        }
    }
}

/// Weave's interface of the previous result (`CNI_IFNAME`, or its `ethwe*`
/// after another plugin's) is in the namespace with its MAC and every address
/// the result gave it, and the agent serves their subnets. Other plugins'
/// interfaces and addresses are theirs to check.
async fn check(conf: &NetConf, netns: &str) -> Result<(), CniError> {
    if !conf.has_check() {
        let why = format!("CHECK is in CNI 0.4.0 and later; the configuration says {}", conf.cni_version);
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI version", why));
    }
    if conf.prev_result.is_none() {
        return Err(CniError::new(code::BAD_CONFIG, "CHECK needs prevResult with ips", ""));
    }
    let Some((name, mac, want)) = conf.prev_weave_interface() else {
        return Err(CniError::new(code::CHECK_FAILED, "prevResult has no interface of weave's", ""));
    };
    let file = std::fs::File::open(netns)
        .map_err(|e| CniError::new(code::UNKNOWN_CONTAINER, format!("cannot open {netns}"), e.to_string()))?;
    let inside =
        Netlink::in_netns(&file).await.map_err(|e| CniError::new(code::CHECK_FAILED, "netlink", e.to_string()))?;
    let Some(have) = inside
        .workload_interfaces(Some(&name))
        .await
        .map_err(|e| CniError::new(code::CHECK_FAILED, "netlink", e.to_string()))?
        .into_iter()
        .find(|i| i.name == name)
    else {
        return Err(CniError::new(code::CHECK_FAILED, format!("{name} is missing in {netns}"), ""));
    };
    let have_mac = weave_agent::plan::kernel::format_mac(&have.mac);
    if !have_mac.eq_ignore_ascii_case(&mac) {
        return Err(CniError::new(code::CHECK_FAILED, format!("{name} has MAC {have_mac}, not {mac}"), ""));
    }
    let addresses: Vec<String> = have.addresses.iter().map(|(ip, len)| format!("{ip}/{len}")).collect();
    if let Some(missing) = want.iter().find(|a| !addresses.contains(a)) {
        return Err(CniError::new(code::CHECK_FAILED, format!("{missing} is missing on {name} in {netns}"), ""));
    }
    // An egress subnet's default route, where ADD gave one.
    if let Some(gateway) = conf.prev_weave_gateway(&name) {
        let has = inside
            .has_default_via(&name, gateway)
            .await
            .map_err(|e| CniError::new(code::CHECK_FAILED, "netlink", e.to_string()))?;
        if !has {
            let what = format!("the default route via {gateway} on {name} is missing in {netns}");
            return Err(CniError::new(code::CHECK_FAILED, what, ""));
        }
    }
    agent_serves(conf, &want).await
}

/// CHECK's last step: the agent, which carries the interface's traffic,
/// answers and installs the subnet of each address. CHECK looked only
/// inside the namespace, and passed with the agent down, where STATUS said
/// so (found by a review, 2026-12-06).
async fn agent_serves(conf: &NetConf, addresses: &[String]) -> Result<(), CniError> {
    let status = match local_api::request(Path::new(conf.socket()), &Request::Status).await {
        Ok(Response::Status(s)) => s,
        Ok(other) => {
            return Err(CniError::new(code::TRY_AGAIN, "unexpected answer from the agent", format!("{other:?}")));
        }
        Err(e) => return Err(CniError::new(code::TRY_AGAIN, "the weave agent is not reachable", unreachable(conf, e))),
    };
    for address in addresses {
        let Ok(ip) = address.split('/').next().unwrap_or_default().parse::<std::net::Ipv4Addr>() else { continue };
        let installed = status
            .segments
            .iter()
            .any(|s| s.skipped.is_none() && s.subnet.parse::<ipnet::Ipv4Net>().is_ok_and(|net| net.contains(&ip)));
        if !installed {
            let what = format!("{address}: the weave agent does not install its subnet on this host (agent status)");
            return Err(CniError::new(code::CHECK_FAILED, what, ""));
        }
    }
    Ok(())
}
