//! The agent's local API on a Unix socket (mode 0600: root only). One JSON
//! request per line, one JSON answer per line: `{"method":"status"}`.
use std::{
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{dataplane::PeerStatus, error::Error};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// The addresses of `name` from this agent's copy of the DNS records
    /// (unqualified names are looked up in the cluster domain).
    DnsLookup {
        name: String,
    },
    /// Serves DNS at 127.0.0.11:53 inside the namespace at `netns` (a path)
    /// until `dns_stop` with the same `key`. Idempotent per key.
    DnsServe {
        netns: String,
        key: String,
    },
    DnsStop {
        key: String,
    },
    /// An address for `container` on `subnet` (cidr, name or "default") from
    /// the coordinator's IPAM, and the bridge to plug it into. Idempotent.
    Allocate {
        container: String,
        subnet: String,
    },
    /// Releases every address of `container` on this node.
    Release {
        container: String,
    },
    /// Gives a running container (netns path, pid or registered name) an
    /// `ethwe*` per subnet of `addrs` (`net:default`, `net:<CIDR>`,
    /// `ip:<IP>/<len>`, `<IP>/<len>`; none = `net:default`). Idempotent.
    Attach {
        container: String,
        /// Registers the name (and `<name>.weave.local`).
        #[serde(default)]
        name: Option<String>,
        /// The IPAM key instead of the name or namespace (the CNI plugin's `cni:<id>`).
        #[serde(default)]
        id: Option<String>,
        /// The interface name for a new interface (the CNI runtime's `CNI_IFNAME`) instead of `ethwe*`.
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        addrs: Vec<String>,
        /// Skip the 224.0.0.0/4 route.
        #[serde(default)]
        no_multicast: bool,
    },
    /// Removes the subnets of `addrs` (all if none) from the container.
    Detach {
        container: String,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        addrs: Vec<String>,
    },
    /// Gives this host an address on each subnet of `addrs` (on its bridge).
    Expose {
        #[serde(default)]
        addrs: Vec<String>,
    },
    /// Removes this host's addresses from the subnets of `addrs` (all if none).
    Hide {
        #[serde(default)]
        addrs: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentStatus {
    pub subnet: String,
    pub vni: u32,
    pub bridge: String,
    pub mtu: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node_id: u64,
    pub name: String,
    pub address: Ipv4Addr,
    pub endpoint: String,
    pub revision: u64,
    /// A watch on the coordinator is open right now.
    pub coordinator_connected: bool,
    pub segments: Vec<SegmentStatus>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(AgentStatus),
    /// Answer to `dns_lookup`: the addresses (shuffled), empty if unknown.
    Dns {
        name: String,
        addresses: Vec<String>,
    },
    /// A request with nothing to return succeeded.
    Done,
    Allocated(Attachment),
    Released(Vec<String>),
    Attached(Vec<crate::attach::Attached>),
    Error(String),
}

/// Where a workload goes: its address (with prefix) and the segment's bridge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub address: String,
    pub subnet: String,
    pub bridge: String,
    pub mtu: u32,
}

pub type Reply<'a> = std::pin::Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// Whatever answers requests (the running agent).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Reply<'_>;
}

/// Binds `path` (replacing a stale socket) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let io = |e| Error::Io(path.display().to_string(), e);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, handler: Arc<dyn Handler>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*handler).await {
                tracing::debug!(error = %e, "local API connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handler.handle(request).await,
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// Client side, for `agent status` (and weavectl later).
pub async fn request(path: &Path, request: &Request) -> Result<Response, Error> {
    let io = |e| Error::Io(path.display().to_string(), e);
    let stream = UnixStream::connect(path).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| Error::State(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(io)?;
    let answer = BufReader::new(read).lines().next_line().await.map_err(io)?.unwrap_or_default();
    serde_json::from_str(&answer).map_err(|e| Error::State(format!("bad answer from the agent: {e}")))
}

/// A human table of the peers.
pub fn format_status(s: &AgentStatus) -> String {
    let mut out = format!(
        "node {} ({}) address {} endpoint {} revision {} coordinator {}\n",
        s.name,
        s.node_id,
        s.address,
        s.endpoint,
        s.revision,
        if s.coordinator_connected { "connected" } else { "unreachable (using the saved map)" }
    );
    for seg in &s.segments {
        out += &format!("segment {} vni {} bridge {} mtu {}\n", seg.subnet, seg.vni, seg.bridge, seg.mtu);
    }
    out +=
        &format!("{:<16} {:<12} {:<22} {:>10} {:>12} {:>12}\n", "PEER", "ADDRESS", "ENDPOINT", "HANDSHAKE", "TX", "RX");
    for p in &s.peers {
        let age = p.handshake_age_secs.map(|a| format!("{a:.0}s ago")).unwrap_or_else(|| "never".into());
        let ep = p.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
        out += &format!(
            "{:<16} {:<12} {:<22} {:>10} {:>12} {:>12}\n",
            p.name,
            p.address.to_string(),
            ep,
            age,
            p.tx_bytes,
            p.rx_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Handler for Fixed {
        fn handle(&self, request: Request) -> Reply<'_> {
            Box::pin(async move {
                match request {
                    Request::Status => Response::Status(status()),
                    other => Response::Error(format!("not here: {other:?}")),
                }
            })
        }
    }

    fn status() -> AgentStatus {
        AgentStatus {
            node_id: 1,
            name: "h1".into(),
            address: "10.47.0.1".parse().unwrap(),
            endpoint: "192.0.2.11:6784".into(),
            revision: 9,
            coordinator_connected: true,
            segments: vec![],
            peers: vec![PeerStatus {
                node_id: 2,
                name: "h2".into(),
                address: "10.47.0.2".parse().unwrap(),
                endpoint: Some("192.0.2.12:6784".parse().unwrap()),
                handshake_age_secs: Some(3.0),
                tx_bytes: 10,
                rx_bytes: 20,
                dropped_spoofed: 0,
            }],
        }
    }

    #[tokio::test]
    async fn status_round_trips_over_the_socket_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let listener = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        tokio::spawn(serve(listener, Arc::new(Fixed)));
        let Response::Status(s) = request(&path, &Request::Status).await.unwrap() else { panic!("not a status") };
        assert_eq!(s.peers[0].rx_bytes, 20);
        let table = format_status(&s);
        assert!(table.contains("h2") && table.contains("3s ago"), "{table}");
        let release = Request::Release { container: "c".into() };
        assert!(matches!(request(&path, &release).await.unwrap(), Response::Error(_)));
    }
}
