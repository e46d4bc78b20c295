//! Docker's legacy (v1) plugin protocol as values: the JSON requests and
//! answers of the `NetworkDriver` and `IpamDriver` endpoints the agent
//! serves (`daemon/docker/`), and the pure mapping of a Docker network onto a
//! weave subnet (pool ids, options, interface names, MACs). No I/O here.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Docker's content type for plugin answers.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// What `/Plugin.Activate` answers.
pub const IMPLEMENTS: [&str; 2] = ["NetworkDriver", "IpamDriver"];
/// The one address space the IPAM driver has: the coordinator's subnets.
pub const ADDRESS_SPACE: &str = "weave";
/// Docker names the interface it moves into the container with this prefix
/// and a number: `ethwe0`, `ethwe1`, … (all `ethwe*`, as attach's).
pub const DST_PREFIX: &str = "ethwe";
/// `docker network create --opt works.weave.multicast=false`: no
/// 224.0.0.0/4 route through the interface.
pub const OPT_MULTICAST: &str = "works.weave.multicast";
/// Where Docker puts the `--opt` values of `docker network create`.
const GENERIC: &str = "com.docker.network.generic";
const INTERNAL: &str = "com.docker.network.internal";
/// Docker's `RequestAddress` option that marks the gateway request.
const REQUEST_TYPE: &str = "RequestAddressType";
const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// IPAM key prefix of a Docker endpoint's address (`docker:<hex>`), and
/// the key of this node's gateway address on a Docker network's subnet.
pub const ENDPOINT_KEY_PREFIX: &str = "docker:";
pub const GATEWAY_KEY: &str = "docker-gateway";

/// Whether an IPAM key is one the Docker plugin made (an endpoint's or the
/// gateway's): Docker's `ReleaseAddress` names only an address, and may
/// release only these. Another key at that address (`weavectl attach`, CNI)
/// is another container's, given the address after the Docker endpoint's
/// allocation went behind Docker's back (an API `Release`, `subnet rm
/// --force`): releasing it took that container's address away.
pub fn is_docker_key(key: &str) -> bool {
    key == GATEWAY_KEY || key.strip_prefix(ENDPOINT_KEY_PREFIX).is_some_and(|rest| !rest.is_empty())
}

/// `{"Err": "..."}`: how a plugin refuses.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    #[serde(rename = "Err")]
    pub err: String,
}

pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { err: message.to_string() }).unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRef {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

impl RequestAddress {
    pub fn is_gateway(&self) -> bool {
        self.options.as_ref().and_then(|o| o.get(REQUEST_TYPE)).is_some_and(|t| t == GATEWAY_TYPE)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// Any request naming a network and (maybe) an endpoint: DeleteNetwork,
/// DeleteEndpoint, EndpointOperInfo, Leave, Join, CreateEndpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

/// A weave network as Docker created it: its subnet and options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub cidr: String,
    pub multicast: bool,
    /// `docker network create --internal`: no way out, so never on a subnet
    /// with egress (it was ignored: the containers got the egress route;
    /// found by a review, 2026-12-05).
    #[serde(default)]
    pub internal: bool,
    /// The ID of the Docker daemon (at `--docker-host`) that has shown this
    /// network: a later 404 for it from that daemon means Docker removed it
    /// (from another daemon, a `--docker-host` changed since, it means
    /// nothing; found by a review, 2026-12-05).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seen_by: String,
}

/// What `CreateNetwork` means: the subnet of its pool, and its options.
pub fn network_of(req: &CreateNetwork) -> Result<Network, String> {
    if !req.ipv6_data.is_empty() {
        return Err("weave networks are IPv4 only: leave out --ipv6".into());
    }
    let [data] = req.ipv4_data.as_slice() else {
        return Err("a weave network has exactly one IPv4 subnet (--subnet once)".into());
    };
    if data.address_space != ADDRESS_SPACE {
        return Err(format!(
            "the weave driver needs weave's IPAM (addresses unique across hosts): add --ipam-driver weave \
             (got address space '{}')",
            data.address_space
        ));
    }
    let cidr = pool_cidr(&data.pool)?;
    let mut multicast = true;
    if let Some(Value::Object(opts)) = req.options.get(GENERIC) {
        for (k, v) in opts {
            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            match k.as_str() {
                OPT_MULTICAST => {
                    multicast = match v.as_str() {
                        "true" | "1" | "yes" | "" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(format!("--opt {OPT_MULTICAST}={v}: true or false")),
                    }
                }
                k if k.starts_with("works.weave.") => {
                    return Err(format!("unknown option --opt {k} (known: {OPT_MULTICAST})"));
                }
                _ => {}
            }
        }
    }
    let internal = req.options.get(INTERNAL).is_some_and(|v| v == &Value::Bool(true) || v == "true");
    Ok(Network { cidr: cidr.to_string(), multicast, internal, seen_by: String::new() })
}

/// Docker's own option for a network's MTU (`-o com.docker.network.driver.mtu=N`,
/// Compose's `driver_opts`).
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// Refused: an MTU option other than the cluster's `mtu`. Every weave
/// segment has the cluster's MTU on every host (a frame one container sends
/// at its MTU must fit every other's), so one network cannot have its own;
/// it was ignored, and the user believed the containers had theirs.
pub fn mtu_check(req: &CreateNetwork, mtu: u32) -> Result<(), String> {
    let Some(v) = req.options.get(GENERIC).and_then(|g| g.get(OPT_MTU)) else { return Ok(()) };
    let given = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    match given.trim().parse::<u32>() {
        Ok(n) if n == mtu => Ok(()),
        _ => Err(format!(
            "-o {OPT_MTU}={given}: every weave network has the cluster's MTU, {mtu} (coordinator --mtu, the same \
             on every host): leave the option out"
        )),
    }
}

/// Refused: an `--internal` network on a subnet with egress (its containers
/// leave through their host), at create and at every Join (egress may have
/// been turned on since).
pub fn internal_check(network: &Network, egress: bool) -> Result<(), String> {
    match network.internal && egress {
        true => Err(format!(
            "--internal: weave subnet {} has egress (its containers leave through their host): turn its egress \
             off (weavectl subnet set {} --egress off) or leave out --internal",
            network.cidr, network.cidr
        )),
        false => Ok(()),
    }
}

/// A pool id is the subnet's CIDR.
pub fn pool_cidr(pool: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = pool.trim().parse().map_err(|_| format!("'{pool}' is not an IPv4 subnet (a.b.c.d/n)"))?;
    if net.trunc() != net {
        return Err(format!("'{pool}' is not a subnet: did you mean {}?", net.trunc()));
    }
    Ok(net)
}

/// The checks `RequestPool` makes before asking the coordinator.
pub fn check_pool(req: &RequestPool) -> Result<(), String> {
    if req.v6 {
        return Err("weave's IPAM has no IPv6 pools: leave out --ipv6".into());
    }
    if !req.address_space.is_empty() && req.address_space != ADDRESS_SPACE {
        return Err(format!("unknown address space '{}' (weave's is '{ADDRESS_SPACE}')", req.address_space));
    }
    if !req.sub_pool.is_empty() && req.sub_pool != req.pool {
        return Err("weave allocates from the whole subnet: --ip-range is not supported".into());
    }
    Ok(())
}

/// The address Docker asked for (`--ip`, `--gateway`); whether it is in the
/// subnet and free is the coordinator's to say.
pub fn wanted_address(address: &str) -> Result<Option<Ipv4Addr>, String> {
    let a = address.trim();
    if a.is_empty() {
        return Ok(None);
    }
    let ip: Ipv4Addr =
        a.split('/').next().unwrap_or(a).parse().map_err(|_| format!("'{address}' is not an IPv4 address"))?;
    Ok(Some(ip))
}

/// The Join answer: the veth end Docker moves in, the multicast route when
/// the network has it, and no docker_gwbridge. A gateway (this host's
/// address) only on an egress subnet: otherwise the overlay is not the
/// container's way out.
pub fn join_response(src_name: &str, multicast: bool, gateway: Option<Ipv4Addr>) -> Value {
    let routes: Vec<Value> = if multicast {
        // RouteType 1: connected (no next hop).
        vec![serde_json::json!({"Destination": "224.0.0.0/4", "RouteType": 1, "NextHop": ""})]
    } else {
        Vec::new()
    };
    let mut out = serde_json::json!({
        "InterfaceName": {"SrcName": src_name, "DstPrefix": DST_PREFIX},
        "StaticRoutes": routes,
        "DisableGatewayService": true,
    });
    if let Some(gw) = gateway {
        out["Gateway"] = gw.to_string().into();
    }
    out
}

/// The host end of an endpoint's veth (`wvd` + 10 hex of the endpoint id:
/// 13 characters, within IFNAMSIZ, never an attach veth's `wv` + 8); the
/// container end is this with `p` until Docker renames it.
pub fn host_ifname(endpoint_id: &str) -> Result<String, String> {
    let hex: String = endpoint_id.chars().take(10).collect();
    if hex.len() < 10 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("'{endpoint_id}' is not a Docker endpoint id"));
    }
    Ok(format!("wvd{}", hex.to_ascii_lowercase()))
}

/// The container name of endpoint `endpoint_id` in Docker's
/// `GET /networks/<id>` answer (`Containers: {id: {Name, EndpointID}}`).
pub fn container_name(network: &Value, endpoint_id: &str) -> Option<String> {
    container_of(network, endpoint_id).map(|(_, name)| name)
}

/// The container (its id and name) of endpoint `endpoint_id` in Docker's
/// `GET /networks/<id>` answer.
pub fn container_of(network: &Value, endpoint_id: &str) -> Option<(String, String)> {
    network.get("Containers")?.as_object()?.iter().find_map(|(id, c)| {
        let name = c.get("Name")?.as_str()?;
        (c.get("EndpointID")?.as_str()? == endpoint_id).then(|| (id.clone(), name.to_string()))
    })
}

/// The aliases of a container on network `network_id`, in Docker's `GET
/// /containers/<id>/json` answer (`--network-alias`, `docker network connect
/// --alias`, Compose's service names, and its host name, which Docker adds),
/// each once.
fn network_aliases<'c>(container: &'c Value, network_id: &str) -> Vec<&'c str> {
    let networks = container.pointer("/NetworkSettings/Networks").and_then(Value::as_object);
    let on_network = networks.into_iter().flat_map(|n| n.values()).filter(|n| n["NetworkID"] == network_id);
    let mut out: Vec<&str> = Vec::new();
    for alias in on_network.flat_map(|n| n["Aliases"].as_array().into_iter().flatten().filter_map(Value::as_str)) {
        if !alias.is_empty() && !out.iter().any(|a| a.eq_ignore_ascii_case(alias)) {
            out.push(alias);
        }
    }
    out
}

/// The names a container answers to on network `network_id` besides its
/// own, scoped to the network ([`network_aliases`]): single labels only,
/// without the container's own name and the short id Docker adds itself. A
/// dotted alias could never be asked under a scope (`api.example.com` was
/// registered as `api.example.com.<scope>`, which no lookup reaches; a
/// review, 2026-12-05): one in the domain is a name of the cluster's
/// ([`domain_names`]), any other is not weave's to answer.
pub fn aliases(container: &Value, network_id: &str) -> Vec<String> {
    let id = container.get("Id").and_then(Value::as_str).unwrap_or_default();
    let name = container.get("Name").and_then(Value::as_str).unwrap_or_default().trim_start_matches('/');
    let short_id = |a: &str| a.len() == 12 && id.starts_with(a);
    let scoped = |a: &&str| !a.contains('.') && !a.eq_ignore_ascii_case(name) && !short_id(a);
    network_aliases(container, network_id).into_iter().filter(scoped).map(str::to_string).collect()
}

/// The container's names in the cluster's `domain`, fully qualified: its
/// host name (`docker run -h web.weave.local`, or `-h web --domainname
/// weave.local`: Weave Net's proxy registered such a host name, and its
/// users name containers so) and its aliases on `network_id` that are in
/// the domain (`--network-alias cache.weave.local`). Any other host name
/// (Docker's default is the short id) is no name of the cluster's.
pub fn domain_names(container: &Value, network_id: &str, domain: &str) -> Vec<String> {
    let config = container.get("Config");
    let host = config.and_then(|c| c.get("Hostname")).and_then(Value::as_str).unwrap_or_default();
    let full = match config.and_then(|c| c.get("Domainname")).and_then(Value::as_str).unwrap_or_default() {
        "" => host.to_string(),
        d => format!("{host}.{d}"),
    };
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let hostname = Some(full).filter(|_| !host.is_empty());
    let candidates = hostname.into_iter().chain(network_aliases(container, network_id).into_iter().map(str::to_string));
    let mut out: Vec<String> = Vec::new();
    for name in candidates {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(relative) = lower.strip_suffix(&domain).and_then(|r| r.strip_suffix('.')) else { continue };
        let fqdn = format!("{relative}.{domain}.");
        if !relative.is_empty() && !out.contains(&fqdn) {
            out.push(fqdn);
        }
    }
    out
}

/// The endpoint ids of a `GET /networks/<id>` answer's containers.
pub fn endpoint_ids(network: &Value) -> Vec<String> {
    let containers = network.get("Containers").and_then(Value::as_object);
    containers.into_iter().flatten().filter_map(|(_, c)| c.get("EndpointID")?.as_str().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests;
