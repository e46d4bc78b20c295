//! The agent's local API on a Unix socket (mode 0600: root only). One JSON
//! request per line, one JSON answer per line: `{"method":"status"}`.
//!
//! `attach` and `detach` may carry the container's network namespace as an
//! open file descriptor (`SCM_RIGHTS`, sent with the request's first byte,
//! `"netns_fd": true` in the JSON): the agent then needs no view of the
//! caller's mounts (a runtime's `/run/netns/…` lives in the runtime's mount
//! namespace, an agent in a DaemonSet pod lives in another).
use std::{
    collections::VecDeque,
    fs::File,
    io::{IoSlice, IoSliceMut},
    net::Ipv4Addr,
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::{DirBuilderExt, PermissionsExt},
    },
    path::Path,
    sync::Arc,
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest},
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
        /// The namespace came with the request as a descriptor; `container`
        /// is then only the caller's name for it (messages, `--name` lookups).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        netns_fd: bool,
        /// That descriptor: filled in by [`serve`], sent by [`request`].
        #[serde(skip)]
        netns: Option<Arc<File>>,
        /// Registers the name (and `<name>.weave.local`). With `id`, only
        /// the DNS name: the runtime owns the container's identity.
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
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        netns_fd: bool,
        #[serde(skip)]
        netns: Option<Arc<File>>,
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
    Attached(Vec<super::attach::Attached>),
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
    let mut inbox = Inbox::default();
    while let Some((line, mut fds)) = inbox.next_line(read.as_ref()).await? {
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(mut request) => match request.take_passed(&mut fds) {
                Ok(()) => handler.handle(request).await,
                Err(e) => Response::Error(e),
            },
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

impl Request {
    /// Puts the descriptor that came with this request where it belongs.
    fn take_passed(&mut self, fds: &mut VecDeque<File>) -> Result<(), String> {
        match self {
            Request::Attach { netns_fd: true, netns, .. } | Request::Detach { netns_fd: true, netns, .. } => {
                let file = fds.pop_front().ok_or("netns_fd is set but no descriptor came with the request")?;
                *netns = Some(Arc::new(file));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The namespace descriptor to send with this request.
    fn passed(&self) -> Option<&File> {
        match self {
            Request::Attach { netns, .. } | Request::Detach { netns, .. } => netns.as_deref(),
            _ => None,
        }
    }
}

/// Descriptors a client may pass with one message; more are closed.
const MAX_FDS: usize = 4;

/// The bytes and descriptors read from one connection, split into lines.
/// The kernel delivers a descriptor with the first byte of the `sendmsg`
/// that carried it and never merges data across it, so a descriptor belongs
/// to the request whose first byte it came with.
#[derive(Default)]
struct Inbox {
    bytes: Vec<u8>,
    /// (offset in `bytes` of the first byte it came with, descriptor)
    fds: VecDeque<(usize, File)>,
    eof: bool,
}

impl Inbox {
    /// The next request line and the descriptors that came with it; None at
    /// end of stream.
    async fn next_line(&mut self, stream: &UnixStream) -> std::io::Result<Option<(Vec<u8>, VecDeque<File>)>> {
        loop {
            if let Some(end) = self.bytes.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.bytes.drain(..=end).collect();
                let mut mine = VecDeque::new();
                while self.fds.front().is_some_and(|(at, _)| *at <= end) {
                    if let Some((_, f)) = self.fds.pop_front() {
                        mine.push_back(f);
                    }
                }
                for (at, _) in &mut self.fds {
                    *at -= end + 1;
                }
                return Ok(Some((line, mine)));
            }
            if self.eof {
                return Ok(None);
            }
            stream.readable().await?;
            let got = stream.try_io(Interest::READABLE, || receive(stream.as_raw_fd()));
            let (chunk, fds) = match got {
                Ok(g) => g,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            self.eof = chunk.is_empty();
            let at = self.bytes.len();
            self.bytes.extend_from_slice(&chunk);
            self.fds.extend(fds.into_iter().map(|f| (at, f)));
        }
    }
}

/// One `recvmsg`: the bytes, and the descriptors that came with them.
fn receive(socket: RawFd) -> std::io::Result<(Vec<u8>, Vec<File>)> {
    let mut buf = vec![0u8; 8192];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(socket, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let n = msg.bytes;
    let mut raw = Vec::new();
    // More descriptors than fit were closed by the kernel (MSG_CTRUNC):
    // the request then finds none and is refused.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw.extend(fds);
            }
        }
    }
    buf.truncate(n);
    Ok((buf, raw.into_iter().filter_map(adopt).collect()))
}

/// A received descriptor as a `File`, without `unsafe`: reopen it through
/// `/proc/self/fd` (for a namespace that is the same namespace) and close the
/// raw one. A descriptor that cannot be reopened (a socket) is dropped.
fn adopt(raw: RawFd) -> Option<File> {
    let file = File::open(format!("/proc/self/fd/{raw}"));
    let _ = nix::unistd::close(raw);
    match file {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(error = %e, "a passed descriptor is not a file; dropped");
            None
        }
    }
}

/// Sends `bytes` with `fd` attached to the first one (SCM_RIGHTS).
async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let fds = [fd];
            Ok(sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )?)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Client side, for `agent status` and weave-cni. A request that carries a
/// namespace ([`Request::Attach`]/[`Request::Detach`] `netns`) sends it as a
/// descriptor.
pub async fn request(path: &Path, request: &Request) -> Result<Response, Error> {
    let io = |e| Error::Io(path.display().to_string(), e);
    let stream = UnixStream::connect(path).await.map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| Error::State(e.to_string()))?;
    line.push(b'\n');
    let sent = match request.passed() {
        Some(file) => send_with_fd(&stream, &line, file.as_raw_fd()).await.map_err(io)?,
        None => 0,
    };
    let (read, mut write) = stream.into_split();
    write.write_all(&line[sent..]).await.map_err(io)?;
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
                    // Answers with the inode of the descriptor that came along.
                    Request::Attach { netns: Some(f), .. } => {
                        use std::os::unix::fs::MetadataExt;
                        Response::Dns { name: f.metadata().unwrap().ino().to_string(), addresses: vec![] }
                    }
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

    #[tokio::test]
    async fn a_passed_descriptor_reaches_the_handler() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        tokio::spawn(serve(bind(&path).unwrap(), Arc::new(Fixed)));
        // Any file stands in for a namespace here; the path is one the server cannot open.
        let file = dir.path().join("ns");
        std::fs::write(&file, "").unwrap();
        let attach = |netns_fd, netns| Request::Attach {
            container: "/nowhere/ns".into(),
            netns_fd,
            netns,
            name: None,
            id: None,
            ifname: None,
            addrs: vec![],
            no_multicast: false,
        };
        let opened = Arc::new(File::open(&file).unwrap());
        let want = std::fs::metadata(&file).unwrap().ino().to_string();
        for _ in 0..2 {
            let Response::Dns { name, .. } = request(&path, &attach(true, Some(opened.clone()))).await.unwrap() else {
                panic!("the descriptor did not arrive")
            };
            assert_eq!(name, want);
        }
        // The flag without a descriptor is refused, not taken from elsewhere.
        let Response::Error(e) = request(&path, &attach(true, None)).await.unwrap() else { panic!("accepted") };
        assert!(e.contains("no descriptor"), "{e}");
        // An old client (a path, no flag) reaches the handler without one.
        let Response::Error(e) = request(&path, &attach(false, None)).await.unwrap() else { panic!("accepted") };
        assert!(e.contains("not here"), "{e}");
    }
}
