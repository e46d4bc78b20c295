//! podman (Debian's 4.3, CNI backend) drives weave-cni with the repo's
//! conflist (deploy/cni/10-weave.conflist) on two simulated hosts, each with
//! its own podman root: containers get addresses, reach each other across
//! hosts by address and by container name, and `podman rm` releases the
//! address. Recipe: /work/shared/RUNTIMES.md "podman driving weave-cni"
//! (runc, cgroupfs, vfs, ulimits the sandbox can grant).
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use common::*;

const IMAGE: &str = "localhost/weave-bb:1";

/// One host's podman: its own storage, run dir, containers.conf and CNI
/// configuration. Removes its containers on drop (before the bed goes).
struct Podman {
    ns: String,
    dir: PathBuf,
}

impl Podman {
    fn new(bed: &Bed, i: usize) -> Self {
        let dir = bed.path(&format!("podman-h{}", i + 1));
        let net = dir.join("net.d");
        fs::create_dir_all(&net).unwrap();
        // The repo's conflist, pointed at this host's agent socket.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni/10-weave.conflist");
        let mut conflist: serde_json::Value = serde_json::from_slice(&fs::read(repo).unwrap()).unwrap();
        conflist["plugins"][0]["socket"] = bed.hosts[i].socket.to_str().unwrap().into();
        fs::write(net.join("10-weave.conflist"), conflist.to_string()).unwrap();
        let plugins = Path::new(env!("CARGO_BIN_EXE_weave-cni")).parent().unwrap().to_path_buf();
        let conf = format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n\
             [containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
             network_config_dir = \"{}\"\n",
            plugins.display(),
            net.display()
        );
        fs::write(dir.join("containers.conf"), conf).unwrap();
        let podman = Self { ns: bed.hosts[i].ns.clone(), dir };
        podman.import_busybox();
        podman
    }

    /// `podman <args>` inside the host's network namespace. nsenter rather
    /// than `ip netns exec`, which remounts /sys and hides the cgroups runc needs.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// No registry is reachable: an image of Debian's busybox-static.
    fn import_busybox(&self) {
        let root = self.dir.join("image");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
        for applet in ["sh", "sleep", "ping", "ip", "nslookup", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("image.tar");
        ok(&["tar", "-C", root.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."]);
        self.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// `podman run -d` on the weave network; returns the container's address.
    fn start(&self, name: &str) -> std::net::Ipv4Addr {
        self.ok(&["run", "-d", "--name", name, "--network", "weave", "--cap-add", "NET_RAW", IMAGE, "sleep", "600"]);
        let ip = self.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.weave.IPAddress}}", name]);
        ip.parse().unwrap_or_else(|_| panic!("{name} has no weave address: '{ip}'"))
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        self.run(&["exec", from, "ping", "-c1", "-W1", to]).status.success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

#[test]
#[ignore = "needs root: network namespaces, podman"]
fn podman_containers_on_two_hosts_get_addresses_names_and_release_them() {
    let bed = Bed::with_hosts(2);
    let hosts = [Podman::new(&bed, 0), Podman::new(&bed, 1)];
    let a = hosts[0].start("pw-a");
    let b = hosts[1].start("pw-b");
    let held = |ip: std::net::Ipv4Addr| bed.allocations().iter().any(|l| l.contains(&format!(" {ip}/")));
    assert!(held(a) && held(b), "{:?}", bed.allocations());

    // Across hosts, by address, both ways.
    wait_for("pw-a to ping pw-b by address", Duration::from_secs(15), || {
        hosts[0].ping("pw-a", &b.to_string()).then_some(())
    });
    wait_for("pw-b to ping pw-a by address", Duration::from_secs(10), || {
        hosts[1].ping("pw-b", &a.to_string()).then_some(())
    });
    // By container name (podman passes it in CNI_ARGS; the agent's DNS
    // answers at 127.0.0.11, which the ADD result names).
    wait_for("pw-a to ping pw-b by name", Duration::from_secs(15), || hosts[0].ping("pw-a", "pw-b").then_some(()));
    wait_for("pw-b to ping pw-a.weave.local", Duration::from_secs(10), || {
        hosts[1].ping("pw-b", "pw-a.weave.local").then_some(())
    });

    // podman rm releases the address (CNI DEL).
    hosts[1].ok(&["rm", "-f", "-t", "0", "pw-b"]);
    wait_for("pw-b's address to be released", Duration::from_secs(10), || (!held(b)).then_some(()));
    assert!(held(a), "{:?}", bed.allocations());
}
