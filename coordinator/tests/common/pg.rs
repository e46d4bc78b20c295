//! A throwaway PostgreSQL server for the tests: `initdb` into a temporary
//! directory as the `postgres` user (it refuses to run as root), listening
//! only on a Unix socket in that directory. One server per test binary,
//! started on first use; one fresh database per store. A watchdog process
//! stops the server by its PID and removes the directory once the test
//! binary has exited, whether its tests passed, failed or panicked.
#![allow(dead_code, unreachable_pub)]

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::Connection as _;

pub struct PgServer {
    /// The temporary directory: data in `data/`, the socket in the directory itself.
    pub dir: PathBuf,
    pub pid: u32,
}

/// The newest installed server's bin directory (Debian: /usr/lib/postgresql/<major>/bin).
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (.ci/install-deps.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("an initdb under /usr/lib/postgresql/*/bin").1
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl PgServer {
    /// Starts a server in a new temporary directory (not shared).
    pub fn start() -> Self {
        let mut server = Self::init();
        server.launch();
        server
    }

    /// A new temporary directory with an initialised cluster (not started).
    fn init() -> Self {
        let dir = tempfile::Builder::new().prefix("weave-pg-").tempdir().expect("tempdir").keep();
        run(Command::new("chown").arg("postgres").arg(&dir));
        let bin = bin_dir();
        run(Command::new("runuser").args(["-u", "postgres", "--"]).arg(bin.join("initdb")).args([
            "-D",
            &dir.join("data").to_string_lossy(),
            "-A",
            "trust",
            "-U",
            "weave",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]));
        // The test superuser needs no password; every other role does (to
        // test refused credentials).
        std::fs::write(dir.join("data/pg_hba.conf"), "local all weave trust\nlocal all all scram-sha-256\n")
            .expect("pg_hba.conf");
        Self { dir, pid: 0 }
    }

    /// Starts the postgres process on the existing data directory.
    pub fn launch(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=300"])
            // Its watchdog (below) stops it after this binary has exited:
            // not in the group the test runner kills then (deploy/run-tests.py).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        // Reaped when it exits (it is stopped by the server's own PID, below).
        std::thread::spawn(move || child.wait());
        // runuser stays as postgres' parent: the server's own PID is in postmaster.pid.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            let ready = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "ready"));
            if let (Some(pid), true) = (pid, ready) {
                self.pid = pid;
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not become ready in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `self.pid` is still this server's postmaster (its command
    /// line names the data directory): a stopped server's PID may be
    /// another process's by now.
    fn running(&self) -> bool {
        let data = self.dir.join("data");
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == data.as_os_str().as_encoded_bytes()))
    }

    /// Stops the server (SIGQUIT: immediate) and waits until it has exited.
    pub fn kill(&self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill").args(["-QUIT", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server the way an operator does (SIGINT: PostgreSQL's
    /// "fast" shutdown: open sessions are ended, a checkpoint written, the
    /// socket removed) and waits until it has exited. [`PgServer::launch`]
    /// starts it again on the same data directory and socket.
    pub fn stop(&self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", self.pid)).exists() {
            assert!(Instant::now() < deadline, "postgres (pid {}) did not stop within 30 s of SIGINT", self.pid);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A URL for database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://weave@localhost/{name}?host={}", self.dir.display())
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.admin_sql(format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` as the test superuser.
    pub fn admin_sql(&self, sql: String) {
        let admin = self.url("postgres");
        // A thread of its own: callers may be inside a runtime or not.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await.expect("connect to the test postgres");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("admin SQL");
            })
        })
        .join()
        .expect("admin SQL");
    }

    /// Stops the server and removes its directory once process `watched` has exited.
    pub fn watch_over(&self, watched: u32) {
        // The server's PID is read when it is time to stop it: a test may
        // have stopped and launched it again (a new PID) meanwhile. No
        // postmaster.pid: no server is running. A postmaster.pid left by a
        // server that was killed names a PID that may belong to another
        // process by now: only a process whose command line names this data
        // directory is signalled (and waited for).
        let script = format!(
            "while kill -0 {watched} 2>/dev/null; do sleep 0.5; done; \
             pid=$(head -n1 '{dir}/data/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pid\" ] && tr '\\0' '\\n' < /proc/$pid/cmdline 2>/dev/null | grep -qxF '{dir}/data'; then \
             kill -QUIT $pid 2>/dev/null; \
             while kill -0 $pid 2>/dev/null; do sleep 0.2; done; fi; rm -rf '{dir}'",
            dir = self.dir.display()
        );
        // A process group of its own: the test runner kills what a test
        // binary leaves in its group (deploy/run-tests.py).
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog starts");
        // It outlives this process on purpose; reaped if it ends first.
        std::thread::spawn(move || child.wait());
    }
}

/// This test binary's shared server.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = PgServer::start();
        s.watch_over(std::process::id());
        s
    })
}

/// A server this test owns (to stop and start it); removed when dropped.
pub struct OwnedPg(pub PgServer);

impl OwnedPg {
    pub fn start() -> Self {
        let s = PgServer::start();
        // Also cleaned up if the test binary dies before Drop runs.
        s.watch_over(std::process::id());
        Self(s)
    }
}

impl Drop for OwnedPg {
    fn drop(&mut self) {
        self.0.kill();
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

/// A server this test owns inside network namespace `ns` (a host of the
/// test's underlay), reached over TCP on `addr`:5432 only, by role `weave`
/// with a password (SCRAM); its Unix socket (in its directory, outside any
/// namespace) is kept for the test's own admin SQL. Stopped by its PID and
/// removed like [`OwnedPg`], also when the test binary dies first.
pub struct NetPg {
    pub owned: OwnedPg,
    pub ns: String,
    pub addr: String,
    password: String,
    tls: bool,
}

impl NetPg {
    pub fn start(ns: &str, addr: &str, password: &str) -> Self {
        Self::start_with(ns, addr, password, None)
    }

    /// With `tls` (the server's certificate and key, PEM): TLS on, and role
    /// `weave` refused unless its session is TLS; other roles may log in
    /// without it.
    pub fn start_with(ns: &str, addr: &str, password: &str, tls: Option<(&str, &str)>) -> Self {
        let server = PgServer::init();
        // Over TCP, every role needs its password, from wherever on the underlay.
        let only_tls = if tls.is_some() { "hostnossl all weave 0.0.0.0/0 reject\n" } else { "" };
        std::fs::write(
            server.dir.join("data/pg_hba.conf"),
            format!(
                "local all weave trust\nlocal all all scram-sha-256\n{only_tls}host all all 0.0.0.0/0 scram-sha-256\n"
            ),
        )
        .expect("pg_hba.conf");
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = server.dir.join("data").join(name);
                std::fs::write(&path, pem).expect("a TLS file");
                run(Command::new("chown").arg("postgres").arg(&path));
                run(Command::new("chmod").arg("600").arg(&path));
            }
        }
        let mut me = Self {
            owned: OwnedPg(server),
            ns: ns.into(),
            addr: addr.into(),
            password: password.into(),
            tls: tls.is_some(),
        };
        me.launch();
        me.owned.0.watch_over(std::process::id());
        me.owned.0.admin_sql(format!("ALTER ROLE weave PASSWORD '{password}'"));
        me
    }

    /// Starts the postgres process (again) in the namespace, listening on `addr` only.
    pub fn launch(&mut self) {
        let s = &mut self.owned.0;
        let _ = std::fs::remove_file(s.dir.join("data/postmaster.pid"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "runuser", "-u", "postgres", "--"])
            .arg(bin_dir().join("postgres"))
            .arg("-D")
            .arg(s.dir.join("data"))
            .arg("-k")
            .arg(&s.dir)
            .args(["-c", &format!("listen_addresses={}", self.addr), "-c", "port=5432"])
            .args(["-c", "fsync=off", "-c", "max_connections=300", "-c", "password_encryption=scram-sha-256"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts in its namespace");
        std::thread::spawn(move || child.wait());
        let pidfile = s.dir.join("data/postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            let pid = text.lines().next().and_then(|l| l.trim().parse().ok());
            if let (Some(pid), true) = (pid, text.lines().any(|l| l.trim() == "ready")) {
                s.pid = pid;
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not become ready in its namespace in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `name` over TCP as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, name: &str) -> String {
        format!("postgres://{user}:{password}@{}:5432/{name}", self.addr)
    }

    /// Creates a fresh database; returns its TCP URL with the password.
    pub fn create_database(&self) -> String {
        let local = self.owned.0.create_database();
        let name = local.split('?').next().and_then(|s| s.rsplit('/').next()).expect("a database name");
        self.url_as("weave", &self.password, name)
    }
}
