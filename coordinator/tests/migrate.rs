//! `coordinator migrate`: a cluster built on SQLite through the real API is
//! copied into PostgreSQL, and a coordinator started there (same data dir:
//! same TLS identity) serves the same map, takes the same node credentials
//! (no re-join), lets a watcher resume from an old revision without a gap,
//! and hands out ids and addresses that collide with none copied. Bad
//! sources and targets are refused with one line and a non-zero exit.
mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{TestCoordinator, assert_status, join_request, pg};
use sqlx::Connection as _;
use tonic::Code;
use weave_proto::v1::{
    AddRecordRequest, AddSubnetRequest, AllocateRequest, CreateTokenRequest, GetMapRequest, ListRecordsRequest,
    ReleaseRequest, RemoveNodeRequest, ShareNameRequest, WatchRequest, watch_event::Event,
};

/// Runs `coordinator migrate`; returns its exit code, stdout and stderr.
fn migrate(from: &str, to: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["migrate", "--from", from, "--to", to])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("coordinator migrate runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn refused(r: (Option<i32>, String, String), needle: &str) {
    let (code, _, err) = r;
    assert_ne!(code, Some(0), "migrate should have failed: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("coordinator: ") && lines[0].contains(needle), "{err:?} lacks {needle:?}");
}

fn alloc(node: &str, container: &str, subnet: &str) -> AllocateRequest {
    AllocateRequest { node: node.into(), container: container.into(), subnet: subnet.into(), ..Default::default() }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: starts PostgreSQL as the postgres user (deploy/test.sh runs it)"]
async fn a_sqlite_cluster_moves_to_postgres_and_goes_on_without_rejoining() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/coordinator.db");
    let sqlite = sqlite_url(&db);
    let old = TestCoordinator::start_in(dir, |a| a.store = Some(sqlite.clone())).await;
    let mut admin = old.admin().await;

    // A cluster with one of everything, through the API.
    let mut creds = Vec::new();
    for (i, name) in ["h1", "h2", "h3", "gone"].iter().enumerate() {
        let resp = admin.join.join(join_request(&old.token(), name, i as u8 + 1)).await.unwrap().into_inner();
        creds.push(resp.credential);
    }
    admin
        .subnets
        // With egress: the column moves too (the map below compares it).
        .add_subnet(AddSubnetRequest { cidr: "10.9.0.0/24".into(), name: "backend".into(), egress: true })
        .await
        .unwrap();
    // One added by a node (it counts against that node's subnet quota).
    let mut h1 = old.api_with(&creds[0]).await;
    h1.subnets
        .add_subnet(AddSubnetRequest { cidr: "10.7.0.0/24".into(), name: String::new(), egress: false })
        .await
        .unwrap();
    drop(h1);
    let mut held = BTreeSet::new();
    for (node, c) in [("h1", "a"), ("h2", "b"), ("h3", "c"), ("h1", "d")] {
        for subnet in ["", "backend"] {
            held.insert(admin.ipam.allocate(alloc(node, c, subnet)).await.unwrap().into_inner().address);
        }
    }
    let named = AllocateRequest { dns_name: "web".into(), ..alloc("h2", "web", "") };
    held.insert(admin.ipam.allocate(named).await.unwrap().into_inner().address);
    admin.dns.add_record(AddRecordRequest { name: "ext".into(), address: "192.0.2.80".into() }).await.unwrap();
    admin.dns.share_name(ShareNameRequest { name: "shared".into(), shared: true }).await.unwrap();
    let token = admin
        .tokens
        .create_token(CreateTokenRequest { uses: 1, description: "spare".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // A released address, held for its container (`address_holds` moves too).
    let restarting = admin.ipam.allocate(alloc("h2", "restarting", "backend")).await.unwrap().into_inner().address;
    let release = ReleaseRequest { node: "h2".into(), container: "restarting".into(), subnet: "backend".into() };
    admin.ipam.release(release).await.unwrap();
    let resume_from = admin.map.get_map(GetMapRequest {}).await.unwrap().into_inner().revision;
    admin.nodes.remove_node(RemoveNodeRequest { node: "gone".into() }).await.unwrap();
    admin.ipam.allocate(alloc("h3", "late", "")).await.unwrap();
    let before = admin.map.get_map(GetMapRequest {}).await.unwrap().into_inner();
    assert!(before.revision > resume_from + 1);
    drop(admin);
    let dir = old.stop().await;

    // Bad sources and targets: one line each, nothing written.
    let server = pg::shared();
    let target = server.create_database();
    refused(migrate("postgres://weave@localhost/x", &target), "--from");
    refused(migrate(&sqlite, &sqlite), "--to");
    refused(migrate(&sqlite_url(&dir.path().join("nothing.db")), &target), "no such file");
    let stale = dir.path().join("stale.db");
    std::fs::copy(&db, &stale).unwrap();
    {
        let mut c = sqlx::SqliteConnection::connect(&sqlite_url(&stale)).await.unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let latest = sqlx::migrate!("../migrations/sqlite").iter().map(|m| m.version).max().unwrap();
    refused(migrate(&sqlite_url(&stale), &target), &format!("schema is at version {}", latest - 1));
    // One a newer weave migrated: that version's migrate, not "serve it once"
    // (which refuses such a database; a review, 2026-12-05).
    let newer = dir.path().join("newer.db");
    std::fs::copy(&db, &newer).unwrap();
    {
        let mut c = sqlx::SqliteConnection::connect(&sqlite_url(&newer)).await.unwrap();
        let q = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'from the future', TRUE, x'00', 1)";
        sqlx::query(q).execute(&mut c).await.unwrap();
    }
    refused(migrate(&sqlite_url(&newer), &target), "migrated by a newer weave; migrate it with that version's");
    // A coordinator still writing holds SQLite's write lock: refused, not copied half-way.
    {
        let mut c = sqlx::SqliteConnection::connect(&sqlite).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
        refused(migrate(&sqlite, &target), "is its coordinator still running");
        sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
    }

    // An idle one holds no SQLite lock, but its data dir's: refused too
    // (what it wrote after the copy was lost; found by a review, 2026-12-06).
    {
        let mut lock = std::fs::OpenOptions::new();
        let lock = lock.create(true).truncate(false).write(true).open(db.with_file_name("coordinator.lock")).unwrap();
        let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        refused(migrate(&sqlite, &target), "a coordinator serves it");
        drop(held);
    }
    // One it cannot open (here a link to itself; for a user, another user's
    // mode-0600 lock) is not taken for "none there".
    {
        let lock = db.with_file_name("coordinator.lock");
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink("coordinator.lock", &lock).unwrap();
        refused(migrate(&sqlite, &target), "to see whether a coordinator serves it");
        std::fs::remove_file(&lock).unwrap();
    }

    let (code, out, err) = migrate(&sqlite, &target);
    assert_eq!(code, Some(0), "migrate failed: {err}");
    assert!(out.contains(&format!("at revision {}", before.revision)), "{out}");
    refused(migrate(&sqlite, &target), "not empty (cluster holds 1 row(s))");

    // The same data dir (TLS identity, admin credential file), now on PostgreSQL.
    let new = TestCoordinator::start_in(dir, |a| {
        a.store = Some(target.clone());
        a.node_subnet_quota = 1;
    })
    .await;
    let mut admin = new.admin().await;
    let mut after = admin.map.get_map(GetMapRequest {}).await.unwrap().into_inner();
    assert_ne!(after.history, before.history, "each coordinator start begins a history");
    after.history = before.history;
    assert_eq!(after, before, "the map moved unchanged, revision included");

    // The nodes' credentials still work: no re-join.
    let mut h1 = new.api_with(&creds[0]).await;
    let mine = h1.ipam.allocate(alloc("", "new1", "backend")).await.unwrap().into_inner();
    assert!(!held.contains(&mine.address), "{} was handed out twice", mine.address);
    // Who added a subnet moved too: h1's one still counts against its quota (1 here).
    let more = h1
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "10.7.1.0/24".into(), name: String::new(), egress: false })
        .await;
    assert_status(more, Code::ResourceExhausted, "already added 1 subnets");
    // The hold moved too: h1 may not take h2's restarting container's address, which gets it back.
    let squat = AllocateRequest { address: restarting.clone(), ..alloc("", "squat", "backend") };
    assert_status(h1.ipam.allocate(squat).await, Code::AlreadyExists, "kept for it");
    let back = admin.ipam.allocate(alloc("h2", "restarting", "backend")).await.unwrap().into_inner();
    assert_eq!(back.address, restarting);
    // The shared names moved too.
    let shared = admin.dns.list_records(ListRecordsRequest {}).await.unwrap().into_inner().shared_names;
    assert_eq!(shared, ["shared.weave.local."]);
    // The removed node's marker moved too: it learns it was removed.
    let mut gone = new.api_with(&creds[3]).await;
    assert_status(gone.map.get_map(GetMapRequest {}).await, Code::Unauthenticated, "was removed");

    // A watcher of the SQLite coordinator resumes from an old revision of its
    // history (which moved too): every change after it, in order, no snapshot.
    let mut watch = h1
        .map
        .watch(WatchRequest { from_revision: resume_from, from_history: before.history })
        .await
        .unwrap()
        .into_inner();
    let mut next = resume_from + 1;
    let until = after.revision + 2;
    let mut h2 = new.api_with(&creds[1]).await;
    h2.ipam.allocate(alloc("", "new2", "")).await.unwrap();
    while next <= until {
        let ev = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("stream open");
        assert_eq!(ev.revision, next, "gap or reorder after the migration");
        assert!(matches!(ev.event, Some(Event::Change(_))), "a resume from {resume_from} got a snapshot");
        next += 1;
    }

    // New rows get fresh ids and addresses: a join with the copied spare
    // token, a subnet, an allocation in the default subnet.
    let joined = admin.join.join(join_request(&token.secret_token, "h4", 9)).await.unwrap().into_inner();
    let node = joined.node.unwrap();
    assert!(before.nodes.iter().all(|n| n.id != node.id && n.address != node.address), "{node:?}");
    let sub = admin
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "10.8.0.0/24".into(), name: String::new(), egress: false })
        .await;
    let sub = sub.unwrap().into_inner();
    assert!(before.subnets.iter().all(|s| s.id != sub.id));
    let a = admin.ipam.allocate(alloc("h4", "x", "")).await.unwrap().into_inner();
    assert!(!held.contains(&a.address), "{} was handed out twice", a.address);
    // The spare token was single-use, and that count moved with it.
    let spent = admin.join.join(join_request(&token.secret_token, "h5", 10)).await;
    assert!(spent.is_err(), "a spent single-use token joined: {spent:?}");
    new.stop().await;
}
