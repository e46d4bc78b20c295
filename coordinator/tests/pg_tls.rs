//! The coordinator's connection to a PostgreSQL server on the network is TLS
//! when the URL asks for it (`sslmode=verify-full&sslrootcert=<CA>`): the
//! server's certificate is checked against that CA and no other (a server
//! with another CA's certificate is refused, one line; no public CA is
//! trusted), and what a machine on the path
//! captures of the session is ciphertext: no SQL, no table names. Control:
//! the same capture of a session without TLS shows the migrations' SQL. The
//! server (in a network namespace of its own, at a TEST-NET address on its
//! `lo`) refuses role `weave` without TLS, and the coordinator, which warned
//! that the session was not verified TLS, says so in one line. And no
//! subnet may hold the database's address (`FAILED_PRECONDITION`).
mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::pg::NetPg;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The database server's address, on its namespace's `lo`.
const ADDR: &str = "198.51.100.7";

/// A network namespace with only `lo` (up, with [`ADDR`]), deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        let me = Self(name);
        let ip =
            |args: &[&str]| assert!(Command::new("ip").arg("-n").arg(&me.0).args(args).status().unwrap().success());
        ip(&["link", "set", "lo", "up"]);
        // Not loopback, so the coordinator sees the network (a TEST-NET
        // address of this namespace's own).
        ip(&["addr", "add", &format!("{ADDR}/32"), "dev", "lo"]);
        me
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process ended by its PID when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA (its certificate, PEM) and, when `server` is given, a certificate
/// and key for that address signed by it.
fn ca_and_server(server: Option<&str>) -> (String, Option<(String, String)>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "weave test database CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issued = server.map(|addr| {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![addr.to_string()]).unwrap();
        let cert = params.signed_by(&key, &Issuer::new(ca, &ca_key)).unwrap();
        (cert.pem(), key.serialize_pem())
    });
    (ca_pem, issued)
}

/// tcpdump of port 5432 on `ns`'s loopback into `file`, until [`finish`]ed.
fn capture(ns: &str, file: &Path) -> Running {
    let log = file.with_extension("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w"])
        .arg(file)
        .args(["tcp", "port", "5432"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("tcpdump starts");
    let child = Running(child);
    // It says so on stderr once it captures.
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("listening on") {
        let gone = child.0.try_wait().unwrap().is_some();
        assert!(
            !gone && Instant::now() < deadline,
            "tcpdump did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Stops a capture so that it writes out what it holds (SIGTERM, by its PID).
fn finish(mut tcpdump: Running) {
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-TERM", &tcpdump.0.id().to_string()]).status();
    let _ = tcpdump.0.wait();
}

/// Starts `coordinator serve --store url` in `ns` (its stdout and stderr
/// in `dir`'s `out` and `err`). Each start has a data dir of its own on the
/// one database: `--new-identity` (else a start after the first is refused
/// for having no `tls/` of the cluster's).
fn start(ns: &str, url: &str, dir: &Path) -> Running {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--new-identity", "--store", url])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .env_remove("WEAVE_STORE")
        .stdout(std::fs::File::create(dir.join("out")).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .expect("coordinator starts");
    Running(child)
}

/// [`start`], running until dropped once it printed its first join token.
fn serving(ns: &str, url: &str, dir: &Path) -> Running {
    let running = start(ns, url, dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(dir.join("out")).unwrap_or_default().contains("join token") {
        assert!(Instant::now() < deadline, "the coordinator did not start in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// AddSubnet `cidr` as the admin of the coordinator whose data dir is
/// `data`, from inside `ns` (where it listens).
fn add_subnet(ns: &str, data: &Path, cidr: &str) -> Result<(), tonic::Status> {
    let text = std::fs::read_to_string(data.join("admin.credential")).unwrap();
    let cred = weave_proto::token::AdminCredential::parse(text.trim()).unwrap();
    let (ns, cidr) = (ns.to_string(), cidr.to_string());
    std::thread::spawn(move || {
        let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let channel = weave_proto::client::connect(&cred.coordinator, cred.pin).await.unwrap();
            let mut api = weave_proto::client::Api::new(channel, &cred.secret).unwrap();
            let req = weave_proto::v1::AddSubnetRequest { cidr, ..Default::default() };
            api.subnets.add_subnet(req).await.map(|_| ())
        })
    })
    .join()
    .unwrap()
}

/// `coordinator serve --store url` in `ns`: `Ok(())` once it has started
/// (printed its first join token, so the store is open and migrated; then
/// it is stopped), or its exit code and stderr if it stopped by itself.
fn serve(ns: &str, url: &str, dir: &Path) -> Result<(), (Option<i32>, String)> {
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut child = start(ns, url, dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(&out).unwrap_or_default().contains("join token") {
            return Ok(());
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            return Err((status.code(), std::fs::read_to_string(&err).unwrap()));
        }
        assert!(Instant::now() < deadline, "the coordinator neither started nor stopped in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// sqlx's rustls TLS trusts its built-in roots and `sslrootcert`; the
/// workspace patches the built-in roots to none (vendor/webpki-roots), so a
/// certificate from any public CA does not pass for the database's.
#[test]
fn no_public_ca_is_trusted_for_the_database() {
    assert!(webpki_roots::TLS_SERVER_ROOTS.is_empty(), "sqlx would trust public CAs besides sslrootcert");
}

#[test]
#[ignore = "needs root: a network namespace, PostgreSQL as the postgres user, tcpdump"]
fn the_store_session_is_tls_checked_against_the_given_ca_and_unreadable_on_the_wire() {
    let ns = Netns::new(format!("wvpgtls{}", std::process::id()));
    let addr = ADDR;
    let (ca, issued) = ca_and_server(Some(addr));
    let (cert, key) = issued.unwrap();
    let (other_ca, _) = ca_and_server(None);
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&other_file, &other_ca).unwrap();
    let server = NetPg::start_with(&ns.0, addr, "s3cret-pass", Some((&cert, &key)));
    let url = server.create_database();
    let with = |mode: &str, ca: &Path| format!("{url}?sslmode={mode}&sslrootcert={}", ca.display());

    // Verified TLS: it starts, and the capture of its session holds no SQL.
    let pcap = dir.path().join("tls.pcap");
    let tcpdump = capture(&ns.0, &pcap);
    let run = tempfile::tempdir().unwrap();
    serve(&ns.0, &with("verify-full", &ca_file), run.path()).expect("the coordinator starts over verified TLS");
    let stderr = std::fs::read_to_string(run.path().join("err")).unwrap();
    assert!(!stderr.contains("without verified TLS"), "no warning for a verified session: {stderr}");
    finish(tcpdump);
    let seen = std::fs::read(&pcap).unwrap();
    assert!(seen.len() > 4096, "the capture holds the session ({} bytes)", seen.len());
    for clear in ["CREATE TABLE", "join_tokens", "_sqlx_migrations"] {
        assert!(!contains(&seen, clear), "'{clear}' is readable on the wire");
    }

    // No subnet may hold the database's address: the agent on the
    // coordinator's host would route the coordinator's store into the
    // overlay. One beside it is fine (the control).
    let run = tempfile::tempdir().unwrap();
    let coordinator = serving(&ns.0, &with("verify-full", &ca_file), run.path());
    let data = run.path().join("data");
    let refused = add_subnet(&ns.0, &data, "198.51.100.0/25").unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&format!("contains {addr}, the address of the coordinator's database")));
    add_subnet(&ns.0, &data, "198.51.100.128/25").expect("a subnet beside the database's address");
    drop(coordinator);

    // verify-ca (the CA, not the name) with the same CA: it starts too.
    let run = tempfile::tempdir().unwrap();
    serve(&ns.0, &with("verify-ca", &ca_file), run.path()).expect("the coordinator starts with verify-ca");

    // Another CA's certificate: refused, one line, exit 1 (verify-ca alike).
    let run = tempfile::tempdir().unwrap();
    let (code, err) = serve(&ns.0, &with("verify-ca", &other_file), run.path()).unwrap_err();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");
    let run = tempfile::tempdir().unwrap();
    let (code, err) = serve(&ns.0, &with("verify-full", &other_file), run.path()).unwrap_err();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("coordinator: cannot connect to the database") && err.contains("certificate"), "{err}");
    assert!(!err.contains("s3cret-pass"), "the password is shown: {err}");

    // Without TLS the server refuses role weave; the coordinator warned first.
    let run = tempfile::tempdir().unwrap();
    let (code, err) = serve(&ns.0, &format!("{url}?sslmode=disable"), run.path()).unwrap_err();
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.contains("without verified TLS (sslmode=disable)")), "{err}");
    assert!(err.lines().last().unwrap().contains("no encryption"), "{err}");

    // Control: a session without TLS (another role, which the server lets
    // in so) shows the migrations' SQL to the same capture.
    server.owned.0.admin_sql("CREATE ROLE plain LOGIN PASSWORD 'plain-pass'".into());
    server.owned.0.admin_sql("CREATE DATABASE plain OWNER plain".into());
    let pcap = dir.path().join("plain.pcap");
    let tcpdump = capture(&ns.0, &pcap);
    let run = tempfile::tempdir().unwrap();
    serve(&ns.0, &format!("postgres://plain:plain-pass@{addr}:5432/plain?sslmode=disable"), run.path())
        .expect("the coordinator starts without TLS");
    finish(tcpdump);
    let seen = std::fs::read(&pcap).unwrap();
    assert!(
        contains(&seen, "CREATE TABLE"),
        "a session without TLS is readable on the wire ({} bytes captured; SELECT seen: {}, user plain seen: {})",
        seen.len(),
        contains(&seen, "SELECT"),
        contains(&seen, "plain")
    );
}
