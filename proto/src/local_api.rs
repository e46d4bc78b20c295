//! The agent's local API on a Unix socket (mode 0600: root only): the one
//! contract between the agent and its local clients (`agent status`,
//! weavectl, weave-cni). One JSON request per line, one JSON answer per line:
//! `{"method":"status"}`. A refusal is `{"error":{"kind":"not_found",
//! "message":"…"}}`: clients decide by its [`ErrorKind`], and show the message.
//!
//! `attach` and `detach` may carry the container's network namespace as an
//! open file descriptor (`SCM_RIGHTS`, sent with the request's first byte,
//! `"netns_fd": true` in the JSON): the agent then needs no view of the
//! caller's mounts (a runtime's `/run/netns/…` lives in the runtime's mount
//! namespace, an agent in a DaemonSet pod lives in another).
use std::{fs::File, net::Ipv4Addr, sync::Arc};

use serde::{Deserialize, Serialize};

pub mod addr_spec;
mod socket;
pub use socket::{SocketPath, bind, clear_stale, probe, remove_socket, request, serve, usable};

/// Why the agent refused a request: clients branch on this (weavectl's exit
/// codes, the CNI error codes), never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (a malformed address, an address outside
    /// its subnet, a bad request line).
    Invalid,
    /// The container (namespace, pid or name) does not exist.
    UnknownContainer,
    /// Something else named does not exist (a subnet, an attachment).
    NotFound,
    /// It conflicts with what exists (a name in use, an address taken).
    Conflict,
    /// No address left.
    Exhausted,
    /// The coordinator refused this node.
    Denied,
    /// The coordinator (or the agent's map) cannot answer now; retrying may help.
    Unavailable,
    /// Anything else (a kernel call failed).
    Failed,
}

impl ErrorKind {
    /// The kind of a coordinator's gRPC answer.
    pub fn of_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::Invalid,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => Self::Conflict,
            Code::ResourceExhausted => Self::Exhausted,
            Code::PermissionDenied | Code::Unauthenticated => Self::Denied,
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable,
            _ => Self::Failed,
        }
    }

    /// The exit status a command line gives for it, as weavectl's: 2 bad
    /// input, 3 unreachable or try again, 4 not found, 5 conflict, 6 denied,
    /// 7 exhausted, 1 anything else.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Invalid => 2,
            Self::Unavailable => 3,
            Self::UnknownContainer | Self::NotFound => 4,
            Self::Conflict => 5,
            Self::Denied => 6,
            Self::Exhausted => 7,
            Self::Failed => 1,
        }
    }
}

/// A refused request: its kind, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn unknown_container(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnknownContainer, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// A coordinator's gRPC refusal, its message passed through; one that
    /// never reached it says so (it was tonic's bare "tcp connect error").
    pub fn status(status: &tonic::Status) -> Self {
        let kind = ErrorKind::of_code(status.code());
        match status.code() {
            tonic::Code::Unavailable => {
                Self::new(kind, format!("the coordinator cannot serve this now ({}); try again", status.message()))
            }
            _ => Self::new(kind, status.message()),
        }
    }
}

/// One peer as the local status API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node_id: u64,
    pub name: String,
    pub address: Ipv4Addr,
    pub endpoint: Option<std::net::SocketAddr>,
    /// Seconds since the last completed handshake; `None` before the first.
    pub handshake_age_secs: Option<f64>,
    /// A handshake is under way (sent, not yet answered): traffic is waiting
    /// for the peer. Without one and without a recent handshake the tunnel
    /// is idle (no keepalives unless behind NAT), not down.
    #[serde(default)]
    pub handshake_in_progress: bool,
    /// Seconds the peer's handshakes have arrived while this host's answers
    /// went unused (5 or more): its packets do not reach the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unheard_secs: Option<f64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Decrypted packets dropped because their inner source was not the peer's address.
    pub dropped_spoofed: u64,
    /// VXLAN frames dropped because the peer has no workload in their segment.
    #[serde(default)]
    pub dropped_foreign_segment: u64,
    /// Group-addressed VXLAN frames dropped past what the peer's workloads'
    /// ports in their segment let through (`--broadcast-limit` per workload).
    #[serde(default)]
    pub dropped_storm: u64,
}

/// A session is live this long after its handshake (WireGuard's REJECT_AFTER_TIME).
pub const ESTABLISHED_SECS: f64 = 180.0;

impl PeerStatus {
    /// The HANDSHAKE column of `agent status` and `weavectl status peers`
    /// (`agent status` showed neither "connecting" nor "idle" until
    /// 2026-12-07; a review).
    pub fn handshake_text(&self) -> String {
        match (self.unheard_secs, self.handshake_age_secs, self.handshake_in_progress) {
            // Its handshakes arrive, this host's answers do not: not up.
            (Some(u), _, _) => format!("one-way (unheard {u:.0}s)"),
            // Under way whatever the last one's age: a peer that stopped
            // answering showed "31s ago" (a review, 2026-12-06).
            (None, Some(a), true) if a < ESTABLISHED_SECS => format!("connecting (last {a:.0}s ago)"),
            (None, _, true) => "connecting".into(),
            (None, Some(a), _) if a < ESTABLISHED_SECS => format!("{a:.0}s ago"),
            // Idle: no keepalives unless behind NAT, so no session: not down.
            (None, Some(a), false) => format!("{a:.0}s ago (idle)"),
            (None, None, false) => "never (idle)".into(),
        }
    }
}

/// One of a CNI network's valid attachments (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CniAttachment {
    /// The IPAM key (`cni:<CNI_CONTAINERID>`).
    pub id: String,
    pub ifname: String,
}

/// The result of one attach, per subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attached {
    /// `10.32.0.5/16`.
    pub address: String,
    pub subnet: String,
    /// The interface in the container (`ethwe`, `ethwe1`, …; the bridge for expose).
    pub interface: String,
    pub bridge: String,
    pub mtu: u32,
    /// The container interface's MAC (`aa:bb:…`; empty for expose): CNI
    /// runtimes such as podman parse it from the ADD result.
    #[serde(default)]
    pub mac: String,
    /// The container's default gateway through this interface (its host's
    /// address on an egress subnet), when the default route is weave's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The host side of the container's veth (`wv…`) and its MAC, for a CNI
    /// result: chained plugins such as `bandwidth` look for the container
    /// interface's peer among the result's host interfaces. Empty for
    /// expose, and from agents before 2026-12-07.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_interface: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_mac: String,
}

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
        /// `ifname` or nothing: refused if the container's interface on the
        /// subnet has another name, or the name is another interface's (a
        /// CNI ADD outside a chain).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exact_ifname: bool,
        /// No resolver in the container (a CNI network with `"resolver":
        /// false`: Kubernetes, whose pods resolve through cluster DNS, which
        /// must bind port 53 in its own pods); the name is registered all the same.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_dns: bool,
        /// Refused unless every subnet has egress: the runtime publishes
        /// ports (CNI `portMappings`), whose replies leave by the default
        /// route only an egress subnet gives.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        needs_egress: bool,
        /// The CNI network (its configuration's `name`) of this attachment,
        /// remembered for that network's GC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// This address on the one subnet of `addrs` (CNI_ARGS `IP=`: the
        /// runtime's fixed address, or the container's own at a reload).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// CNI GC (1.1.0) of `network`: every attachment of it on this host
    /// (remembered at ADD) that is not in `keep` and whose namespace is not
    /// alive gives back what it holds on the subnet of `addrs`.
    CniGc {
        network: String,
        addrs: Vec<String>,
        keep: Vec<CniAttachment>,
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
    /// Every container on this host with its addresses (`weavectl ps`),
    /// from the agent's copy of the map: answered with the coordinator down.
    Containers,
}

/// One container on this host, as `weavectl ps` lists it (Weave Net's
/// `weave ps`): what this node holds under one IPAM key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalContainer {
    /// The IPAM key: its `--name`, `netns:<inode>` (attached without a
    /// name), `cni:<container id>/<ifname>`, a Docker endpoint id; and
    /// `host:<node>`, this host's own exposed addresses.
    pub container: String,
    /// Its namespace's path, where the agent has one (else empty).
    #[serde(default)]
    pub netns: String,
    /// Its addresses with their prefix length, and on which subnet.
    pub addresses: Vec<LocalAddress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalAddress {
    pub address: String,
    pub subnet: String,
    /// The MAC of its interface (weave gives each address its own:
    /// `0a:58:<ip>`); empty for the host's exposed addresses (the bridge's).
    #[serde(default)]
    pub mac: String,
    /// The DNS names on this address, fully qualified, without the last dot.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentStatus {
    pub subnet: String,
    pub vni: u32,
    pub bridge: String,
    pub mtu: u32,
    /// Why this host does not install it (it holds an underlay address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The subnet has egress: this host's address on it, its workloads'
    /// gateway, once the host is exposed there (empty before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
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
    /// Why the coordinator answers but turns this node's credential away
    /// (it does not know the node: a restored backup, another cluster), or
    /// why what answers is not the coordinator this node pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_refused: Option<String>,
    pub segments: Vec<SegmentStatus>,
    pub peers: Vec<PeerStatus>,
    /// `net.ipv4.ip_forward` on this host (egress needs it; the agent does
    /// not turn it on); None from an agent that did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<bool>,
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
    Attached(Vec<Attached>),
    /// Answer to `containers`, by container.
    Containers(Vec<LocalContainer>),
    Error(Refusal),
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

/// A human table of the peers.
pub fn format_status(s: &AgentStatus) -> String {
    let mut out = format!(
        "node {} ({}) address {} endpoint {} revision {} coordinator {}\n",
        s.name,
        s.node_id,
        s.address,
        s.endpoint,
        s.revision,
        match (&s.coordinator_refused, s.coordinator_connected) {
            (_, true) => "connected".to_string(),
            (Some(why), false) if why.contains(crate::client::PIN_MISMATCH) => {
                format!("is not the one this node joined (using the saved map): {why}")
            }
            (Some(why), false) => format!("refuses this node (using the saved map): {why}"),
            (None, false) => "unreachable (using the saved map)".to_string(),
        }
    );
    for seg in &s.segments {
        match &seg.skipped {
            Some(why) => out += &format!("segment {} vni {} NOT INSTALLED: {why}\n", seg.subnet, seg.vni),
            None => {
                out += &format!("segment {} vni {} bridge {} mtu {}", seg.subnet, seg.vni, seg.bridge, seg.mtu);
                match seg.egress.as_deref() {
                    Some("") => out += " egress (not exposed yet)",
                    Some(gw) => out += &format!(" egress via {gw}"),
                    None => {}
                }
                if seg.egress.is_some() && s.ip_forward == Some(false) {
                    out += " (held: net.ipv4.ip_forward is 0 on this host)";
                }
                out += "\n";
            }
        }
    }
    out +=
        &format!("{:<16} {:<12} {:<22} {:>10} {:>12} {:>12}\n", "PEER", "ADDRESS", "ENDPOINT", "HANDSHAKE", "TX", "RX");
    for p in &s.peers {
        let age = p.handshake_text();
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
