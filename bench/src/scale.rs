//! `cp-bench scale`: many simulated agents (one gRPC connection each, in this
//! process) against the coordinator binary running as its own process: joins
//! up to --nodes, then up to --total-nodes, then a watch per node (each on its
//! own TLS connection) and the fan-out of --changes changes to all of them.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream};
use tokio::sync::{Semaphore, mpsc};
use weave_proto::{
    client::{Api, connect},
    token::{AdminCredential, Pin},
    v1::{AddSubnetRequest, GetMapRequest, JoinRequest, WatchRequest, map_change::Change, watch_event::Event},
};

use crate::{key, median};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Nodes that join in the first phase.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Total nodes after the second phase (RSS is measured there, and then
    /// with the watches open).
    #[arg(long, default_value_t = 10_000)]
    total_nodes: usize,
    /// Nodes that hold a watch while changes fan out (the first ones to join).
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Watchers read the map (GetMap) before watching from its revision, as
    /// agents do after a join; `--get-map false` watches from the current
    /// revision without it (what the watches alone cost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    get_map: bool,
    /// Changes whose fan-out is timed.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Concurrent joins.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) struct Coordinator {
    child: Child,
    pub(crate) addr: String,
    pin: Pin,
    pub(crate) admin: String,
    token: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coordinator {
    pub(crate) fn start() -> anyhow::Result<Self> {
        Self::start_on(None, None)
    }

    /// The coordinator binary on `store` (`--store`; None: SQLite in its data
    /// dir). With `identity`, another coordinator of the same cluster: that
    /// one's TLS key and certificate and admin credential are copied into this
    /// one's data dir before it starts (README, "Several coordinators"), and
    /// its join token is used here.
    pub(crate) fn start_on(store: Option<&str>, identity: Option<&Coordinator>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("coordinator");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        if let Some(first) = identity {
            std::fs::create_dir_all(data.join("tls"))?;
            for f in ["tls/coordinator.crt", "tls/coordinator.key", "admin.credential"] {
                std::fs::copy(first.data.join(f), data.join(f)).with_context(|| format!("copying {f}"))?;
            }
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--first-token-uses", "0", "--metrics-listen", "off"]);
        // Every simulated node and watcher connects from 127.0.0.1.
        cmd.args(["--max-connections-per-source", "0"]);
        cmd.arg("--data-dir").arg(&data);
        if let Some(store) = store {
            cmd.args(["--store", store]);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} (build it with the same profile)", exe.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut addr, mut token) = (String::new(), String::new());
        for _ in 0..3 {
            let line = lines.next().context("coordinator banner")??;
            if let Some(rest) = line.strip_prefix("coordinator listening on ") {
                addr = rest.split_whitespace().next().unwrap_or_default().to_string();
            }
            if let Some(rest) = line.strip_prefix("join token (first start): ") {
                token = rest.trim().to_string();
            }
        }
        if let Some(first) = identity {
            token = first.token.clone();
        }
        let cred = AdminCredential::parse(&std::fs::read_to_string(data.join("admin.credential"))?)?;
        Ok(Self { child, addr, pin: cred.pin, admin: cred.secret, token, data, _dir: dir })
    }

    /// The admin credential file (`weavectl --admin-file`).
    pub(crate) fn admin_file(&self) -> PathBuf {
        self.data.join("admin.credential")
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    pub(crate) async fn api(&self, credential: &str) -> anyhow::Result<Api> {
        Ok(Api::new(connect(&self.addr, self.pin).await?, credential)?)
    }
}

/// Joins `range` nodes, `concurrency` at a time (client `k` on coordinator
/// `k % cs.len()`); returns their credentials.
pub(crate) async fn join(
    cs: &[Coordinator],
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let apis: Vec<Api> = {
        let mut v = Vec::new();
        for k in 0..concurrency {
            v.push(cs[k % cs.len()].api("-").await?);
        }
        v
    };
    let token = cs[0].token.clone();
    let results: Vec<anyhow::Result<String>> = stream::iter(range.map(|i| {
        let mut api = apis[i % concurrency].clone();
        let token = token.clone();
        async move {
            let r = JoinRequest {
                token,
                name: format!("n{i}"),
                public_key: key(),
                endpoints: vec![],
                map_by_watch: true,
                ..Default::default()
            };
            Ok(api.join.join(r).await?.into_inner().credential)
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    results.into_iter().collect()
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Opens a watch for each credential (each on its own TLS connection, the
/// `k`th on coordinator `k % cs.len()`), `concurrency` at a time, as `agent
/// join` and `agent run` do: GetMap, then a watch from that map's revision
/// (or, with `from`, a watch from there). Every later SubnetAdded named
/// `b<i>` is reported as (i, the watcher's coordinator, when) on `seen`.
pub(crate) async fn watch_all(
    cs: &[Coordinator],
    credentials: &[String],
    concurrency: usize,
    from: Option<u64>,
    seen: mpsc::UnboundedSender<(usize, usize, Instant)>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let mut watchers = Vec::new();
    for (k, cred) in credentials.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let on = k % cs.len();
        let mut api = cs[on].api(cred).await?;
        let (seen, ready_tx) = (seen.clone(), ready_tx.clone());
        watchers.push(tokio::spawn(async move {
            let opened = async {
                let from_revision = match from {
                    Some(r) => r,
                    None => api.map.get_map(GetMapRequest {}).await?.into_inner().revision,
                };
                anyhow::Ok(api.map.watch(WatchRequest { from_revision, ..Default::default() }).await?.into_inner())
            };
            let mut stream = match opened.await {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            drop(permit);
            let _ = ready_tx.send(Ok(()));
            while let Some(event) = stream.message().await? {
                match event.event {
                    Some(Event::Snapshot(_)) => {}
                    Some(Event::Change(ch)) => {
                        if let Some(Change::SubnetAdded(s)) = ch.change {
                            let i: usize = s.name.trim_start_matches('b').parse().unwrap_or(usize::MAX);
                            let _ = seen.send((i, on, Instant::now()));
                        }
                    }
                    None => {}
                }
            }
            anyhow::Ok(())
        }));
    }
    for _ in 0..credentials.len() {
        ready_rx.recv().await.context("a watcher ended before its snapshot")??;
    }
    Ok(watchers)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let cs = [Coordinator::start()?];
    let c = &cs[0];
    let start = Instant::now();
    let mut credentials = join(&cs, 0..args.nodes, args.concurrency).await?;
    let join_secs = start.elapsed().as_secs_f64();
    println!("{} joins: {join_secs:.2} s ({:.0}/s)", args.nodes, args.nodes as f64 / join_secs);

    let start = Instant::now();
    credentials.extend(join(&cs, args.nodes..args.total_nodes, args.concurrency).await?);
    let more_secs = start.elapsed().as_secs_f64();
    let more_rate = (args.total_nodes - args.nodes) as f64 / more_secs;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_at_total = c.rss_mib();
    println!(
        "joins {} to {}: {more_secs:.1} s ({more_rate:.0}/s); coordinator RSS at {} nodes: {rss_at_total:.1} MiB",
        args.nodes + 1,
        args.total_nodes,
        args.total_nodes
    );

    // Every node holds a watch on its own connection, as agents do.
    let watching = &credentials[..args.watchers.min(credentials.len())];
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, usize, Instant)>();
    let start = Instant::now();
    let from = if args.get_map {
        None
    } else {
        Some(c.api(&c.admin).await?.map.get_map(GetMapRequest {}).await?.into_inner().revision)
    };
    let watchers = watch_all(&cs, watching, args.concurrency, from, tx).await?;
    let open_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_watched = c.rss_mib();
    println!(
        "{} watchers hold a watch (GetMap and watch opened in {open_secs:.1} s); coordinator RSS {rss_watched:.1} MiB",
        watching.len()
    );

    let mut admin = c.api(&c.admin).await?;
    let (p50s, p99s, maxes) = fan_out(&mut admin, &mut rx, watching.len(), args.changes).await?;
    let rss_after = c.rss_mib();
    for w in watchers {
        w.abort();
    }
    let summary = serde_json::json!({
        "nodes": args.nodes,
        "join_seconds": join_secs,
        "total_nodes": args.total_nodes,
        "more_joins_seconds": more_secs,
        "more_joins_per_s": more_rate,
        "rss_mib_at_total_nodes": rss_at_total,
        "fanout_watchers": watching.len(),
        "watch_open_seconds": open_secs,
        "rss_mib_with_watchers": rss_watched,
        "rss_mib_after_changes": rss_after,
        "fanout_p50_ms_median": median(p50s),
        "fanout_p99_ms_median": median(p99s),
        "fanout_max_ms_median": median(maxes),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

/// Adds `changes` subnets (`b<i>`, `10.100.<i>.0/24`) through `admin`, one at a
/// time, and times each one's arrival at all `watchers` (reported on `rx` by
/// [`watch_all`]); p50, p99 and max in ms per change. With watchers on
/// several coordinators, each one's p50/p99 is printed too.
pub(crate) async fn fan_out(
    admin: &mut Api,
    rx: &mut mpsc::UnboundedReceiver<(usize, usize, Instant)>,
    watchers: usize,
    changes: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (mut p50s, mut p99s, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..changes {
        let t0 = Instant::now();
        let req = AddSubnetRequest { cidr: format!("10.100.{i}.0/24"), name: format!("b{i}"), egress: false };
        admin.subnets.add_subnet(req).await?;
        let mut lat = Vec::with_capacity(watchers);
        let mut by_coordinator: Vec<Vec<f64>> = Vec::new();
        while lat.len() < watchers {
            let (idx, on, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .context("fan-out took over 60 s")?
                .context("watchers gone")?;
            if idx == i {
                let ms = at.duration_since(t0).as_secs_f64() * 1000.0;
                lat.push(ms);
                if by_coordinator.len() <= on {
                    by_coordinator.resize(on + 1, Vec::new());
                }
                by_coordinator[on].push(ms);
            }
        }
        lat.sort_by(f64::total_cmp);
        let (p50, p99, max) = (percentile(&lat, 0.5), percentile(&lat, 0.99), lat[lat.len() - 1]);
        let mut each = String::new();
        if by_coordinator.len() > 1 {
            for (n, l) in by_coordinator.iter_mut().enumerate().filter(|(_, l)| !l.is_empty()) {
                l.sort_by(f64::total_cmp);
                each.push_str(&format!(
                    "; on coordinator {n}: {} p50 {:.1} p99 {:.1}",
                    l.len(),
                    percentile(l, 0.5),
                    percentile(l, 0.99)
                ));
            }
        }
        println!("change {i}: reached {} watchers: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms{each}", lat.len());
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
        // Let the connections go quiet again before the next change.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((p50s, p99s, maxes))
}

impl Args {
    /// Connections the run holds at once (one per watcher).
    pub(crate) fn watchers(&self) -> usize {
        self.watchers.min(self.total_nodes)
    }
}
