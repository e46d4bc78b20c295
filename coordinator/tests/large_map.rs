//! A map past tonic's default 4 MiB decode limit (about 30,000 allocations
//! in a real cluster) still reaches clients built the way agents and
//! weavectl build theirs (`weave_proto::client::Api`): as a fresh watcher's
//! snapshot, as a resuming watcher's snapshot, in a join answer, and by GetMap.
mod common;

use std::time::Duration;

use common::TestCoordinator;
use prost::Message as _;
use weave_proto::v1::{watch_event::Event, *};

const RECORDS: usize = 25_000;

/// Puts RECORDS external DNS records of ~230 bytes each straight into the
/// stopped coordinator's database, in one transaction: through the API this
/// would take minutes of fsyncs. The next start loads them into its map.
async fn fatten(db: &std::path::Path) {
    let pad = "a".repeat(200);
    macro_rules! insert {
        ($i:expr) => {
            sqlx::query("INSERT INTO dns_records (name, address, created_at) VALUES ($1, $2, 0)")
                .bind(format!("{pad}{}.weave.local.", $i))
                .bind(format!("192.0.2.{}", $i % 250 + 1))
        };
    }
    match common::store_at(db) {
        weave_coordinator::store::Location::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            for i in 0..RECORDS {
                insert!(i).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            pool.close().await;
        }
        weave_coordinator::store::Location::Postgres(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            for i in 0..RECORDS {
                insert!(i).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            pool.close().await;
        }
    }
}

async fn snapshot(stream: &mut tonic::Streaming<WatchEvent>) -> NetworkMap {
    let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")
        .expect("the snapshot decodes")
        .expect("stream open");
    match event.event {
        Some(Event::Snapshot(map)) => map,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_over_5_mib_reaches_watchers_joiners_and_get_map() {
    let c = TestCoordinator::start().await;
    let token = c.token();
    let joined = c.admin().await.join.join(common::join_request(&token, "host1", 1)).await.unwrap();
    let credential = joined.into_inner().credential;
    let db = c.data_dir().join("coordinator.db");
    let dir = c.stop().await;
    fatten(&db).await;
    let c = TestCoordinator::start_in(dir, |_| {}).await;

    let mut admin = c.admin().await;
    let map = admin.map.get_map(GetMapRequest {}).await.expect("GetMap decodes").into_inner();
    assert_eq!(map.dns_records.len(), RECORDS);
    assert!(map.encoded_len() > 5 << 20, "the map is {} bytes", map.encoded_len());

    // A fresh watcher (a node's credential survives the restart).
    let mut node = c.api_with(&credential).await;
    let mut fresh = node.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(snapshot(&mut fresh).await, map);
    // A resuming watcher whose revision this coordinator cannot serve.
    let from_revision = map.revision + 1000;
    let mut resumed = node.map.watch(WatchRequest { from_revision, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(snapshot(&mut resumed).await, map);
    // A joining node gets the map in its answer.
    let joined = admin.join.join(common::join_request(&token, "host2", 2)).await.expect("join answer decodes");
    assert_eq!(joined.into_inner().map.expect("a map").dns_records.len(), RECORDS);
}
