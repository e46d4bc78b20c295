//! `weavectl subnet add|set|ls|rm`.
use serde_json::{Value, json};
use weave_proto::{
    cidr::parse_subnet,
    client::Api,
    v1::{AddSubnetRequest, ListSubnetsRequest, RemoveSubnetRequest, Subnet, UpdateSubnetRequest},
};

use super::{Output, or_dash};
use crate::{
    cli::{OnOff, SubnetCommand},
    failure::{Doing, Failure, Outcome, older_coordinator},
    table::Table,
};

/// Refuses a malformed CIDR before calling, with parse_subnet's message
/// (which suggests the network when host bits are set).
pub(super) fn check(command: SubnetCommand) -> Outcome<SubnetCommand> {
    match &command {
        SubnetCommand::Add { cidr, name, .. } => {
            parse_subnet(cidr).map_err(|e| Failure::usage(format!("adding subnet {cidr}"), e))?;
            // The API reads an empty name as none: given, it was a mistake.
            if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(Failure::usage(format!("adding subnet {cidr}"), "--name is empty (leave it out for none)"));
            }
        }
        // A name has no '/'; anything with one must be a CIDR.
        SubnetCommand::Rm { subnet, .. } if subnet.contains('/') => {
            parse_subnet(subnet).map_err(|e| Failure::usage(format!("removing subnet {subnet}"), e))?;
        }
        SubnetCommand::Set { subnet, .. } if subnet.contains('/') => {
            parse_subnet(subnet).map_err(|e| Failure::usage(format!("changing subnet {subnet}"), e))?;
        }
        _ => {}
    }
    Ok(command)
}

pub(super) async fn run(api: &mut Api, out: &Output, command: SubnetCommand) -> Outcome {
    match command {
        SubnetCommand::Add { cidr, name, egress } => {
            // Checked above; sent normalised ("10.2.3.0/24", not " 10.2.3.0/24").
            let net = parse_subnet(&cidr).map_err(|e| Failure::usage(format!("adding subnet {cidr}"), e))?;
            let req = AddSubnetRequest { cidr: net.to_string(), name: name.unwrap_or_default(), egress };
            let s = api.subnets.add_subnet(req).await.doing(format!("adding subnet {net}"))?;
            // An older coordinator made it without egress, without a word
            // (found by a review of upgrades, 2026-12-07): taken back.
            if egress && !s.egress {
                let rm = RemoveSubnetRequest { subnet: s.cidr.clone(), force: false };
                let undone = api.subnets.remove_subnet(rm).await.ok().map(|_| "the subnet was removed again");
                return Err(older_coordinator(format!("adding subnet {net}"), "--egress", undone));
            }
            let label = if s.name.is_empty() { String::new() } else { format!(" ({})", s.name) };
            let egress = if s.egress { ", egress" } else { "" };
            out.done(&format!("added subnet {}{label}, vni {}{egress}", s.cidr, s.vni), || subnet_json(&s));
        }
        SubnetCommand::Set { subnet, egress } => {
            let req = UpdateSubnetRequest { subnet: subnet.clone(), egress: Some(egress == OnOff::On) };
            let s = api.subnets.update_subnet(req).await.doing(format!("changing subnet {subnet}"))?;
            let state = if s.egress { "on" } else { "off" };
            out.done(&format!("subnet {}: egress {state}", s.cidr), || subnet_json(&s));
        }
        SubnetCommand::Ls => list(api, out).await?,
        SubnetCommand::Rm { subnet, force } => {
            let r = api
                .subnets
                .remove_subnet(RemoveSubnetRequest { subnet: subnet.clone(), force })
                .await
                .doing(format!("removing subnet {subnet}"))?;
            let s = r.subnet.unwrap_or_default();
            let released = match r.released_allocations {
                0 => String::new(),
                n => format!("; released {n} allocation(s)"),
            };
            out.done(
                &format!("removed subnet {}{released}", s.cidr),
                || json!({ "subnet": subnet_json(&s), "released_allocations": r.released_allocations }),
            );
        }
    }
    Ok(())
}

pub(super) async fn list(api: &mut Api, out: &Output) -> Outcome {
    let subnets = api.subnets.list_subnets(ListSubnetsRequest {}).await.doing("listing subnets")?.subnets;
    let mut table = Table::new(&["CIDR", "NAME", "DEFAULT", "VNI", "ALLOCATED", "EGRESS"]);
    for s in &subnets {
        table.row(vec![
            s.cidr.clone(),
            or_dash(&s.name),
            if s.is_default { "yes".into() } else { String::new() },
            s.vni.to_string(),
            format!("{}/{}", s.allocated, s.capacity),
            if s.egress { "yes".into() } else { String::new() },
        ]);
    }
    out.list(&table, || Value::Array(subnets.iter().map(subnet_json).collect()));
    Ok(())
}

fn subnet_json(s: &Subnet) -> Value {
    json!({
        "id": s.id,
        "cidr": s.cidr,
        "name": s.name,
        "default": s.is_default,
        // The API's names too (`default` stays for scripts that read it).
        "is_default": s.is_default,
        "added_by_node": s.added_by_node,
        "by_member": s.by_member,
        "vni": s.vni,
        "allocated": s.allocated,
        // A decimal string: an IPv6 subnet's capacity does not fit a JSON number.
        "capacity": s.capacity,
        "egress": s.egress,
    })
}
