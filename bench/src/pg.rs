//! A throwaway PostgreSQL server for `cp-bench stores`, as the coordinator's
//! tests start theirs (`coordinator/tests/common/pg.rs`): `initdb` into a
//! temporary directory as the `postgres` user (it refuses to run as root),
//! listening only on a Unix socket in that directory (no TCP at all). Unlike
//! the tests' server it keeps PostgreSQL's durability defaults (`fsync`,
//! `synchronous_commit` on), to compare with SQLite's `synchronous=FULL`.
//! Stopped by its PID and its directory removed when dropped, and by a
//! watchdog should this process die first.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

pub(crate) struct PgServer {
    dir: PathBuf,
    pid: u32,
}

/// The newest installed server's bin directory (Debian: `/usr/lib/postgresql/<major>/bin`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (.ci/install-deps.sh installs Debian's postgresql)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    found.sort();
    Ok(found.pop().context("no initdb under /usr/lib/postgresql/*/bin")?.1)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl PgServer {
    /// initdb and start a server (needs root, for `runuser -u postgres`).
    pub(crate) fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("weave-bench-pg-").tempdir()?.keep();
        let mut server = Self { dir, pid: 0 };
        run(Command::new("chown").arg("postgres").arg(&server.dir))?;
        let data = server.dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "weave", "-E", "UTF8", "--locale=C"]))?;
        std::fs::write(data.join("pg_hba.conf"), "local all weave trust\n")?;
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&server.dir)
            .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        // Reaped when it exits (it is stopped by the server's own PID).
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // runuser stays as postgres' parent: the server's own PID is in postmaster.pid.
            let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            let pid = pidfile.lines().next().and_then(|l| l.trim().parse().ok());
            if let (Some(pid), true) = (pid, pidfile.lines().any(|l| l.trim() == "ready")) {
                server.pid = pid;
                break;
            }
            if Instant::now() > deadline {
                bail!("postgres did not become ready in 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.watch_over(std::process::id())?;
        Ok(server)
    }

    /// A fresh database; its `--store` URL.
    pub(crate) fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let socket = self.dir.to_string_lossy().to_string();
        run(Command::new(bin_dir()?.join("createdb")).args(["-h", &socket, "-U", "weave", name]))?;
        Ok(format!("postgres://weave@localhost/{name}?host={socket}"))
    }

    /// Stops the server and removes its directory once process `watched`
    /// has exited (should it exit without dropping this).
    fn watch_over(&self, watched: u32) -> anyhow::Result<()> {
        // The PID is checked when it is time: after a normal drop (the
        // server stopped, the directory gone) or a crash of the server, it
        // may belong to another process by then; only a process whose
        // command line names this data directory is signalled.
        let script = format!(
            "while kill -0 {watched} 2>/dev/null; do sleep 0.5; done; \
             if tr '\\0' '\\n' < /proc/{pid}/cmdline 2>/dev/null | grep -qxF '{dir}/data'; then \
             kill -INT {pid} 2>/dev/null; while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; fi; rm -rf '{dir}'",
            pid = self.pid,
            dir = self.dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the postgres watchdog")?;
        // It outlives this process on purpose; reaped if it ends first.
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
