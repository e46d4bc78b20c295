//! The pure half of the `weave-cni` plugin (CNI spec 1.0): the network
//! configuration it reads from stdin, the result and error JSON it prints.
//! The binary (src/bin/weave-cni.rs) does the I/O: env vars, the agent's
//! local socket (the namespace goes to the agent as an open descriptor),
//! the namespace check.
use serde::Deserialize;
use serde_json::{Value, json};
use weave_proto::local_api::{ErrorKind, Refusal};

use crate::plan::kernel::{format_mac, workload_mac};

/// The newest version of the spec this plugin speaks (its errors are in it).
pub const CNI_VERSION: &str = "1.0.0";
/// Every version whose configurations it takes, its results then in that
/// version's form (as the reference plugins do: a Multus attachment or an
/// older conflist says 0.3.1 or 0.4.0). 1.1.0 adds GC and STATUS, not here.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
pub const DOMAIN: &str = "weave.local";
pub const NAMESERVER: &str = "127.0.0.11";

/// Error codes of the spec (section "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const BAD_ENV: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const BAD_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
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
    #[serde(default)]
    pub prev_result: Option<Value>,
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
        json!({"cniVersion": CNI_VERSION, "code": self.code, "msg": self.msg, "details": self.details})
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
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("config has {}, this plugin supports {}", conf.cni_version, SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        Ok(conf)
    }

    /// Whether the configuration's version has CHECK (0.4.0 on).
    pub fn has_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }

    /// The ADD result in the configuration's version, after the previous
    /// result of a chain: its interfaces, addresses, routes and DNS first
    /// (the spec: a plugin passes the previous result on), weave's interface
    /// appended. DNS stays the previous plugin's where it named servers (the
    /// first network's resolver is the container's); else weave's.
    pub fn add_result(
        &self,
        netns: &str,
        interface: &str,
        mac: &str,
        addresses: &[String],
        multicast: bool,
        gateway: Option<&str>,
    ) -> Value {
        let ours = add_result(netns, interface, mac, addresses, multicast, gateway);
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
pub fn add_result(
    netns: &str,
    interface: &str,
    mac: &str,
    addresses: &[String],
    multicast: bool,
    gateway: Option<&str>,
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
    json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": interface, "mac": mac, "sandbox": netns}],
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
    let arg = |key: &str| {
        cni_args.split(';').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.trim()))
    };
    let pod = arg("K8S_POD_NAME").filter(|p| !p.is_empty())?;
    let name = match arg("K8S_POD_NAMESPACE").filter(|n| !n.is_empty()) {
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
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_refuses() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"weave","type":"weave-cni","subnet":"10.2.3.0/24"}"#)
            .unwrap();
        assert_eq!(c.addr(), "net:10.2.3.0/24");
        assert_eq!(c.socket(), "/run/weave/agent.sock");
        let d = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","socket":"/x.sock"}"#).unwrap();
        assert_eq!((d.addr().as_str(), d.socket()), ("net:default", "/x.sock"));
        // Not JSON is a decode failure (6); JSON of the wrong shape a bad configuration (7).
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(br#"{"cniVersion":1,"name":"w","type":"t"}"#).unwrap_err().code, code::BAD_CONFIG);
        // A subnet by name; one the agent could never read is bad configuration (7).
        let conf = |subnet: &str| {
            let text = format!(r#"{{"cniVersion":"1.0.0","name":"w","type":"weave-cni","subnet":"{subnet}"}}"#);
            let conf = NetConf::parse(text.as_bytes()).expect("parses whatever the subnet (DEL needs it)");
            conf.check_subnet().map(|()| conf)
        };
        assert_eq!(conf("backend").unwrap().addr(), "net:backend");
        assert_eq!(conf("ip:10.2.3.7/24").unwrap().addr(), "ip:10.2.3.7/24");
        for bad in ["bad name", "10.2.3.7", "10.2.3.7/24", "net:fd00::/64", "/run/netns/x"] {
            let e = conf(bad).unwrap_err();
            assert_eq!(e.code, code::BAD_CONFIG, "{bad}: {e:?}");
            assert!(e.details.starts_with("subnet: "), "{bad}: {e:?}");
        }
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","type":"weave-cni"}"#).unwrap_err().code, code::BAD_CONFIG);
        // The versions the reference plugins take, not one they do not know.
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
            let text = format!(r#"{{"cniVersion":"{v}","name":"w","type":"weave-cni"}}"#);
            let conf = NetConf::parse(text.as_bytes()).unwrap();
            assert_eq!(conf.has_check(), v != "0.3.0" && v != "0.3.1", "{v}");
        }
        for v in ["0.2.0", "1.1.0", "2.0.0", ""] {
            let text = format!(r#"{{"cniVersion":"{v}","name":"w","type":"weave-cni"}}"#);
            assert_eq!(NetConf::parse(text.as_bytes()).unwrap_err().code, code::INCOMPATIBLE_VERSION, "{v}");
        }
    }

    fn conf_with_prev(version: &str, prev: &str) -> NetConf {
        let text = format!(r#"{{"cniVersion":"{version}","name":"w","type":"weave-cni","prevResult":{prev}}}"#);
        NetConf::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_chained_add_passes_the_previous_result_on() {
        let prev = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff",
            "sandbox":"/run/netns/x"}],"ips":[{"address":"192.168.50.2/24","gateway":"192.168.50.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0"},{"dst":"224.0.0.0/4"}],"dns":{"nameservers":["192.168.50.1"]}}"#;
        let r = conf_with_prev("1.0.0", prev).add_result(
            "/run/netns/x",
            "ethwe",
            "0a:58:0a:20:00:07",
            &["10.32.0.7/16".into()],
            true,
            Some("10.32.0.1"),
        );
        let names: Vec<&str> =
            r["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["cni0", "eth0", "ethwe"]);
        assert_eq!(r["ips"][0]["address"], "192.168.50.2/24");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(
            (r["ips"][1]["address"].as_str(), r["ips"][1]["interface"].as_u64()),
            (Some("10.32.0.7/16"), Some(2))
        );
        assert_eq!(r["routes"].as_array().unwrap().len(), 2, "the multicast and default routes once: {r}");
        assert_eq!(r["dns"]["nameservers"][0], "192.168.50.1", "the first network's resolver stays");
        assert_eq!(r["cniVersion"], "1.0.0");
        assert!(r["ips"][1].get("version").is_none(), "1.0.0 has no ips[].version");
        // Without servers in the previous result, weave's; in 0.4.0 each address says its family.
        let r = conf_with_prev("0.4.0", r#"{"interfaces":[],"ips":[]}"#).add_result(
            "/run/netns/x",
            "eth0",
            "0a:58:0a:20:00:07",
            &["10.32.0.7/16".into()],
            false,
            None,
        );
        assert_eq!((r["cniVersion"].as_str(), r["ips"][0]["version"].as_str()), (Some("0.4.0"), Some("4")));
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["dns"]["nameservers"][0], NAMESERVER);
        // A previous result of the wrong shape is passed on, not a panic (after the agent attached).
        for prev in [r#"{"ips":["192.168.50.2/24", 7, null]}"#, r#"{"ips":{"a":1},"interfaces":"x"}"#, "[1]"] {
            let r = conf_with_prev("0.4.0", prev).add_result(
                "/x",
                "eth0",
                "0a:58:0a:20:00:07",
                &["10.32.0.7/16".into()],
                true,
                None,
            );
            assert!(r["ips"].as_array().unwrap().iter().any(|i| i["address"] == "10.32.0.7/16"), "{prev}: {r}");
        }
    }

    #[test]
    fn check_finds_weaves_interface_in_the_previous_result() {
        // Another plugin's interface and address first; weave's by its MAC (0a:58 and its address).
        let prev = r#"{"interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/x"},
            {"name":"ethwe","mac":"0A:58:0A:20:00:04","sandbox":"/x"}],
            "ips":[{"address":"192.168.60.2/24","interface":0},{"address":"10.32.0.4/16","interface":1}]}"#;
        let (name, mac, addresses) = conf_with_prev("1.0.0", prev).prev_weave_interface().unwrap();
        assert_eq!(
            (name.as_str(), mac.as_str(), addresses),
            ("ethwe", "0a:58:0a:20:00:04", vec!["10.32.0.4/16".to_string()])
        );
        // An address whose MAC is not weave's for it: none of weave's.
        let wrong = r#"{"interfaces":[{"name":"eth0","mac":"0a:58:0a:20:00:09"}],"ips":[{"address":"10.32.0.4/16","interface":0}]}"#;
        assert_eq!(conf_with_prev("1.0.0", wrong).prev_weave_interface(), None);
    }

    #[test]
    fn del_names_only_the_addresses_of_its_own_interface() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","prevResult":{
                "interfaces":[{"name":"eth1"},{"name":"lo0"}],
                "ips":[{"address":"10.2.3.5/24","interface":0},{"address":"192.168.9.9/24","interface":1},
                       {"address":"10.9.9.9/24"},{"address":"10.2.3.6/24","interface":7}]}}"#,
        )
        .unwrap();
        assert_eq!(c.prev_addresses_on("eth1"), vec!["10.2.3.5/24".to_string()]);
        assert!(c.prev_addresses_on("eth0").is_empty());
        let none = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni"}"#).unwrap();
        assert!(none.prev_addresses_on("eth0").is_empty());
    }

    #[test]
    fn results_have_the_spec_shape() {
        let r = add_result("/run/netns/x", "ethwe", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], true, None);
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["interfaces"][0]["mac"], "02:42:0a:20:00:05");
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["ips"][0]["address"], "10.32.0.5/16");
        assert_eq!(r["routes"][0]["dst"], "224.0.0.0/4");
        assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11");
        assert!(r["ips"][0].get("gateway").is_none(), "no gateway off an egress subnet: {r}");
        // On an egress subnet: the host as gateway, and the default route through it.
        let r = add_result("/x", "eth0", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], true, Some("10.32.0.1"));
        assert_eq!(r["ips"][0]["gateway"], "10.32.0.1");
        assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.32.0.1"}));
        assert_eq!(r["routes"][1]["dst"], "224.0.0.0/4");
        assert_eq!(version_result()["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]));
        let e = CniError::new(code::BAD_CONFIG, "m", "d").to_json();
        assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(7), Some("m")));
    }

    #[test]
    fn refusals_map_to_codes_by_kind() {
        let code_of = |kind| refusal(&Refusal::new(kind, "m")).code;
        assert_eq!(code_of(ErrorKind::UnknownContainer), code::UNKNOWN_CONTAINER);
        assert_eq!(code_of(ErrorKind::Unavailable), code::TRY_AGAIN);
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Exhausted,
            ErrorKind::Denied,
            ErrorKind::Failed,
        ] {
            assert_eq!(code_of(kind), code::REFUSED, "{kind:?}");
        }
        assert_eq!(refusal(&Refusal::failed("why")).to_json()["details"], "why");
    }

    #[test]
    fn names_from_cni_args() {
        // podman 4.3 (CNI backend)
        assert_eq!(dns_name("IgnoreUnknown=1;K8S_POD_NAME=web").as_deref(), Some("web"));
        // Kubernetes (kubelet, containerd, CRI-O)
        let k8s =
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u";
        assert_eq!(dns_name(k8s).as_deref(), Some("web-0.shop"));
        assert_eq!(dns_name(""), None);
        assert_eq!(dns_name("IgnoreUnknown=1"), None);
        assert_eq!(dns_name("K8S_POD_NAME="), None);
        assert_eq!(dns_name("K8S_POD_NAME=bad name!"), None, "not a DNS label: no name, still an address");
        assert_eq!(dns_name("K8S_POD_NAME=-x"), None);
    }
}
