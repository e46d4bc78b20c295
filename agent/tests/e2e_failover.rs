//! Two coordinators on two hosts in front of one PostgreSQL database, three
//! agents. The coordinator with watchers is killed with SIGKILL: within 5 s
//! the survivor holds every agent's watch (resumed from their revisions), a
//! ping between workloads running throughout loses nothing, and an attach
//! made during the outage succeeds through the survivor and is reached from
//! the other hosts. weavectl given both addresses answers with either down.
//!
//! PostgreSQL is a throwaway server the test starts (initdb into a temporary
//! directory); the coordinators reach it on its Unix socket, which both
//! namespaces share through the file system, not over the underlay.
mod common;
#[path = "../../coordinator/tests/common/pg.rs"]
mod pg;

use std::{
    fs,
    io::{Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use weave_proto::token::AdminCredential;

const C2_IP: &str = "192.0.2.3";

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

#[test]
#[ignore = "needs root: network namespaces, PostgreSQL as the postgres user"]
fn agents_fail_over_to_the_surviving_coordinator_on_sigkill() {
    let mut bed = Bed::new();
    // The bed's coordinator moves to PostgreSQL and advertises both addresses.
    bed.kill_coordinator();
    let server = pg::OwnedPg::start();
    let url = server.0.create_database();
    let db = bed.coordinator_dir.join("coordinator.db");
    let out = Command::new(coordinator_bin())
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
    let mut c2 = start_second(&c2_ns, &c2_dir, &url, &both, &c2_out);

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
    let (c1_ns, c2_ns_) = (bed.coordinator_ns.clone(), c2_ns.clone());
    let (w1, w2) = wait_for("all three watches open", Duration::from_secs(30), || {
        let (a, b) = (watchers(&c1_ns)?, watchers(&c2_ns_)?);
        (a + b == 3).then_some((a, b))
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
        (watchers(&survivor_ns)? == 3).then_some(())
    });
    let took = killed_at.elapsed();
    eprintln!(
        "watchers before: {w1} on the first, {w2} on the second; killed the {}; fail-over took {took:?}",
        if killed_first { "first" } else { "second" }
    );
    assert!(took < Duration::from_secs(5), "fail-over took {took:?} (watchers before: {w1}/{w2})");
    for h in 0..3 {
        assert!(bed.status(h).unwrap().coordinator_connected, "host {} has no watch", h + 1);
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
    drop(c2);
    drop(bed);
    drop(server);
}
