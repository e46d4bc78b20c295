//! Command-line flags of the `agent` binary; every flag also reads a `WEAVE_*`
//! variable so that systemd units and containers can configure it the same way.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "weave agent: joins the coordinator and runs this host's part of the overlay"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join the cluster with a token, then keep running (restarts from the saved identity if already joined).
    Join(JoinArgs),
    /// Run from the saved identity (no token needed).
    Run(RunArgs),
    /// Show this host's peers from the running agent.
    Status(StatusArgs),
    /// Remove every interface and file the agent created on this host.
    Reset(ResetArgs),
    /// Get an address for a workload from the running agent; prints `address bridge mtu`.
    Allocate(AllocateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct Paths {
    /// Where the key, the identity and the last network map are kept.
    #[arg(long, env = "WEAVE_DATA_DIR", default_value = "/var/lib/weave/agent")]
    pub data_dir: PathBuf,
    /// The local API (root only).
    #[arg(long, env = "WEAVE_AGENT_SOCKET", default_value = "/run/weave/agent.sock")]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub paths: Paths,
    /// UDP port for WireGuard.
    #[arg(long, env = "WEAVE_LISTEN_PORT", default_value_t = 6784)]
    pub listen_port: u16,
    /// On SIGTERM, also remove bridges and VXLAN devices (default: keep them so
    /// that attached workloads survive an agent restart or upgrade).
    #[arg(long, env = "WEAVE_CLEANUP_ON_EXIT")]
    pub cleanup_on_exit: bool,
    /// ip:port of a resolver for names outside the cluster domain (repeatable;
    /// comma-separated in the env) [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", env = "WEAVE_DNS_UPSTREAM", value_delimiter = ',')]
    pub dns_upstream: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The join token printed by the coordinator or `weavectl token create`.
    #[arg(long, env = "WEAVE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This host's name in the cluster [default: the host name].
    #[arg(long, env = "WEAVE_NAME")]
    pub name: Option<String>,
    /// ip:port where peers reach this host's WireGuard [default: first non-loopback IPv4 and --listen-port].
    #[arg(long, env = "WEAVE_ENDPOINT")]
    pub endpoint: Option<SocketAddr>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[arg(long, env = "WEAVE_AGENT_SOCKET", default_value = "/run/weave/agent.sock")]
    pub socket: PathBuf,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub paths: Paths,
}

#[derive(Debug, Clone, Args)]
pub struct AllocateArgs {
    #[arg(long, env = "WEAVE_AGENT_SOCKET", default_value = "/run/weave/agent.sock")]
    pub socket: PathBuf,
    /// A name for the workload, unique on this host.
    #[arg(long)]
    pub container: String,
    /// Subnet CIDR or name.
    #[arg(long, default_value = "default")]
    pub subnet: String,
}
