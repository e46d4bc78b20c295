//! `coordinator serve` flags, every one also readable from a `WEAVE_*`
//! variable, and their validation into [`Settings`].
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use weave_proto::cidr::parse_subnet;

use crate::{
    ipam,
    store::{ClusterSettings, Location},
};

/// The longest `--dns-domain`: a 63-character name in a subnet's scope
/// (`<name>.<19-character scope label>.<domain>.`) still fits DNS's 253.
const MAX_DOMAIN: usize = 253 - 64 - 20 - 1;

#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)] // the docs are `--help`
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address for the gRPC API (TLS).
    #[arg(long, env = "WEAVE_LISTEN", default_value = "0.0.0.0:6783")]
    pub listen: SocketAddr,
    /// host:port that agents and weavectl use to reach this coordinator; it goes
    /// into join tokens. Default: the listen address, or this host's first
    /// non-loopback IPv4 address when listening on all addresses (on `[::]`
    /// with no IPv4, its first IPv6 one that is not link-local).
    #[arg(long, env = "WEAVE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Database, TLS identity and admin credential live here.
    #[arg(long, env = "WEAVE_DATA_DIR", default_value = "/var/lib/weave")]
    pub data_dir: PathBuf,
    /// Where the cluster's truth is kept: sqlite://<path> or
    /// postgres://[user[:password]@]host[:port]/database (several
    /// coordinators may share one PostgreSQL database).
    /// [default: sqlite://<data-dir>/coordinator.db]
    #[arg(long, env = "WEAVE_STORE")]
    pub store: Option<String>,
    /// The allocation range: the default subnet and the node addresses come from it.
    #[arg(long, env = "WEAVE_RANGE", default_value = "10.32.0.0/12")]
    pub range: String,
    /// Subnet for `net:default` [default: the first /16 of --range]
    #[arg(long, env = "WEAVE_DEFAULT_SUBNET")]
    pub default_subnet: Option<String>,
    /// Block for node addresses; no subnet may overlap it [default: the last /16 of --range]
    #[arg(long, env = "WEAVE_NODE_RANGE")]
    pub node_range: Option<String>,
    /// DNS domain served by the agents.
    #[arg(long, env = "WEAVE_DNS_DOMAIN", default_value = "weave.local.")]
    pub dns_domain: String,
    /// Make a new TLS identity for a cluster whose tls/ is gone (every agent
    /// must then join again, with a new token): without it such a start is refused.
    #[arg(long, env = "WEAVE_NEW_IDENTITY", value_parser = clap::builder::BoolishValueParser::new())]
    pub new_identity: bool,
    /// MTU of every segment on every host (containers' interfaces, bridges,
    /// VXLAN), recorded at the first start [default: 1370, for 1500-byte
    /// underlays; 8870 suits 9000-byte jumbo frames everywhere]
    #[arg(long, env = "WEAVE_MTU")]
    pub mtu: Option<u32>,
    /// Lifetime of join tokens created without --ttl.
    #[arg(long, env = "WEAVE_TOKEN_TTL", default_value = "24h")]
    pub token_ttl: String,
    /// Lifetime of the join token printed at first start ("never" for none).
    #[arg(long, env = "WEAVE_FIRST_TOKEN_TTL", default_value = "1h")]
    pub first_token_ttl: String,
    /// How many hosts may join with the token printed at first start (0: unlimited).
    #[arg(long, env = "WEAVE_FIRST_TOKEN_USES", default_value_t = 1)]
    pub first_token_uses: u32,
    /// Make no join token at first start (`weavectl token create` makes
    /// them): where others read the coordinator's output (a cluster's log
    /// pipeline), a live token there could add a node.
    #[arg(long, env = "WEAVE_NO_FIRST_TOKEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_first_token: bool,
    /// The shortest `token create --forget-after` allowed (at least 10s).
    /// Under 5m, a coordinator that restarts or loses its own network can
    /// forget hosts that are alive (README: "Hosts that leave for good").
    #[arg(long, env = "WEAVE_FORGET_AFTER_FLOOR", default_value = "5m")]
    pub forget_after_floor: String,
    /// Plain-HTTP address for /metrics, /healthz and /readyz ("off" for none).
    /// Loopback by default; 0.0.0.0:6781 lets Prometheus and probes reach it.
    #[arg(long, env = "WEAVE_METRICS_LISTEN", default_value = "127.0.0.1:6781")]
    pub metrics_listen: String,
    /// Most addresses one node may hold at once, whoever allocates them (0: no limit).
    #[arg(long, env = "WEAVE_NODE_QUOTA", default_value_t = 4096)]
    pub node_quota: u32,
    /// Where a node (not the admin) may add a subnet, e.g. for `docker network
    /// create --subnet`: comma-separated CIDRs, or "none". Such a subnet must
    /// also be no larger than /16 (IPv4) or /48 (IPv6).
    #[arg(long, env = "WEAVE_NODE_SUBNETS", default_value = DEFAULT_NODE_SUBNETS)]
    pub node_subnets: String,
    /// Most subnets one node may add (0: no limit). Every subnet is a bridge
    /// and a VXLAN device on every host; the admin's are not counted.
    #[arg(long, env = "WEAVE_NODE_SUBNET_QUOTA", default_value_t = 32)]
    pub node_subnet_quota: u32,
    /// Most DNS records a node may hold for its containers' addresses (0: no
    /// limit). Every record is a map change that each agent applies and
    /// keeps; records the admin adds are not refused.
    #[arg(long, env = "WEAVE_NODE_DNS_QUOTA", default_value_t = 8192)]
    pub node_dns_quota: u32,
    /// How long a DNS name stays with the node whose container released it
    /// (a restart, a re-attach): no other node may claim it meanwhile, and an
    /// admin's `weavectl dns rm NAME` frees it at once ("0s": no hold). A
    /// container moved to another host gets its name there once it ran out.
    #[arg(long, env = "WEAVE_DNS_NAME_HOLD", default_value = "60s")]
    pub dns_name_hold: String,
    /// How long an address a container released stays out of other hands
    /// (a restart, a re-attach; peers' neighbour entries and connections
    /// for it to run out): automatic allocation gives it to no other
    /// container (the same container on the same node gets it back), and no
    /// other node may ask for it by name; an admin may ("0s": no hold; at
    /// most 24h). A node's holds count towards its --node-quota.
    #[arg(long, env = "WEAVE_ADDRESS_HOLD", default_value = "60s")]
    pub address_hold: String,
    /// Longest an RPC waits for its answer before it answers DEADLINE_EXCEEDED
    /// (e.g. 30s; "never": no bound): a database that stops answering
    /// without closing its connections would otherwise hold calls for as long
    /// as TCP takes to give up.
    #[arg(long, env = "WEAVE_RPC_DEADLINE", default_value = "30s")]
    pub rpc_deadline: String,
    /// Calls a second one node may make, after a burst of 4 s worth (0: no
    /// limit); one answering with the whole map counts 10. Over it a call
    /// waits its turn up to 5 s, else RESOURCE_EXHAUSTED. The admin is not paced.
    #[arg(long, env = "WEAVE_NODE_RATE", default_value_t = 50)]
    pub node_rate: u32,
    /// Connections one source address may hold to the gRPC port at once (0:
    /// no limit; one IPv6 /64 16 times that); more are closed as they
    /// arrive. An agent holds one, each running weavectl one: hosts behind
    /// one NAT address share it.
    #[arg(long, env = "WEAVE_MAX_CONNECTIONS_PER_SOURCE", default_value_t = 256)]
    pub max_connections_per_source: u32,
    /// Connections all sources together may hold (0: the open-file limit
    /// less 512, which is raised to its hard maximum at start; never more).
    /// When all are held, the oldest connection of the source holding the
    /// most is closed for a newcomer from a source that holds fewer.
    #[arg(long, env = "WEAVE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: u32,
    /// Connections all sources together may hold before a call on them
    /// proved a credential or join token (0: as many as --max-connections).
    /// Past it, the oldest such connection of the source holding the most is
    /// closed for a newcomer: what anyone who reaches the port may make the
    /// coordinator hold.
    #[arg(long, env = "WEAVE_MAX_UNAUTHENTICATED_CONNECTIONS", default_value_t = 64)]
    pub max_unauthenticated_connections: u32,
    /// How long a connection may stay open before a call on it proves a
    /// credential or a join token (a call still waiting for its answer
    /// holds it open); then it is closed, and with every slot held such
    /// connections make room first.
    #[arg(long, env = "WEAVE_AUTHENTICATE_WITHIN", default_value = "10s")]
    pub authenticate_within: String,
}

/// The private ranges: RFC 1918 and IPv6 unique local addresses.
pub const DEFAULT_NODE_SUBNETS: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

/// Checked settings for one coordinator process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub store: Location,
    pub cluster: ClusterSettings,
    /// `--new-identity`.
    pub new_identity: bool,
    pub token_ttl: Option<Duration>,
    pub first_token_ttl: Option<Duration>,
    pub first_token_uses: u32,
    /// `--no-first-token`.
    pub no_first_token: bool,
    /// The shortest `forget_after` a token may give its nodes (seconds).
    pub forget_after_floor: u64,
    /// Where /metrics, /healthz and /readyz are served (None: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// Most addresses one node may hold (None: no limit).
    pub node_quota: Option<u32>,
    /// Most subnets one node may add (None: no limit).
    pub node_subnet_quota: Option<u32>,
    /// Most DNS records one node may hold (None: no limit).
    pub node_dns_quota: Option<u32>,
    /// How long a released DNS name stays its node's (None: not at all).
    pub dns_name_hold: Option<Duration>,
    /// How long a released address stays its container's (None: not at all).
    pub address_hold: Option<Duration>,
    /// Longest an RPC waits for its answer (None: no bound).
    pub rpc_deadline: Option<Duration>,
    /// Calls a second one node may make (None: no limit).
    pub node_rate: Option<u32>,
    /// Connections one source may hold to the gRPC port (None: no limit).
    pub max_connections_per_source: Option<u32>,
    /// Connections all sources may hold together (None: the open-file limit less 512).
    pub max_connections: Option<u32>,
    /// Of those, connections that proved nothing yet (None: no other limit).
    pub max_unauthenticated_connections: Option<u32>,
    /// How long a connection may stay open without proving a credential.
    pub authenticate_within: Duration,
    /// Where a node may add subnets (empty: nowhere).
    pub node_subnets: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn flag(name: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("--{name}: {e}"))
}

/// The longest `--authenticate-within`: a connection that proves nothing
/// holds one of the unproven slots that long.
const MAX_AUTHENTICATE_WITHIN: Duration = Duration::from_secs(3600);

impl ServeArgs {
    /// Defaults as `coordinator serve` has them, with another data dir and listen address.
    pub fn for_data_dir(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            listen,
            advertise: None,
            data_dir,
            store: None,
            range: "10.32.0.0/12".into(),
            default_subnet: None,
            node_range: None,
            dns_domain: "weave.local.".into(),
            mtu: None,
            new_identity: false,
            token_ttl: "24h".into(),
            first_token_ttl: "1h".into(),
            first_token_uses: 1,
            no_first_token: false,
            forget_after_floor: "5m".into(),
            // Tests start many coordinators in one process: no fixed port.
            metrics_listen: "off".into(),
            node_quota: 4096,
            node_subnet_quota: 32,
            node_dns_quota: 8192,
            rpc_deadline: "30s".into(),
            dns_name_hold: "60s".into(),
            address_hold: "60s".into(),
            node_rate: 50,
            max_connections_per_source: 256,
            max_connections: 0,
            max_unauthenticated_connections: 64,
            authenticate_within: "10s".into(),
            node_subnets: DEFAULT_NODE_SUBNETS.into(),
        }
    }

    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let range = parse_subnet(&self.range).map_err(|e| flag("range", e))?;
        // Containers and nodes get IPv4 addresses only (the routed path, the
        // agents' interfaces); an IPv6 range started a coordinator no host
        // could join. IPv6 subnets may still be added for address management.
        if let IpNet::V6(_) = range {
            return Err(flag(
                "range",
                format!("{range} is IPv6: weave's overlay addresses are IPv4 (like 10.32.0.0/12)"),
            ));
        }
        // The default subnet and the node block take a quarter each at the
        // least, and each must hold an address: a smaller range left a /31 or
        // /32 default subnet.
        if range.prefix_len() > 28 && (self.default_subnet.is_none() || self.node_range.is_none()) {
            return Err(flag(
                "range",
                format!(
                    "{range} is too small: the default subnet and the node block need a /30 each (a /28 at least, \
                     or both given: --default-subnet and --node-range)"
                ),
            ));
        }
        let (default_default, default_nodes) = ipam::default_layout(&range);
        let parse = |name: &str, v: &Option<String>, d: IpNet| match v {
            Some(s) => parse_subnet(s).map_err(|e| flag(name, e)),
            None => Ok(d),
        };
        let default_subnet = parse("default-subnet", &self.default_subnet, default_default)?;
        let node_range = parse("node-range", &self.node_range, default_nodes)?;
        for (name, net) in [("range", range), ("default-subnet", default_subnet), ("node-range", node_range)] {
            weave_proto::cidr::check_usable(&net).map_err(|e| flag(name, e))?;
        }
        for (name, net) in [("default-subnet", default_subnet), ("node-range", node_range)] {
            if !range.contains(&net) {
                return Err(flag(name, format!("{net} is not inside --range {range}")));
            }
        }
        if ipam::overlaps(&default_subnet, &node_range) {
            return Err(ConfigError(format!(
                "--default-subnet {default_subnet} overlaps --node-range {node_range}; they must be disjoint"
            )));
        }
        let domain = self.dns_domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty()
            || !domain.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(flag("dns-domain", format!("'{}' is not a domain name", self.dns_domain)));
        }
        // Fixed at the first start, so checked before it: a label DNS cannot
        // encode (over 63), or a domain leaving no room for a name (a 63-
        // character label and a scope label, `db.10-2-3-0-24.<domain>`, in
        // 253) was recorded, and every name was then refused as "too long"
        // (found by a review, 2026-12-07).
        if let Some(long) = domain.split('.').find(|l| l.len() > 63 || l.starts_with('-') || l.ends_with('-')) {
            return Err(flag(
                "dns-domain",
                format!("'{long}' is not a DNS label (1-63 characters, no '-' at either end)"),
            ));
        }
        if domain.len() > MAX_DOMAIN {
            return Err(flag(
                "dns-domain",
                format!(
                    "'{domain}' has {} characters: at most {MAX_DOMAIN}, to leave names room in DNS's 253",
                    domain.len()
                ),
            ));
        }
        // IPv6's minimum (1280) below, the TUN's largest (65535) less the
        // VXLAN and WireGuard headers above.
        if let Some(mtu) = self.mtu
            && !(1280..=65405).contains(&mtu)
        {
            return Err(flag("mtu", format!("{mtu} is not between 1280 (IPv6's minimum) and 65405")));
        }
        // One host:port or several separated by commas, kept without spaces:
        // the list goes into every token and credential, which allow none.
        let advertise = match self.advertise.as_deref() {
            None => None,
            Some(list) => {
                let addrs = weave_proto::client::addresses(list);
                if let Some(bad) = addrs.iter().find(|a| !a.contains(':') || a.contains(char::is_whitespace)) {
                    return Err(flag("advertise", format!("'{bad}' should be host:port")));
                }
                if addrs.is_empty() {
                    return Err(flag("advertise", format!("'{list}' should be host:port")));
                }
                // Tokens carry these to every joining host: one no host can
                // dial made every token useless.
                for a in &addrs {
                    let (host, port) = a.rsplit_once(':').unwrap_or((a, ""));
                    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || port.starts_with('+') {
                        return Err(flag("advertise", format!("'{a}': the port must be 1 to 65535")));
                    }
                    // `fd00::1:6783` reads as host `fd00::1` but no
                    // client parses it back (the Kubernetes manifest once
                    // built one from an IPv6 Service address).
                    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
                        return Err(flag(
                            "advertise",
                            format!("'{a}': write an IPv6 address in brackets, as [{host}]:{port}"),
                        ));
                    }
                    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
                    if ip.is_ok_and(|ip| ip.is_unspecified()) {
                        return Err(flag(
                            "advertise",
                            format!(
                                "'{a}' is where a server listens, not an address hosts can dial: give one they can"
                            ),
                        ));
                    }
                }
                Some(addrs.join(","))
            }
        };
        let token_ttl = weave_proto::duration::parse(&self.token_ttl).map_err(|e| flag("token-ttl", e))?;
        let first_token_ttl =
            weave_proto::duration::parse(&self.first_token_ttl).map_err(|e| flag("first-token-ttl", e))?;
        for (name, ttl) in [("token-ttl", token_ttl), ("first-token-ttl", first_token_ttl)] {
            if let Some(e) = ttl.and_then(|t| crate::api::tokens::ttl_too_long(t.as_secs())) {
                return Err(flag(name, e));
            }
        }
        let forget_after_floor = match weave_proto::duration::parse(&self.forget_after_floor) {
            Ok(Some(d)) if d.as_secs() >= crate::api::tokens::MIN_FORGET_AFTER => d.as_secs(),
            Ok(_) => {
                return Err(flag(
                    "forget-after-floor",
                    format!(
                        "'{}': a duration of at least {}",
                        self.forget_after_floor,
                        weave_proto::duration::format(crate::api::tokens::MIN_FORGET_AFTER)
                    ),
                ));
            }
            Err(e) => return Err(flag("forget-after-floor", e)),
        };
        let rpc_deadline = weave_proto::duration::parse(&self.rpc_deadline).map_err(|e| flag("rpc-deadline", e))?;
        // A paced call may wait up to MAX_WAIT for its turn: the deadline must leave it that.
        if rpc_deadline.is_some_and(|d| d <= crate::api::pace::MAX_WAIT) {
            return Err(flag(
                "rpc-deadline",
                format!(
                    "'{}' is too short: more than {}s, the longest a paced call waits",
                    self.rpc_deadline,
                    crate::api::pace::MAX_WAIT.as_secs()
                ),
            ));
        }
        // A whole-map read (a watch) costs MAP_READ; the burst plus the
        // longest wait must hold it, or agents could never watch.
        if self.node_rate == 1 {
            return Err(flag(
                "node-rate",
                "1 is too low: a whole-map read (an agent's watch) costs 10; use 2 or more, or 0 for no limit",
            ));
        }
        // Its own words for every refusal: the parser's offer 'never' is
        // refused here too (found by a review, 2026-12-06).
        let authenticate_within = weave_proto::duration::parse(&self.authenticate_within)
            .ok()
            .flatten()
            .filter(|d| !d.is_zero() && *d <= MAX_AUTHENTICATE_WITHIN)
            .ok_or_else(|| {
                flag(
                    "authenticate-within",
                    format!(
                        "'{}' is not a time from 1s to 1h, like 10s or 1m (a connection that proves nothing is \
                         closed then, and holds a connection slot until then; there is no 'never')",
                        self.authenticate_within
                    ),
                )
            })?;
        // At most 24h: what is held is no one else's meanwhile (and a
        // --dns-name-hold as long as it liked wrapped past the end of the
        // store's seconds and held nothing; found by a review, 2026-12-08).
        let hold = |name: &str, value: &str, held: &str| match value.trim() {
            "0" | "0s" | "off" => Ok(None),
            hold => match weave_proto::duration::parse(hold).map_err(|e| flag(name, e))? {
                None => Err(flag(name, "must be a time (like 60s), or 0s for no hold")),
                Some(d) if d > Duration::from_secs(86_400) => {
                    Err(flag(name, format!("must be at most 24h (a held {held} meanwhile)")))
                }
                Some(d) => Ok(Some(d)),
            },
        };
        let dns_name_hold = hold("dns-name-hold", &self.dns_name_hold, "name is no other node's")?;
        let address_hold = hold("address-hold", &self.address_hold, "address is no one else's")?;
        let store = match &self.store {
            Some(s) => s.parse::<Location>().map_err(|e| flag("store", e))?,
            None => Location::Sqlite(self.data_dir.join("coordinator.db")),
        };
        let node_subnets = match self.node_subnets.trim() {
            "none" | "" => Vec::new(),
            list => list.split(',').map(parse_subnet).collect::<Result<_, _>>().map_err(|e| flag("node-subnets", e))?,
        };
        Ok(Settings {
            node_subnets,
            listen: self.listen,
            advertise,
            data_dir: self.data_dir.clone(),
            store,
            cluster: ClusterSettings {
                range,
                node_range,
                default_subnet,
                dns_domain: format!("{domain}."),
                segment_mtu: self.mtu,
            },
            new_identity: self.new_identity,
            token_ttl,
            first_token_ttl,
            first_token_uses: self.first_token_uses,
            no_first_token: self.no_first_token,
            forget_after_floor,
            node_quota: Some(self.node_quota).filter(|q| *q > 0),
            node_subnet_quota: Some(self.node_subnet_quota).filter(|q| *q > 0),
            node_dns_quota: Some(self.node_dns_quota).filter(|q| *q > 0),
            rpc_deadline,
            dns_name_hold,
            address_hold,
            node_rate: Some(self.node_rate).filter(|r| *r > 0),
            max_connections_per_source: Some(self.max_connections_per_source).filter(|n| *n > 0),
            max_connections: Some(self.max_connections).filter(|n| *n > 0),
            max_unauthenticated_connections: Some(self.max_unauthenticated_connections).filter(|n| *n > 0),
            authenticate_within,
            metrics_listen: match self.metrics_listen.trim() {
                "off" | "none" | "" => None,
                a => Some(a.parse().map_err(|e| flag("metrics-listen", format!("'{a}': {e} (ip:port or off)")))?),
            },
        })
    }
}

#[cfg(test)]
mod tests;
