//! A real coordinator in-process on 127.0.0.1:0 with a temporary data dir,
//! reached over its real pinned TLS, plus helpers to join fake nodes.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::{Code, Status};
use weave_coordinator::{Running, config::ServeArgs};
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
        task.await.expect("server task").expect("server result");
        self.dir
    }

    pub fn addr(&self) -> String {
        self.running.local_addr.to_string()
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        connect(&self.addr(), self.running.admin.pin).await.expect("connect")
    }

    pub async fn admin(&self) -> Api {
        Api::new(self.channel().await, &self.running.admin.secret).unwrap()
    }

    pub async fn api_with(&self, credential: &str) -> Api {
        Api::new(self.channel().await, credential).unwrap()
    }

    pub fn token(&self) -> String {
        self.running.first_token.as_ref().expect("first start token").to_string()
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

pub fn join_request(token: &str, name: &str, key: u8) -> JoinRequest {
    JoinRequest {
        token: token.to_string(),
        name: name.to_string(),
        public_key: vec![key; 32],
        endpoints: vec![format!("192.0.2.{key}:6784")],
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
