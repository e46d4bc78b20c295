//! An agent whose data dir is full: an attach is refused before anything
//! is allocated, with one clear error (exit 7), and goes through once there
//! is room again, with no restart. It answered with an address, the
//! container recorded nowhere on disk, and once the agent restarted the
//! address and its DNS name were held for good (found by a review,
//! 2026-12-07).
mod common;

use std::{io::Write, path::Path, process::Command, time::Duration};

use common::*;

/// A tmpfs at `dir` holding what was there, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn over(dir: &Path) -> Self {
        let aside = dir.with_extension("aside");
        ok(&["cp", "-a", dir.to_str().unwrap(), aside.to_str().unwrap()]);
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs"]).arg(dir).status();
        assert!(mounted.unwrap().success(), "mount a tmpfs at {}", dir.display());
        let tmpfs = Self(dir.to_path_buf());
        ok(&["cp", "-a", &format!("{}/.", aside.display()), dir.to_str().unwrap()]);
        tmpfs
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `file` up.
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    while f.write_all(&[0u8; 64]).is_ok() {}
    let _ = f.sync_all();
}

#[test]
#[ignore = "needs root: network namespaces and a tmpfs"]
fn an_attach_on_a_full_data_dir_is_refused_before_it_allocates() {
    let mut bed = Bed::with_hosts(1);
    bed.signal_agent(0, nix::sys::signal::Signal::SIGTERM);
    let data_dir = bed.hosts[0].data_dir.clone();
    let _tmpfs = Tmpfs::over(&data_dir);
    bed.start_agent(0, false);
    bed.wait_status(0);
    let ns = bed.add_container("full");
    let netns = format!("/run/netns/{ns}");
    let filler = data_dir.join("filler");
    fill(&filler);

    let out = bed.weavectl(0, &["attach", "--name", "full", &netns]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}{}", bed.log(0));
    assert!(stderr.contains("cannot record it in") && stderr.contains("nothing was allocated"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let held = bed.allocations();
    assert!(!held.iter().any(|a| a.contains(" full ")), "nothing allocated: {held:?}");
    assert_eq!(interfaces(&ns), Vec::<String>::new(), "nothing plugged");

    // Map changes the agent cannot save: said once, not once a change.
    const MAP: &str = "cannot save the network map";
    for subnet in ["10.9.0.0/24", "10.9.1.0/24", "10.9.2.0/24"] {
        let before = bed.wait_status(0).revision;
        let out = bed.weavectl_admin(&["subnet", "add", subnet]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_for("the map change", Duration::from_secs(10), || {
            bed.status(0).filter(|s| s.revision > before).map(|_| ())
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    let log = bed.log(0);
    let warned = log.lines().filter(|l| l.contains(MAP) && !l.contains("DEBUG")).count();
    assert_eq!(warned, 1, "{log}");

    // Room again: the same attach goes through, and is on disk.
    std::fs::remove_file(&filler).unwrap();
    let w = bed.weavectl_attach(0, &ns, &["--name", "full", &netns]);
    assert_eq!(w.len(), 1);
    assert!(bed.allocations().iter().any(|a| a.contains(" full ")), "{:?}", bed.allocations());
    let saved = std::fs::read_to_string(data_dir.join("containers.json")).unwrap();
    assert!(saved.contains("\"full\""), "{saved}");
    let out = bed.weavectl_admin(&["subnet", "add", "10.9.3.0/24"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the map saved again", Duration::from_secs(10), || {
        bed.log(0).contains("saved the network map again").then_some(())
    });
}
