//! The control loop against the real coordinator, in-process on loopback (no
//! root needed): the watch applies and saves changes (also while it stays
//! busy), notices an outage, keeps the last map, and resumes after the
//! coordinator comes back.
use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{oneshot, watch};
use weave_agent::{
    daemon::control,
    host::state::{Identity, NodeKey, StateDir},
};
use weave_coordinator::config::ServeArgs;
use weave_proto::{
    client::{Api, connect, connect_lazy},
    v1::{AddSubnetRequest, JoinRequest, NetworkMap},
};

/// A coordinator on its own runtime and thread; [`Crash::now`] drops that
/// runtime, which closes every connection at once, as a crash would (a
/// graceful shutdown would wait for the agent's watch).
fn start(dir: &Path, listen: SocketAddr) -> (Coordinator, Crash) {
    let settings = ServeArgs::for_data_dir(dir.to_path_buf(), listen).settings().unwrap();
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let running = weave_coordinator::start(settings, std::future::pending()).await.unwrap();
            up_tx
                .send(Coordinator {
                    addr: running.local_addr,
                    admin: running.admin.clone(),
                    token: running.first_token.clone().map(|(join, _)| join),
                })
                .unwrap();
            let _ = die_rx.await;
        });
        // Waits for the tasks to be dropped: their listener and data-dir
        // lock are gone when the thread ends.
        rt.shutdown_timeout(Duration::from_secs(10));
    });
    (up_rx.recv().unwrap(), Crash { die: die_tx, thread })
}

struct Crash {
    die: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Crash {
    /// Drops the coordinator's runtime and returns once its port and data
    /// dir are free again (a restart on them must not race the old one).
    fn now(self) {
        self.die.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

struct Coordinator {
    addr: SocketAddr,
    admin: weave_proto::token::AdminCredential,
    token: Option<weave_proto::token::JoinToken>,
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn add_subnet(running: &Coordinator, cidr: &str) {
    let channel = connect(&running.admin.coordinator, running.admin.pin).await.unwrap();
    let mut admin = Api::new(channel, &running.admin.secret).unwrap();
    admin.subnets.add_subnet(AddSubnetRequest { cidr: cidr.into(), name: String::new(), egress: false }).await.unwrap();
}

fn has_subnet(map: &NetworkMap, cidr: &str) -> bool {
    map.subnets.iter().any(|s| s.cidr == cidr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_applies_saves_survives_an_outage_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let coord_dir = tmp.path().join("coordinator");
    let (running, stop) = start(&coord_dir, "127.0.0.1:0".parse().unwrap());
    let addr = running.addr;
    let token = running.token.clone().unwrap();

    // Join as the agent does (without the data plane).
    let key = NodeKey::generate();
    let mut api = Api::new(connect(&token.coordinator, token.pin).await.unwrap(), "-").unwrap();
    let joined = api
        .join
        .join(JoinRequest {
            token: token.to_string(),
            name: "h1".into(),
            public_key: key.public().as_bytes().to_vec(),
            endpoints: vec!["192.0.2.11:6784".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let node = joined.node.unwrap();
    let identity = Identity {
        node_id: node.id,
        name: node.name,
        address: node.address.parse().unwrap(),
        coordinator: token.coordinator.clone(),
        pin: token.pin.to_string(),
        credential: joined.credential.clone(),
        endpoint: "192.0.2.11:6784".parse().unwrap(),
        listen_port: 6784,
        endpoints_pinned: true,
    };
    let state = StateDir::new(tmp.path().join("agent"));
    state.save_join(&key, &identity, joined.map.as_ref().unwrap()).unwrap();

    let node_api = Api::new(connect_lazy(&token.coordinator, token.pin).unwrap(), &joined.credential).unwrap();
    let (tx, rx) = watch::channel(joined.map.unwrap());
    let connected = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(std::sync::Mutex::new(None));
    let watcher =
        tokio::spawn(control::watch_map(node_api.clone(), state.clone(), tx, connected.clone(), refused.clone()));

    add_subnet(&running, "10.40.0.0/24").await;
    wait_until("the new subnet in the map", || has_subnet(&rx.borrow(), "10.40.0.0/24")).await;
    // The map is saved once the watch has been quiet for a moment.
    wait_until("the map on disk to have the change", || state.load().unwrap().2.revision == rx.borrow().revision).await;
    let (_, _, saved) = state.load().unwrap();
    assert!(has_subnet(&saved, "10.40.0.0/24"), "the map on disk has the change");
    assert_eq!(saved.revision, rx.borrow().revision);
    assert!(connected.load(Ordering::Relaxed));
    assert_eq!(*refused.lock().unwrap(), None, "an open watch is no refusal");

    // Outage: the agent notices, keeps its map.
    stop.now();
    wait_until("the agent to notice the outage", || !connected.load(Ordering::Relaxed)).await;
    let before = rx.borrow().clone();
    assert!(has_subnet(&before, "10.40.0.0/24"));

    // Back on the same address and data dir: the watch resumes and new changes arrive.
    let (running, _stop) = start(&coord_dir, addr);
    wait_until("the watch to reconnect", || connected.load(Ordering::Relaxed)).await;
    add_subnet(&running, "10.41.0.0/24").await;
    wait_until("the change made after the outage", || has_subnet(&rx.borrow(), "10.41.0.0/24")).await;
    let after = rx.borrow().clone();
    assert!(after.revision > before.revision);
    assert!(has_subnet(&after, "10.40.0.0/24"), "nothing lost across the outage");
    wait_until("the map on disk to catch up", || state.load().unwrap().2.revision == after.revision).await;
    let (_, _, saved) = state.load().unwrap();
    assert_eq!(saved.revision, after.revision);
    assert!(has_subnet(&saved, "10.41.0.0/24"), "the map on disk has the change made after the outage");

    // A watch that stays busy (changes closer together than the quiet period
    // the save waits for) still saves the map, well within 10 s.
    let channel = connect(&running.admin.coordinator, running.admin.pin).await.unwrap();
    let mut admin = Api::new(channel, &running.admin.secret).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut changes = 0u32;
    while state.load().unwrap().2.revision == after.revision {
        assert!(tokio::time::Instant::now() < deadline, "no save while the watch stayed busy ({changes} changes)");
        let cidr = format!("10.{}.{}.0/24", 50 + changes / 256, changes % 256);
        admin.subnets.add_subnet(AddSubnetRequest { cidr, name: String::new(), egress: false }).await.unwrap();
        changes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(state.load().unwrap().2.revision > after.revision);
    watcher.abort();
}
