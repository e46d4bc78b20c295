//! The pure half of the `weave-cni` plugin (CNI spec 1.1): the network
//! configuration it reads from stdin, the result and error JSON it prints.
//! The binary (src/bin/weave-cni.rs) does the I/O: env vars, the agent's
//! local socket (the namespace goes to the agent as an open descriptor),
//! the namespace check.
use serde::Deserialize;
use serde_json::{Value, json};
use weave_proto::local_api::{ErrorKind, Refusal};

use crate::plan::kernel::{format_mac, workload_mac};

/// The newest version of the spec this plugin speaks (its errors are in it).
pub const CNI_VERSION: &str = "1.1.0";
/// Every version whose configurations it takes, its results then in that
/// version's form (as the reference plugins do: a Multus attachment or an
/// older conflist says 0.3.1 or 0.4.0). 1.1.0 adds GC and STATUS.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const DOMAIN: &str = "weave.local";
pub const NAMESERVER: &str = "127.0.0.11";

/// Error codes of the spec (section "Error").
mod env;
pub use env::check_env;

pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const BAD_ENV: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const BAD_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: ADD cannot be served (the agent has no map yet).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: and existing containers may have limited connectivity (the
    /// agent, their data plane, is not running).
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// Plugin-specific: CHECK found the container not as ADD left it.
    pub const CHECK_FAILED: u32 = 100;
    /// Plugin-specific: the agent refused the request.
    pub const REFUSED: u32 = 101;
}

/// The plugin's part of a network configuration (`type: weave-cni`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `default`, a CIDR or a subnet name [default: the default subnet].
    #[serde(default)]
    pub subnet: Option<String>,
    /// The agent's local socket [default: /run/weave/agent.sock].
    #[serde(default)]
    pub socket: Option<String>,
    /// Add the 224.0.0.0/4 route [default: true].
    #[serde(default)]
    pub multicast: Option<bool>,
    /// Serve `weave.local` (and relay the rest) at 127.0.0.11:53 inside the
    /// container, and name it in the result [default: true]. Kubernetes'
    /// conflist says false: pods resolve through cluster DNS, whose own pods
    /// must bind port 53. (It was `"dns"`, which the spec keeps for a DNS
    /// dictionary: libcni, and so podman, containerd and CRI-O, refused the
    /// whole conflist; found by a review, 2026-12-05.)
    #[serde(default)]
    pub resolver: Option<bool>,
    /// The spec's DNS dictionary, or the boolean of an older conflist
    /// (refused, naming `resolver`).
    #[serde(default)]
    dns: Option<Value>,
    /// What the runtime passes for the capabilities the plugin's entry
    /// declares (`portMappings`).
    #[serde(default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments of this network the runtime still knows (the
    /// spec's key; libcni writes the older `cni.dev/attachments` beside it).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<ValidAttachment>>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    pub fn to_json(&self) -> Value {
        self.to_json_in(None)
    }

    /// As the configuration's `cniVersion` asks (errors are alike in every
    /// version; only the version they name differs), else in this
    /// plugin's (the configuration unread, or its version unsupported).
    pub fn to_json_in(&self, version: Option<&str>) -> Value {
        let version = version.filter(|v| SUPPORTED_VERSIONS.contains(v)).unwrap_or(CNI_VERSION);
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: Self = serde_json::from_slice(stdin).map_err(|e| {
            // Not JSON at all is "failed to decode" (6); JSON of the wrong
            // shape is an invalid configuration (7).
            let code = if e.is_syntax() || e.is_eof() { code::DECODE } else { code::BAD_CONFIG };
            CniError::new(code, "invalid network configuration", e.to_string())
        })?;
        if conf.name.is_empty() || conf.kind.is_empty() {
            return Err(CniError::new(code::BAD_CONFIG, "invalid network configuration", "name and type are required"));
        }
        if let Some(Value::Bool(_)) = conf.dns {
            return Err(CniError::new(
                code::BAD_CONFIG,
                "invalid network configuration",
                "\"dns\" is the CNI spec's DNS dictionary (libcni refuses a boolean there): say \"resolver\": false",
            ));
        }
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("config has {}, this plugin supports {}", conf.cni_version, SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        Ok(conf)
    }

    /// Whether the runtime publishes ports of the container (a non-empty
    /// `runtimeConfig.portMappings`).
    pub fn publishes_ports(&self) -> bool {
        self.runtime_config.as_ref().and_then(|r| r["portMappings"].as_array()).is_some_and(|m| !m.is_empty())
    }

    /// The addresses the runtime asks for in `runtimeConfig.ips` (the CNI
    /// `ips` capability: `podman network reload` of a `--ip` container sends
    /// them there, with `MAC=` and no `IP=`), as given ("10.2.3.4" or
    /// "10.2.3.4/24").
    /// Anything but a list of strings is refused, not ignored (another
    /// address than the one asked for would be given).
    pub fn runtime_ips(&self) -> Result<Vec<String>, String> {
        let ips = match self.runtime_config.as_ref().map(|r| &r["ips"]) {
            None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
            Some(serde_json::Value::Array(ips)) => ips,
            Some(other) => return Err(format!("runtimeConfig.ips {other}: not a list of addresses")),
        };
        ips.iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("runtimeConfig.ips {v}: not an address")))
            .collect()
    }

    /// Whether the configuration's version has GC and STATUS (1.1.0 on).
    pub fn has_gc(&self) -> bool {
        !self.cni_version.starts_with("0.") && self.cni_version != "1.0.0"
    }

    /// GC's list of valid attachments, under either key; None if neither
    /// is there (GC then refuses: no list is not an empty list).
    pub fn gc_keep(&self) -> Option<&[ValidAttachment]> {
        self.valid_attachments.as_deref().or(self.attachments.as_deref())
    }

    /// Whether the container gets the multicast route (`"multicast"`, on by default).
    pub fn multicast(&self) -> bool {
        self.multicast.unwrap_or(true)
    }

    /// Whether the configuration's version has CHECK (0.4.0 on).
    pub fn has_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }

    /// The ADD result in the configuration's version, after the previous
    /// result of a chain: its interfaces, addresses, routes and DNS first
    /// (the spec: a plugin passes the previous result on), weave's interface
    /// appended. DNS stays the previous plugin's where it named servers (the
    /// first network's resolver is the container's); else weave's (none
    /// with `"resolver": false`).
    pub fn add_result(
        &self,
        netns: &str,
        interface: &str,
        mac: &str,
        addresses: &[String],
        gateway: Option<&str>,
        host: Option<(&str, &str)>,
    ) -> Value {
        let mut ours = add_result(netns, interface, mac, addresses, self.multicast(), gateway, host);
        if !self.resolver.unwrap_or(true) {
            ours["dns"] = json!({});
        }
        let mut out = match &self.prev_result {
            Some(prev @ Value::Object(_)) => {
                let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
                let mut interfaces = list(prev, "interfaces");
                let index = interfaces.len();
                interfaces.extend(list(&ours, "interfaces"));
                let mut ips = list(prev, "ips");
                ips.extend(list(&ours, "ips").into_iter().map(|mut ip| {
                    ip["interface"] = json!(index);
                    ip
                }));
                let mut routes = list(prev, "routes");
                for route in list(&ours, "routes") {
                    if !routes.iter().any(|r| r["dst"] == route["dst"]) {
                        routes.push(route);
                    }
                }
                let dns = if prev["dns"]["nameservers"].as_array().is_some_and(|n| !n.is_empty()) {
                    prev["dns"].clone()
                } else {
                    ours["dns"].clone()
                };
                let mut out = prev.clone();
                out["interfaces"] = json!(interfaces);
                out["ips"] = json!(ips);
                out["routes"] = json!(routes);
                out["dns"] = dns;
                out
            }
            _ => ours,
        };
        out["cniVersion"] = json!(self.cni_version);
        // Before 1.0.0 each address says its family.
        if self.cni_version.starts_with("0.") {
            // (Entries of the previous result that are not objects stay as they are.)
            for ip in out["ips"].as_array_mut().into_iter().flatten().filter_map(Value::as_object_mut) {
                if !ip.contains_key("version") {
                    let v6 = ip.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
                    ip.insert("version".into(), json!(if v6 { "6" } else { "4" }));
                }
            }
        }
        out
    }

    /// Weave's interface in the previous result (for CHECK): the one whose
    /// MAC is the one weave gives its address (`CNI_IFNAME`, or an `ethwe*`
    /// after another plugin's interface), as (name, MAC, its addresses).
    pub fn prev_weave_interface(&self) -> Option<(String, String, Vec<String>)> {
        let prev = self.prev_result.as_ref()?;
        let ifaces = prev["interfaces"].as_array()?;
        let mut found: Option<(String, String, Vec<String>)> = None;
        for ip in prev["ips"].as_array().into_iter().flatten() {
            let Some(address) = ip["address"].as_str() else { continue };
            let Some(iface) = ip["interface"].as_u64().and_then(|i| ifaces.get(usize::try_from(i).ok()?)) else {
                continue;
            };
            let (Some(name), Some(mac)) = (iface["name"].as_str(), iface["mac"].as_str()) else { continue };
            let Ok(net) = address.parse::<ipnet::Ipv4Net>() else { continue };
            if !mac.eq_ignore_ascii_case(&format_mac(&workload_mac(net.addr()))) {
                continue;
            }
            match &mut found {
                Some((n, _, addresses)) if n == name => addresses.push(address.to_string()),
                Some(_) => {}
                None => found = Some((name.to_string(), mac.to_ascii_lowercase(), vec![address.to_string()])),
            }
        }
        found
    }

    /// The gateway the previous result gives weave's interface `name` (an
    /// egress subnet's: the default route through the host).
    pub fn prev_weave_gateway(&self, name: &str) -> Option<std::net::Ipv4Addr> {
        let prev = self.prev_result.as_ref()?;
        let ifaces = prev["interfaces"].as_array()?;
        prev["ips"].as_array()?.iter().find_map(|ip| {
            let iface = ifaces.get(usize::try_from(ip["interface"].as_u64()?).ok()?)?;
            (iface["name"].as_str()? == name).then_some(())?;
            ip["gateway"].as_str()?.parse().ok()
        })
    }

    /// A `subnet` the agent could never read is the configuration's fault
    /// (7), not a refusal. For ADD and CHECK only: a DEL must still release
    /// what the previous result names, whatever became of the configuration
    /// (runtimes retry a failed DEL for ever).
    pub fn check_subnet(&self) -> Result<(), CniError> {
        weave_proto::local_api::addr_spec::AddrSpec::parse(&self.addr()).map(drop).map_err(|_| {
            let subnet = self.subnet.as_deref().unwrap_or_default();
            let what = format!("subnet: '{subnet}' is not \"default\", an IPv4 CIDR or a subnet's name");
            CniError::new(code::BAD_CONFIG, "invalid network configuration", what)
        })
    }

    /// The ADDR for the agent (`net:default`, `net:<CIDR>`, `net:<name>`;
    /// one already written as an ADDR as is).
    pub fn addr(&self) -> String {
        match self.subnet.as_deref() {
            None | Some("") | Some("default") => "net:default".into(),
            Some(s) if s.starts_with("net:") || s.starts_with("ip:") => s.to_string(),
            Some(s) => format!("net:{s}"),
        }
    }

    pub fn socket(&self) -> &str {
        self.socket.as_deref().unwrap_or("/run/weave/agent.sock")
    }

    /// Addresses of the previous result on the interface named `ifname` (the
    /// one this plugin made; another plugin of the chain may have added others).
    pub fn prev_addresses_on(&self, ifname: &str) -> Vec<String> {
        let Some(prev) = &self.prev_result else { return Vec::new() };
        let ifaces = prev["interfaces"].as_array();
        let named = |i: &Value| {
            let index = i["interface"].as_u64()?;
            (ifaces?.get(usize::try_from(index).ok()?)?["name"].as_str()? == ifname).then_some(())
        };
        prev["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| named(i).is_some())
            .filter_map(|i| i["address"].as_str().map(str::to_string))
            .collect()
    }
}

/// The ADD result: one interface in the sandbox (with its MAC: podman
/// parses it and refuses a result without one), its addresses, routes, DNS;
/// on an egress subnet, the default route through the host (`gateway`).
/// After it, the host side of its veth (`host`: name and MAC, no sandbox),
/// where chained plugins such as `bandwidth` look for the container
/// interface's peer; the addresses stay on interface 0.
pub fn add_result(
    netns: &str,
    interface: &str,
    mac: &str,
    addresses: &[String],
    multicast: bool,
    gateway: Option<&str>,
    host: Option<(&str, &str)>,
) -> Value {
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| match gateway {
            Some(gw) => json!({"address": a, "gateway": gw, "interface": 0}),
            None => json!({"address": a, "interface": 0}),
        })
        .collect();
    let mut routes = Vec::new();
    if let Some(gw) = gateway {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": gw}));
    }
    if multicast {
        routes.push(json!({"dst": "224.0.0.0/4"}));
    }
    let mut interfaces = vec![json!({"name": interface, "mac": mac, "sandbox": netns})];
    if let Some((name, mac)) = host {
        interfaces.push(json!({"name": name, "mac": mac}));
    }
    json!({
        "cniVersion": CNI_VERSION,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        // The agent's DNS server answers inside every attached namespace (agent/src/dns.rs).
        "dns": {"nameservers": [NAMESERVER], "domain": DOMAIN, "search": [DOMAIN]},
    })
}

pub fn version_result() -> Value {
    json!({"cniVersion": CNI_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The container's name in `weave.local`, from `CNI_ARGS` (`K=V;K=V`):
/// Kubernetes passes `K8S_POD_NAME` and `K8S_POD_NAMESPACE`, giving
/// `<pod>.<namespace>` (pods of two namespaces may share a name); podman
/// passes the container's name as `K8S_POD_NAME` alone, giving that name.
/// None when there is no name or it is not a valid DNS name (the container
/// then gets an address without a name rather than no address).
pub fn dns_name(cni_args: &str) -> Option<String> {
    let pod = cni_arg(cni_args, "K8S_POD_NAME")?;
    let name = match cni_arg(cni_args, "K8S_POD_NAMESPACE") {
        Some(ns) => format!("{pod}.{ns}"),
        None => pod.to_string(),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (name.len() <= 200 && name.split('.').all(label)).then(|| name.to_ascii_lowercase())
}

/// The address the runtime asks for in `CNI_ARGS` (`IP=`: `podman run --ip`,
/// and `podman network reload`, which gives each container its own address
/// back: refused, every container lost its network at a reload; found by a
/// review, 2026-12-05), taken on the configured subnet. A `MAC=` is taken
/// only as the one weave gives that address (`0a:58:` and the address: the
/// reload passes it back too); any other, or one without `IP=`, is refused
/// (`podman run --mac-address`): weave's MACs follow the addresses.
/// `IgnoreUnknown` does not cover these: they are known. Without `IP=`, the
/// IPv4 address of `runtime_ips` (`runtimeConfig.ips`: a reload of a `--ip`
/// container sent it there, twice, and its `MAC=` was refused; found by a
/// review, 2026-12-06); IPv6 ones are not weave's (its workloads are IPv4):
/// passed over beside an IPv4 one, refused alone. A length given with the
/// address is not checked: the result says the subnet's.
pub fn requested_address(cni_args: &str, runtime_ips: &[String]) -> Result<Option<std::net::Ipv4Addr>, String> {
    let ip = match cni_arg(cni_args, "IP") {
        None => {
            let (mut v4, mut v6): (Vec<std::net::Ipv4Addr>, Vec<&str>) = (Vec::new(), Vec::new());
            for given in runtime_ips {
                let (bare, prefix) = given.split_once('/').map_or((given.as_str(), None), |(a, p)| (a, Some(p)));
                let bad = || format!("runtimeConfig.ips {given}: not an IP address");
                let ip = bare.parse::<std::net::IpAddr>().map_err(|_| bad())?.to_canonical();
                let most = if ip.is_ipv4() { 32 } else { 128 };
                if prefix.is_some_and(|p| p.parse::<u8>().map_or(true, |p| p > most)) {
                    return Err(bad());
                }
                match ip {
                    std::net::IpAddr::V4(a) if !v4.contains(&a) => v4.push(a),
                    std::net::IpAddr::V4(_) => {}
                    std::net::IpAddr::V6(_) => v6.push(given),
                }
            }
            match v4[..] {
                // IPv6 alone: refused as `IP=` of IPv6 is, not answered
                // with an IPv4 address of weave's choosing (found by a
                // review, 2026-12-06).
                [] if !v6.is_empty() => {
                    return Err(format!(
                        "runtimeConfig.ips asks for {} alone: weave gives each workload an IPv4 address (its IPv6 \
                         one is the link-local address of its MAC)",
                        v6.join(", ")
                    ));
                }
                [] => None,
                [one] => Some(one),
                _ => return Err(format!("runtimeConfig.ips asks for {v4:?}: weave gives one address per network")),
            }
        }
        Some(v) => Some(v.parse::<std::net::Ipv4Addr>().map_err(|_| format!("CNI_ARGS IP={v}: not an IPv4 address"))?),
    };
    if let Some(mac) = cni_arg(cni_args, "MAC") {
        let given = ip.map(|ip| super::kernel::format_mac(&super::kernel::workload_mac(ip)));
        if given.as_ref().is_none_or(|g| !g.eq_ignore_ascii_case(mac)) {
            return Err(format!(
                "CNI_ARGS MAC={mac}: weave gives each address its own MAC{} (a fixed address: IP=, podman's --ip)",
                given.map(|g| format!(", {g} for {}", ip.unwrap())).unwrap_or_default()
            ));
        }
    }
    Ok(ip)
}

/// The value of `key` in `CNI_ARGS` (`K=V;K=V`), trimmed; None when absent or empty.
fn cni_arg<'a>(cni_args: &'a str, key: &str) -> Option<&'a str> {
    cni_args
        .split(';')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.trim()))
        .filter(|v| !v.is_empty())
}

/// The IPAM key of a CNI container, so that DEL can release it without its namespace.
pub fn container_key(container_id: &str) -> String {
    format!("cni:{container_id}")
}

/// Sorts an agent refusal into the spec's codes, by its kind.
pub fn refusal(refusal: &Refusal) -> CniError {
    let code = match refusal.kind {
        ErrorKind::UnknownContainer => code::UNKNOWN_CONTAINER,
        ErrorKind::Unavailable => code::TRY_AGAIN,
        ErrorKind::Invalid
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Exhausted
        | ErrorKind::Denied
        | ErrorKind::Failed => code::REFUSED,
    };
    CniError::new(code, "weave agent refused", &refusal.message)
}

#[cfg(test)]
mod tests;
