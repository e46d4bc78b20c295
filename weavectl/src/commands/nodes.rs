//! `weavectl node ls|rm`.
use serde_json::{Value, json};
use weave_proto::{
    client::Api,
    key::fingerprint,
    v1::{ListNodesRequest, Node, NodePresence, RemoveNodeRequest},
};

use super::{Output, relative};
use crate::{
    cli::NodeCommand,
    failure::{Doing, Outcome},
    table::Table,
};

pub(super) async fn run(api: &mut Api, out: &Output, command: NodeCommand) -> Outcome {
    match command {
        NodeCommand::Ls => list(api, out).await?,
        NodeCommand::Rm { node } => {
            let r = api.nodes.remove_node(RemoveNodeRequest { node: node.clone() }).await.doing(match node.trim() {
                "" => "removing a node".to_string(),
                name => format!("removing node {name}"),
            })?;
            let removed = r.node.unwrap_or_default();
            let message = format!(
                "removed node {} ({}): released {} allocation(s) and {} DNS record(s)",
                removed.name, removed.address, r.released_allocations, r.removed_dns_records
            );
            out.done(&message, || {
                json!({
                    "node": node_json(&removed),
                    "released_allocations": r.released_allocations,
                    "removed_dns_records": r.removed_dns_records,
                })
            });
        }
    }
    Ok(())
}

pub(super) async fn list(api: &mut Api, out: &Output) -> Outcome {
    let listed = api.nodes.list_nodes(ListNodesRequest {}).await.doing("listing nodes")?;
    let (nodes, presence) = (listed.nodes, listed.presence);
    let seen = |n: &Node| presence.iter().find(|p| p.node_id == n.id);
    // SEEN last, as before FORGET came (scripts read the last column).
    let mut table = Table::new(&["ID", "NAME", "ADDRESS", "ENDPOINTS", "KEY", "JOINED", "FORGET", "SEEN"]);
    for n in &nodes {
        table.row(vec![
            n.id.to_string(),
            n.name.clone(),
            n.address.clone(),
            endpoints_cell(n),
            fingerprint(&n.public_key),
            relative(n.joined_at),
            super::tokens::forget_cell(n.forget_after_seconds),
            seen_cell(seen(n), !presence.is_empty()),
        ]);
    }
    let listed = |n: &Node| {
        let mut v = node_json(n);
        v["connected"] = json!(seen(n).is_some_and(|p| p.connected));
        v["seen_at"] = json!(seen(n).map(|p| p.seen_at));
        v
    };
    out.list(&table, || Value::Array(nodes.iter().map(listed).collect()));
    Ok(())
}

/// Whether the node watches the map now, else when a coordinator last saw
/// it (a dead host looked like a live one: found by a review, 2026-12-06);
/// "never" for one that never watched (or only before this column existed);
/// "-" for all when none has any (a coordinator older than this weavectl
/// sends none, and "never" would say every node is down).
fn seen_cell(p: Option<&NodePresence>, any: bool) -> String {
    match p {
        Some(p) if p.connected => "connected".into(),
        Some(p) => relative(p.seen_at),
        None if any => "never".into(),
        None => "-".into(),
    }
}

/// The node's endpoints, and where the coordinator saw it when elsewhere (behind NAT).
fn endpoints_cell(n: &Node) -> String {
    let own = if n.endpoints.is_empty() { "-".into() } else { n.endpoints.join(",") };
    if n.observed_endpoint.is_empty() { own } else { format!("{own} (seen at {})", n.observed_endpoint) }
}

fn node_json(n: &Node) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "address": n.address,
        "endpoints": n.endpoints,
        "observed_endpoint": n.observed_endpoint,
        "key_fingerprint": fingerprint(&n.public_key),
        // Whole, as the API gives it (base64, as `wg` shows keys).
        "public_key": weave_proto::key::WgPublicKey::from_bytes(&n.public_key).map(|k| k.to_base64()).ok(),
        "joined_at": n.joined_at,
        "forget_after_seconds": super::tokens::forget_json(n.forget_after_seconds),
    })
}
