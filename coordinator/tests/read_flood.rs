//! An outsider on the underlay floods the coordinator with calls carrying a
//! bogus credential: each costs up to three credential lookups on the read
//! pool before it is refused. Writes must not queue behind them.
//!
//! PostgreSQL: the flood's lookups are also made slow (another session
//! holds a lock on `removed_nodes`, which only an unknown credential's third
//! lookup reads) until every read connection of the coordinator waits on it.
//! A re-join with proof (it reads nothing before its write) must still
//! commit, not wait for a read connection and answer UNAVAILABLE. Then, with
//! the lock gone and the flood going on, admin writes (add a subnet, create
//! tokens, allocate) go through. SQLite runs the same calls without the lock
//! (its readers never wait on a lock, and its writer has always had its own
//! connection).
mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{TestCoordinator, proven_join_request};
use sqlx::{Connection as _, postgres::PgConnection};
use weave_coordinator::store::Location;
use weave_proto::{client::Api, v1::*};

/// Concurrent callers with a bogus credential.
const FLOOD: usize = 96;
/// Generous: what a write may take on a loaded machine (the pool's acquire
/// timeout, after which it would answer UNAVAILABLE, is 5 s).
const BOUND: Duration = Duration::from_secs(30);

/// Runs `call` within [`BOUND`]; panics with what it answered otherwise.
async fn write<T>(what: &str, call: impl std::future::Future<Output = Result<T, tonic::Status>>) -> T {
    let since = Instant::now();
    let r = tokio::time::timeout(BOUND, call).await.unwrap_or_else(|_| panic!("{what}: no answer within {BOUND:?}"));
    r.unwrap_or_else(|s| panic!("{what} during the flood, after {:?}: {:?} {}", since.elapsed(), s.code(), s.message()))
}

/// Sessions of the test database waiting for the lock on `removed_nodes`.
async fn waiting_on_the_lock(monitor: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'removed_nodes'::regclass \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(monitor)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_through_while_bogus_credentials_flood_the_reads() {
    let c = TestCoordinator::start().await;
    let mut anon = c.admin().await;
    let first = proven_join_request(&mut anon, &c.token(), "h1", 21, 21).await;
    anon.join.join(first).await.expect("first join");

    // PostgreSQL: hold the lock that will make the flood's lookups wait.
    let mut lock = None;
    if common::postgres() {
        let Location::Postgres(url) = common::store_at(&c.data_dir().join("coordinator.db")) else {
            panic!("a PostgreSQL run")
        };
        let mut holder = PgConnection::connect(&url).await.expect("connect");
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("LOCK TABLE removed_nodes IN ACCESS EXCLUSIVE MODE").execute(&mut holder).await.unwrap();
        lock = Some((holder, PgConnection::connect(&url).await.expect("connect")));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        // 8 callers per connection (each connection's stream limit is 64).
        if i % 8 == 0 {
            // One made-up credential per connection: one credential alone
            // has at most 16 reads in flight (`unread.rs`), and refused
            // past that would never get as far as the store.
            // From an address of its own: past its failures' budget an
            // address is refused before any lookup, whatever it carries
            // (`limits.rs`), and the writers below are at 127.0.0.1.
            let channel = c.channel_from("127.0.0.3").await.expect("connect");
            let bogus = format!("not-a-credential-of-this-cluster-{}", i / 8);
            for _ in 0..8 {
                let mut api = Api::new(channel.clone(), &bogus).unwrap();
                let (stop, answers) = (stop.clone(), answers.clone());
                flood.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let code = match api.subnets.list_subnets(ListSubnetsRequest {}).await {
                            Ok(_) => "OK".to_string(),
                            Err(s) => format!("{:?}", s.code()),
                        };
                        *answers.lock().unwrap().entry(code).or_default() += 1;
                    }
                }));
            }
        }
    }

    if let Some((_, monitor)) = lock.as_mut() {
        // Full: flood calls wait on the lock, and others gave up waiting
        // for a read connection (5 s) and answered UNAVAILABLE.
        let since = Instant::now();
        loop {
            let waiting = waiting_on_the_lock(monitor).await;
            let answers = answers.lock().unwrap().clone();
            if waiting > 0 && answers.contains_key("Unavailable") {
                eprintln!("read pool full after {:?}: {waiting} lookups wait on the lock", since.elapsed());
                break;
            }
            assert!(since.elapsed() < BOUND, "the flood fills the read pool: {waiting} waiting, {answers:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        // SQLite: let the flood get going.
        let since = Instant::now();
        while answers.lock().unwrap().values().sum::<u64>() < 2 * FLOOD as u64 {
            assert!(since.elapsed() < BOUND, "the flood is answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Writes that read nothing first: re-joins of h1 with proof.
    for round in 0..3 {
        let rejoin = proven_join_request(&mut anon, &c.token(), "h1", 21, 21).await;
        let since = Instant::now();
        let node = write("a re-join", anon.join.join(rejoin)).await.into_inner().node.expect("node");
        assert_eq!(node.name, "h1");
        eprintln!("re-join {round} with every read connection busy: {:?}", since.elapsed());
    }
    if let Some((holder, mut monitor)) = lock.take() {
        let waiting = waiting_on_the_lock(&mut monitor).await;
        assert!(waiting > 0, "the flood's lookups were still stuck");
        eprintln!("{waiting} lookups still waiting on the lock");
        holder.close().await.unwrap();
        monitor.close().await.unwrap();
    }

    // The flood goes on, fast now: admin writes, which are authenticated first.
    let mut admin = c.admin().await;
    let since = Instant::now();
    write(
        "adding a subnet",
        admin.subnets.add_subnet(AddSubnetRequest {
            cidr: "10.40.0.0/24".into(),
            name: "flooded".into(),
            egress: false,
        }),
    )
    .await;
    for i in 0..10 {
        write("creating a token", admin.tokens.create_token(CreateTokenRequest::default())).await;
        let r = AllocateRequest {
            node: "h1".into(),
            container: format!("c{i}"),
            subnet: "flooded".into(),
            ..Default::default()
        };
        write("allocating", admin.ipam.allocate(r)).await;
    }
    eprintln!("21 admin writes during the flood: {:?}", since.elapsed());

    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    eprintln!("the flood's answers: {answers:?}");
    assert!(!answers.contains_key("OK"), "a bogus credential was accepted: {answers:?}");
    // Refused as unknown after a lookup, then (its address failing too
    // often) before any: how many of each depends on timing.
    let refused =
        answers.get("Unauthenticated").copied().unwrap_or(0) + answers.get("ResourceExhausted").copied().unwrap_or(0);
    assert!(answers.contains_key("Unauthenticated") && refused >= FLOOD as u64, "the flood was refused: {answers:?}");
    assert!(
        answers.keys().all(|k| k == "Unauthenticated" || k == "Unavailable" || k == "ResourceExhausted"),
        "refused as unknown, (waiting for a read connection) unavailable, or (failing too often) before any \
         lookup: {answers:?}"
    );
}
