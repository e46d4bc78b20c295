//! `weavectl ipam ls`, `weavectl ipam release` and `weavectl ipam holds`.
use serde_json::{Value, json};
use weave_proto::{
    cidr::parse_subnet,
    client::Api,
    v1::{AddressHold, Allocation, ListAddressHoldsRequest, ListAllocationsRequest, ReleaseRequest},
};

use super::{Output, or_dash, relative};
use crate::{
    cli::IpamCommand,
    failure::{Doing, Failure, Outcome},
    table::Table,
};

pub(super) fn check(command: IpamCommand) -> Outcome<IpamCommand> {
    let (IpamCommand::Ls { subnet: Some(subnet), .. }
    | IpamCommand::Holds { subnet: Some(subnet), .. }
    | IpamCommand::Release { subnet: Some(subnet), .. }) = &command
    else {
        return Ok(command);
    };
    // Empty means every subnet to the API: a script's empty `$SUBNET`
    // released a container's every address (found by a review, 2026-12-08).
    if subnet.trim().is_empty() {
        return Err(Failure::usage("--subnet", "is empty: name a subnet (CIDR or name), or leave --subnet out"));
    }
    if subnet.contains('/') {
        parse_subnet(subnet).map_err(|e| Failure::usage("--subnet", e))?;
    }
    Ok(command)
}

pub(super) async fn run(api: &mut Api, out: &Output, command: IpamCommand) -> Outcome {
    match command {
        IpamCommand::Ls { node, subnet, container } => {
            let req = ListAllocationsRequest {
                node: node.unwrap_or_default(),
                subnet: subnet.unwrap_or_default(),
                container: container.unwrap_or_default(),
            };
            list(api, out, req).await
        }
        IpamCommand::Release { container, node, subnet } => {
            let req =
                ReleaseRequest { node: node.clone(), container: container.clone(), subnet: subnet.unwrap_or_default() };
            let what = format!("releasing the addresses of {container} on {node}");
            let r = api.ipam.release(req).await.doing(what)?;
            let addresses: Vec<&str> = r.released.iter().map(|a| a.address.as_str()).collect();
            // Nothing held any more: the addresses kept for it go to anyone now.
            let said = match addresses.is_empty() {
                true => format!("ended the hold on {}: any node may take it now", r.freed_holds.join(", ")),
                false => format!("released {} ({} DNS record(s) removed)", addresses.join(", "), r.removed_dns_records),
            };
            out.done(&said, || {
                json!({
                    "released": addresses,
                    "removed_dns_records": r.removed_dns_records,
                    "freed_holds": r.freed_holds,
                })
            });
            Ok(())
        }
        IpamCommand::Holds { node, subnet } => {
            let req = ListAddressHoldsRequest { node: node.unwrap_or_default(), subnet: subnet.unwrap_or_default() };
            let holds = api.ipam.list_address_holds(req).await.doing("listing address holds")?.holds;
            let mut table = Table::new(&["ADDRESS", "SUBNET", "NODE", "CONTAINER", "RELEASED", "KEPT UNTIL"]);
            for h in &holds {
                table.row(vec![
                    h.address.clone(),
                    h.subnet.clone(),
                    h.node.clone(),
                    or_dash(&h.container),
                    relative(h.released_at),
                    relative(h.held_until),
                ]);
            }
            out.list(&table, || Value::Array(holds.iter().map(hold_json).collect()));
            Ok(())
        }
    }
}

pub(super) async fn list(api: &mut Api, out: &Output, req: ListAllocationsRequest) -> Outcome {
    let allocations = api.ipam.list_allocations(req).await.doing("listing allocations")?.allocations;
    let mut table = Table::new(&["ADDRESS", "SUBNET", "NODE", "CONTAINER", "CREATED"]);
    for a in &allocations {
        table.row(vec![
            a.address.clone(),
            a.subnet.clone(),
            a.node.clone(),
            or_dash(&a.container),
            relative(a.created_at),
        ]);
    }
    out.list(&table, || Value::Array(allocations.iter().map(allocation_json).collect()));
    Ok(())
}

fn allocation_json(a: &Allocation) -> Value {
    json!({
        "id": a.id,
        "address": a.address,
        "subnet": a.subnet,
        "subnet_id": a.subnet_id,
        "node": a.node,
        "node_id": a.node_id,
        "container": a.container,
        "created_at": a.created_at,
    })
}

fn hold_json(h: &AddressHold) -> Value {
    json!({
        "address": h.address,
        "subnet": h.subnet,
        "subnet_id": h.subnet_id,
        "node": h.node,
        "node_id": h.node_id,
        "container": h.container,
        "released_at": h.released_at,
        "held_until": h.held_until,
    })
}
