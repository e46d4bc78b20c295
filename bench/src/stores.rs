//! `cp-bench stores`: the same measurements on each store engine, in one
//! run: SQLite (one coordinator), PostgreSQL with one coordinator, and
//! PostgreSQL with two coordinators sharing the database and one identity
//! (README, "Several coordinators"). Coordinators are the release binary,
//! each its own process on 127.0.0.1; PostgreSQL is a throwaway server this
//! command starts (Unix socket only) and removes afterwards.
//!
//! Per configuration and run, on fresh coordinators and a fresh database:
//! `--nodes` joins from `--clients` clients, `--allocations` allocations
//! from `--clients` of those nodes (20 each by default), then a watch per
//! node (GetMap, then a watch from its revision, as agents do) and the time
//! for each of `--changes` changes (written through the first coordinator)
//! to reach every watcher, and each coordinator's RSS. With two
//! coordinators, client, node and watcher `k` use coordinator `k % 2`.
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use tokio::sync::mpsc;
use weave_proto::v1::AllocateRequest;

use crate::{
    median,
    pg::PgServer,
    scale::{Coordinator, fan_out, join, watch_all},
};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Config {
    /// One coordinator on SQLite (the default store).
    Sqlite,
    /// One coordinator on PostgreSQL.
    Postgres,
    /// Two coordinators on one PostgreSQL database.
    #[value(name = "postgres-2")]
    Postgres2,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Sqlite => "sqlite",
            Config::Postgres => "postgres",
            Config::Postgres2 => "postgres-2",
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Configurations, in the order each run measures them.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres,postgres-2")]
    stores: Vec<Config>,
    /// Concurrent clients for joins, and nodes allocating at once.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Nodes that join (each then holds a watch).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Allocations, shared by `--clients` nodes.
    #[arg(long, default_value_t = 2000)]
    allocations: usize,
    /// Changes whose fan-out is timed (per run).
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Runs of every configuration (interleaved); medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write every run and the medians as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

impl Args {
    /// Connections the run holds at once (one per watcher).
    pub(crate) fn watchers(&self) -> usize {
        self.nodes
    }
}

struct Figures {
    joins_per_s: f64,
    allocations_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Each coordinator's RSS with every watch open, MiB.
    rss_mib: Vec<f64>,
}

impl Figures {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "joins_per_s": self.joins_per_s,
            "allocations_per_s": self.allocations_per_s,
            "fanout_p50_ms": self.p50_ms,
            "fanout_p99_ms": self.p99_ms,
            "rss_mib": self.rss_mib,
        })
    }
}

async fn once(args: &Args, config: Config, pg: Option<&PgServer>, run: usize) -> anyhow::Result<Figures> {
    let store = match (config, pg) {
        (Config::Sqlite, _) => None,
        (_, Some(pg)) => Some(pg.create_database(&format!("bench_{run}_{}", config.name().replace('-', "_")))?),
        (_, None) => anyhow::bail!("no PostgreSQL server"),
    };
    let mut cs = vec![Coordinator::start_on(store.as_deref(), None)?];
    if config == Config::Postgres2 {
        let second = Coordinator::start_on(store.as_deref(), Some(&cs[0]))?;
        cs.push(second);
    }

    let start = Instant::now();
    let credentials = join(&cs, 0..args.nodes, args.clients).await?;
    let joins_per_s = args.nodes as f64 / start.elapsed().as_secs_f64();

    let allocating = args.clients.min(credentials.len());
    let per = args.allocations / allocating;
    let mut nodes = Vec::new();
    for (k, cred) in credentials[..allocating].iter().enumerate() {
        nodes.push(cs[k % cs.len()].api(cred).await?);
    }
    let start = Instant::now();
    try_join_all(nodes.into_iter().map(|mut api| async move {
        for j in 0..per {
            let r = AllocateRequest { container: format!("c{j}"), ..Default::default() };
            api.ipam.allocate(r).await.context("allocate")?;
        }
        anyhow::Ok(())
    }))
    .await?;
    let allocations_per_s = (per * allocating) as f64 / start.elapsed().as_secs_f64();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let watchers = watch_all(&cs, &credentials, 50, None, tx).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_mib: Vec<f64> = cs.iter().map(Coordinator::rss_mib).collect();
    let mut admin = cs[0].api(&cs[0].admin).await?;
    let fanned = fan_out(&mut admin, &mut rx, credentials.len(), args.changes).await;
    for w in watchers {
        w.abort();
    }
    let (p50s, p99s, _) = fanned?;
    Ok(Figures { joins_per_s, allocations_per_s, p50_ms: median(p50s), p99_ms: median(p99s), rss_mib })
}

fn row(config: Config, f: &Figures) -> String {
    let rss: Vec<String> = f.rss_mib.iter().map(|r| format!("{r:.0}")).collect();
    format!(
        "{:<11} {:>6} {:>9.0} {:>14.0} {:>12.1} {:>12.1}   {}",
        config.name(),
        f.rss_mib.len(),
        f.joins_per_s,
        f.allocations_per_s,
        f.p50_ms,
        f.p99_ms,
        rss.join(" + ")
    )
}

fn header() -> String {
    format!(
        "{:<11} {:>6} {:>9} {:>14} {:>12} {:>12}   {}",
        "store", "coord.", "joins/s", "allocations/s", "fan-out p50", "fan-out p99", "RSS MiB (each coordinator)"
    )
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0 && args.nodes >= args.clients, "--nodes must be at least --clients (> 0)");
    let pg = if args.stores.iter().any(|c| *c != Config::Sqlite) {
        Some(PgServer::start().context("starting a throwaway PostgreSQL (needs root and Debian's postgresql)")?)
    } else {
        None
    };
    println!(
        "{} joins from {} clients, {} allocations from {} nodes, fan-out of {} changes to {} watchers",
        args.nodes,
        args.clients,
        args.allocations / args.clients * args.clients,
        args.clients,
        args.changes,
        args.nodes
    );
    let mut runs: Vec<Vec<Figures>> = args.stores.iter().map(|_| Vec::new()).collect();
    let mut all = Vec::new();
    for run in 0..args.repeat {
        for (i, &config) in args.stores.iter().enumerate() {
            let f =
                once(&args, config, pg.as_ref(), run).await.with_context(|| format!("{} run {run}", config.name()))?;
            println!("run {run}: {}\n          {}", header(), row(config, &f));
            all.push(serde_json::json!({ "run": run, "store": config.name(), "figures": f.json() }));
            runs[i].push(f);
        }
    }
    println!("\nmedians of {} runs:\n{}", args.repeat, header());
    let mut medians = Vec::new();
    for (&config, fs) in args.stores.iter().zip(&runs) {
        let coordinators = fs[0].rss_mib.len();
        let m = Figures {
            joins_per_s: median(fs.iter().map(|f| f.joins_per_s).collect()),
            allocations_per_s: median(fs.iter().map(|f| f.allocations_per_s).collect()),
            p50_ms: median(fs.iter().map(|f| f.p50_ms).collect()),
            p99_ms: median(fs.iter().map(|f| f.p99_ms).collect()),
            rss_mib: (0..coordinators).map(|c| median(fs.iter().map(|f| f.rss_mib[c]).collect())).collect(),
        };
        println!("{}", row(config, &m));
        medians.push(serde_json::json!({ "store": config.name(), "coordinators": coordinators, "figures": m.json() }));
    }
    if let Some(path) = &args.json {
        let out = serde_json::json!({ "runs": all, "medians": medians });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
