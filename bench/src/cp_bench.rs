//! Control-plane benchmark against a real coordinator (SQLite, TLS). Not a
//! test: it prints numbers.
//!
//! - `cp-bench throughput`: joins/s and allocations/s for 1, 10 and 100
//!   concurrent clients (coordinator in-process), median of --repeat runs.
//! - `cp-bench scale`: the coordinator binary as its own process; joins to
//!   1,000 and on to 10,000 nodes, then a watch per node: time for one change
//!   to reach them all (p50/p99) and the coordinator's RSS.
//! - `cp-bench idle`: `weavectl status` while thousands of TCP connections
//!   idle and TLS handshakes stall (coordinator as its own process).
//! - `cp-bench stores`: joins/s, allocations/s, fan-out to 1,000 watchers
//!   and RSS on SQLite, PostgreSQL, and two coordinators on one PostgreSQL.
//! - `cp-bench fake-nodes`: joins N nodes that never run an agent (for the
//!   data-plane benchmark's "agent with 100 peers" figures).
mod agent_load;
mod idle;
mod pg;
mod scale;
mod stores;
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use futures::future::try_join_all;
use tokio::sync::oneshot;
use weave_coordinator::config::ServeArgs;
use weave_proto::{
    client::{Api, connect},
    v1::{AllocateRequest, CreateTokenRequest, JoinRequest},
};

#[derive(Parser)]
#[command(about = "weave control-plane benchmark")]
enum Cli {
    /// Joins/s and allocations/s for several client counts.
    Throughput(Args),
    /// Join time, watch fan-out latency and coordinator memory at scale.
    Scale(scale::Args),
    /// Joins, allocations, fan-out and RSS on SQLite and PostgreSQL (one and two coordinators).
    Stores(stores::Args),
    /// `weavectl status` while idle connections and stalled handshakes are open.
    Idle(idle::Args),
    /// Joins nodes that never run an agent, so that real agents get more peers.
    FakeNodes(FakeArgs),
    /// Fake nodes with workloads, for `bench/agent_scale.sh`.
    RemoteWorkloads(agent_load::WorkloadArgs),
    /// One more workload on a node (admin); prints its address.
    Allocate(agent_load::AllocateArgs),
}

#[derive(clap::Args)]
struct FakeArgs {
    /// A join token of the coordinator (it names the coordinator and its pin).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 98)]
    count: u32,
    /// Endpoint of the first node; the others count up from its address.
    /// Nothing answers there: the agents' handshakes to them go unanswered.
    #[arg(long)]
    first_endpoint: std::net::SocketAddrV4,
}

async fn fake_nodes(args: FakeArgs) -> anyhow::Result<()> {
    let token = weave_proto::token::JoinToken::parse(&args.token)?;
    let mut api = Api::new(connect(&token.coordinator, token.pin).await?, "-")?;
    let first = u32::from(*args.first_endpoint.ip());
    for i in 0..args.count {
        let ip = std::net::Ipv4Addr::from(first + i);
        let r = JoinRequest {
            token: args.token.clone(),
            name: format!("fake-{i}"),
            public_key: key(),
            endpoints: vec![format!("{ip}:{}", args.first_endpoint.port())],
            map_by_watch: true,
            ..Default::default()
        };
        api.join.join(r).await.context("join")?;
    }
    println!("joined {} nodes", args.count);
    Ok(())
}

#[derive(clap::Args)]
struct Args {
    /// Concurrent clients to measure with.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    clients: Vec<usize>,
    /// Joins per measurement.
    #[arg(long, default_value_t = 500)]
    joins: usize,
    /// Allocations per measurement.
    #[arg(long, default_value_t = 2000)]
    allocations: usize,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub(crate) static NEXT_KEY: AtomicU32 = AtomicU32::new(1);

pub(crate) fn key() -> Vec<u8> {
    let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let mut k = vec![0x5a; 32];
    k[..4].copy_from_slice(&n.to_le_bytes());
    k
}

struct Coordinator {
    addr: String,
    admin: Api,
    pin: weave_proto::token::Pin,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn coordinator() -> anyhow::Result<Coordinator> {
    let dir = tempfile::tempdir()?;
    let mut args = ServeArgs::for_data_dir(dir.path().join("data"), "127.0.0.1:0".parse()?);
    // Every simulated client connects from 127.0.0.1.
    args.max_connections_per_source = 0;
    // The coordinator's and the store's capacity, not one node's allowed
    // pace: --node-rate (50 calls/s a node by default, added after the
    // README's first figures) would hold one client's loop to about that.
    args.node_rate = 0;
    let (tx, rx) = oneshot::channel::<()>();
    let running = weave_coordinator::start(args.settings()?, async {
        let _ = rx.await;
    })
    .await?;
    let addr = running.local_addr.to_string();
    let pin = running.admin.pin;
    let admin = Api::new(connect(&addr, pin).await?, &running.admin.secret)?;
    Ok(Coordinator { addr, admin, pin, _stop: tx, _dir: dir })
}

async fn token(c: &Coordinator) -> anyhow::Result<String> {
    let mut admin = c.admin.clone();
    Ok(admin.tokens.create_token(CreateTokenRequest::default()).await?.into_inner().secret_token)
}

/// Joins per second with `clients` connections sharing `total` joins.
async fn joins(clients: usize, total: usize) -> anyhow::Result<f64> {
    let c = coordinator().await?;
    let token = token(&c).await?;
    let mut apis = Vec::new();
    for _ in 0..clients {
        apis.push(Api::new(connect(&c.addr, c.pin).await?, "-")?);
    }
    let per = total / clients;
    let start = Instant::now();
    try_join_all(apis.into_iter().enumerate().map(|(i, mut api)| {
        let token = token.clone();
        async move {
            for j in 0..per {
                let r = JoinRequest {
                    token: token.clone(),
                    name: format!("n{i}-{j}"),
                    public_key: key(),
                    endpoints: vec![],
                    map_by_watch: true,
                    ..Default::default()
                };
                api.join.join(r).await.context("join")?;
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    Ok((per * clients) as f64 / start.elapsed().as_secs_f64())
}

/// Allocations per second with `clients` nodes sharing `total` allocations.
async fn allocations(clients: usize, total: usize) -> anyhow::Result<f64> {
    let c = coordinator().await?;
    let token = token(&c).await?;
    let mut nodes = Vec::new();
    for i in 0..clients {
        let mut api = Api::new(connect(&c.addr, c.pin).await?, "-")?;
        let r = JoinRequest {
            token: token.clone(),
            name: format!("n{i}"),
            public_key: key(),
            endpoints: vec![],
            map_by_watch: true,
            ..Default::default()
        };
        let credential = api.join.join(r).await?.into_inner().credential;
        nodes.push(Api::new(connect(&c.addr, c.pin).await?, &credential)?);
    }
    let per = total / clients;
    let start = Instant::now();
    try_join_all(nodes.into_iter().map(|mut api| async move {
        for j in 0..per {
            let r = AllocateRequest { container: format!("c{j}"), ..Default::default() };
            api.ipam.allocate(r).await.context("allocate")?;
        }
        anyhow::Ok(())
    }))
    .await?;
    Ok((per * clients) as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Raises this process's descriptor limit to its hard limit: thousands of
/// connections (and the coordinator started from here inherits it).
fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nofile = raise_nofile().context("raising RLIMIT_NOFILE")?;
    let args = match Cli::parse() {
        Cli::Throughput(a) => a,
        Cli::Scale(a) => {
            anyhow::ensure!(nofile >= a.watchers() as u64 + 1000, "RLIMIT_NOFILE hard limit {nofile} is too low");
            return scale::run(a).await;
        }
        Cli::Stores(a) => {
            anyhow::ensure!(nofile >= a.watchers() as u64 + 1000, "RLIMIT_NOFILE hard limit {nofile} is too low");
            return stores::run(a).await;
        }
        Cli::Idle(a) => return idle::run(a).await,
        Cli::FakeNodes(a) => return fake_nodes(a).await,
        Cli::RemoteWorkloads(a) => return agent_load::remote_workloads(a).await,
        Cli::Allocate(a) => return agent_load::allocate(a).await,
    };
    let mut rows = Vec::new();
    println!("{:>8} {:>14} {:>18}   (median of {} runs)", "clients", "joins/s", "allocations/s", args.repeat);
    for &clients in &args.clients {
        let (mut j, mut a) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            j.push(joins(clients, args.joins.max(clients)).await?);
            a.push(allocations(clients, args.allocations.max(clients)).await?);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (j, a) = (median(j), median(a));
        println!("{clients:>8} {j:>14.0} {a:>18.0}");
        rows.push(serde_json::json!({ "clients": clients, "joins_per_s": j, "allocations_per_s": a }));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
