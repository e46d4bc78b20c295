//! The pure half of the `weave-cni` plugin (CNI spec 1.0): the network
//! configuration it reads from stdin, the result and error JSON it prints.
//! The binary (src/bin/weave-cni.rs) does the I/O: env vars, the agent's
//! local socket (the namespace goes to the agent as an open descriptor),
//! the namespace check.
use serde::Deserialize;
use serde_json::{Value, json};
use weave_proto::local_api::{ErrorKind, Refusal};

pub const CNI_VERSION: &str = "1.0.0";
pub const DOMAIN: &str = "weave.local";
pub const NAMESERVER: &str = "127.0.0.11";

/// Error codes of the spec (section "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const BAD_ENV: u32 = 4;
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
        let conf: Self = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(code::BAD_CONFIG, "invalid network configuration", e.to_string()))?;
        if conf.name.is_empty() || conf.kind.is_empty() {
            return Err(CniError::new(code::BAD_CONFIG, "invalid network configuration", "name and type are required"));
        }
        if conf.cni_version != CNI_VERSION {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("config has {}, this plugin supports {CNI_VERSION}", conf.cni_version),
            ));
        }
        Ok(conf)
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

    /// Addresses of the previous result (for CHECK), as `ip/len`.
    pub fn prev_addresses(&self) -> Vec<String> {
        let Some(prev) = &self.prev_result else { return Vec::new() };
        prev["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str().map(str::to_string)).collect()
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
/// parses it and refuses a result without one), its addresses, routes, DNS.
pub fn add_result(netns: &str, interface: &str, mac: &str, addresses: &[String], multicast: bool) -> Value {
    let ips: Vec<Value> = addresses.iter().map(|a| json!({"address": a, "interface": 0})).collect();
    let mut routes = Vec::new();
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
    json!({"cniVersion": CNI_VERSION, "supportedVersions": [CNI_VERSION]})
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
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::BAD_CONFIG);
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
        let old = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"w","type":"weave-cni"}"#).unwrap_err();
        assert_eq!(old.code, code::INCOMPATIBLE_VERSION);
        let with_prev = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","prevResult":{"ips":[{"address":"10.32.0.5/16"}]}}"#,
        )
        .unwrap();
        assert_eq!(with_prev.prev_addresses(), vec!["10.32.0.5/16".to_string()]);
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
        let r = add_result("/run/netns/x", "ethwe", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], true);
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["interfaces"][0]["mac"], "02:42:0a:20:00:05");
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["ips"][0]["address"], "10.32.0.5/16");
        assert_eq!(r["routes"][0]["dst"], "224.0.0.0/4");
        assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11");
        assert_eq!(version_result()["supportedVersions"][0], "1.0.0");
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
