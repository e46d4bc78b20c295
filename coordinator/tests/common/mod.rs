//! A real coordinator in-process on 127.0.0.1:0 with a temporary data dir,
//! reached over its real pinned TLS, plus helpers to join fake nodes.
#![allow(dead_code, unreachable_pub)]

pub mod pg;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::{Code, Status};
use weave_coordinator::{Running, config::ServeArgs, store::Location};
use weave_proto::{
    client::{Api, connect},
    v1::{JoinRequest, Node},
};

pub struct TestCoordinator {
    pub dir: TempDir,
    pub running: Running,
    stop: Option<oneshot::Sender<()>>,
}

impl TestCoordinator {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), |_| {}).await
    }

    /// Starts on `dir` (reused across restarts), after `tweak` adjusts the flags.
    pub async fn start_in(dir: TempDir, tweak: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = ServeArgs::for_data_dir(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        args.store = store_flag(&dir.path().join("data/coordinator.db"));
        // Tests join many fake nodes with the first-start token; its
        // single-use default is tested on its own (membership.rs).
        args.first_token_uses = 0;
        tweak(&mut args);
        let (tx, rx) = oneshot::channel::<()>();
        let running = weave_coordinator::start(args.settings().expect("settings"), async {
            let _ = rx.await;
        })
        .await
        .expect("coordinator starts");
        Self { dir, running, stop: Some(tx) }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Graceful stop; returns the directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = std::mem::replace(&mut self.running.task, tokio::spawn(async { Ok(()) }));
        // Bounded: a graceful stop that never ends (a stream the server does
        // not close) fails the test instead of hanging the suite.
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .expect("the coordinator stopped within 30 s of its shutdown signal")
            .expect("server task")
            .expect("server result");
        self.dir
    }

    pub fn addr(&self) -> String {
        self.running.local_addr.to_string()
    }

    pub fn pin(&self) -> weave_proto::token::Pin {
        self.running.admin.pin
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        connect(&self.addr(), self.running.admin.pin).await.expect("connect")
    }

    pub async fn admin(&self) -> Api {
        Api::new(self.channel().await, &self.running.admin.secret).unwrap()
    }

    /// A connection (TLS finished) from local address `from` (127.0.0.0/8:
    /// a source of its own), with no credential.
    pub async fn channel_from(&self, from: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let endpoint = weave_proto::client::endpoint(&self.addr(), self.running.admin.pin).expect("endpoint");
        endpoint.local_address(Some(from.parse().expect("address"))).connect().await
    }

    /// The admin's API over a connection from local address `from`.
    pub async fn admin_from(&self, from: &str) -> Result<Api, tonic::transport::Error> {
        Ok(Api::new(self.channel_from(from).await?, &self.running.admin.secret).unwrap())
    }

    /// The admin's API over a connection whose receive windows are HTTP/2's
    /// smallest (64 KiB): what the coordinator can send ahead of a reader
    /// is bounded by them, not by how fast it reads its store.
    pub async fn admin_narrow(&self) -> Api {
        let endpoint = weave_proto::client::endpoint(&self.addr(), self.running.admin.pin).expect("endpoint");
        let narrow = endpoint.initial_stream_window_size(65_535).initial_connection_window_size(65_535);
        Api::new(narrow.connect().await.expect("connect"), &self.running.admin.secret).unwrap()
    }

    pub async fn api_with(&self, credential: &str) -> Api {
        Api::new(self.channel().await, credential).unwrap()
    }

    pub fn token(&self) -> String {
        self.running.first_token.as_ref().expect("first start token").0.to_string()
    }

    /// Joins a node named `name` with public key [key; 32]; returns it and its API.
    pub async fn join(&self, name: &str, key: u8) -> (Node, Api) {
        let mut api = self.admin().await;
        let resp = api
            .join
            .join(join_request(&self.token(), name, key))
            .await
            .unwrap_or_else(|e| panic!("join {name}: {e}"))
            .into_inner();
        let node = resp.node.expect("node");
        (node, self.api_with(&resp.credential).await)
    }
}

/// Whether this run tests the PostgreSQL store (`WEAVE_TEST_STORE=postgres`,
/// as deploy/test.sh's second run of the coordinator's suite sets it) rather
/// than the default SQLite one.
pub fn postgres() -> bool {
    std::env::var("WEAVE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The store a test would keep in the SQLite file `path`: that file, or, in a
/// PostgreSQL run, a fresh database on this binary's test server (its URL
/// remembered beside `path`, so that a restart finds the same database).
pub fn store_at(path: &Path) -> Location {
    if !postgres() {
        return Location::Sqlite(path.to_path_buf());
    }
    let key = PathBuf::from(format!("{}.pg-url", path.display()));
    if let Ok(url) = std::fs::read_to_string(&key) {
        return Location::Postgres(url);
    }
    let url = pg::shared().create_database();
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, &url).unwrap();
    Location::Postgres(url)
}

/// `--store` for a coordinator whose SQLite file would be `path`: none
/// (the default) in a SQLite run.
pub fn store_flag(path: &Path) -> Option<String> {
    match store_at(path) {
        Location::Sqlite(_) => None,
        Location::Postgres(url) => Some(url),
    }
}

pub fn join_request(token: &str, name: &str, key: u8) -> JoinRequest {
    JoinRequest {
        token: token.to_string(),
        name: name.to_string(),
        public_key: vec![key; 32],
        endpoints: vec![format!("192.0.2.{key}:6784")],
        ..Default::default()
    }
}

/// A real X25519 key pair for node tests that need a join proof.
pub fn node_key(seed: u8) -> (x25519_dalek::StaticSecret, [u8; 32]) {
    let secret = x25519_dalek::StaticSecret::from([seed; 32]);
    let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
    (secret, public)
}

/// A join request for `name` with the key from `seed`, carrying a proof
/// made with `prover` (the key the caller really holds) for a fresh challenge.
pub async fn proven_join_request(api: &mut Api, token: &str, name: &str, seed: u8, prover: u8) -> JoinRequest {
    let (_, public) = node_key(seed);
    let (holder, _) = node_key(prover);
    let challenge = api.join.challenge(weave_proto::v1::ChallengeRequest {}).await.expect("challenge").into_inner();
    let coordinator: [u8; 32] = challenge.coordinator_key.as_slice().try_into().expect("32-byte key");
    let shared = holder.diffie_hellman(&x25519_dalek::PublicKey::from(coordinator));
    let proof = weave_proto::proof::compute(shared.as_bytes(), &challenge.nonce, name, &public);
    JoinRequest {
        token: token.to_string(),
        name: name.to_string(),
        public_key: public.to_vec(),
        endpoints: vec![format!("192.0.2.{seed}:6784")],
        challenge: challenge.nonce,
        proof: proof.to_vec(),
        ..Default::default()
    }
}

/// Asserts the status code and that the message contains `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code; message: {}", s.message());
            assert!(s.message().contains(needle), "message {:?} does not contain {needle:?}", s.message());
        }
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `sql` on the coordinator's database from a connection of the
/// test's own (a state the API no longer makes, such as a name of older rules).
pub async fn execute_sql(c: &TestCoordinator, sql: &str) {
    use sqlx::Connection;
    match store_at(&c.data_dir().join("coordinator.db")) {
        weave_coordinator::store::Location::Sqlite(path) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        }
        weave_coordinator::store::Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        }
    }
}

/// The store's write lock (SQLite's, or the writers' advisory lock in
/// PostgreSQL), held from a connection of the test's own until dropped.
#[expect(dead_code, reason = "the connection is held for its lock, never read")]
pub enum HeldWriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

pub async fn hold_write_lock(c: &TestCoordinator) -> HeldWriteLock {
    use sqlx::Connection;
    match store_at(&c.data_dir().join("coordinator.db")) {
        weave_coordinator::store::Location::Sqlite(path) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
            HeldWriteLock::Sqlite(conn)
        }
        weave_coordinator::store::Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            // store/db.rs WRITE_LOCK ("weave" 1), which every write transaction takes first.
            sqlx::query("SELECT pg_advisory_lock($1)").bind(0x7765_6176_6501_i64).execute(&mut conn).await.unwrap();
            HeldWriteLock::Postgres(conn)
        }
    }
}
