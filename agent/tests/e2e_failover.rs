//! Two coordinators on two hosts in front of one PostgreSQL database that
//! runs on a third host of the underlay, reached over TCP with a password.
//!
//! `agents_fail_over_...`: three agents; the coordinator with watchers is
//! killed with SIGKILL: within 5 s the survivor holds every agent's watch
//! (resumed from their revisions), a ping between workloads running
//! throughout loses nothing, and an attach made during the outage succeeds
//! through the survivor and is reached from the other hosts. weavectl given
//! both addresses answers with either down. A host of the underlay that
//! never joined reaches the database but cannot log in without the password.
//!
//! `allocations_streamed_...`: 50 clients per coordinator (each a joined
//! node) stream allocations through both at once, first with both up, then
//! with one killed mid-stream (its clients go on through the survivor,
//! retrying the allocation that was cut off): every acknowledged address is
//! in the map exactly as acknowledged, none is held twice, none is lost,
//! and asking again for any of them gives the same address.
//!
//! PostgreSQL is a throwaway server the test starts (initdb into a temporary
//! directory, the server inside its host's namespace; see pg.rs `NetPg`).
mod common;
#[path = "../../coordinator/tests/common/pg.rs"]
mod pg;

use std::{
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use weave_proto::token::AdminCredential;

const C2_IP: &str = "192.0.2.3";
/// PostgreSQL's host.
const PG_IP: &str = "192.0.2.5";
/// A host of the underlay that never joined anything.
const OUTSIDER_IP: &str = "192.0.2.66";

/// The second coordinator, killed by its PID when dropped.
struct Second(Option<Child>);

impl Second {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_second(ns: &str, data_dir: &Path, store: &str, advertise: &str, out: &Path) -> Second {
    let _ = fs::remove_file(out);
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(coordinator_bin())
        .args(["serve", "--listen", &format!("{C2_IP}:6783"), "--store", store, "--advertise", advertise])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the second coordinator");
    wait_for("the second coordinator to start", Duration::from_secs(30), || {
        fs::read_to_string(out).ok().filter(|s| s.contains("listening on")).map(|_| ())
    });
    Second(Some(child))
}

/// Map watch streams open on the coordinator in namespace `ns` (its /metrics on loopback).
fn watchers(ns: &str) -> Option<u32> {
    in_netns(ns, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:6781").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines().find_map(|l| l.strip_prefix("weave_watchers ")).and_then(|v| v.trim().parse::<f64>().ok())
    })
    .join()
    .unwrap()
    .map(|v| v as u32)
}

fn status_ok(bed: &Bed) {
    let out = bed.weavectl_admin(&["status"]);
    assert!(out.status.success(), "weavectl status: {}", String::from_utf8_lossy(&out.stderr));
}

/// PostgreSQL on its own host, the bed's coordinator moved onto it from
/// SQLite (`coordinator migrate`, over the underlay) and a second
/// coordinator with the same identity; both advertise both addresses.
struct Cluster {
    server: pg::NetPg,
    url: String,
    both: String,
    c2: Second,
    c2_ns: String,
    c2_dir: PathBuf,
    c2_out: PathBuf,
}

fn password() -> String {
    let mut b = [0u8; 12];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pg_cluster(bed: &mut Bed) -> Cluster {
    bed.kill_coordinator();
    let pg_ns = bed.add_bare_host(PG_IP);
    let server = pg::NetPg::start(&pg_ns, PG_IP, &password());
    let url = server.create_database();
    assert!(url.starts_with("postgres://weave:") && url.contains(&format!("@{PG_IP}:5432/")), "{url}");
    let db = bed.coordinator_dir.join("coordinator.db");
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.coordinator_ns])
        .arg(coordinator_bin())
        .args(["migrate", "--from", &format!("sqlite://{}", db.display()), "--to", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let both = format!("{COORDINATOR_IP}:6783,{C2_IP}:6783");
    bed.coordinator_args = vec!["--store".into(), url.clone(), "--advertise".into(), both.clone()];
    bed.start_coordinator();
    let cred = fs::read_to_string(bed.coordinator_dir.join("admin.credential")).unwrap();
    bed.admin = AdminCredential::parse(cred.trim()).unwrap();
    assert_eq!(bed.admin.coordinator, both);

    // The second one: same identity (TLS key and admin credential as files).
    let c2_dir = bed.path("coordinator2");
    fs::create_dir_all(c2_dir.join("tls")).unwrap();
    for f in ["tls/coordinator.crt", "tls/coordinator.key", "admin.credential"] {
        fs::copy(bed.coordinator_dir.join(f), c2_dir.join(f)).unwrap();
    }
    let c2_ns = bed.add_bare_host(C2_IP);
    let c2_out = bed.path("coordinator2.out");
    let c2 = start_second(&c2_ns, &c2_dir, &url, &both, &c2_out);
    Cluster { server, url, both, c2, c2_ns, c2_dir, c2_out }
}

/// Logs in to PostgreSQL at `url` from namespace `ns`; the SQLSTATE of a refusal.
fn pg_login_from(ns: &str, url: String) -> Result<(), String> {
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
            use sqlx::Connection as _;
            match sqlx::PgConnection::connect(&url).await {
                Ok(c) => {
                    let _ = c.close().await;
                    Ok(())
                }
                Err(e) => Err(match e.as_database_error().and_then(|d| d.code()) {
                    Some(code) => code.into_owned(),
                    None => format!("not refused by the server: {e}"),
                }),
            }
        })
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root: network namespaces, PostgreSQL as the postgres user"]
fn agents_fail_over_to_the_surviving_coordinator_on_sigkill() {
    let mut bed = Bed::new();
    let Cluster { server, url, both, mut c2, c2_ns, c2_dir, c2_out } = pg_cluster(&mut bed);

    // A host of the underlay that never joined reaches the database (the
    // right password logs in from there) but nobody gets in without it.
    let outsider = bed.add_bare_host(OUTSIDER_IP);
    let db = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(pg_login_from(&outsider, url.clone()), Ok(()), "the database is reachable from the underlay");
    let refused = "28P01"; // invalid_password
    for (user, pw) in [("weave", "wrong"), ("weave", ""), ("postgres", ""), ("postgres", "postgres")] {
        let attempt = server.url_as(user, pw, &db).replace(":@", "@");
        assert_eq!(pg_login_from(&outsider, attempt.clone()), Err(refused.into()), "{attempt}");
    }

    // Tokens made now carry both addresses; so do the agents' credentials.
    bed.token = bed.admin(|mut api| async move {
        let r = weave_proto::v1::CreateTokenRequest { description: "failover".into(), ..Default::default() };
        api.tokens.create_token(r).await.unwrap().into_inner().secret_token
    });
    for _ in 0..3 {
        bed.add_host();
    }
    for h in 0..3 {
        bed.wait_peers(h, 2);
        bed.add_workload(h, "default");
    }
    bed.wait_ping(0, 1, Duration::from_secs(10));
    bed.wait_ping(0, 2, Duration::from_secs(10));
    // A host that joined while the cluster had one coordinator (a token of
    // its address alone) saves the token's list when it joins again with a
    // token of both, and fails over with the others. Before, it kept the one
    // address for good, and `agent join` with the new token changed nothing
    // (found by a review, 2026-12-05).
    let full = bed.token.clone();
    let mut one = weave_proto::token::JoinToken::parse(&full).unwrap();
    let both_addresses = one.coordinator.clone();
    one.coordinator = both_addresses.split(',').next().unwrap().to_string();
    assert_ne!(one.coordinator, both_addresses, "the token lists both: {both_addresses}");
    bed.token = one.to_string();
    let late = bed.add_host();
    let saved = |bed: &Bed| {
        let id: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bed.hosts[late].data_dir.join("identity.json")).unwrap()).unwrap();
        id["coordinator"].as_str().unwrap().to_string()
    };
    assert_eq!(saved(&bed), one.coordinator);
    bed.signal_agent(late, nix::sys::signal::Signal::SIGTERM);
    bed.token = full;
    bed.start_agent(late, true);
    bed.wait_status(late);
    assert_eq!(saved(&bed), both_addresses, "agent join with a token listing both coordinators");
    // A token of the same coordinator at an address where it does not answer
    // (a typo, a stale token) changes nothing.
    let mut elsewhere = weave_proto::token::JoinToken::parse(&bed.token).unwrap();
    elsewhere.coordinator = "192.0.2.99:6783".into();
    let full = std::mem::replace(&mut bed.token, elsewhere.to_string());
    bed.signal_agent(late, nix::sys::signal::Signal::SIGTERM);
    bed.start_agent(late, true);
    bed.wait_status(late);
    bed.token = full;
    assert_eq!(saved(&bed), both_addresses, "a token whose addresses do not answer");
    let (c1_ns, c2_ns_) = (bed.coordinator_ns.clone(), c2_ns.clone());
    let (w1, w2) = wait_for("all four watches open", Duration::from_secs(30), || {
        let (a, b) = (watchers(&c1_ns)?, watchers(&c2_ns_)?);
        (a + b == 4).then_some((a, b))
    });
    status_ok(&bed);

    // A ping for the whole outage; none may be lost.
    let (ns, to) = (bed.workloads[0].ns.clone(), bed.workloads[1].ip.to_string());
    let pinger = std::thread::spawn(move || in_ns(&ns, &["ping", "-q", "-i", "0.1", "-c", "150", "-W", "2", &to]));
    std::thread::sleep(Duration::from_secs(1));

    // Kill -9 the coordinator that holds watches; the survivor gets all three within 5 s.
    let killed_first = w1 >= w2;
    let survivor_ns = if killed_first {
        bed.kill_coordinator();
        c2_ns.clone()
    } else {
        c2.kill();
        bed.coordinator_ns.clone()
    };
    let killed_at = Instant::now();
    wait_for("every agent to watch the survivor", Duration::from_secs(30), || {
        (watchers(&survivor_ns)? == 4).then_some(())
    });
    let took = killed_at.elapsed();
    eprintln!(
        "watchers before: {w1} on the first, {w2} on the second; killed the {}; fail-over took {took:?}",
        if killed_first { "first" } else { "second" }
    );
    assert!(took < Duration::from_secs(5), "fail-over took {took:?} (watchers before: {w1}/{w2})");
    for h in 0..4 {
        // The coordinator counts a watch a moment before its agent hears back.
        wait_for(&format!("host {} to have a watch", h + 1), Duration::from_secs(5), || {
            bed.status(h).filter(|s| s.coordinator_connected).map(|_| ())
        });
    }

    // An attach during the outage goes through the survivor and reaches the other hosts.
    let w = bed.add_workload_via_agent(2, "default");
    bed.wait_ping(0, w, Duration::from_secs(15));
    bed.wait_ping(1, w, Duration::from_secs(15));
    status_ok(&bed);

    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("150 packets transmitted, 150 received"), "loss:\n{text}");

    // Bring the killed one back, kill the other: weavectl still answers.
    if killed_first {
        bed.start_coordinator();
        c2.kill();
    } else {
        c2 = start_second(&c2_ns, &c2_dir, &url, &both, &c2_out);
        bed.kill_coordinator();
    }
    status_ok(&bed);

    // Both down for 20 s (every agent's retries at their slowest), then both
    // back: every agent watches again within a few retries. The balanced
    // channel left a connection it had begun mid-handshake while the watch
    // waited out its backoff, the coordinator closed it at its 5 s TLS
    // timeout, and the next attempt met that and began another: agents took
    // 13-96 s (found by a review, 2026-12-06).
    bed.kill_coordinator();
    c2.kill();
    std::thread::sleep(Duration::from_secs(20));
    bed.start_coordinator();
    c2 = start_second(&c2_ns, &c2_dir, &url, &both, &c2_out);
    let back = Instant::now();
    for h in 0..4 {
        wait_for(&format!("host {} to watch again", h + 1), Duration::from_secs(60), || {
            bed.status(h).filter(|s| s.coordinator_connected).map(|_| ())
        });
        eprintln!("host {} watches again after {:?}", h + 1, back.elapsed());
    }
    let took = back.elapsed();
    let log = bed.log(0);
    let tail = &log[log.len().saturating_sub(4000)..];
    assert!(took < Duration::from_secs(15), "the agents took {took:?} to watch again; host 1's log:\n{tail}");
    drop(c2);
    drop(bed);
    drop(server);
}

/// One streaming client: a joined node, talking to the coordinators in
/// `list` (its own first; tried in turn when it reconnects).
#[derive(Clone)]
struct Client {
    node: String,
    list: String,
    credential: String,
}

/// What one client saw.
#[derive(Default)]
struct Streamed {
    /// (container, address) for every acknowledged allocation.
    acked: Vec<(String, String)>,
    /// Containers whose request was cut off and sent again.
    retried: Vec<String>,
    errors: Vec<String>,
}

/// A call that did not reach a coordinator, or was cut off with it, as the
/// client library sees it: sent again (allocations are idempotent per
/// node, container and subnet).
fn cut_off(s: &tonic::Status) -> bool {
    weave_proto::client::cut_off(s)
}

async fn api_for(c: &Client, pin: weave_proto::token::Pin) -> Result<weave_proto::client::Api, String> {
    let t = Instant::now();
    loop {
        match weave_proto::client::connect(&c.list, pin).await {
            Ok(ch) => return weave_proto::client::Api::new(ch, &c.credential).map_err(|e| e.to_string()),
            Err(e) if t.elapsed() > Duration::from_secs(30) => return Err(format!("{}: {e}", c.node)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Each client asks for `containers(i)` one after the other (the next once
/// the last is acknowledged), all clients at once, from namespace `ns`.
/// `acks` counts acknowledgements as they come.
fn stream(
    ns: &str,
    clients: Vec<Client>,
    pin: weave_proto::token::Pin,
    containers: impl Fn(usize) -> Vec<String> + Send + 'static,
    acks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<Vec<Streamed>> {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let tasks: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let (wanted, acks) = (containers(i), acks.clone());
                    tokio::spawn(async move {
                        let mut out = Streamed::default();
                        let mut api = match api_for(&c, pin).await {
                            Ok(a) => a,
                            Err(e) => {
                                out.errors.push(e);
                                return out;
                            }
                        };
                        for container in wanted {
                            let req =
                                weave_proto::v1::AllocateRequest { container: container.clone(), ..Default::default() };
                            loop {
                                match api.ipam.allocate(req.clone()).await {
                                    Ok(a) => {
                                        out.acked.push((container, a.into_inner().address));
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                        break;
                                    }
                                    Err(s) if cut_off(&s) && out.retried.len() < 20 => {
                                        out.retried.push(container.clone());
                                        match api_for(&c, pin).await {
                                            Ok(a) => api = a,
                                            Err(e) => {
                                                out.errors.push(e);
                                                return out;
                                            }
                                        }
                                    }
                                    Err(s) => {
                                        out.errors.push(format!("{} {container}: {s:?}", c.node));
                                        return out;
                                    }
                                }
                            }
                        }
                        out
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            all
        })
    })
}

/// Every allocation in the cluster as (node, container) -> address, read
/// from whichever coordinator answers first, in namespace `ns`.
fn allocation_map(ns: &str, admin: &AdminCredential) -> Vec<(String, String, String)> {
    let admin = admin.clone();
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
            let ch = weave_proto::client::connect(&admin.coordinator, admin.pin).await.unwrap();
            let mut api = weave_proto::client::Api::new(ch, &admin.secret).unwrap();
            let req = weave_proto::v1::ListAllocationsRequest::default();
            let list = api.ipam.list_allocations(req).await.unwrap().into_inner().allocations;
            list.into_iter().map(|a| (a.node, a.container, a.address)).collect()
        })
    })
    .join()
    .unwrap()
}

/// Checks one streaming round: no client failed, every container of it
/// was acknowledged once and is in the map with exactly the acknowledged
/// address, no address is held twice in the whole map.
fn check_round(round: &str, clients: &[Client], got: &[Streamed], map: &[(String, String, String)], per_client: usize) {
    let errors: Vec<&String> = got.iter().flat_map(|g| &g.errors).collect();
    assert!(errors.is_empty(), "{round}: clients failed: {errors:#?}");
    let mut holders = std::collections::BTreeMap::new();
    for (node, container, address) in map {
        let ip = address.split('/').next().unwrap().to_string();
        if let Some(other) = holders.insert(ip.clone(), (node, container)) {
            panic!("{round}: {ip} is held twice: by {other:?} and by {node}/{container}");
        }
    }
    let in_map: std::collections::BTreeMap<(&str, &str), &str> =
        map.iter().map(|(n, c, a)| ((n.as_str(), c.as_str()), a.as_str())).collect();
    for (c, g) in clients.iter().zip(got) {
        assert_eq!(g.acked.len(), per_client, "{round}: {} acknowledged {} of {per_client}", c.node, g.acked.len());
        for (container, address) in &g.acked {
            assert_eq!(
                in_map.get(&(c.node.as_str(), container.as_str())),
                Some(&address.as_str()),
                "{round}: {}/{container} was acknowledged with {address}",
                c.node
            );
        }
    }
    let ours = map.iter().filter(|(_, c, _)| c.starts_with(&format!("{round}-"))).count();
    assert_eq!(ours, clients.len() * per_client, "{round}: allocations in the map beyond those acknowledged");
}

/// Containers `<round>-<client>-<k>` for k in 0..n.
fn names(round: &'static str, n: usize) -> impl Fn(usize) -> Vec<String> + Send + 'static {
    move |i| (0..n).map(|k| format!("{round}-{i}-{k}")).collect()
}

/// `n` nodes join from namespace `ns`, alternately through the first and
/// the second coordinator; client `i` has its coordinator first in its list.
fn join_clients(bed: &Bed, ns: &str, n: usize) -> Vec<Client> {
    let (f, s) = (format!("{COORDINATOR_IP}:6783"), format!("{C2_IP}:6783"));
    let (token, pin) = (bed.token.clone(), bed.admin.pin);
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
            let mut out = Vec::new();
            for i in 0..n {
                let list = if i % 2 == 0 { format!("{f},{s}") } else { format!("{s},{f}") };
                let ch = weave_proto::client::connect(&list, pin).await.unwrap();
                let mut join = weave_proto::v1::join_service_client::JoinServiceClient::new(ch);
                let req = weave_proto::v1::JoinRequest {
                    token: token.clone(),
                    name: format!("s{i}"),
                    public_key: vec![i as u8 + 1; 32],
                    endpoints: vec![format!("198.51.100.{}:6784", i + 1)],
                    ..Default::default()
                };
                let joined = join.join(req).await.unwrap_or_else(|e| panic!("join s{i}: {e:?}")).into_inner();
                out.push(Client { node: format!("s{i}"), list, credential: joined.credential });
            }
            out
        })
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root: network namespaces, PostgreSQL as the postgres user"]
fn allocations_streamed_through_both_coordinators_keep_every_acknowledged_address_once() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    const CLIENTS: usize = 100;
    let mut bed = Bed::new();
    let Cluster { server, both, mut c2, .. } = pg_cluster(&mut bed);
    let clients_ns = bed.add_bare_host("192.0.2.20");
    assert_eq!(both, format!("{COORDINATOR_IP}:6783,{C2_IP}:6783"));
    let pin = bed.admin.pin;

    // 100 nodes join, half through each coordinator; each is one client of that one.
    let clients = join_clients(&bed, &clients_ns, CLIENTS);

    // Round 1, both up: 10 allocations per client.
    let acks = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got1 = stream(&clients_ns, clients.clone(), pin, names("r1", 10), acks.clone()).join().unwrap();
    eprintln!("round 1: {} allocations in {:?}", acks.load(Ordering::SeqCst), started.elapsed());
    let map = allocation_map(&clients_ns, &bed.admin);
    check_round("r1", &clients, &got1, &map, 10);
    assert!(got1.iter().all(|g| g.retried.is_empty()), "round 1: nothing was cut off");

    // Round 2: 20 per client; the first coordinator is killed once a third are in.
    let acks = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let running = stream(&clients_ns, clients.clone(), pin, names("r2", 20), acks.clone());
    wait_for("a third of round 2", Duration::from_secs(60), || {
        (acks.load(Ordering::SeqCst) >= CLIENTS * 20 / 3).then_some(())
    });
    let at_kill = acks.load(Ordering::SeqCst);
    bed.kill_coordinator();
    let got = running.join().unwrap();
    let retried: Vec<&String> = got.iter().flat_map(|g| &g.retried).collect();
    eprintln!(
        "round 2: {} allocations in {:?}, {at_kill} before the kill; {} requests cut off and sent again",
        acks.load(Ordering::SeqCst),
        started.elapsed(),
        retried.len()
    );
    let map = allocation_map(&clients_ns, &bed.admin);
    check_round("r2", &clients, &got, &map, 20);
    assert!(acks.load(Ordering::SeqCst) > at_kill, "allocations went on after the kill");

    // Asked again through the survivor, every container of both rounds
    // (those cut off at the kill too) gets the address it was acknowledged.
    let again = stream(
        &clients_ns,
        clients.clone(),
        pin,
        |i| (0..10).map(|k| format!("r1-{i}-{k}")).chain((0..20).map(|k| format!("r2-{i}-{k}"))).collect(),
        Arc::new(AtomicUsize::new(0)),
    )
    .join()
    .unwrap();
    let errors: Vec<&String> = again.iter().flat_map(|g| &g.errors).collect();
    assert!(errors.is_empty(), "asked again: {errors:#?}");
    for ((c, g1), (g2, after)) in clients.iter().zip(&got1).zip(got.iter().zip(&again)) {
        let mut want: Vec<&(String, String)> = g1.acked.iter().chain(&g2.acked).collect();
        let mut have: Vec<&(String, String)> = after.acked.iter().collect();
        want.sort();
        have.sort();
        assert_eq!(have, want, "{}: asked again, a different address", c.node);
    }
    assert_eq!(map, allocation_map(&clients_ns, &bed.admin), "asking again changed nothing");
    eprintln!("asked again: {} allocations, {} of them cut off at the kill", CLIENTS * 30, retried.len());
    c2.kill();
    drop(bed);
    drop(server);
}

/// How many advisory locks the sessions from `client` hold (the write lock
/// is the only one weave takes), asked on the server's Unix socket.
fn advisory_locks_of(server: &pg::NetPg, client: &str) -> i64 {
    let url = server.owned.0.url("postgres");
    let sql = format!(
        "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.client_addr = '{client}'::inet"
    );
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await.unwrap()
        })
    })
    .join()
    .unwrap()
}

/// A coordinator whose host stops answering in the middle of a write
/// (frozen with SIGSTOP: its connections stay open, nothing tells
/// PostgreSQL it is gone) holds the cluster-wide write lock. The other
/// coordinator's writes wait for it only until PostgreSQL ends the frozen
/// session (idle in its transaction for 10 s), not for ever; when the
/// frozen one thaws, its cut-off writes fail as UNAVAILABLE and go through
/// again; nothing acknowledged is lost or doubled.
#[test]
#[ignore = "needs root: network namespaces, PostgreSQL as the postgres user"]
fn a_coordinator_frozen_inside_its_write_holds_up_the_other_for_seconds_only() {
    use nix::{sys::signal, unistd::Pid};
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let mut bed = Bed::new();
    let Cluster { server, c2, .. } = pg_cluster(&mut bed);
    let clients_ns = bed.add_bare_host("192.0.2.20");
    let pin = bed.admin.pin;
    let mut clients = join_clients(&bed, &clients_ns, 20);
    // Each talks to its own coordinator only.
    for c in &mut clients {
        c.list = c.list.split(',').next().unwrap().to_string();
    }
    let (on_a, on_b): (Vec<Client>, Vec<Client>) =
        clients.into_iter().partition(|c| c.list.starts_with(COORDINATOR_IP));

    let acks_b = Arc::new(AtomicUsize::new(0));
    let running_b = stream(&clients_ns, on_b.clone(), pin, names("b", 100), acks_b.clone());
    wait_for("the second coordinator's clients to stream", Duration::from_secs(30), || {
        (acks_b.load(Ordering::SeqCst) >= 50).then_some(())
    });
    // Freeze it at a moment it holds the write lock (inside a batch).
    let b = Pid::from_raw(c2.0.as_ref().unwrap().id() as i32);
    let mut tries = 0;
    loop {
        signal::kill(b, signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if advisory_locks_of(&server, C2_IP) > 0 {
            break;
        }
        signal::kill(b, signal::Signal::SIGCONT).unwrap();
        tries += 1;
        assert!(tries < 100, "the second coordinator never held the write lock");
        std::thread::sleep(Duration::from_millis(7 * (tries % 5) as u64));
    }
    let frozen = Instant::now();

    // Writes through the first coordinator wait for the lock, then go on.
    let done = Arc::new(AtomicUsize::new(0));
    let running_a = stream(&clients_ns, on_a.clone(), pin, names("a", 5), done.clone());
    wait_for("every write through the first coordinator", Duration::from_secs(40), || {
        (done.load(Ordering::SeqCst) == on_a.len() * 5).then_some(())
    });
    let waited = frozen.elapsed();
    eprintln!("frozen after {tries} tries; the other coordinator's writes waited {waited:?}");
    assert_eq!(advisory_locks_of(&server, C2_IP), 0, "the frozen session gave up the write lock");
    let got_a = running_a.join().unwrap();

    signal::kill(b, signal::Signal::SIGCONT).unwrap();
    let got_b = running_b.join().unwrap();
    let cut: usize = got_b.iter().map(|g| g.retried.len()).sum();
    eprintln!("thawed: {cut} of the second coordinator's writes were cut off and sent again");
    let map = allocation_map(&clients_ns, &bed.admin);
    check_round("a", &on_a, &got_a, &map, 5);
    check_round("b", &on_b, &got_b, &map, 100);
    drop(c2);
    drop(bed);
    drop(server);
}
