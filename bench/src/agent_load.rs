//! `cp-bench remote-workloads` and `cp-bench allocate`: the coordinator side
//! of `bench/agent_scale.sh` (an agent with 10,000 remote workloads). Fake
//! nodes join (they never run an agent; their endpoints are unrouted TEST-NET
//! addresses) and the admin allocates their workloads, so a real agent sees
//! them as remote workloads: a route, a proxy-ARP entry and a set element each.
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use weave_proto::{
    client::{Api, connect},
    token::{AdminCredential, JoinToken},
    v1::{AllocateRequest, JoinRequest},
};

use crate::key;

#[derive(clap::Args)]
pub(crate) struct WorkloadArgs {
    /// A join token of the coordinator.
    #[arg(long)]
    token: String,
    /// The coordinator's admin credential file.
    #[arg(long)]
    admin_file: std::path::PathBuf,
    /// Fake nodes to join.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Workloads allocated on each fake node.
    #[arg(long, default_value_t = 100)]
    per_node: u32,
    /// Concurrent requests.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(clap::Args)]
pub(crate) struct AllocateArgs {
    /// The coordinator's admin credential file.
    #[arg(long)]
    admin_file: std::path::PathBuf,
    /// The node (name) that gets the workload.
    #[arg(long)]
    node: String,
    #[arg(long)]
    container: String,
}

async fn admin(file: &std::path::Path) -> anyhow::Result<Api> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let cred = AdminCredential::parse(text.trim())?;
    Ok(Api::new(connect(&cred.coordinator, cred.pin).await?, &cred.secret)?)
}

/// Joins `nodes` fake nodes and allocates `per_node` workloads on each.
pub(crate) async fn remote_workloads(args: WorkloadArgs) -> anyhow::Result<()> {
    let token = JoinToken::parse(&args.token)?;
    let api = Api::new(connect(&token.coordinator, token.pin).await?, "-")?;
    let start = Instant::now();
    for i in 0..args.nodes {
        // 198.51.100.0/24: never routed in the bench's namespaces.
        let endpoint =
            format!("{}:6784", std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 51, 100, 0)) + i % 256));
        let r = JoinRequest {
            token: args.token.clone(),
            name: format!("fake-{i}"),
            public_key: key(),
            endpoints: vec![endpoint],
            ..Default::default()
        };
        api.join.clone().join(r).await.context("join")?;
    }
    let admin = admin(&args.admin_file).await?;
    let jobs = (0..args.nodes).flat_map(|n| (0..args.per_node).map(move |w| (n, w)));
    stream::iter(jobs)
        .map(|(n, w)| {
            let mut ipam = admin.ipam.clone();
            async move {
                let r =
                    AllocateRequest { node: format!("fake-{n}"), container: format!("w{n}-{w}"), ..Default::default() };
                ipam.allocate(r).await.with_context(|| format!("allocate w{n}-{w}"))
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "{} fake nodes, {} remote workloads in {:.1} s",
        args.nodes,
        args.nodes * args.per_node,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One more workload on a (fake) node; prints its address alone.
pub(crate) async fn allocate(args: AllocateArgs) -> anyhow::Result<()> {
    let mut admin = admin(&args.admin_file).await?;
    let r = AllocateRequest { node: args.node, container: args.container, ..Default::default() };
    let a = admin.ipam.allocate(r).await?.into_inner();
    println!("{}", a.address.split('/').next().unwrap_or(""));
    Ok(())
}
