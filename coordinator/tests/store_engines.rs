//! What the PostgreSQL store guarantees on its own, whichever engine the rest
//! of the suite runs on: bad `--store` values, an unreachable database and
//! wrong credentials stop the coordinator with one line; the schema itself
//! refuses overlapping subnets and duplicate addresses; several writers
//! (two stores on one database, as two coordinators) keep revisions
//! gap-free and never hand out an address twice; and a database that goes
//! away makes RPCs answer UNAVAILABLE until it is back, then everything
//! works again by itself.
mod common;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    TestCoordinator,
    pg::{self, OwnedPg},
};
use tonic::Code;
use weave_coordinator::store::{Caller, ClusterSettings, JoinRequest, Location, NewToken, Store};
use weave_proto::v1::{AllocateRequest, ListSubnetsRequest, WatchRequest, watch_event::Event};

/// Runs `coordinator serve` with `store`; it must exit by itself. Returns
/// its exit code and its stderr.
fn serve_with(store: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--store", store, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env_remove("WEAVE_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coordinator --store {store} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[track_caller]
fn one_line(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("coordinator: ") && lines[0].contains(needle), "{stderr:?} lacks {needle:?}");
}

#[test]
#[ignore = "needs root: starts PostgreSQL as the postgres user (deploy/test.sh runs it)"]
fn a_bad_store_an_unreachable_database_and_wrong_credentials_stop_it_with_one_line() {
    let (code, err) = serve_with("mysql://db.example/weave");
    assert_eq!(code, Some(2));
    one_line(&err, "--store: 'mysql://db.example/weave' is neither sqlite://<path> nor postgres://");

    let (code, err) = serve_with("postgres://weave:hunter2@localhost:notaport/weave");
    assert_eq!(code, Some(2));
    one_line(&err, "is not a valid PostgreSQL URL");
    assert!(!err.contains("hunter2"), "the password is shown: {err}");

    // Nobody listens on a socket in an empty directory.
    let empty = tempfile::tempdir().unwrap();
    let nowhere = format!("postgres://weave@localhost/weave?host={}", empty.path().display());
    let (code, err) = serve_with(&nowhere);
    assert_eq!(code, Some(1));
    one_line(&err, "cannot connect to the database postgres://weave@localhost/weave");

    let server = pg::shared();
    server.admin_sql("CREATE ROLE guarded LOGIN PASSWORD 'right'".into());
    let wrong = format!("postgres://guarded:wrong@localhost/postgres?host={}", server.dir.display());
    let (code, err) = serve_with(&wrong);
    assert_eq!(code, Some(1));
    one_line(&err, "password authentication failed for user \"guarded\"");
    assert!(err.contains("guarded:***@") && !err.contains("wrong"), "the password is shown: {err}");
}

fn settings() -> ClusterSettings {
    ClusterSettings {
        range: "10.32.0.0/12".parse().unwrap(),
        node_range: "10.47.0.0/16".parse().unwrap(),
        default_subnet: "10.32.0.0/16".parse().unwrap(),
        dns_domain: "weave.local.".into(),
    }
}

async fn insert_subnet(pool: &sqlx::PgPool, cidr: &str, vni: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subnets (cidr, first_key, last_key, is_default, vni, created_at) VALUES ($1, '', '', FALSE, $2, 0)",
    )
    .bind(cidr)
    .bind(vni)
    .execute(pool)
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: starts PostgreSQL as the postgres user (deploy/test.sh runs it)"]
async fn the_postgres_schema_itself_refuses_overlaps_and_duplicate_addresses() {
    let url = pg::shared().create_database();
    let store = Store::connect(&Location::Postgres(url.clone())).await.unwrap();
    store.init_cluster(&settings()).await.unwrap();
    // Straight into the table, past the code's own checks.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let e = insert_subnet(&pool, "10.32.128.0/24", 77).await.unwrap_err();
    let db = e.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("23P01"), "exclusion violation: {db}");
    assert!(db.message().contains("subnets_no_overlap"), "{db}");
    let e = insert_subnet(&pool, "10.47.3.0/24", 78).await.unwrap_err();
    assert!(e.to_string().contains("subnet overlaps the node address block"), "{e}");
    insert_subnet(&pool, "10.2.0.0/24", 79).await.expect("a disjoint subnet is fine");
    let e = insert_subnet(&pool, "10.2.0.128/25", 80).await.unwrap_err();
    assert_eq!(e.as_database_error().unwrap().code().as_deref(), Some("23P01"));

    let node = join(&store, "host1", 1).await;
    let taken = store.allocate(&Caller::Admin, node, "c1", "default", None, None).await.unwrap();
    let ip = taken.address.split('/').next().unwrap().to_string();
    let e = sqlx::query(
        "INSERT INTO allocations (subnet_id, node_id, container, address, created_at) VALUES ($1, $2, 'c2', $3, 0)",
    )
    .bind(taken.subnet_id as i64)
    .bind(node as i64)
    .bind(&ip)
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(e.as_database_error().unwrap().is_unique_violation(), "{e}");
}

async fn join(store: &Store, name: &str, key: u8) -> u64 {
    let secret_hash = format!("{key:02x}").repeat(32);
    let id = format!("t{key}");
    let token = NewToken {
        id: id.clone(),
        secret_hash: secret_hash.clone(),
        ttl_seconds: None,
        uses: None,
        description: "".into(),
    };
    store.create_token(token).await.unwrap();
    let join = JoinRequest {
        token_id: id,
        token_secret_hash: secret_hash,
        name: name.into(),
        public_key: [key; 32],
        endpoints: vec![],
        credential_hash: format!("{key:02x}").repeat(32) + "c",
        proven: false,
    };
    store.join(join).await.unwrap().node.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: starts PostgreSQL as the postgres user (deploy/test.sh runs it)"]
async fn two_stores_writing_one_database_at_once_keep_revisions_gap_free_and_addresses_unique() {
    let url = pg::shared().create_database();
    let location = Location::Postgres(url.clone());
    let a = Store::connect(&location).await.unwrap();
    let b = Store::connect(&location).await.unwrap();
    let (_, first) = a.init_cluster(&settings()).await.unwrap();
    let (_, again) = b.init_cluster(&settings()).await.unwrap();
    assert!(first && !again, "one first start");
    // Nodes join through either store; each picks a free node address.
    let mut nodes = Vec::new();
    for (i, store) in [&a, &b, &a, &b].into_iter().enumerate() {
        nodes.push(join(store, &format!("host{i}"), i as u8 + 1).await);
    }

    let mut tasks = Vec::new();
    for w in 0..40 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let node = nodes[w % nodes.len()];
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..5 {
                let r = store.allocate(&Caller::Admin, node, &format!("w{w}-{n}"), "default", None, None).await;
                got.push(r.unwrap_or_else(|e| panic!("allocation w{w}-{n}: {e}")).address);
            }
            got
        }));
    }
    let mut addresses = Vec::new();
    for t in tasks {
        addresses.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!((addresses.len(), distinct.len()), (200, 200), "no address handed out twice");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let revisions: Vec<i64> =
        sqlx::query_scalar("SELECT revision FROM map_events ORDER BY revision").fetch_all(&pool).await.unwrap();
    let current: i64 = sqlx::query_scalar("SELECT revision FROM cluster").fetch_one(&pool).await.unwrap();
    assert_eq!(revisions, (1..=current).collect::<Vec<_>>(), "every revision once, none skipped");
    let nodes: Vec<String> = sqlx::query_scalar("SELECT address FROM nodes").fetch_all(&pool).await.unwrap();
    assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), 4, "four distinct node addresses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: starts PostgreSQL as the postgres user (deploy/test.sh runs it)"]
async fn a_database_that_goes_away_gives_unavailable_and_everything_recovers_when_it_returns() {
    let mut pg = OwnedPg::start();
    let url = pg.0.create_database();
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.store = Some(url.clone())).await;
    let (node, mut api) = c.join("host1", 1).await;
    let mut admin = c.admin().await;
    let mut watch = api.map.watch(WatchRequest { from_revision: 0 }).await.unwrap().into_inner();
    let Some(Event::Snapshot(map)) = watch.message().await.unwrap().unwrap().event else { panic!("a snapshot first") };
    let mut seen = map.revision;

    pg.0.kill();
    let r = admin.subnets.list_subnets(ListSubnetsRequest {}).await;
    assert_eq!(r.unwrap_err().code(), Code::Unavailable, "a read while the database is away");
    let r = api.ipam.allocate(AllocateRequest { container: "during".into(), ..Default::default() }).await;
    assert_eq!(r.unwrap_err().code(), Code::Unavailable, "a write while the database is away");

    pg.0.launch();
    let back = Instant::now();
    loop {
        match api.ipam.allocate(AllocateRequest { container: "after".into(), ..Default::default() }).await {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(back.elapsed() < Duration::from_secs(5), "still failing 5 s after the database returned");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    admin.subnets.list_subnets(ListSubnetsRequest {}).await.expect("reads work again");
    // The watch stayed open: it sees the new allocation at the next revision.
    let e = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.revision, seen + 1, "no revision skipped");
    seen = e.revision;
    let Some(Event::Change(change)) = e.event else { panic!("a change") };
    assert!(format!("{change:?}").contains("after"), "{change:?}");
    let map = admin.map.get_map(weave_proto::v1::GetMapRequest {}).await.unwrap().into_inner();
    assert_eq!(map.revision, seen);
    assert!(!map.allocations.iter().any(|a| a.container == "during"), "nothing half-applied");
    assert!(map.nodes.iter().any(|n| n.id == node.id));
    c.stop().await;
}
