//! The test PostgreSQL's watchdog (`common/pg.rs`) signals only the server
//! it was set over: a postmaster.pid left behind by a killed server names a
//! PID that another process may hold by then, and that one must live on.
#[path = "common/pg.rs"]
mod pg;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pg::PgServer;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stale_postmaster_pid_of_another_process_is_left_alone() {
    let dir = tempfile::Builder::new().prefix("weave-pg-watchdog-").tempdir().expect("tempdir").keep();
    std::fs::create_dir(dir.join("data")).expect("data dir");
    // Not a postgres of this directory: it merely holds the PID the file names.
    let mut bystander = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().expect("sleep");
    std::fs::write(dir.join("data/postmaster.pid"), format!("{}\n{}/data\n", bystander.id(), dir.display()))
        .expect("postmaster.pid");
    // The process the watchdog waits for: when it ends, the watchdog acts.
    let mut watched = Command::new("sleep").arg("0.2").spawn().expect("sleep");
    PgServer { dir: dir.clone(), pid: 0 }.watch_over(watched.id());
    watched.wait().expect("the watched process ends");
    wait_until("the watchdog removes the directory", || !Path::new(&dir).exists());
    let alive = bystander.try_wait().expect("try_wait").is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(alive, "the watchdog signalled a process that is not the server it watched over");
}
