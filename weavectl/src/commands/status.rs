//! `weavectl status [cluster|nodes|subnets|ipam|dns]`. Views that need the
//! local agent (peers, interfaces) will join these once it has a socket.
use serde_json::json;
use weave_proto::{
    client::Api,
    v1::{GetStatusRequest, ListAllocationsRequest},
};

use super::{Output, dns, ipam, nodes, relative, subnets};
use crate::{
    cli::StatusView,
    failure::{Doing, Outcome},
    table::Table,
};

pub(super) async fn run(api: &mut Api, out: &Output, view: StatusView) -> Outcome {
    match view {
        StatusView::Cluster => cluster(api, out).await,
        StatusView::Nodes => nodes::list(api, out).await,
        StatusView::Subnets => subnets::list(api, out).await,
        StatusView::Ipam => ipam::list(api, out, ListAllocationsRequest::default()).await,
        StatusView::Dns => dns::list(api, out).await,
        // Answered by the local agent before a coordinator is needed.
        StatusView::Peers => unreachable!("status peers is handled by commands::local"),
    }
}

async fn cluster(api: &mut Api, out: &Output) -> Outcome {
    let s = api.status.get_status(GetStatusRequest {}).await.doing("getting the cluster status")?;
    let mut table = Table::new(&["CLUSTER", ""]);
    let rows = [
        // Of several coordinators, the one that answered (the rest of the
        // numbers are the cluster's, but for started and watchers).
        ("coordinator", s.answered_at.clone()),
        ("version", s.version.clone()),
        ("started", relative(s.started_at)),
        ("revision", s.revision.to_string()),
        ("range", s.range.clone()),
        ("node range", s.node_range.clone()),
        ("default subnet", s.default_subnet.clone()),
        ("dns domain", s.dns_domain.clone()),
        ("nodes", s.nodes.to_string()),
        ("subnets", s.subnets.to_string()),
        ("allocations", s.allocations.to_string()),
        ("dns records", s.dns_records.to_string()),
        ("active tokens", s.active_tokens.to_string()),
        ("watchers", s.watchers.to_string()),
    ];
    for (k, v) in rows {
        table.row(vec![k.into(), v]);
    }
    out.list(&table, || {
        json!({
            "version": s.version,
            "revision": s.revision,
            "range": s.range,
            "node_range": s.node_range,
            "default_subnet": s.default_subnet,
            "dns_domain": s.dns_domain,
            "nodes": s.nodes,
            "subnets": s.subnets,
            "allocations": s.allocations,
            "dns_records": s.dns_records,
            "active_tokens": s.active_tokens,
            "started_at": s.started_at,
            "watchers": s.watchers,
            "answered_at": s.answered_at,
        })
    });
    Ok(())
}
