//! One coordinator per data dir: a second one started on the same
//! `--data-dir` (same TLS identity, same `admin.credential`) stops at once
//! with one line and changes nothing; once the first has stopped, the dir
//! is free again.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn serve(data: &Path) -> Child {
    serve_on(data, "127.0.0.1:0")
}

fn serve_on(data: &Path, listen: &str) -> Child {
    serve_with(data, listen, &[])
}

fn serve_with(data: &Path, listen: &str, flags: &[&str]) -> Child {
    command(data, listen, flags).spawn().expect("coordinator binary starts")
}

fn command(data: &Path, listen: &str, flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    command
        .args(["serve", "--listen", listen, "--metrics-listen", "off"])
        .args(flags)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("WEAVE_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits for `<data>/admin.credential`; returns its text.
fn credential(data: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join("admin.credential")) {
            return text;
        }
        assert!(child.try_wait().unwrap().is_none(), "the coordinator exited");
        assert!(Instant::now() < deadline, "no admin.credential after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (30 s at most) for a coordinator that must refuse to start;
/// returns its stderr, after checking it is one line and exit 1.
fn refused(mut child: Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            stop(child);
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_second_coordinator_on_the_same_data_dir_stops_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = serve(&data);
    let before = credential(&data, &mut first);

    let mut second = serve(&data);
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            stop(second);
            stop(first);
            panic!("a second coordinator serves the same data dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("coordinator: another coordinator serves --data-dir"), "{err}");
    assert_eq!(std::fs::read_to_string(data.join("admin.credential")).unwrap(), before, "the credential was rewritten");
    assert!(first.try_wait().unwrap().is_none(), "the first coordinator stopped");

    // Killed (no clean shutdown): the lock goes with the process, and the
    // next one takes it.
    stop(first);
    let mut again = serve(&data);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held_by(again.id(), &data.join("coordinator.lock")) {
        assert!(again.try_wait().unwrap().is_none(), "the data dir stayed locked after the first one died");
        assert!(Instant::now() < deadline, "the new coordinator never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(again.try_wait().unwrap().is_none());
    stop(again);
}

#[test]
fn a_taken_listen_port_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve_on(&dir.path().join("data"), &addr).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with(&format!("coordinator: --listen {addr}: ")), "{err}");
    assert!(lines[0].contains("in use"), "{err}");
    // Nothing was created: the next start is a first start (its --range, a
    // first join token). Before, the database was made before the bind.
    let made: Vec<_> = std::fs::read_dir(dir.path().join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(made, ["coordinator.lock"], "left behind");
}

#[test]
fn a_data_dir_that_is_a_file_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = serve(&file).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.trim_end(), format!("coordinator: {}: a file, not a directory", file.display()), "{err}");
}

/// A data dir other users may write to is made private when it is the
/// coordinator's, with a warning: they could swap the admin credential and
/// the database between two starts (found by a review, 2026-12-06: it was
/// used as it was). Another user's is refused before anything is made in
/// it; root's that the coordinator may not change (Kubernetes' `fsGroup`
/// volumes) is used with a warning (`weave_proto::private_dir`).
#[test]
fn a_data_dir_others_may_write_to_is_made_private_and_another_users_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = serve(&data);
    credential(&data, &mut child);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777, 0o755);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was writable by other users (mode 0777): made 0755"), "{stderr}");

    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    let err = refused(serve(&theirs), "started in another user's data dir");
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0, "made in it");
}

/// Whether process `pid` holds a `flock` on `path` (from /proc/locks: looking
/// must not take the lock, or the coordinator could find it held).
fn held_by(pid: u32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
    std::fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK")
            && f.get(4) == Some(&pid.to_string().as_str())
            && f.get(5).is_some_and(|dev_ino| dev_ino.rsplit(':').next() == Some(&inode.to_string()))
    })
}

/// A flag clap refuses is one line, as every other error of the coordinator.
#[test]
fn a_bad_flag_is_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator")).args(["serve", "--listen", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "coordinator: invalid value 'bogus' for '--listen <LISTEN>': invalid socket address syntax (see --help)\n"
    );
    // A floor under 10 s, or none, is refused the same way.
    for floor in ["9s", "never"] {
        let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--forget-after-floor", floor])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("--forget-after-floor") && said.contains("at least 10s") && said.lines().count() == 1);
    }
    // --authenticate-within has no 'never', and no refusal offers one; nor
    // a time past 1h (107000000000000d started, then every connection
    // panicked: a deadline past what Instant holds).
    for within in ["0s", "never", "soon", "2h", "107000000000000d"] {
        let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--authenticate-within", within])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains(&format!("'{within}' is not a time from 1s to 1h")), "{said}");
        assert!(!said.contains("or 'never'") && said.lines().count() == 1, "{said}");
    }
}

/// A data dir whose `tls/` is gone, on a database that holds a cluster, is
/// refused with one line saying how to go on: every agent and token pins
/// the identity the cluster was made with. Before, a new key was made
/// (logged at INFO) and every agent was locked out (found by a review,
/// 2026-12-04). `--new-identity` makes one on purpose.
#[test]
fn a_lost_tls_identity_is_not_replaced_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = serve(&data);
    credential(&data, &mut first);
    stop(first);
    let key = data.join("tls/coordinator.key");
    let cert = std::fs::read(data.join("tls/coordinator.crt")).unwrap();
    std::fs::remove_file(&key).unwrap();

    let stderr = refused(serve(&data), "a coordinator serves with a new TLS identity");
    assert!(stderr.starts_with("coordinator: ") && stderr.contains("has no TLS identity"), "{stderr}");
    assert!(stderr.contains("--new-identity"), "{stderr}");
    assert!(!key.exists(), "a key was made");
    assert_eq!(std::fs::read(data.join("tls/coordinator.crt")).unwrap(), cert, "the certificate was replaced");

    // The flag, then (the key lost again) the variable as an environment
    // file writes it: `WEAVE_NEW_IDENTITY=1` was "invalid value '1'".
    for how in ["--new-identity", "WEAVE_NEW_IDENTITY=1"] {
        let before = std::fs::read(data.join("tls/coordinator.crt")).unwrap();
        let _ = std::fs::remove_file(&key);
        let mut again = match how.split_once('=') {
            Some((name, value)) => command(&data, "127.0.0.1:0", &[]).env(name, value).spawn().unwrap(),
            None => serve_with(&data, "127.0.0.1:0", &[how]),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !key.exists() {
            if let Some(status) = again.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(again.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                panic!("{how}: the coordinator exited ({status}): {stderr}");
            }
            assert!(Instant::now() < deadline, "{how}: no key after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(again);
        let now = std::fs::read(data.join("tls/coordinator.crt")).unwrap();
        assert!(now != before && now != cert, "{how} made no new certificate");
    }
}

/// Its mirror: a data dir whose database is gone or emptied, its `tls/`
/// still there, is refused with one line saying how to go on. Before, a new
/// empty cluster was made under the old pin, and every agent, told its
/// credential was unknown, was told to join again with a token: into it,
/// where addresses in use are given again (found by a review, 2026-12-06).
/// Restored, the database is served again.
#[test]
fn a_lost_database_is_not_replaced_by_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = serve(&data);
    credential(&data, &mut first);
    stop(first);
    // Set aside with its log (the coordinator was killed: the log holds it).
    let db = data.join("coordinator.db");
    let files =
        ["", "-wal", "-shm"].map(|s| (data.join(format!("coordinator.db{s}")), dir.path().join(format!("kept{s}"))));
    for (file, kept) in &files {
        let _ = std::fs::rename(file, kept);
    }
    for how in ["deleted", "emptied"] {
        if how == "emptied" {
            std::fs::write(&db, b"").unwrap();
        }
        let stderr = refused(serve(&data), &format!("a coordinator serves a new cluster, its database {how}"));
        assert!(stderr.contains("has a TLS identity (tls/) but the database"), "{how}: {stderr}");
        assert!(stderr.contains("Restore it from a backup"), "{how}: {stderr}");
        // The refused start leaves no database (deleted) and no log beside
        // it (either): SQLite read a log left so over the backup copied in
        // next, and refused that too (found by a review, 2026-12-06).
        assert_eq!(db.exists(), how == "emptied", "{how}: the refused start made a database");
        for (file, _) in &files[1..] {
            assert!(!file.exists(), "{how}: the refused start left {}", file.display());
        }
    }
    // A damaged one says so, and what to do.
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let stderr = refused(serve(&data), "a coordinator serves a damaged database");
    assert!(stderr.contains("the file is damaged; restore it from a backup"), "{stderr}");
    for (file, kept) in &files {
        let _ = std::fs::remove_file(file);
        let _ = std::fs::rename(kept, file);
    }
    let mut again = serve(&data);
    std::thread::sleep(Duration::from_secs(2));
    assert!(again.try_wait().unwrap().is_none(), "the restored database is not served");
    stop(again);
}

/// An `admin.credential` that is there but cannot be read (a directory in
/// its place) or parsed (garbage) is refused with one line, and nothing
/// changes: the first was rotated away in the database before the start
/// failed, the second replaced without a word (found by a review,
/// 2026-12-06). Put back, the same credential is served; only a missing
/// file makes a new one.
#[test]
fn an_unusable_admin_credential_is_refused_and_not_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = serve(&data);
    let original = credential(&data, &mut first);
    stop(first);
    let file = data.join("admin.credential");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let stderr = refused(serve(&data), "a coordinator serves with a directory for its admin credential");
    assert!(stderr.contains("admin.credential") && stderr.contains("restore it"), "{stderr}");
    std::fs::remove_dir(&file).unwrap();
    std::fs::write(&file, "garbage\n").unwrap();
    let stderr = refused(serve(&data), "a coordinator serves with garbage for its admin credential");
    assert!(stderr.contains("not an admin credential") && stderr.contains("delete it"), "{stderr}");
    // Read before anything is made: a first start refused so makes nothing.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("admin.credential"), "garbage\n").unwrap();
    refused(serve(&fresh), "a first start serves with garbage for its admin credential");
    assert!(!fresh.join("tls").exists(), "a refused first start made an identity");
    // Put right, it is a first start (no "no cluster" refusal).
    std::fs::remove_file(fresh.join("admin.credential")).unwrap();
    let mut made = serve(&fresh);
    credential(&fresh, &mut made);
    stop(made);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "garbage\n", "the file was replaced");
    std::fs::write(&file, &original).unwrap();
    let mut again = serve(&data);
    std::thread::sleep(Duration::from_secs(2));
    assert!(again.try_wait().unwrap().is_none(), "the original credential's coordinator stopped");
    stop(again);
    // Still the valid one: no warning that it was rotated away at the next start.
    let mut last = command(&data, "127.0.0.1:0", &[]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = last.kill();
    let out = last.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("rotated away"), "{stderr}");
    // The same secret (the address in the file is this start's).
    let secret = |c: &str| c.trim().rsplit('.').next().unwrap().to_string();
    assert_eq!(secret(&std::fs::read_to_string(&file).unwrap()), secret(&original));
}

/// One TLS identity per cluster, recorded in the database: a coordinator
/// whose tls/ holds another key (another cluster's copied by mistake, or the
/// one a coordinator made when it started at the same moment as another on
/// an empty shared database and lost) is refused with one line and serves
/// nothing; before, the race's loser, restarted, served the cluster under
/// its own pin and replaced the admin credential (found by a review,
/// 2026-12-05). Two stores opened at once on one empty database make one
/// cluster between them.
#[test]
fn a_coordinator_with_another_tls_identity_is_refused_by_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (data, other, second) = (dir.path().join("data"), dir.path().join("other"), dir.path().join("second"));
    for d in [&data, &other] {
        let mut c = serve(d);
        credential(d, &mut c);
        stop(c);
    }
    std::fs::create_dir_all(&second).unwrap();
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.join("tls")).unwrap();
        for f in ["tls/coordinator.crt", "tls/coordinator.key"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    copy(&other, &second);
    let store = format!("sqlite://{}", data.join("coordinator.db").display());
    let child = serve_with(&second, "127.0.0.1:0", &["--store", &store]);
    let stderr = refused(child, "a coordinator serves the cluster under another TLS identity");
    assert!(stderr.contains("served under another TLS identity"), "{stderr}");
    assert!(!second.join("admin.credential").exists(), "it wrote an admin credential");
    assert!(second.join("tls/coordinator.key").exists(), "a key it did not make is left alone");
    // With the first one's identity it serves the same cluster.
    copy(&data, &second);
    let mut served = serve_with(&second, "127.0.0.1:0", &["--store", &store]);
    credential(&second, &mut served);
    stop(served);

    // The race itself, on the store: both find the database empty.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use weave_coordinator::store::{Location, Store};
        let location: Location = format!("sqlite://{}", dir.path().join("race.db").display()).parse().unwrap();
        let (a, b) = (Store::connect(&location).await.unwrap(), Store::connect(&location).await.unwrap());
        let settings = weave_coordinator::store::ClusterSettings {
            range: "10.32.0.0/12".parse().unwrap(),
            node_range: "10.47.0.0/16".parse().unwrap(),
            default_subnet: "10.32.0.0/16".parse().unwrap(),
            dns_domain: "weave.local.".into(),
            segment_mtu: None,
        };
        let (ra, rb) = tokio::join!(
            a.init_cluster_pinned(&settings, Some("sha256:aa")),
            b.init_cluster_pinned(&settings, Some("sha256:bb"))
        );
        let (first_a, first_b) = (ra.unwrap().1, rb.unwrap().1);
        assert!(first_a ^ first_b, "exactly one made the cluster: {first_a} {first_b}");
        // Whichever asks first, the identity is the one that made it.
        let winner = if first_a { "sha256:aa" } else { "sha256:bb" };
        let pin_b = b.cluster_pin("sha256:bb", None).await.unwrap();
        let pin_a = a.cluster_pin("sha256:aa", None).await.unwrap();
        assert_eq!((pin_a.as_str(), pin_b.as_str()), (winner, winner), "the identity that made the cluster stays");
        // --new-identity replaces the pin it read at its start, once: of two
        // such starts at once, the second finds another pin and is refused.
        assert_eq!(b.cluster_pin("sha256:cc", Some(winner)).await.unwrap(), "sha256:cc", "--new-identity");
        assert_eq!(a.cluster_pin("sha256:dd", Some(winner)).await.unwrap(), "sha256:cc", "a second one at once");
    });
}
