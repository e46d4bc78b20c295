//! SIGKILL in the middle of a stream of allocations: after a restart every
//! acknowledged allocation is there, with the same address, and none is
//! doubled. SIGTERM records the open watches as ended.
mod common;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use weave_proto::{
    client::{Api, connect},
    token::AdminCredential,
    v1::*,
};

struct Coordinator {
    child: Child,
    addr: String,
    token: Option<String>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data_dir: &Path) -> Coordinator {
    spawn_under(data_dir, &[])
}

/// Started by `wrapper` (`nohup`, which execs it: the same pid), if any.
fn spawn_under(data_dir: &Path, wrapper: &[&str]) -> Coordinator {
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env!("CARGO_BIN_EXE_coordinator"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_coordinator")),
    };
    if let Some(store) = common::store_flag(&data_dir.join("coordinator.db")) {
        command.env("WEAVE_STORE", store);
    }
    let mut child = command
        // No metrics port: the tests here run at once, and 6781 is one.
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coordinator binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut token) = (None, None);
    // The banner: the listen line, the credential line, then a token line.
    for _ in 0..3 {
        let line = lines.next().expect("banner line").unwrap();
        if let Some(rest) = line.strip_prefix("coordinator listening on ") {
            addr = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("join token (first start): ") {
            token = Some(rest.trim().to_string());
        }
    }
    // Keep reading: the banner may go on, and a closed pipe is not what is tested here.
    std::thread::spawn(move || lines.for_each(drop));
    Coordinator { child, addr: addr.expect("listen address printed"), token }
}

async fn admin(c: &Coordinator, data_dir: &Path) -> Api {
    let cred = AdminCredential::parse(&std::fs::read_to_string(data_dir.join("admin.credential")).unwrap()).unwrap();
    Api::new(connect(&c.addr, cred.pin).await.unwrap(), &cred.secret).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_allocations_loses_no_acknowledged_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = spawn(&data);
    let mut api = admin(&first, &data).await;
    let joined = api
        .join
        .join(JoinRequest {
            token: first.token.clone().expect("first start prints a token"),
            name: "host1".into(),
            public_key: vec![1; 32],
            endpoints: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let node = Api::new(connect(&first.addr, api_pin(&data)).await.unwrap(), &joined.credential).unwrap();

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8 {
        let (mut node, acked) = (node.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let r = AllocateRequest { container: format!("w{w}-{n}"), ..Default::default() };
                match node.ipam.allocate(r).await {
                    Ok(a) => acked.lock().unwrap().push((format!("w{w}-{n}"), a.into_inner().address)),
                    Err(_) => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL while eight allocations are in flight.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150);

    let second = spawn(&data);
    assert!(second.token.is_none(), "a restart is not a first start");
    let mut api = admin(&second, &data).await;
    let all = api.ipam.list_allocations(ListAllocationsRequest::default()).await.unwrap().into_inner().allocations;
    let stored: HashMap<String, String> = all.iter().map(|a| (a.container.clone(), a.address.clone())).collect();
    for (container, address) in &acked {
        assert_eq!(stored.get(container), Some(address), "acknowledged allocation of {container} lost or changed");
    }
    let distinct: HashSet<&String> = all.iter().map(|a| &a.address).collect();
    assert_eq!(distinct.len(), all.len(), "duplicate address after restart");
    // Allocation carries on after the restart without reusing a held address.
    let mut node = Api::new(connect(&second.addr, api_pin(&data)).await.unwrap(), &joined.credential).unwrap();
    let next = node.ipam.allocate(AllocateRequest { container: "after".into(), ..Default::default() }).await.unwrap();
    assert!(!distinct.contains(&next.into_inner().address));
}

fn api_pin(data_dir: &Path) -> weave_proto::token::Pin {
    AdminCredential::parse(&std::fs::read_to_string(data_dir.join("admin.credential")).unwrap()).unwrap().pin
}

/// SIGTERM (a service stop, an upgrade) records the coordinator's open
/// watches as ended before it exits: they stayed "watching", and their
/// nodes showed `connected` (and were kept from being forgotten) for two
/// presence refreshes after it came back, agent or no agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_coordinators_watches_are_recorded_as_ended() {
    let dir = tempfile::tempdir().unwrap();
    stopped_by(nix::sys::signal::Signal::SIGTERM, &dir.path().join("data")).await;
}

/// SIGHUP (a terminal closed under a coordinator started with `&`) stops
/// it as SIGTERM does: it killed it by the default action, its watches
/// left recorded and its write-ahead log unfolded (found by a review,
/// 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_stops_the_coordinator_as_sigterm_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stopped_by(nix::sys::signal::Signal::SIGHUP, &data).await;
    if !common::postgres() {
        let wal = std::fs::metadata(data.join("coordinator.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the write-ahead log is folded in at a stop");
    }
}

/// Started with SIGHUP ignored (`nohup`), it stays ignored: a handler for
/// it replaced that, and a `nohup coordinator serve &` stopped at logout
/// (found by a review, 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_started_under_nohup_outlives_a_hangup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = spawn_under(&data, &["nohup"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.child.try_wait().unwrap().is_none(), "a hangup stopped a coordinator started under nohup");
    admin(&c, &data).await.subnets.list_subnets(ListSubnetsRequest {}).await.expect("it still serves");
}

/// Stops a coordinator on `data` with a node watching by `signal`, starts
/// another there, checks the watch was recorded as ended, and stops that
/// one by `signal` too.
async fn stopped_by(signal: nix::sys::signal::Signal, data: &Path) {
    let first = spawn(data);
    let mut admin = admin(&first, data).await;
    let r = JoinRequest {
        token: first.token.clone().unwrap(),
        name: "h1".into(),
        public_key: vec![1; 32],
        endpoints: vec!["192.0.2.1:6784".into()],
        ..Default::default()
    };
    let joined = admin.join.join(r).await.unwrap().into_inner();
    let mut node = Api::new(connect(&first.addr, api_pin(data)).await.unwrap(), &joined.credential).unwrap();
    // As an agent does: a watch, and another at once whenever it ends
    // (one opened while the coordinator drained its connections was left
    // recorded as held).
    let mut watch = node.map.watch(WatchRequest::default()).await.unwrap().into_inner();
    watch.message().await.unwrap().unwrap();
    let rewatch = tokio::spawn(async move {
        loop {
            if let Ok(w) = node.map.watch(WatchRequest::default()).await {
                let mut w = w.into_inner();
                while let Ok(Some(_)) = w.message().await {}
            }
        }
    });
    let connected = |listed: ListNodesResponse| listed.presence.first().map(|p| p.connected);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while connected(admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner()) != Some(true) {
        assert!(std::time::Instant::now() < deadline, "the watch was not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut first = first;
    let pid = nix::unistd::Pid::from_raw(first.child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    assert!(first.child.wait().unwrap().success(), "{signal}");
    let second = spawn(data);
    let mut admin = self::admin(&second, data).await;
    let listed = admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner();
    assert_eq!(connected(listed), Some(false), "a watch of the stopped coordinator still counted");
    rewatch.abort();
    drop(watch);
    let mut second = second;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.child.id() as i32), signal).unwrap();
    assert!(second.child.wait().unwrap().success(), "{signal}");
}
