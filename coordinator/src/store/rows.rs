//! Rows to records, and the selectors users type ("host1" or "3", "default"
//! or "10.2.3.0/24" or "backend") to rows.
use std::net::IpAddr;

use super::db::{self, Conn, Row};
use ipnet::IpNet;
use weave_proto::{cidr::parse_subnet, v1};

use crate::error::{Error, Result};

pub(super) const NODE_COLUMNS: &str = "id, name, public_key, endpoints, address, joined_at, observed, forget_after";

pub(super) fn node(r: &Row) -> Result<v1::Node> {
    let endpoints: String = r.try_get("endpoints")?;
    Ok(v1::Node {
        id: r.try_get::<i64, _>("id")? as u64,
        name: r.try_get("name")?,
        public_key: r.try_get("public_key")?,
        endpoints: endpoints.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        address: r.try_get("address")?,
        joined_at: r.try_get("joined_at")?,
        observed_endpoint: r.try_get("observed")?,
        forget_after_seconds: r.try_get::<i64, _>("forget_after")? as u64,
    })
}

pub(super) const ALLOCATION_SELECT: &str = "SELECT a.id, a.address, a.subnet_id, s.cidr, a.node_id, \
     n.name AS node, a.container, a.created_at \
     FROM allocations a JOIN subnets s ON s.id = a.subnet_id JOIN nodes n ON n.id = a.node_id";

/// A stored address as the API shows it: with its subnet's prefix length.
pub(super) fn with_prefix(address: &str, cidr: &str) -> String {
    format!("{address}/{}", cidr.rsplit('/').next().unwrap_or("32"))
}

pub(super) fn allocation(r: &Row) -> Result<v1::Allocation> {
    let cidr: String = r.try_get("cidr")?;
    let address: String = r.try_get("address")?;
    Ok(v1::Allocation {
        id: r.try_get::<i64, _>("id")? as u64,
        address: with_prefix(&address, &cidr),
        subnet_id: r.try_get::<i64, _>("subnet_id")? as u64,
        subnet: cidr,
        node_id: r.try_get::<i64, _>("node_id")? as u64,
        node: r.try_get("node")?,
        container: r.try_get("container")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) const DNS_SELECT: &str = "SELECT d.id, d.name, d.address, d.allocation_id, a.container, n.name AS node \
     FROM dns_records d LEFT JOIN allocations a ON a.id = d.allocation_id LEFT JOIN nodes n ON n.id = a.node_id";

pub(super) fn dns_record(r: &Row) -> Result<v1::DnsRecord> {
    Ok(v1::DnsRecord {
        id: r.try_get::<i64, _>("id")? as u64,
        name: r.try_get("name")?,
        address: r.try_get("address")?,
        allocation_id: r.try_get::<Option<i64>, _>("allocation_id")?.unwrap_or(0) as u64,
        container: r.try_get::<Option<String>, _>("container")?.unwrap_or_default(),
        node: r.try_get::<Option<String>, _>("node")?.unwrap_or_default(),
    })
}

pub(super) const SUBNET_COLUMNS: &str = "id, cidr, name, is_default, vni, added_by, by_member, origin_node, egress";

/// A subnet row with its parsed network.
#[derive(Debug, Clone)]
pub(super) struct SubnetRow {
    pub(super) id: i64,
    pub(super) net: IpNet,
    pub(super) record: v1::Subnet,
}

pub(super) fn subnet(r: &Row) -> Result<SubnetRow> {
    let cidr: String = r.try_get("cidr")?;
    let net: IpNet = cidr.parse().map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
    let id: i64 = r.try_get("id")?;
    Ok(SubnetRow {
        id,
        net,
        record: v1::Subnet {
            id: id as u64,
            cidr,
            name: r.try_get::<Option<String>, _>("name")?.unwrap_or_default(),
            is_default: r.try_get("is_default")?,
            vni: r.try_get::<i64, _>("vni")? as u32,
            // The node's id also after it was removed (`added_by` is cleared then).
            added_by_node: r
                .try_get::<Option<i64>, _>("added_by")?
                .or(r.try_get::<Option<i64>, _>("origin_node")?)
                .unwrap_or(0) as u64,
            by_member: r.try_get("by_member")?,
            egress: r.try_get("egress")?,
            allocated: 0,
            capacity: crate::ipam::capacity(&net).to_string(),
        },
    })
}

/// A node by name or numeric id.
pub(super) async fn resolve_node(c: &mut Conn, sel: &str) -> Result<v1::Node> {
    let sel = sel.trim();
    if sel.is_empty() {
        return Err(Error::InvalidArgument("a node is named by its name or id; none was given".into()));
    }
    let row = match sel.parse::<i64>() {
        Ok(id) => {
            db::query(sqlx::AssertSqlSafe(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1 OR name = $2")))
                .bind(id)
                .bind(sel)
                .fetch_optional(&mut *c)
                .await?
        }
        // No name is other than ASCII: PostgreSQL's lower() folds Unicode
        // (the Kelvin sign to 'k'), SQLite's does not; neither is asked.
        Err(_) if !sel.is_ascii() => None,
        // Names differing only in case are one name (join refuses the
        // second): 'H1' finds 'h1', the exact spelling first.
        Err(_) => {
            db::query(sqlx::AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE lower(name) = lower($1) ORDER BY name = $1 DESC, id LIMIT 1"
            )))
            .bind(sel)
            .fetch_optional(&mut *c)
            .await?
        }
    };
    match row {
        Some(r) => node(&r),
        None => Err(Error::NotFound(format!("no node '{sel}' (see `weavectl node ls`)"))),
    }
}

/// A subnet by CIDR, by name, or "default"/"" for the default subnet.
pub(super) async fn resolve_subnet(c: &mut Conn, sel: &str) -> Result<SubnetRow> {
    let sel = sel.trim();
    let sel = sel.strip_prefix("net:").unwrap_or(sel);
    // "default" exactly; a case variant ("Default") is a name first: a
    // subnet named so before names were one whatever their case keeps it,
    // and else the lookup below finds the default subnet, named "default".
    let row = if sel.is_empty() || sel == "default" {
        db::query(sqlx::AssertSqlSafe(format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE is_default")))
            .fetch_optional(&mut *c)
            .await?
    } else if sel.contains('/') {
        let net = parse_subnet(sel)?;
        db::query(sqlx::AssertSqlSafe(format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE cidr = $1")))
            .bind(net.to_string())
            .fetch_optional(&mut *c)
            .await?
    } else if !sel.is_ascii() {
        // No name is (see resolve_node).
        None
    } else {
        // As node names: case does not tell two apart, the exact spelling first.
        db::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBNET_COLUMNS} FROM subnets WHERE lower(name) = lower($1) ORDER BY name = $1 DESC, id LIMIT 1"
        )))
        .bind(sel)
        .fetch_optional(&mut *c)
        .await?
    };
    match row {
        Some(r) => subnet(&r),
        None if sel.is_empty() || sel.eq_ignore_ascii_case("default") => {
            Err(Error::NotFound("there is no default subnet".into()))
        }
        None => Err(Error::NotFound(format!(
            "subnet '{sel}' is not defined (add it with `weavectl subnet add`, see `weavectl subnet ls`)"
        ))),
    }
}

pub(super) fn parse_ip(s: &str) -> Result<IpAddr> {
    s.trim().parse().map_err(|_| Error::InvalidArgument(format!("'{s}' is not an IP address")))
}
