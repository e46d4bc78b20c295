//! The only module that touches nftables: applies [`crate::plan::firewall`]'s
//! ruleset, keeps it in place, removes it. (And, on a host whose iptables
//! `FORWARD` drops by default, the one place that runs `iptables`:
//! [`forward`].)
//!
//! Why `nft -f -` and not netlink (the one documented exception to "netlink,
//! not commands"): the `nftnl` crate binds libnftnl, whose C headers are not
//! installed on the build machines, and a pure-Rust nf_tables encoder was not
//! evaluated within the time this was written in; a hand-written encoder is
//! far more code than this ruleset. So this one module runs the `nft`
//! binary with a generated ruleset, applied atomically (one transaction: the
//! tables are replaced as a whole, or, when only set elements change, just
//! those elements are added and deleted). Replacing it with netlink touches only here.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, process::Command, sync::watch};
use weave_proto::v1::NetworkMap;

mod forward;
mod guard_counts;
mod listing;

use listing::{counted, listing, tables_in};

use crate::{
    error::Error,
    host::netlink::Netlink,
    plan::{
        firewall::{Rules, TABLE, rules, ruleset, update},
        flows::{self, FLOW_TABLE, flow_ruleset},
        l2::{GUARD_TABLE, guard_ruleset},
    },
};

async fn nft(script: &str) -> Result<(), Error> {
    nft_with(&["-f", "-"], script).await.map(drop)
}

/// `nft ARGS` with `script` on its standard input; what it printed.
async fn nft_with(args: &[&str], script: &str) -> Result<String, Error> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io("run nft".into(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| Error::Io("write to nft".into(), e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| Error::Io("run nft".into(), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Whether `nft` runs here: `agent join` asks before it spends a token (it
/// joined, then the data plane refused to start without nftables, the
/// token's use gone; found by a review, 2026-12-06).
pub async fn nft_runs() -> Result<(), Error> {
    let out = Command::new("nft").arg("--version").stdin(Stdio::null()).output().await;
    let why = match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    Err(Error::Nft(format!(
        "cannot run it ({why}): the agent keeps subnets apart with nftables; install it (Debian: \
         apt install nftables) or put it on PATH, and join again (nothing was sent to the coordinator)"
    )))
}

pub async fn apply(rules: &Rules) -> Result<(), Error> {
    nft(&ruleset(rules)).await?;
    if rules.segments.iter().any(|s| s.egress) {
        warn_without_forwarding();
    }
    forward::open_iptables().await;
    publish(rules);
    Ok(())
}

/// Whether weave's isolation tables are in place (a previous run's).
pub async fn in_place() -> bool {
    let Some(listing) = listing().await else { return false };
    let tables = tables_in(&listing);
    ["inet", "bridge", "arp"].iter().all(|f| tables.contains(&format!("{f} {TABLE}")))
}

/// Egress needs IPv4 forwarding on the interfaces its replies come in at
/// (after the masquerade is undone they are routed into a bridge), which
/// can be any of the host's: `net.ipv4.ip_forward`. The agent does not turn
/// it on: host-wide, it would make the host a router between its other
/// networks for anyone on the underlay, which weave's rules (its own
/// devices only) cannot take back (found by a review, 2026-12-05). Docker
/// and Kubernetes nodes have it on; elsewhere the admin turns it on, as for
/// a Tailscale subnet router. Until then: one warning per agent, and `agent
/// status` says so.
pub fn forwarding_on() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}

fn warn_without_forwarding() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !forwarding_on() && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "a subnet here has egress, but net.ipv4.ip_forward is 0: its workloads go nowhere outside weave until \
             it is turned on (sysctl -w net.ipv4.ip_forward=1)"
        );
    }
}

/// The exposed addresses the applied rules let workloads in at.
static OPEN: std::sync::LazyLock<watch::Sender<BTreeSet<Ipv4Addr>>> =
    std::sync::LazyLock::new(|| watch::channel(BTreeSet::new()).0);

fn publish(rules: &Rules) {
    OPEN.send_replace(rules.segments.iter().filter_map(|s| s.exposed).collect());
}

/// Waits, at most `limit` in all, until the applied rules let workloads
/// reach this host at every one of `ips` (an exposed address comes into the
/// rules with the map change its allocation makes): `weavectl expose`
/// returns once it works. Logs what is still closed then.
pub async fn wait_open(ips: impl IntoIterator<Item = Ipv4Addr>, limit: Duration) {
    let ips: Vec<Ipv4Addr> = ips.into_iter().collect();
    let mut open = OPEN.subscribe();
    let all = open.wait_for(|o| ips.iter().all(|ip| o.contains(ip)));
    if !matches!(tokio::time::timeout(limit, all).await, Ok(Ok(_))) {
        tracing::warn!(?ips, "exposed, but the firewall does not let workloads in at all of them yet");
    }
}

/// One source-guard update at a time: each reads the ports and replaces the
/// table, so an attach that recorded its port before another update read
/// them, or after, finds its port guarded and allowed when its own ends.
static GUARD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `--broadcast-limit`: set once at start, read by every guard update.
static BROADCAST_LIMIT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The broadcast and multicast frames a second each workload port may send
/// (0: no limit), from the next guard update on. A kernel that refuses the
/// meters (no nftables `limit`, `CONFIG_NFT_LIMIT`; asked once, with `nft
/// --check`, which changes nothing) gets the source guard without them, and
/// one warning.
pub async fn set_broadcast_limit(per_second: u32) {
    let mut limit = per_second;
    if limit > 0 {
        let probe = guard_ruleset(&[("wvprobe".into(), Ipv4Addr::UNSPECIFIED, vec![2, 0, 0, 0, 0, 1])], limit);
        match nft_with(&["--check", "-f", "-"], &probe).await {
            Ok(_) => {}
            // No nft at all: the isolation rules' failure says so, next.
            Err(Error::Io(..)) => {}
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "nftables refuses the storm-control meters here: workload ports are not metered \
                     (--broadcast-limit still meters what peers send into segments)"
                );
                limit = 0;
            }
        }
    }
    BROADCAST_LIMIT.store(limit, std::sync::atomic::Ordering::Relaxed);
}

/// Holds every workload port of this namespace to the address recorded on
/// it ([`crate::plan::l2::guard_ruleset`]), replacing the guard table
/// with one built from the ports there now. Called after an attach recorded
/// its port, and on every full reconcile pass (ports that went, a table
/// someone removed). Returns how many ports are guarded.
pub async fn guard_ports(netlink: &Netlink) -> Result<usize, Error> {
    let _one = GUARD.lock().await;
    // Once this process has put the table in, one missing or emptied was
    // removed by someone: counted and logged here, whoever puts it back (the
    // 10 s check, the reconcile, an attach, the Docker driver; found by a review, 2026-12-05).
    let listing = listing().await;
    let removed = GUARDED.load(std::sync::atomic::Ordering::Relaxed)
        && listing.as_ref().is_some_and(|l| !tables_in(l).contains(&format!("bridge {GUARD_TABLE}")));
    let ports = netlink.pinned_ports().await?;
    let limit = BROADCAST_LIMIT.load(std::sync::atomic::Ordering::Relaxed);
    // What the table about to go counted, first.
    if let Some(listing) = &listing {
        guard_counts::count(listing);
    }
    nft(&guard_ruleset(&ports, limit)).await?;
    guard_counts::replaced();
    GUARDED.store(true, std::sync::atomic::Ordering::Relaxed);
    if removed {
        tracing::warn!("the source guard table was removed or emptied; put it back");
        metrics::counter!("weave_firewall_repairs_total").increment(1);
    }
    Ok(ports.len())
}

/// This process has put the guard table in: one missing since was removed.
static GUARDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--flow-limit` as applied (0: none), for the repairs of [`keep`].
static FLOW_LIMIT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Puts in the flow limit's table ([`crate::plan::flows`]): at most `limit`
/// tracked connections per source address of a weave device (0: none, and
/// the table of an earlier run removed; None: a sixteenth of this
/// namespace's `nf_conntrack_max`). A kernel that refuses it (no nftables
/// `ct count`, `CONFIG_NFT_CONNLIMIT`; asked with `nft --check`) runs
/// without it, with one warning.
pub async fn limit_flows(limit: Option<u32>) -> Result<(), Error> {
    let mut limit = limit.unwrap_or_else(|| {
        let max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").ok();
        // Not there until conntrack is loaded: the kernel's default for 4 GiB and more.
        flows::default_limit(max.and_then(|m| m.trim().parse().ok()).unwrap_or(262_144))
    });
    if limit > 0
        && let Err(e) = nft_with(&["--check", "-f", "-"], &flow_ruleset(limit)).await
    {
        tracing::warn!(error = %e, "nftables refuses the flow limit here: tracked connections are not limited");
        limit = 0;
    }
    FLOW_LIMIT.store(limit, std::sync::atomic::Ordering::Relaxed);
    // An earlier run's table with this limit stays: replacing it would forget
    // every count (connections are counted when they start), and an agent
    // restart would give every source its limit again on top of what it holds.
    let mut kept = limit > 0;
    for chain in [flows::CHECKED_CHAIN, "input"] {
        let listed = nft_with(&["list", "chain", "inet", FLOW_TABLE, chain], "").await.unwrap_or_default();
        kept &= flows::holds_limit(&listed, limit);
    }
    if !kept {
        nft(&flow_ruleset(limit))
            .await
            .map_err(|e| Error::Dataplane(format!("cannot install the flow limit (nftables): {e}")))?;
    }
    tracing::info!(limit, kept, "tracked connections limited per source address (0: not limited)");
    Ok(())
}

/// Removes the tables (`agent reset`, `--cleanup-on-exit`); fine if absent.
pub async fn remove() -> Result<(), Error> {
    let mut script = String::new();
    let mut tables: Vec<(&str, &str)> = TABLES.iter().map(|(family, table, _)| (*family, *table)).collect();
    tables.dedup();
    for (family, table) in tables {
        script += &format!("table {family} {table} {{}}\ndelete table {family} {table}\n");
    }
    nft(&script).await
}

/// The tables weave keeps, with the chain the check lists: the isolation
/// tables, the source guard and the flow limit (both of its chains: it is
/// never replaced on a timer, which would forget its counts, so an emptied
/// `input` was found only at the next agent start).
const TABLES: [(&str, &str, &str); 6] = [
    ("inet", TABLE, "prerouting"),
    ("bridge", TABLE, "prerouting"),
    ("arp", TABLE, "input"),
    ("bridge", GUARD_TABLE, "prerouting"),
    ("inet", FLOW_TABLE, flows::CHECKED_CHAIN),
    ("inet", FLOW_TABLE, "input"),
];

/// How often the tables are checked for having been removed by someone else.
const RECHECK: Duration = Duration::from_secs(10);
/// How often the tables are replaced as a whole even though only elements
/// changed (repairs elements someone else deleted or added).
const FULL_RELOAD: Duration = Duration::from_secs(300);
/// Updates after map changes start at least this far apart, so a burst of
/// changes (many attaches at once) becomes few updates.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Applies the ruleset whenever the segments, their remote workloads, the
/// peers or the overlay ranges change, retries a failed apply every 2 s, and puts the tables back if
/// they vanish (a `flush ruleset`, a firewall reload: within a [`RECHECK`]) or
/// are emptied (`nft flush table`: within a check too). `applied` is what the
/// caller already applied (see `agent::serve`, which applies before routing).
/// When only set elements changed (a workload or a peer came or went) it
/// adds and deletes just those elements ([`update`]); the tables are
/// replaced whole when the chains change, after a failure, and every
/// [`FULL_RELOAD`]. The source guard table ([`guard_ports`]) is put back
/// the same way.
pub async fn keep(
    netlink: Netlink,
    mut maps: watch::Receiver<NetworkMap>,
    own_node: u64,
    (coordinator, coordinator_addrs, listen_port): (Vec<std::net::IpAddr>, Vec<std::net::SocketAddr>, u16),
    mut applied: Option<Rules>,
) {
    let mut reloaded = Instant::now();
    // One deadline across passes: a map that changes more often than every
    // RECHECK must not postpone the check for good.
    let mut next_check = tokio::time::Instant::now() + RECHECK;
    let mut checks = 0usize;
    // The flow limit's counter as last read (`weave_flows_refused_total`).
    let mut refused_seen = 0u64;
    // The isolation tables were found gone: counted once they are back (a
    // scrape that sees the repair sees the rules in place).
    let mut repairing = false;
    loop {
        // Started without a map and with a previous run's tables (`serve`
        // kept them): they stay until the coordinator sends one.
        if applied.is_none() && maps.borrow_and_update().revision == 0 {
            if maps.changed().await.is_err() {
                return;
            }
            continue;
        }
        let networks = super::routes::lan(own_node);
        let rules = rules(&maps.borrow_and_update(), own_node, &coordinator, &networks)
            .with_coordinators(&coordinator_addrs)
            .with_listen_port(listen_port);
        let updated = tokio::time::Instant::now();
        if applied.as_ref() != Some(&rules) {
            let elements = applied.as_ref().and_then(|old| update(old, &rules));
            let result = match elements {
                Some(script) => match nft(&script).await {
                    Ok(()) => {
                        publish(&rules);
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "isolation set update failed; replacing the tables");
                        apply(&rules).await.inspect(|()| reloaded = Instant::now())
                    }
                },
                None => apply(&rules).await.inspect(|()| reloaded = Instant::now()),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(
                        segments = rules.segments.len(),
                        peers = rules.peers.len(),
                        "isolation rules applied"
                    );
                    if std::mem::take(&mut repairing) {
                        metrics::counter!("weave_firewall_repairs_total").increment(1);
                    }
                    applied = Some(rules);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "isolation rules not applied; retrying");
                    applied = None;
                }
            }
        }
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + RECHECK;
            checks += 1;
            // nft could not be asked: no verdict (putting everything back
            // would fail as surely, and would forget the flow limit's counts).
            let Some(listing) = listing().await else {
                tracing::debug!("nft list ruleset failed; checking again later");
                continue;
            };
            let tables = tables_in(&listing);
            let present = |family: &str, name: &str| tables.contains(&format!("{family} {name}"));
            if applied.is_some() && ["inet", "bridge", "arp"].iter().any(|family| !present(family, TABLE)) {
                tracing::warn!("the isolation tables were removed or emptied; putting them back");
                repairing = true;
                OPEN.send_replace(BTreeSet::new());
                applied = None;
            } else if reloaded.elapsed() >= FULL_RELOAD {
                applied = None;
            }
            forward::open_iptables().await;
            forward::name_dropping_chains(&listing);
            // The source guard too (a `flush ruleset` takes every table).
            // (`guard_ports` counts and logs the repair.)
            if !present("bridge", GUARD_TABLE)
                && let Err(e) = guard_ports(&netlink).await
            {
                tracing::warn!(error = %e, "holding workload ports to their addresses");
            }
            guard_counts::count_locked().await;
            let flow_limit = FLOW_LIMIT.load(std::sync::atomic::Ordering::Relaxed);
            if flow_limit > 0 && !present("inet", FLOW_TABLE) {
                tracing::warn!("the flow limit's table was removed or emptied; putting it back");
                match nft(&flow_ruleset(flow_limit)).await {
                    Ok(()) => metrics::counter!("weave_firewall_repairs_total").increment(1),
                    Err(e) => tracing::warn!(error = %e, "limiting tracked connections per source"),
                }
            } else if flow_limit > 0
                && checks.is_multiple_of(TABLES.len())
                && let Some(n) = counted(&listing, "inet", FLOW_TABLE, flows::COUNTER)
            {
                // A table put back counts from 0 again: what it counted since.
                let new = if n >= refused_seen { n - refused_seen } else { n };
                metrics::counter!("weave_flows_refused_total").increment(new);
                refused_seen = n;
            }
            if applied.is_none() {
                continue;
            }
        }
        if applied.is_none() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tokio::select! {
            changed = maps.changed() => {
                if changed.is_err() { return }
                // A lone change at once; one within DEBOUNCE of the last update waits out the burst.
                tokio::time::sleep_until(updated + DEBOUNCE).await;
            }
            _ = tokio::time::sleep_until(next_check) => {}
        }
    }
}
