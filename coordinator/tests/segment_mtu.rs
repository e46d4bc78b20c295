//! One segment MTU for the whole cluster, recorded at the first start
//! (`--mtu`, default 1370) and carried in every map: agents give every
//! segment on every host that MTU, whatever their own underlay's. A cluster
//! created before there was one (0 recorded) gets one the first time a
//! coordinator starts with `--mtu`; a recorded one is never changed by a
//! flag. An MTU IPv6 cannot use, or no TUN can carry, is refused.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::Connection;

fn serve(data: &Path, mtu: Option<&str>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    c.args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"]).arg(data);
    if let Some(mtu) = mtu {
        c.args(["--mtu", mtu]);
    }
    c.env("RUST_LOG", "warn").env_remove("WEAVE_STORE").env_remove("WEAVE_MTU");
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("coordinator binary starts")
}

/// Starts a coordinator on `data`, waits until it serves (its admin
/// credential written), stops it; returns what its database recorded.
async fn start_and_stop(data: &Path, mtu: Option<&str>) -> i64 {
    let credential = data.join("admin.credential");
    let _ = std::fs::remove_file(&credential);
    let mut child = serve(data, mtu);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !credential.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the coordinator exited");
        assert!(Instant::now() < deadline, "no admin.credential after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    recorded(data, None).await
}

/// The recorded segment MTU; first sets it to `set`, if given.
async fn recorded(data: &Path, set: Option<i64>) -> i64 {
    let url = format!("sqlite://{}", data.join("coordinator.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    if let Some(v) = set {
        sqlx::query("UPDATE cluster SET segment_mtu = $1").bind(v).execute(&mut db).await.unwrap();
    }
    sqlx::query_scalar("SELECT segment_mtu FROM cluster WHERE id = 1").fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn the_segment_mtu_is_recorded_once_and_a_cluster_without_one_gets_it_from_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_eq!(start_and_stop(&data, None).await, 1370, "the default");
    assert_eq!(start_and_stop(&data, Some("8870")).await, 1370, "a recorded MTU changed by a flag");

    // A cluster from before there was one.
    recorded(&data, Some(0)).await;
    assert_eq!(start_and_stop(&data, None).await, 0, "no flag: nothing recorded");
    assert_eq!(start_and_stop(&data, Some("1400")).await, 1400, "--mtu on a cluster without one");
    assert_eq!(start_and_stop(&data, Some("1500")).await, 1400);

    let other = dir.path().join("jumbo");
    assert_eq!(start_and_stop(&other, Some("8870")).await, 8870, "--mtu at the first start");
}

#[test]
fn an_mtu_ipv6_cannot_use_or_no_tun_can_carry_is_refused() {
    for bad in ["1279", "65406", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = serve(&dir.path().join("data"), Some(bad)).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--mtu {bad}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("coordinator: --mtu: {bad} is not between 1280 (IPv6's minimum) and 65405\n"),
        );
        assert!(!dir.path().join("data").exists(), "--mtu {bad}: the data dir was made");
    }
}
