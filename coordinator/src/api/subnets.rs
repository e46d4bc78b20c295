use tonic::{Request, Response, Status};
use weave_proto::{
    cidr::{check_usable, parse_subnet},
    v1::{
        AddSubnetRequest, ListSubnetsRequest, ListSubnetsResponse, RemoveSubnetRequest, RemoveSubnetResponse, Subnet,
        UpdateSubnetRequest, subnet_service_server::SubnetService,
    },
};

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::Shared;
use crate::{error::Error, store::Caller};

pub struct Subnets(pub Shared);

#[tonic::async_trait]
impl SubnetService for Subnets {
    #[tracing::instrument(skip_all, fields(subnet = ?request.get_ref().cidr))]
    async fn add_subnet(&self, request: Request<AddSubnetRequest>) -> Result<Response<Subnet>, Status> {
        // A node may add an unnamed subnet (an agent's Docker plugin maps
        // `docker network create --subnet` onto one); naming, renaming and
        // removing stay the admin's (but for an empty one the node added). Overlaps are refused for everyone. A
        // node pays for it as for a whole-map read: the store checks the new
        // subnet against every node's underlay addresses, inside the write
        // transaction every other write waits behind.
        let caller = self.0.map_reader(&request).await?;
        let r = request.get_ref();
        let name = Some(r.name.trim()).filter(|n| !n.is_empty());
        // Egress is a policy (its workloads leave the overlay through every
        // exposed host): the admin's, as names are.
        if name.is_some() || r.egress {
            self.0.admin(&request).await?;
        }
        let net = parse_subnet(&r.cidr).map_err(Error::from)?;
        check_usable(&net).map_err(Error::from)?;
        // Its workloads are IPv4 alone (attach takes IPv4 subnets only): an
        // IPv6 subnet with egress was stored and shown, and never worked.
        if r.egress && net.addr().is_ipv6() {
            return Err(Error::InvalidArgument(format!("{net}: egress is for IPv4 subnets only")).into());
        }
        if let Caller::Node { name, .. } = &caller {
            node_may_add(&net, name, &self.0.node_subnets).map_err(Error::PermissionDenied)?;
        }
        if let Some(conflict) = store_conflict(&net, &self.0.store_hosts) {
            return Err(Error::FailedPrecondition(conflict).into());
        }
        // The store checks the hosts' and the coordinators' addresses inside
        // its write transaction: a join or endpoint update cannot slip in
        // between the check and the insert.
        let underlay = &self.0.underlay;
        let subnet = match &caller {
            Caller::Node { id, name: node } => self.0.store.add_node_subnet(&net, *id, node, underlay).await?,
            Caller::Admin => self.0.store.add_subnet(&net, name, underlay, r.egress).await?,
        };
        tracing::info!(subnet = %subnet.cidr, vni = subnet.vni, egress = subnet.egress, by = ?caller, "subnet added");
        Ok(Response::new(subnet))
    }

    async fn list_subnets(
        &self,
        request: Request<ListSubnetsRequest>,
    ) -> Result<Response<ListSubnetsResponse>, Status> {
        self.0.caller(&request).await?;
        Ok(Response::new(ListSubnetsResponse { subnets: self.0.store.list_subnets().await? }))
    }

    #[tracing::instrument(skip_all, fields(subnet = ?request.get_ref().subnet))]
    async fn remove_subnet(
        &self,
        request: Request<RemoveSubnetRequest>,
    ) -> Result<Response<RemoveSubnetResponse>, Status> {
        // The admin's; a node's only for an empty subnet it added itself
        // (its Docker plugin undoing a `docker network create` that failed).
        let by_node = match self.0.caller(&request).await? {
            Caller::Admin => None,
            Caller::Node { id, .. } => Some(id),
        };
        let r = request.get_ref();
        if r.subnet.trim().is_empty() {
            return Err(Error::InvalidArgument("name the subnet to remove (CIDR or name)".into()).into());
        }
        let (subnet, released) = self.0.store.remove_subnet_by(&r.subnet, r.force, by_node).await?;
        tracing::info!(subnet = %subnet.cidr, released, by_node, "subnet removed");
        Ok(Response::new(RemoveSubnetResponse { subnet: Some(subnet), released_allocations: released }))
    }

    #[tracing::instrument(skip_all, fields(subnet = ?request.get_ref().subnet))]
    async fn update_subnet(&self, request: Request<UpdateSubnetRequest>) -> Result<Response<Subnet>, Status> {
        self.0.admin(&request).await?;
        let r = request.get_ref();
        if r.subnet.trim().is_empty() {
            return Err(Error::InvalidArgument("name the subnet to change (CIDR or name)".into()).into());
        }
        let Some(egress) = r.egress else {
            return Err(Error::InvalidArgument("nothing to change: set egress".into()).into());
        };
        let subnet = self.0.store.set_subnet_egress(&r.subnet, egress).await?;
        tracing::info!(subnet = %subnet.cidr, egress, "subnet changed");
        Ok(Response::new(subnet))
    }
}

/// Largest subnets a node may add: /16 (IPv4), /48 (IPv6).
const NODE_MAX_V4: u8 = 16;
const NODE_MAX_V6: u8 = 48;

/// A node adds subnets only inside `--node-subnets` and no larger than
/// /16 or /48; the admin adds any.
fn node_may_add(net: &IpNet, node: &str, allowed: &[IpNet]) -> Result<(), String> {
    let largest = match net {
        IpNet::V4(_) => NODE_MAX_V4,
        IpNet::V6(_) => NODE_MAX_V6,
    };
    if net.prefix_len() < largest {
        return Err(format!(
            "node {node} may add subnets no larger than /{largest}; {net} needs the admin (weavectl subnet add)"
        ));
    }
    if !allowed.iter().any(|a| a.contains(net)) {
        let list = allowed.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let list = if list.is_empty() { "nowhere".into() } else { list };
        return Err(format!(
            "node {node} may add subnets only inside --node-subnets ({list}); {net} needs the admin (weavectl subnet add)"
        ));
    }
    Ok(())
}

/// The coordinator's own addresses as agents reach it: every address of the
/// advertised list (one host:port, or several separated by commas: the
/// coordinators of one cluster), host names resolved now, and the listen
/// address unless it is 0.0.0.0/::. A name that does not resolve adds
/// nothing; each agent also checks the addresses it connects to itself.
pub fn own_addresses(listen: SocketAddr, advertise: &str) -> Vec<IpAddr> {
    let (mut ips, unresolved) = weave_proto::client::resolve(advertise);
    for addr in unresolved {
        tracing::warn!("--advertise {addr} does not resolve now: subnets over its address are not refused");
    }
    if !listen.ip().is_unspecified() {
        ips.push(listen.ip().to_canonical());
    }
    ips.sort();
    ips.dedup();
    ips
}

/// Why `net` may not be a subnet because it holds an address of the
/// coordinator's database (`--store`), for every caller: the agent on the
/// coordinator's host would route the coordinator's traffic to it into the
/// overlay, and a member could cut the cluster's control plane off its
/// store with one subnet (the coordinators' own addresses and the hosts'
/// are checked by the store).
fn store_conflict(net: &IpNet, store_hosts: &[IpAddr]) -> Option<String> {
    store_hosts.iter().find(|ip| net.contains(*ip)).map(|ip| {
        format!(
            "{net} contains {ip}, the address of the coordinator's database (--store): the agent on the \
             coordinator's host would route it into the overlay and cut the coordinator off its store; choose a \
             subnet away from it"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::underlay_conflict;
    use weave_proto::v1::Node;

    fn node(name: &str, endpoints: &[&str]) -> Node {
        Node { name: name.into(), endpoints: endpoints.iter().map(|e| e.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn a_subnet_holding_an_underlay_address_is_named() {
        let nodes = [node("host1", &["198.51.100.7:6784"]), node("host2", &["192.0.2.2:6784", "[2001:db8::2]:6784"])];
        let me = own_addresses("0.0.0.0:6783".parse().unwrap(), "203.0.113.1:6783");
        assert_eq!(me, ["203.0.113.1".parse::<IpAddr>().unwrap()], "0.0.0.0 is no address");
        let check = |s: &str| underlay_conflict(&s.parse().unwrap(), &nodes, &me);
        assert_eq!(check("192.0.2.0/24").unwrap(), "the underlay address 192.0.2.2 of node host2");
        assert_eq!(check("128.0.0.0/1").unwrap(), "the underlay address 198.51.100.7 of node host1");
        assert_eq!(check("2001:db8::/64").unwrap(), "the underlay address 2001:db8::2 of node host2");
        assert_eq!(check("203.0.113.0/30").unwrap(), "the coordinator's own address 203.0.113.1");
        assert_eq!(check("10.2.3.0/24"), None);
        assert_eq!(check("192.0.3.0/24"), None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Several coordinators (one cluster): every one of them is protected.
        let list = own_addresses("0.0.0.0:6783".parse().unwrap(), "192.0.2.1:6783, 192.0.2.2:6783,[2001:db8::9]:6783");
        assert_eq!(list, [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::9")]);
        let check = |s: &str| underlay_conflict(&s.parse().unwrap(), &[], &list);
        assert_eq!(check("192.0.2.0/31").unwrap(), "the coordinator's own address 192.0.2.1");
        assert_eq!(check("192.0.2.2/32").unwrap(), "the coordinator's own address 192.0.2.2");
        // A host name is resolved (here from /etc/hosts), IPv4-mapped is plain IPv4.
        let named = own_addresses("[::ffff:198.51.100.3]:6783".parse().unwrap(), "localhost:6783");
        assert!(named.contains(&ip("127.0.0.1")) && named.contains(&ip("198.51.100.3")), "{named:?}");
    }

    #[test]
    fn a_subnet_holding_the_database_host_is_refused() {
        use crate::store::Location;
        let hosts = |url: &str| url.parse::<Location>().unwrap().network_addresses();
        let db = hosts("postgres://weave:secret@198.51.100.20:5433/weave?sslmode=verify-full");
        assert_eq!(db, ["198.51.100.20".parse::<IpAddr>().unwrap()]);
        assert_eq!(hosts("postgres://weave@[2001:db8::20]/weave"), ["2001:db8::20".parse::<IpAddr>().unwrap()]);
        assert!(hosts("postgres://weave@localhost/weave").contains(&"127.0.0.1".parse().unwrap()));
        // A Unix socket, SQLite: no address to keep.
        assert!(hosts("postgres://weave@%2Frun%2Fpostgresql/weave").is_empty());
        assert!(hosts("sqlite:///var/lib/weave/coordinator.db").is_empty());
        let check = |s: &str| store_conflict(&s.parse().unwrap(), &db);
        assert!(check("198.51.100.0/24").unwrap().starts_with(
            "198.51.100.0/24 contains 198.51.100.20, the address of the coordinator's database (--store)"
        ));
        assert_eq!(check("198.51.100.0/28"), None);
        assert_eq!(check("10.2.3.0/24"), None);
    }

    #[test]
    fn nodes_add_only_small_subnets_inside_the_allowance() {
        let allowed: Vec<IpNet> = crate::config::DEFAULT_NODE_SUBNETS.split(',').map(|s| s.parse().unwrap()).collect();
        let may = |s: &str| node_may_add(&s.parse().unwrap(), "host1", &allowed);
        assert_eq!(may("10.2.3.0/24"), Ok(()));
        assert_eq!(may("172.16.0.0/16"), Ok(()));
        assert_eq!(may("fd00:1::/64"), Ok(()));
        assert!(may("10.0.0.0/8").unwrap_err().contains("no larger than /16; 10.0.0.0/8 needs the admin"));
        assert!(may("fd00::/32").unwrap_err().contains("no larger than /48"));
        assert!(may("8.8.8.0/24").unwrap_err().contains("only inside --node-subnets (10.0.0.0/8, "));
        assert!(may("2001:db8::/64").unwrap_err().contains("only inside --node-subnets"));
        let none = node_may_add(&"10.2.3.0/24".parse().unwrap(), "host1", &[]);
        assert!(none.unwrap_err().contains("(nowhere)"));
    }
}
