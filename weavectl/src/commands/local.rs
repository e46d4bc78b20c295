//! Host actions through the local agent's Unix socket (`weave_proto::local_api`,
//! the same contract as `agent status` and weave-cni): attach/detach,
//! expose/hide, `status peers`. The agent's refusals carry a kind, which
//! alone decides the exit code.
//! Attach and detach send the container's namespace as an open descriptor
//! (SCM_RIGHTS, `"netns_fd": true`): the agent may live in another mount
//! namespace (a DaemonSet pod) and not see this one's `/run/netns`.
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use weave_proto::local_api::{
    self, Attached, ErrorKind, LocalContainer, Refusal, Request, Response, addr_spec::AddrSpec,
};

use super::{Output, or_dash};
use crate::{
    cli::LocalCommand,
    failure::{Exit, Failure, Outcome},
    table::Table,
};

/// One request, one answer; a refusal becomes a [`Failure`] by its kind.
pub(crate) async fn request(socket: &Path, what: &str, req: &Request) -> Outcome<Response> {
    let answer = local_api::request(socket, req).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Failure::new(Exit::Other, what, e),
        std::io::ErrorKind::UnexpectedEof => Failure::new(Exit::Unreachable, what, e),
        _ => Failure::new(Exit::Unreachable, format!("cannot reach the agent at {}", socket.display()), e),
    })?;
    match answer {
        Response::Error(refusal) => Err(refused(what, refusal)),
        answer => Ok(answer),
    }
}

/// weavectl's exit code for each kind of refusal (see `weavectl --help`).
fn exit_for(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::Invalid => Exit::Usage,
        ErrorKind::UnknownContainer | ErrorKind::NotFound => Exit::NotFound,
        ErrorKind::Conflict => Exit::Conflict,
        ErrorKind::Exhausted => Exit::Exhausted,
        ErrorKind::Denied => Exit::Denied,
        ErrorKind::Unavailable => Exit::Unreachable,
        ErrorKind::Failed => Exit::Other,
    }
}

fn refused(what: &str, refusal: Refusal) -> Failure {
    Failure::new(exit_for(refusal.kind), what, refusal.message)
}

/// An answer of another kind than the request asks for.
fn unexpected(what: &str, answer: &Response) -> Failure {
    Failure::new(Exit::Other, what, format!("unexpected answer from the agent: {answer:?}"))
}

/// The namespace file a container argument names as the agent reads it (a
/// path, a pid, or a name under /run/netns), seen from here; None for a
/// name registered with `--name` (the agent knows it) or anything else.
fn netns_path(container: &str) -> Option<PathBuf> {
    if container.starts_with('/') {
        Some(PathBuf::from(container))
    } else if !container.is_empty() && container.bytes().all(|b| b.is_ascii_digit()) {
        Some(PathBuf::from(format!("/proc/{container}/ns/net")))
    } else if !container.is_empty() && !container.contains('/') {
        Some(Path::new("/run/netns").join(container)).filter(|p| p.exists())
    } else {
        None
    }
}

/// The container's namespace, when this process can open it: it goes to the
/// agent as a descriptor. One it cannot open goes by name: the agent then
/// says what is wrong (or finds a registered name, or a CNI id).
fn open_netns(container: &str) -> Option<Arc<File>> {
    netns_path(container).and_then(|p| File::open(p).ok()).map(Arc::new)
}

pub(crate) async fn run(socket: &Path, out: &Output, c: LocalCommand) -> Outcome {
    match c {
        LocalCommand::Attach { args, name, no_multicast_route: no_multicast } => {
            let (addrs, container) = split_container(args)?;
            let what = format!("attaching {container}");
            check_addrs(&what, &addrs)?;
            let netns = open_netns(&container);
            let req = Request::Attach {
                container: container.clone(),
                netns_fd: netns.is_some(),
                netns,
                name,
                id: None,
                ifname: None,
                addrs,
                no_multicast,
                exact_ifname: false,
                no_dns: false,
                network: None,
                needs_egress: false,
                address: None,
            };
            match request(socket, &what, &req).await? {
                Response::Attached(list) => print_addresses(out, &list),
                other => return Err(unexpected(&what, &other)),
            }
        }
        LocalCommand::Detach { args } => {
            let (addrs, container) = split_container(args)?;
            let what = format!("detaching {container}");
            check_addrs(&what, &addrs)?;
            let netns = open_netns(&container);
            let req = Request::Detach {
                container: container.clone(),
                netns_fd: netns.is_some(),
                netns,
                id: None,
                ifname: None,
                addrs,
            };
            match request(socket, &what, &req).await? {
                Response::Released(list) => print_released(out, &list),
                other => return Err(unexpected(&what, &other)),
            }
        }
        LocalCommand::Expose { addrs } => {
            let what = "exposing this host";
            check_addrs(what, &addrs)?;
            match request(socket, what, &Request::Expose { addrs }).await? {
                Response::Attached(list) => print_addresses(out, &list),
                other => return Err(unexpected(what, &other)),
            }
        }
        LocalCommand::Ps => {
            let what = "asking the agent for its containers";
            match request(socket, what, &Request::Containers).await? {
                Response::Containers(list) => print_containers(out, &list),
                other => return Err(unexpected(what, &other)),
            }
        }
        LocalCommand::Hide { addrs } => {
            let what = "hiding this host";
            check_addrs(what, &addrs)?;
            match request(socket, what, &Request::Hide { addrs }).await? {
                Response::Released(list) => print_released(out, &list),
                other => return Err(unexpected(what, &other)),
            }
        }
    }
    Ok(())
}

/// Refuses a malformed ADDR here, as the agent would (the same parser), so
/// that a typo is a usage error (exit 2) whether or not an agent runs.
fn check_addrs(what: &str, addrs: &[String]) -> Outcome<()> {
    AddrSpec::parse_all(addrs).map(drop).map_err(|refusal| refused(what, refusal))
}

/// `[ADDR...] <container>`: the last word is the container.
fn split_container(mut args: Vec<String>) -> Outcome<(Vec<String>, String)> {
    let container =
        args.pop().ok_or_else(|| Failure::usage("container", "missing: give a netns path, a pid or a name"))?;
    Ok((args, container))
}

/// Like `weave attach`: the addresses (without prefix) on one line.
fn print_addresses(out: &Output, attached: &[Attached]) {
    if out.json {
        out.print_json(&serde_json::to_value(attached).unwrap_or_default());
        return;
    }
    let addrs: Vec<&str> = attached.iter().map(|a| a.address.split('/').next().unwrap_or(&a.address)).collect();
    crate::out!("{}\n", addrs.join(" "));
}

fn print_released(out: &Output, released: &[String]) {
    if out.json {
        out.print_json(&serde_json::to_value(released).unwrap_or_default());
        return;
    }
    // Nothing released prints nothing (not an empty line: `| wc -l` counts it).
    if !released.is_empty() {
        crate::out!("{}\n", released.join(" "));
    }
}

/// `weavectl ps`: a row per address (a container on two subnets has two).
fn print_containers(out: &Output, list: &[LocalContainer]) {
    if out.json {
        out.print_json(&serde_json::to_value(list).unwrap_or_default());
        return;
    }
    let mut table = Table::new(&["CONTAINER", "ADDRESS", "MAC", "NAMES", "NETNS"]);
    for c in list {
        for a in &c.addresses {
            table.row(vec![
                c.container.clone(),
                a.address.clone(),
                or_dash(&a.mac),
                or_dash(&a.names.join(",")),
                or_dash(&c.netns),
            ]);
        }
    }
    crate::out!("{table}");
}

/// `weavectl status peers`: this host's peers from the agent.
pub(crate) async fn peers(socket: &Path, out: &Output) -> Outcome {
    let what = "asking the agent for its status";
    let status = match request(socket, what, &Request::Status).await? {
        Response::Status(s) => s,
        other => return Err(unexpected(what, &other)),
    };
    if out.json {
        out.print_json(&serde_json::to_value(&status.peers).unwrap_or_default());
        return Ok(());
    }
    let mut table = Table::new(&["PEER", "ADDRESS", "ENDPOINT", "HANDSHAKE", "TX", "RX"]);
    for p in &status.peers {
        let age = p.handshake_text();
        let endpoint = p.endpoint.map_or_else(|| "-".to_string(), |e| e.to_string());
        table.row(vec![
            p.name.clone(),
            p.address.to_string(),
            endpoint,
            age,
            p.tx_bytes.to_string(),
            p.rx_bytes.to_string(),
        ]);
    }
    crate::out!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_is_the_last_word() {
        let (addrs, c) =
            split_container(vec!["net:default".into(), "ip:10.2.3.4/24".into(), "/run/netns/a".into()]).unwrap();
        assert_eq!((addrs.len(), c.as_str()), (2, "/run/netns/a"));
        assert!(split_container(vec![]).is_err());
    }

    /// One case per kind: weavectl's exit code never depends on the sentence.
    #[test]
    fn agent_refusals_map_to_exit_codes_by_kind() {
        let cases = [
            (ErrorKind::Invalid, Exit::Usage),
            (ErrorKind::UnknownContainer, Exit::NotFound),
            (ErrorKind::NotFound, Exit::NotFound),
            (ErrorKind::Conflict, Exit::Conflict),
            (ErrorKind::Exhausted, Exit::Exhausted),
            (ErrorKind::Denied, Exit::Denied),
            (ErrorKind::Unavailable, Exit::Unreachable),
            (ErrorKind::Failed, Exit::Other),
        ];
        for (kind, exit) in cases {
            // The same sentence for every kind: only the kind decides.
            let f = refused("attaching c", Refusal::new(kind, "subnet is not defined, already in use"));
            assert_eq!(f.exit, exit, "{kind:?}");
            // `agent allocate` exits as weavectl does.
            assert_eq!(kind.exit_code(), exit as u8, "{kind:?}");
            assert_eq!(f.to_string(), "attaching c: subnet is not defined, already in use");
        }
    }

    #[tokio::test]
    async fn a_refusal_from_the_socket_keeps_its_kind() {
        struct Refuses;
        impl local_api::Handler for Refuses {
            fn handle(&self, _: Request) -> local_api::Reply<'_> {
                Box::pin(async { Response::Error(Refusal::conflict("name 'web' is already in use")) })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        tokio::spawn(local_api::serve(local_api::bind(&socket).unwrap(), Arc::new(Refuses)));
        let f = request(&socket, "attaching web", &Request::Status).await.unwrap_err();
        assert_eq!((f.exit, f.why.as_str()), (Exit::Conflict, "name 'web' is already in use"));
    }
}
