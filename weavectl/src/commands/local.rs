//! Host actions through the local agent's Unix socket (JSON lines, the same
//! protocol as `agent status`): attach/detach, expose/hide, `status peers`.
//! Attach and detach send the container's namespace as an open descriptor
//! (SCM_RIGHTS, `"netns_fd": true`): the agent may live in another mount
//! namespace (a DaemonSet pod) and not see this one's `/run/netns`.
use std::{
    fs::File,
    io::IoSlice,
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest},
    net::UnixStream,
};

use super::Output;
use crate::{
    cli::LocalCommand,
    failure::{Exit, Failure, Outcome},
    table::Table,
};

/// One request, one answer: `{"<kind>": …}` or `{"error": "…"}`.
pub(crate) async fn request(socket: &Path, what: &str, req: Value) -> Outcome<Value> {
    request_with(socket, what, req, None).await
}

/// [`request`], with `netns` sent as a descriptor along with the request.
async fn request_with(socket: &Path, what: &str, req: Value, netns: Option<&File>) -> Outcome<Value> {
    let unreachable = |e: std::io::Error| {
        Failure::new(Exit::Unreachable, format!("cannot reach the agent at {}", socket.display()), e)
    };
    let stream = UnixStream::connect(socket).await.map_err(unreachable)?;
    let mut line = req.to_string();
    line.push('\n');
    let sent = match netns {
        Some(f) => send_with_fd(&stream, line.as_bytes(), f.as_raw_fd()).await.map_err(unreachable)?,
        None => 0,
    };
    let (read, mut write) = stream.into_split();
    write.write_all(&line.as_bytes()[sent..]).await.map_err(unreachable)?;
    let answer = BufReader::new(read).lines().next_line().await.map_err(unreachable)?.unwrap_or_default();
    let answer: Value = serde_json::from_str(&answer)
        .map_err(|e| Failure::new(Exit::Other, what, format!("bad answer from the agent: {e}")))?;
    if let Some(e) = answer.get("error") {
        let why = e.as_str().unwrap_or("error").to_string();
        return Err(Failure::new(exit_for(&why), what, why));
    }
    Ok(answer)
}

/// Sends `bytes` with `fd` attached to the first one (the agent takes it
/// as the request's namespace).
async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let fds = [fd];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            Ok(sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(bytes)], &cmsg, MsgFlags::empty(), None)?)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
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

/// Sends `req` about `container`, with its namespace when this process can
/// open it. A namespace it cannot open goes by name: the agent then says
/// what is wrong (or finds a registered name, or a CNI id).
async fn request_about(socket: &Path, what: &str, mut req: Value, container: &str) -> Outcome<Value> {
    let netns = netns_path(container).and_then(|p| File::open(p).ok());
    if netns.is_some() {
        req["netns_fd"] = json!(true);
    }
    request_with(socket, what, req, netns.as_ref()).await
}

/// The agent answers in sentences; the exit code follows weavectl's table.
fn exit_for(why: &str) -> Exit {
    let w = why.to_ascii_lowercase();
    if w.contains("unknown container")
        || w.contains("not defined")
        || w.contains("not attached")
        || w.contains("not exposed")
    {
        Exit::NotFound
    } else if w.contains("held by") || w.contains("already") || w.contains("in use") {
        Exit::Conflict
    } else if w.contains("outside") || w.contains("expected") || w.contains("prefix") || w.contains("not an ipv4") {
        Exit::Usage
    } else if w.contains("no free") || w.contains("exhausted") {
        Exit::Exhausted
    } else {
        Exit::Other
    }
}

pub(crate) async fn run(socket: &Path, out: &Output, c: LocalCommand) -> Outcome {
    match c {
        LocalCommand::Attach { args, name, no_multicast_route: no_multicast } => {
            let (addrs, container) = split_container(args)?;
            let what = format!("attaching {container}");
            let req = json!({"method": "attach", "container": container, "name": name, "addrs": addrs, "no_multicast": no_multicast});
            let answer = request_about(socket, &what, req, &container).await?;
            print_addresses(out, &answer["attached"]);
        }
        LocalCommand::Detach { args } => {
            let (addrs, container) = split_container(args)?;
            let what = format!("detaching {container}");
            let req = json!({"method": "detach", "container": container, "addrs": addrs});
            let answer = request_about(socket, &what, req, &container).await?;
            print_released(out, &answer["released"]);
        }
        LocalCommand::Expose { addrs } => {
            let answer = request(socket, "exposing this host", json!({"method": "expose", "addrs": addrs})).await?;
            print_addresses(out, &answer["attached"]);
        }
        LocalCommand::Hide { addrs } => {
            let answer = request(socket, "hiding this host", json!({"method": "hide", "addrs": addrs})).await?;
            print_released(out, &answer["released"]);
        }
    }
    Ok(())
}

/// `[ADDR...] <container>`: the last word is the container.
fn split_container(mut args: Vec<String>) -> Outcome<(Vec<String>, String)> {
    let container =
        args.pop().ok_or_else(|| Failure::usage("container", "missing: give a netns path, a pid or a name"))?;
    Ok((args, container))
}

/// Like `weave attach`: the addresses (without prefix) on one line.
fn print_addresses(out: &Output, attached: &Value) {
    if out.json {
        out.print_json(attached);
        return;
    }
    let list = attached.as_array().cloned().unwrap_or_default();
    let addrs: Vec<&str> =
        list.iter().filter_map(|a| a["address"].as_str()).map(|a| a.split('/').next().unwrap_or(a)).collect();
    println!("{}", addrs.join(" "));
}

fn print_released(out: &Output, released: &Value) {
    if out.json {
        out.print_json(released);
        return;
    }
    let list = released.as_array().cloned().unwrap_or_default();
    let addrs: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    println!("{}", addrs.join(" "));
}

/// `weavectl status peers`: this host's peers from the agent.
pub(crate) async fn peers(socket: &Path, out: &Output) -> Outcome {
    let answer = request(socket, "asking the agent for its status", json!({"method": "status"})).await?;
    let peers = &answer["status"]["peers"];
    if out.json {
        out.print_json(peers);
        return Ok(());
    }
    let mut table = Table::new(&["PEER", "ADDRESS", "ENDPOINT", "HANDSHAKE", "TX", "RX"]);
    for p in peers.as_array().cloned().unwrap_or_default() {
        let s = |k: &str| match &p[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_string(),
            v => v.to_string(),
        };
        let age = p["handshake_age_secs"].as_f64().map(|a| format!("{a:.0}s ago")).unwrap_or_else(|| "never".into());
        table.row(vec![s("name"), s("address"), s("endpoint"), age, s("tx_bytes"), s("rx_bytes")]);
    }
    print!("{table}");
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

    #[test]
    fn agent_refusals_map_to_exit_codes() {
        assert_eq!(exit_for("unknown container 'x': /run/netns/x: No such file"), Exit::NotFound);
        assert_eq!(exit_for("subnet 10.9.0.0/24 is not defined (weavectl subnet add 10.9.0.0/24)"), Exit::NotFound);
        assert_eq!(exit_for("address 10.9.9.9/24 is outside every subnet"), Exit::Usage);
    }
}
