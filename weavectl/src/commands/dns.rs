//! `weavectl dns add|rm|lookup|ls|share|unshare`.
use std::{net::IpAddr, path::Path};

use serde_json::{Value, json};
use weave_proto::{
    client::Api,
    local_api::{Request, Response},
    v1::{AddRecordRequest, DnsRecord, ListRecordsRequest, LookupRequest, RemoveRecordsRequest, ShareNameRequest},
};

use super::{Output, or_dash};
use crate::{
    cli::DnsCommand,
    failure::{Doing, Exit, Failure, Outcome},
    table::Table,
};

fn ip(s: &str) -> Outcome<IpAddr> {
    // As subnets say it (it said "not an IP address", with no why).
    if weave_proto::cidr::has_leading_zero(s.trim()) {
        return Err(Failure::usage(format!("'{s}'"), weave_proto::cidr::CidrError::LeadingZero(s.into()).to_string()));
    }
    s.trim().parse().map_err(|_| Failure::usage(format!("'{s}'"), "not an IP address (like 10.2.3.9 or fd00::9)"))
}

/// Addresses are checked here; names by the coordinator, which owns the domain.
pub(super) fn check(command: DnsCommand) -> Outcome<DnsCommand> {
    match &command {
        DnsCommand::Add { ip: a, .. } | DnsCommand::Rm { ip: Some(a), .. } => {
            ip(a)?;
        }
        _ => {}
    }
    Ok(command)
}

pub(super) async fn run(api: &mut Api, out: &Output, command: DnsCommand) -> Outcome {
    match command {
        DnsCommand::Add { name, ip: address } => {
            let address = ip(&address)?.to_string();
            let r = api
                .dns
                .add_record(AddRecordRequest { name: name.clone(), address: address.clone() })
                .await
                .doing(format!("adding {name} -> {address}"))?;
            out.done(&format!("added {} -> {}", r.name, r.address), || record_json(&r));
        }
        DnsCommand::Rm { name, ip: address } => {
            let address = address.as_deref().map(ip).transpose()?.map(|a| a.to_string()).unwrap_or_default();
            let what =
                if address.is_empty() { format!("removing {name}") } else { format!("removing {name} -> {address}") };
            let r = api.dns.remove_records(RemoveRecordsRequest { name, address }).await.doing(what)?;
            let freed = if r.freed_hold { "; the name's hold is freed: any node may take it now" } else { "" };
            out.done(
                &format!("removed {} record(s){freed}", r.removed),
                || json!({ "removed": r.removed, "freed_hold": r.freed_hold }),
            );
        }
        DnsCommand::Lookup { name } => {
            let r = api.dns.lookup(LookupRequest { name: name.clone() }).await.doing(format!("looking up {name}"))?;
            if out.json {
                out.print_json(&json!({ "name": r.name, "addresses": r.addresses }));
            } else {
                for a in &r.addresses {
                    crate::out!("{a}\n");
                }
            }
        }
        DnsCommand::Ls => list(api, out).await?,
        DnsCommand::Share { name: None } => {
            let names = api.dns.list_records(ListRecordsRequest {}).await.doing("listing shared names")?.shared_names;
            let mut table = Table::new(&["NAME"]);
            for n in &names {
                table.row(vec![n.clone()]);
            }
            out.list(&table, || json!(names));
        }
        DnsCommand::Share { name: Some(name) } => share(api, out, name, true).await?,
        DnsCommand::Unshare { name } => share(api, out, name, false).await?,
    }
    Ok(())
}

async fn share(api: &mut Api, out: &Output, name: String, shared: bool) -> Outcome {
    let doing = format!("{} {name}", if shared { "sharing" } else { "unsharing" });
    let r = api.dns.share_name(ShareNameRequest { name, shared }).await.doing(doing)?;
    let text = match (r.shared, r.changed) {
        (true, true) => format!("shared {}: every node's containers may now take it", r.name),
        (true, false) => format!("{} was already shared", r.name),
        (false, true) => format!(
            "unshared {}: it is its first node's again ({} record(s) of other nodes' containers removed)",
            r.name, r.removed
        ),
        (false, false) => format!("{} was not shared", r.name),
    };
    out.done(&text, || json!({ "name": r.name, "shared": r.shared, "changed": r.changed, "removed": r.removed }));
    Ok(())
}

/// `dns lookup` on a host with an agent: answered from the agent's copy of the
/// records (what its containers see, and it works with the coordinator down).
/// `None` when no agent answers there, so the caller asks the coordinator.
pub(super) async fn lookup_local(socket: &Path, name: &str, out: &Output) -> Option<Outcome> {
    let what = format!("looking up {name}");
    let lookup = Request::DnsLookup { name: name.to_string() };
    let (qualified, addresses) = match super::local::request(socket, &what, &lookup).await {
        Ok(Response::Dns { name, addresses }) => (name, addresses),
        Ok(other) => {
            return Some(Err(Failure::new(Exit::Other, what, format!("unexpected answer from the agent: {other:?}"))));
        }
        Err(e) if e.exit == Exit::Unreachable => return None,
        Err(e) => return Some(Err(e)),
    };
    if addresses.is_empty() {
        return Some(Err(Failure::new(Exit::NotFound, what, format!("no record for {qualified}"))));
    }
    if out.json {
        out.print_json(&json!({ "name": qualified, "addresses": addresses }));
    } else {
        for a in &addresses {
            crate::out!("{a}\n");
        }
    }
    Some(Ok(()))
}

pub(super) async fn list(api: &mut Api, out: &Output) -> Outcome {
    let listed = api.dns.list_records(ListRecordsRequest {}).await.doing("listing DNS records")?;
    let (records, shared) = (listed.records, listed.shared_names);
    let mut table = Table::new(&["NAME", "ADDRESS", "NODE", "CONTAINER", "SHARED"]);
    for r in &records {
        let external = r.allocation_id == 0;
        table.row(vec![
            r.name.clone(),
            r.address.clone(),
            if external { "(external)".into() } else { or_dash(&r.node) },
            if external { "-".into() } else { or_dash(&r.container) },
            if shared.contains(&r.name) { "yes".into() } else { "-".into() },
        ]);
    }
    out.list(&table, || {
        Value::Array(
            records
                .iter()
                .map(|r| {
                    let mut v = record_json(r);
                    v["shared"] = json!(shared.contains(&r.name));
                    v
                })
                .collect(),
        )
    });
    Ok(())
}

fn record_json(r: &DnsRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "address": r.address,
        "external": r.allocation_id == 0,
        "allocation_id": if r.allocation_id == 0 { Value::Null } else { json!(r.allocation_id) },
        "node": r.node,
        "container": r.container,
    })
}
