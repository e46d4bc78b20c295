//! The command line: one clap-derived tree; every global flag also reads a
//! `WEAVE_*` variable. Its doc comments are `--help` text, where `<CIDR>`
//! and `[ADDR...]` are words, not HTML or links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  anything else (an internal error in the coordinator, an unexpected reply)
  2  bad usage or a value refused before or by the coordinator (CIDR, duration, IP, name;
     a credential file that is missing or holds no credential)
  3  cannot reach the coordinator, or its identity does not match the credential's pin;
     the connection broke before it answered (a change may or may not have been made);
     cannot reach this host's agent (attach, detach, expose, hide, status peers)
  4  not found (node, subnet, token, DNS record)
  5  already exists or conflicts with the current state (overlap, default subnet, in use)
  6  permission denied or authentication failed (a credential file this user may not read,
     or a credential the coordinator does not recognise)
  7  resource exhausted (no free address)

Credential: --admin (WEAVE_ADMIN), else --admin-file (WEAVE_ADMIN_FILE), else
<data-dir>/admin.credential. --coordinator overrides the address inside it.";

#[derive(Debug, Parser)]
#[command(name = "weavectl", version, about = "Manage a weave cluster through its coordinator", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    /// The admin credential string (wva1.…) printed by the coordinator.
    #[arg(long, global = true, env = "WEAVE_ADMIN", hide_env_values = true, value_name = "WVA1")]
    pub(crate) admin: Option<String>,
    /// A file holding the admin credential.
    #[arg(long, global = true, env = "WEAVE_ADMIN_FILE", value_name = "PATH")]
    pub(crate) admin_file: Option<PathBuf>,
    /// The coordinator's data dir; its admin.credential is used when neither of the above is given.
    #[arg(long, global = true, env = "WEAVE_DATA_DIR", default_value = "/var/lib/weave", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The local agent's data dir: without an admin credential, `status`
    /// reads the cluster with this host's node credential (read only).
    #[arg(
        long,
        global = true,
        env = "WEAVE_AGENT_DATA_DIR",
        default_value = "/var/lib/weave/agent",
        value_name = "DIR"
    )]
    pub(crate) agent_data_dir: PathBuf,
    /// host:port of the coordinator, instead of the address inside the credential.
    #[arg(long, global = true, env = "WEAVE_COORDINATOR", value_name = "HOST:PORT")]
    pub(crate) coordinator: Option<String>,
    /// The local agent's socket (attach, detach, expose, hide, status peers).
    #[arg(
        long,
        global = true,
        env = "WEAVE_AGENT_SOCKET",
        default_value = "/run/weave/agent.sock",
        value_name = "PATH"
    )]
    pub(crate) socket: PathBuf,
    /// Print JSON instead of tables (for scripts); WEAVE_JSON takes 1/0,
    /// true/false, yes/no, on/off.
    #[arg(long, global = true, env = "WEAVE_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Join tokens: create one per host (or batch), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Hosts that joined the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Subnets (L2 segments) that containers get addresses from.
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// Addresses held by containers.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// Names served under the cluster DNS domain.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// The admin credential itself.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Host actions through the local agent (attach, detach, expose, hide).
    #[command(flatten)]
    Local(LocalCommand),
    /// The cluster summary, or one of its tables (`peers` asks the local agent).
    Status {
        #[arg(value_enum, default_value_t = StatusView::Cluster)]
        view: StatusView,
    },
    /// Prints a shell completion script: `weavectl completion bash > /etc/bash_completion.d/weavectl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusView {
    Cluster,
    Nodes,
    Subnets,
    Ipam,
    Dns,
    Peers,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LocalCommand {
    /// Attach a running container: `attach [ADDR...] <container>`; prints its addresses.
    ///
    /// ADDR: net:default, net:<CIDR>, net:<subnet name>, ip:<IP>/<len> or <IP>/<len> (none = net:default).
    /// Container: a netns path (/run/netns/x, /proc/<pid>/ns/net), a pid, or a name given with --name.
    Attach {
        #[arg(required = true, value_name = "ADDR... CONTAINER")]
        args: Vec<String>,
        /// Register this name for the container (and <name>.weave.local).
        #[arg(long)]
        name: Option<String>,
        /// No 224.0.0.0/4 route through ethwe.
        #[arg(long)]
        no_multicast_route: bool,
    },
    /// Detach: `detach [ADDR...] <container>`: from the subnets net:<CIDR> (or net:<name>) names,
    /// and at the addresses ip:<IP>/<len> names (from all if none); prints what was released.
    Detach {
        #[arg(required = true, value_name = "ADDR... CONTAINER")]
        args: Vec<String>,
    },
    /// Give this host an address on the subnets (net:default if none); prints it.
    Expose { addrs: Vec<String> },
    /// Remove this host's address from the subnets net:<CIDR> (or net:<name>) names, or the
    /// address ip:<IP>/<len> names (all if none).
    Hide { addrs: Vec<String> },
    /// This host's containers: one line per address, with its MAC, DNS names and namespace
    /// (Weave Net's `weave ps`). From the local agent: answered with the coordinator down.
    Ps,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a join token; prints it alone on the first line.
    Create {
        /// Lifetime, like 30m, 24h, 7d, or never [default: the coordinator's, 24h]
        // Hyphen values reach the duration check, which says what is wrong
        // with `-1s` (clap said "unexpected argument '-1'").
        #[arg(long, allow_hyphen_values = true)]
        ttl: Option<String>,
        /// How many hosts may join with it: a number, or "unlimited" (any
        /// number of hosts until it expires: whoever holds it can add nodes)
        #[arg(long, value_parser = parse_uses, default_value = "1")]
        uses: Uses,
        /// A note for `token ls`.
        #[arg(long)]
        description: Option<String>,
        /// Nodes that join with it are removed by the coordinator, with
        /// their addresses and DNS records, once their agent has been out of
        /// touch this long (like 1h; at least 5m, or the coordinator's
        /// --forget-after-floor): for hosts that go away without a `node rm`
        /// (autoscaling). [default: never]
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        forget_after: Option<String>,
    },
    /// List join tokens (never their secrets).
    #[command(alias = "list")]
    Ls,
    /// Revoke a join token; hosts that already joined stay.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Replace the admin credential; the current one stops working at once.
    ///
    /// The new one is written where this credential was read from when that
    /// was a file (--admin-file, <data-dir>/admin.credential), else printed.
    /// The coordinator also writes it to its own data dir.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls,
    /// Remove a node, releasing its addresses and DNS records.
    #[command(alias = "remove")]
    Rm {
        /// Node name or id.
        node: String,
    },
}

/// A switch's two positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubnetCommand {
    /// Add a subnet, like `weavectl subnet add 10.2.3.0/24`.
    Add {
        cidr: String,
        /// A label to refer to it by.
        #[arg(long)]
        name: Option<String>,
        /// Its workloads leave the overlay through their own host (routed
        /// and masqueraded; a default route through the host, which is
        /// exposed on it at the first attach).
        #[arg(long)]
        egress: bool,
    },
    /// Change a subnet: `weavectl subnet set default --egress on`.
    Set {
        /// CIDR or name.
        subnet: String,
        /// Whether its workloads leave the overlay through their own host
        /// (containers attached before keep the routes they have).
        #[arg(long, value_enum)]
        egress: OnOff,
    },
    /// List subnets with their usage.
    #[command(alias = "list")]
    Ls,
    /// Remove a subnet (refused while containers hold addresses in it, unless --force).
    #[command(alias = "remove")]
    Rm {
        /// CIDR or name.
        subnet: String,
        /// Release the addresses held in it (and their DNS records).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IpamCommand {
    /// List allocations, optionally filtered.
    #[command(alias = "list")]
    Ls {
        /// Node name or id.
        #[arg(long)]
        node: Option<String>,
        /// Subnet CIDR or name.
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        container: Option<String>,
    },
    /// Release a container's addresses (and its DNS records) in the
    /// coordinator only: for a container gone with its host, or left half
    /// attached by an agent that died mid-attach. A container still attached
    /// is detached with `weavectl detach` on its host instead.
    Release {
        /// The container id the allocation was made for (`ipam ls` CONTAINER).
        container: String,
        /// Node name or id that holds it.
        #[arg(long)]
        node: String,
        /// Only its address in this subnet (CIDR or name) [default: every one].
        #[arg(long)]
        subnet: Option<String>,
    },
    /// List addresses released lately and kept for the container that had
    /// them (coordinator --address-hold).
    Holds {
        /// Node name or id: the node whose container released it.
        #[arg(long)]
        node: Option<String>,
        /// Subnet CIDR or name.
        #[arg(long)]
        subnet: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DnsCommand {
    /// Add an external record: `dns add db 10.2.3.9`.
    Add { name: String, ip: String },
    /// Remove a name's records, or only the one with this address.
    #[command(alias = "remove")]
    Rm { name: String, ip: Option<String> },
    /// Print a name's addresses, one per line.
    Lookup { name: String },
    /// List every record.
    #[command(alias = "list")]
    Ls,
    /// Open a name to every node's containers (round robin across hosts);
    /// without a name, list the shared names.
    Share { name: Option<String> },
    /// Close a shared name: it is its first node's again (the other nodes'
    /// containers' records of it go).
    Unshare { name: String },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

/// `token create --uses`: how many hosts may join with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uses {
    Limited(u32),
    Unlimited,
}

fn parse_uses(s: &str) -> Result<Uses, String> {
    match s {
        "unlimited" => Ok(Uses::Unlimited),
        n => match n.parse::<u32>() {
            Ok(0) | Err(_) => Err(format!("'{n}' is not a number of hosts (1 or more) or 'unlimited'")),
            Ok(n) => Ok(Uses::Limited(n)),
        },
    }
}
