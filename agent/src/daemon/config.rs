//! Command-line flags of the `agent` binary; every flag also reads a `WEAVE_*`
//! variable so that systemd units and containers can configure it the same way.
//! The doc comments are `--help` text: `[ipv6]:port` is a word, not a link.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

mod endpoint;
pub use endpoint::{parse_endpoint, with_port};

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
    /// Run from the saved identity (no token needed; `agent join --endpoint` changes pinned endpoints).
    Run(RunArgs),
    /// Show this host's peers from the running agent.
    Status(StatusArgs),
    /// Remove every interface and file the agent created on this host.
    Reset(ResetArgs),
    /// Replace this node's WireGuard key with a new one (the agent stopped; start it after):
    /// same node, address and credential; peers take the new key and refuse the old one.
    Rekey(ResetArgs),
    /// Get an address for a workload from the running agent; prints `address bridge mtu mac`
    /// (give the workload's interface that MAC: other hosts take its frames only from it).
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
    #[arg(long, env = "WEAVE_CLEANUP_ON_EXIT", value_parser = clap::builder::BoolishValueParser::new())]
    pub cleanup_on_exit: bool,
    /// ip:port of a resolver for names outside the cluster domain (repeatable;
    /// comma-separated in the env) [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", env = "WEAVE_DNS_UPSTREAM", value_delimiter = ',')]
    pub dns_upstream: Vec<SocketAddr>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz ("off" for
    /// none); 0.0.0.0:6782 lets Prometheus and kubelet probes reach it.
    #[arg(long, env = "WEAVE_METRICS_LISTEN", default_value = "127.0.0.1:6782")]
    pub metrics_listen: String,
    /// Docker plugin socket ("off" for none) [default: /run/docker/plugins/weave.sock
    /// when /run/docker/plugins exists].
    #[arg(long, env = "WEAVE_DOCKER_PLUGIN")]
    pub docker_plugin: Option<String>,
    /// Docker's API socket, read for the names of containers on weave networks.
    #[arg(long, env = "WEAVE_DOCKER_HOST", default_value = "/var/run/docker.sock")]
    pub docker_host: PathBuf,
    /// Microseconds the packet threads keep polling after a packet moved,
    /// before they sleep (may lower latency on a host with idle cores, for
    /// some CPU while traffic flows; 0: always sleep).
    #[arg(long, env = "WEAVE_SPIN_US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub spin_us: u64,
    /// Milliseconds after a packet moved during which the agent keeps a CPU
    /// wake-up latency request of 0 µs (/dev/cpu_dma_latency): idle CPUs poll
    /// in the kernel's idle loop instead of halting, so packets and the
    /// processes they wake are not delayed by waking a halted CPU (most of a
    /// ping's time on a virtual machine). Relaxed once no packet moved for
    /// that long. 0: never ask.
    #[arg(long, env = "WEAVE_CPU_LATENCY_HOLD_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub cpu_latency_hold_ms: u64,
    /// Storm control: broadcast and multicast frames a second (and a burst of
    /// a tenth of that) that one workload port may put into its segment; the rest
    /// are dropped at the port, before they are copied and encrypted to
    /// every member host. 0: no limit.
    #[arg(long, env = "WEAVE_BROADCAST_LIMIT", default_value_t = 10_000)]
    pub broadcast_limit: u32,
    /// Connections one address of a weave device (a workload, a remote
    /// workload) may hold in this host's connection tracking table at once;
    /// its new connections over that are dropped, so no container fills the
    /// table the host and its other containers share. 0: no limit [default:
    /// a sixteenth of nf_conntrack_max, at least 1,024].
    #[arg(long, env = "WEAVE_FLOW_LIMIT")]
    pub flow_limit: Option<u32>,
    /// Lookups a second one container may have the DNS server forward
    /// upstream (names outside weave.local; twice that at once); the rest are
    /// dropped and counted. 0: no limit.
    #[arg(long, env = "WEAVE_DNS_FORWARD_RATE", default_value_t = crate::daemon::dns::limits::DEFAULT_FORWARD_RATE)]
    pub dns_forward_rate: u32,
    /// The same for all containers on this host together. 0: no limit.
    #[arg(long, env = "WEAVE_DNS_FORWARD_RATE_HOST", default_value_t = crate::daemon::dns::limits::DEFAULT_HOST_FORWARD_RATE)]
    pub dns_forward_rate_host: u32,
    /// Ignore IPv6 "packet too big" for the tunnel's datagrams, which anyone
    /// on the underlay can forge: they always leave at the interface's MTU.
    /// Only for an IPv6 underlay whose every path carries that MTU (one LAN
    /// or VPC): across a narrower path, full-size datagrams are then lost.
    #[arg(long, env = "WEAVE_IGNORE_IPV6_PACKET_TOO_BIG")]
    pub ignore_ipv6_packet_too_big: bool,
    /// Packet queues: TUN queues, each with its own UDP socket on the port and
    /// its own packet threads [default: one per two CPUs, 1 to 4].
    #[arg(long, env = "WEAVE_QUEUES", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: Option<u16>,
    /// Packet threads per queue: 1 moves packets both ways (fewer wake-ups:
    /// a workload's answer leaves in the same thread's turn), 2 gives each
    /// direction its own thread.
    #[arg(long, env = "WEAVE_QUEUE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub queue_threads: u8,
    /// Seconds between keepalives to every peer while the coordinator sees
    /// this host at an address it does not advertise (behind NAT): they keep
    /// the NAT's mapping open so peers can speak first. 0: none.
    #[arg(long, env = "WEAVE_NAT_KEEPALIVE", default_value_t = 25)]
    pub nat_keepalive: u16,
    /// ChaCha20-Poly1305 for data packets: "auto" runs OpenSSL's assembly
    /// where it is built in (x86_64) and the CPU has AVX-512, ring's
    /// elsewhere; "ring" runs ring's (what boringtun uses); "openssl" runs the
    /// assembly on any x86_64 CPU (its AVX2 or SSE code without AVX-512).
    /// The bytes on the wire are the same either way.
    #[arg(long, env = "WEAVE_AEAD", value_enum, default_value_t = Aead::Auto)]
    pub aead: Aead,
}

/// `--aead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Aead {
    Auto,
    Ring,
    Openssl,
}

impl Aead {
    pub fn choice(self) -> weave_aead::Choice {
        match self {
            Aead::Auto => weave_aead::Choice::Auto,
            Aead::Ring => weave_aead::Choice::Ring,
            Aead::Openssl => weave_aead::Choice::Assembly,
        }
    }

    /// Sets what the session keys get (call before the transport exists:
    /// boringtun makes them) and logs it.
    pub fn apply(self) -> Result<(), String> {
        if self == Aead::Openssl && !weave_aead::assembly_built() {
            return Err("--aead openssl: this build has no OpenSSL assembly (x86_64 only)".into());
        }
        weave_aead::choose(self.choice());
        tracing::info!(
            aead = weave_aead::implementation(),
            avx512 = weave_aead::assembly_is_faster(),
            "ChaCha20-Poly1305 for data packets"
        );
        Ok(())
    }
}

/// Where Docker looks for legacy plugins.
pub const DOCKER_PLUGIN_DEFAULT: &str = "/run/docker/plugins/weave.sock";

impl RunArgs {
    /// The default Docker plugin socket when no `--docker-plugin` says
    /// otherwise, whether or not its directory exists yet (dockerd makes it
    /// when it starts; [`Self::docker_plugin_path`] is it only once it does).
    pub fn docker_plugin_default(&self) -> Option<PathBuf> {
        self.docker_plugin.is_none().then(|| PathBuf::from(DOCKER_PLUGIN_DEFAULT))
    }

    /// The Docker plugin socket to serve, if any.
    pub fn docker_plugin_path(&self) -> Option<PathBuf> {
        match self.docker_plugin.as_deref().map(str::trim) {
            Some("off" | "none" | "") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => {
                let p = PathBuf::from(DOCKER_PLUGIN_DEFAULT);
                p.parent().is_some_and(|d| d.is_dir()).then_some(p)
            }
        }
    }

    /// What the flags alone show to be wrong, checked before anything
    /// happens: `agent join` uses up its token and registers the node first,
    /// and the agent would come up only to stop.
    pub fn check(&self) -> Result<(), String> {
        self.metrics_addr()?;
        if self.aead == Aead::Openssl && !weave_aead::assembly_built() {
            return Err("--aead openssl: this build has no OpenSSL assembly (x86_64 only)".into());
        }
        // Missing is fine (join makes it); anything but a directory is not.
        let dir = &self.paths.data_dir;
        if dir.exists() && !dir.is_dir() {
            return Err(format!("--data-dir {}: not a directory", dir.display()));
        }
        for (flag, path) in
            [("--socket", Some(self.paths.socket.clone())), ("--docker-plugin", self.docker_plugin_path())]
        {
            if let Some(p) = path
                && let Err(e) = weave_proto::local_api::usable(&p)
            {
                return Err(format!("{flag} {}: {e}", p.display()));
            }
        }
        Ok(())
    }

    /// `--dns-upstream`, or else the nameservers of the host's /etc/resolv.conf.
    pub fn dns_upstreams(&self) -> Vec<SocketAddr> {
        if !self.dns_upstream.is_empty() {
            return self.dns_upstream.clone();
        }
        let found = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| crate::plan::dns::parse_resolv_conf(&t))
            .unwrap_or_default();
        if found.is_empty() {
            tracing::warn!("no nameserver in /etc/resolv.conf and no --dns-upstream: only cluster names will resolve");
        }
        found
    }

    /// `--metrics-listen` checked: None for "off".
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        match self.metrics_listen.trim() {
            "off" | "none" | "" => Ok(None),
            a => a.parse().map(Some).map_err(|e| format!("--metrics-listen '{a}': {e} (ip:port or off)")),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The join token printed by the coordinator or `weavectl token create`;
    /// `-` reads it from stdin. Prefer --token-file or WEAVE_TOKEN: a command
    /// line is visible to every user (`ps`). Either way the agent goes on as
    /// `agent run`, whose command line and environment hold no token.
    /// Not needed when this host has joined already.
    #[arg(long, env = "WEAVE_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long, env = "WEAVE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This host's name in the cluster [default: the host name].
    #[arg(long, env = "WEAVE_NAME")]
    pub name: Option<String>,
    /// ip:port, [ipv6]:port or an address alone (port: --listen-port) where
    /// peers reach this host's WireGuard; repeat it (or separate with commas)
    /// for one per family on a dual-stack host. Pins the endpoints [default:
    /// the host's first non-loopback IPv4 and first global IPv6 address,
    /// with --listen-port].
    #[arg(long, env = "WEAVE_ENDPOINT", value_delimiter = ',', value_parser = parse_endpoint)]
    pub endpoint: Vec<SocketAddr>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl RunArgs {
    /// The `agent run` arguments that reproduce these settings: what a
    /// joined agent re-executes itself with, leaving the token behind.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = vec!["run".into()];
        out.extend(["--data-dir".into(), self.paths.data_dir.clone().into_os_string()]);
        out.extend(["--socket".into(), self.paths.socket.clone().into_os_string()]);
        out.extend(["--listen-port".into(), self.listen_port.to_string().into()]);
        if self.cleanup_on_exit {
            out.push("--cleanup-on-exit".into());
        }
        for upstream in &self.dns_upstream {
            out.extend(["--dns-upstream".into(), upstream.to_string().into()]);
        }
        out.extend(["--metrics-listen".into(), self.metrics_listen.clone().into()]);
        if let Some(p) = &self.docker_plugin {
            out.extend(["--docker-plugin".into(), p.into()]);
        }
        out.extend(["--docker-host".into(), self.docker_host.clone().into_os_string()]);
        out.extend(["--spin-us".into(), self.spin_us.to_string().into()]);
        out.extend(["--cpu-latency-hold-ms".into(), self.cpu_latency_hold_ms.to_string().into()]);
        out.extend(["--broadcast-limit".into(), self.broadcast_limit.to_string().into()]);
        if let Some(n) = self.flow_limit {
            out.extend(["--flow-limit".into(), n.to_string().into()]);
        }
        out.extend(["--dns-forward-rate".into(), self.dns_forward_rate.to_string().into()]);
        out.extend(["--dns-forward-rate-host".into(), self.dns_forward_rate_host.to_string().into()]);
        if self.ignore_ipv6_packet_too_big {
            out.push("--ignore-ipv6-packet-too-big".into());
        }
        if let Some(q) = self.queues {
            out.extend(["--queues".into(), q.to_string().into()]);
        }
        out.extend(["--queue-threads".into(), self.queue_threads.to_string().into()]);
        out.extend(["--nat-keepalive".into(), self.nat_keepalive.to_string().into()]);
        match self.aead {
            Aead::Auto => {}
            Aead::Ring => out.extend(["--aead".into(), "ring".into()]),
            Aead::Openssl => out.extend(["--aead".into(), "openssl".into()]),
        }
        out
    }
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

impl JoinArgs {
    /// The endpoints given, an address alone with --listen-port.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoint.iter().map(|e| with_port(*e, self.run.listen_port)).collect()
    }
}

/// The join token from --token (`-`: stdin), --token-file or WEAVE_TOKEN.
pub fn read_token(args: &JoinArgs) -> Result<String, crate::error::Error> {
    match (&args.token, &args.token_file) {
        (Some(t), _) if t.trim() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| crate::error::Error::Io("read the join token from stdin".into(), e))?;
            Ok(text.trim().to_string())
        }
        (Some(t), _) => Ok(t.trim().to_string()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| crate::error::Error::Io(format!("--token-file {}", path.display()), e)),
        // No token at all is a usage error (exit 2), not a bad token.
        (None, None) => Err(crate::error::Error::Usage(
            "no join token: this host has not joined yet: pass --token-file PATH, --token - (stdin) or WEAVE_TOKEN"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No token at all is a usage error (exit 2), said so, not a bad token.
    #[test]
    fn a_join_without_a_token_is_a_usage_error() {
        let Ok(Command::Join(args)) = Cli::try_parse_from(["agent", "join", "--data-dir", "/d"]).map(|c| c.command)
        else {
            panic!("agent join parses")
        };
        let e = read_token(&args).unwrap_err();
        assert!(matches!(e, crate::error::Error::Usage(_)), "{e:?}");
        assert!(e.to_string().starts_with("no join token: this host has not joined yet"), "{e}");
    }

    /// `--endpoint` (and WEAVE_ENDPOINT): ip:port, [ipv6]:port, or an
    /// address alone with --listen-port (an IPv6 node's `$(HOST_IP)`).
    #[test]
    fn an_endpoint_given_as_an_address_alone_takes_the_listen_port() {
        let parse = |given: &[&str]| {
            let mut argv = vec!["agent", "join", "--listen-port", "7000"];
            argv.extend_from_slice(given);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Join(args)) => Ok(args.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>()),
                Ok(_) => panic!("a join"),
                Err(e) => Err(e.to_string()),
            }
        };
        let got = parse(&["--endpoint", "fd00::22", "--endpoint", "192.0.2.1,[2001:db8::1]:6784"]).unwrap();
        assert_eq!(got, ["[fd00::22]:7000", "192.0.2.1:7000", "[2001:db8::1]:6784"]);
        assert_eq!(parse(&["--endpoint", "192.0.2.1:6784"]).unwrap(), ["192.0.2.1:6784"]);
        let refused = parse(&["--endpoint", "host.example:6784"]).unwrap_err();
        assert!(refused.contains("not ip:port, [ipv6]:port or an address"), "{refused}");
    }

    #[test]
    fn run_args_survive_the_re_exec_without_the_token() {
        let cli = Cli::try_parse_from([
            "agent",
            "join",
            "--token",
            "wv1.secret",
            "--name",
            "h1",
            "--data-dir",
            "/d",
            "--socket",
            "/s",
            "--listen-port",
            "7000",
            "--cleanup-on-exit",
            "--dns-upstream",
            "192.0.2.53:53",
            "--docker-plugin",
            "/p/weave.sock",
            "--docker-host",
            "/d.sock",
            "--spin-us",
            "250",
            "--cpu-latency-hold-ms",
            "7",
            "--broadcast-limit",
            "300",
            "--flow-limit",
            "0",
            "--ignore-ipv6-packet-too-big",
            "--dns-forward-rate",
            "77",
            "--dns-forward-rate-host",
            "300",
            "--queues",
            "3",
            "--queue-threads",
            "2",
            "--aead",
            "ring",
        ])
        .unwrap();
        let Command::Join(join) = cli.command else { panic!("a join") };
        let args = join.run.to_args();
        assert!(args.iter().all(|a| !a.to_string_lossy().contains("secret")));
        let again = Cli::try_parse_from(std::iter::once("agent".into()).chain(args)).unwrap();
        let Command::Run(run) = again.command else { panic!("a run") };
        assert_eq!(run.paths.data_dir, PathBuf::from("/d"));
        assert_eq!(run.paths.socket, PathBuf::from("/s"));
        assert_eq!(run.listen_port, 7000);
        assert!(run.cleanup_on_exit);
        assert_eq!(run.spin_us, 250);
        assert_eq!(run.cpu_latency_hold_ms, 7);
        assert_eq!(run.broadcast_limit, 300);
        assert_eq!(run.flow_limit, Some(0));
        assert!(run.ignore_ipv6_packet_too_big);
        assert_eq!(run.dns_forward_rate, 77);
        assert_eq!(run.dns_forward_rate_host, 300);
        assert_eq!(run.queues, Some(3));
        assert_eq!(run.queue_threads, 2);
        assert_eq!(run.aead, Aead::Ring);
        for (flag, want) in [("auto", Aead::Auto), ("ring", Aead::Ring), ("openssl", Aead::Openssl)] {
            assert_eq!(<Aead as clap::ValueEnum>::from_str(flag, false), Ok(want));
            let mut run = join.run.clone();
            run.aead = want;
            let Command::Run(again) =
                Cli::try_parse_from(std::iter::once("agent".into()).chain(run.to_args())).unwrap().command
            else {
                panic!("a run")
            };
            assert_eq!(again.aead, want, "--aead {flag} survives the join -> run hand-over");
        }
        assert_eq!(run.dns_upstream, vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]);
        assert_eq!(run.docker_plugin_path(), Some(PathBuf::from("/p/weave.sock")));
        assert_eq!(run.docker_host, PathBuf::from("/d.sock"));
    }
}
