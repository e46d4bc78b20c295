//! The Kubernetes DaemonSet's `install-cni` container command
//! (`deploy/kubernetes/weave-install-cni.sh`) in the test bed, against a
//! temporary host root: the conflist must not exist while the agent is not
//! ready (not started, or running with its coordinator unreachable), must
//! appear once it is, next to an executable weave-cni, and the installer stays
//! up afterwards as a container must. Root only (network namespaces):
//!
//!
//! Also the coordinator's command as `deploy/kubernetes/coordinator.yaml`
//! writes it, on an IPv6-only and on an IPv4 underlay.
//!
//!   cargo test -p weave-agent --test e2e_daemonset -- --include-ignored
mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::Duration,
};

use common::{Bed, COORDINATOR_IP, Underlay, agent_bin, v6_of, wait_for};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("agent/ is inside the workspace").to_path_buf()
}

/// The installer as the DaemonSet runs it (no arguments), with its paths
/// pointed at this bed, as the container's PID 1 (`unshare -pf`: the kernel
/// drops a signal to a namespace's init that has no handler for it); killed
/// by pid on drop.
struct Installer {
    child: Child,
    log: PathBuf,
}

impl Installer {
    fn start(root: &Path, socket: &Path) -> Self {
        let log = root.with_extension("log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("unshare")
            .args(["-pf", "--kill-child", "bash"])
            .arg(repo().join("deploy/kubernetes/weave-install-cni.sh"))
            .env("WEAVE_HOST_ROOT", root)
            .env("WEAVE_AGENT_SOCKET", socket)
            .env("WEAVE_AGENT_BIN", agent_bin())
            .env("WEAVE_CNI_PLUGIN", env!("CARGO_BIN_EXE_weave-cni"))
            .env("WEAVE_CNI_CONFLIST", repo().join("deploy/kubernetes/10-weave.conflist"))
            .env("WEAVE_READY_INTERVAL", "1")
            .env("WEAVE_CNI_PLUGIN_DIRS", "/opt/cni/bin:/usr/libexec/cni")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start weave-install-cni.sh");
        Self { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(exited.is_none(), "installer exited ({exited:?}): {}", self.log());
    }

    /// SIGTERM to the script (PID 1 in its namespace), as the kubelet stops
    /// a container; it must exit promptly, with `code` (unshare exits as it
    /// did): 0 once installed, 143 before.
    fn stop(mut self, code: i32) {
        let children = format!("/proc/{}/task/{}/children", self.child.id(), self.child.id());
        let script = wait_for("the script under unshare", Duration::from_secs(10), || {
            fs::read_to_string(&children).ok()?.split_whitespace().next()?.parse::<i32>().ok()
        });
        let pid = nix::unistd::Pid::from_raw(script);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status =
            wait_for("the installer to exit on SIGTERM", Duration::from_secs(10), || self.child.try_wait().unwrap());
        assert_eq!(status.code(), Some(code), "installer exited with {status} on SIGTERM: {}", self.log());
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conflist(root: &Path) -> PathBuf {
    root.join("etc/cni/net.d/10-weave.conflist")
}

/// The plugins the Kubernetes conflist chains, as the node's CNI package
/// puts them into directory `dir` under the root (stand-ins: the installer
/// only looks).
fn chained_plugins(root: &Path, dir: &str) {
    let dir = root.join(dir);
    fs::create_dir_all(&dir).unwrap();
    for p in ["portmap", "bandwidth"] {
        fs::write(dir.join(p), "#!/bin/sh\nexit 1\n").unwrap();
        fs::set_permissions(dir.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// While the agent is not ready the installer waits (still running) and
/// writes nothing into the CNI config directory.
fn assert_waiting(installer: &mut Installer, root: &Path, what: &str) {
    // Several readiness intervals (1 s each here).
    thread::sleep(Duration::from_secs(4));
    installer.assert_running();
    assert!(!conflist(root).exists(), "conflist written while {what}: {}", installer.log());
}

/// The conflist appears, is whole JSON naming weave, weave-cni is
/// installed executable, and no temporary file is left next to either.
fn assert_installed(installer: &mut Installer, root: &Path) {
    let path = conflist(root);
    wait_for(&format!("the conflist once the agent is ready ({})", installer.log()), Duration::from_secs(60), || {
        path.exists().then_some(())
    });
    let conf: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).expect("conflist is JSON");
    assert_eq!(conf["name"], "weave");
    assert_eq!(conf["plugins"][0]["type"], "weave-cni");

    let plugin = root.join("opt/cni/bin/weave-cni");
    let meta = fs::metadata(&plugin).expect("weave-cni installed with the conflist");
    assert_eq!(meta.permissions().mode() & 0o755, 0o755, "weave-cni executable");
    assert_eq!(meta.len(), fs::metadata(env!("CARGO_BIN_EXE_weave-cni")).unwrap().len());

    let mut left: Vec<String> = ["opt/cni/bin", "etc/cni/net.d"]
        .iter()
        .flat_map(|d| fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left.retain(|f| f != "bandwidth" && f != "portmap");
    assert_eq!(left, ["10-weave.conflist", "weave-cni"], "only the two files, no temporaries");
    // A container's command stays up with the agent.
    installer.assert_running();
}

#[test]
#[ignore = "needs root: network namespaces"]
fn conflist_is_written_only_once_the_agent_has_joined() {
    let mut bed = Bed::new();
    let root = bed.path("host-root");
    fs::create_dir(&root).unwrap();
    // The socket the first host's agent will open (Bed::add_host's naming).
    let socket = bed.path("h1.sock");
    let mut installer = Installer::start(&root, &socket);

    assert_waiting(&mut installer, &root, "no agent runs");
    assert!(!root.join("opt/cni/bin/weave-cni").exists(), "weave-cni installed before the agent is ready");

    bed.add_host();
    assert_eq!(bed.hosts[0].socket, socket);
    // A node without the plugins the conflist chains stays unready: every
    // pod's ADD would fail at portmap or bandwidth (a review, 2026-12-07).
    wait_for(
        &format!("the installer to name the missing plugins: {}", installer.log()),
        Duration::from_secs(30),
        || installer.log().contains("missing from").then_some(()),
    );
    assert!(installer.log().contains("/usr/libexec/cni: portmap bandwidth"), "{}", installer.log());
    assert_waiting(&mut installer, &root, "portmap and bandwidth are missing");
    chained_plugins(&root, "opt/cni/bin");
    assert_installed(&mut installer, &root);
    assert!(bed.status(0).expect("agent answers").coordinator_connected);
    installer.stop(0);
}

/// Stopped while it waits for the agent (agents waiting for their token's
/// Secret, a coordinator down during an upgrade): it ignored SIGTERM there
/// as PID 1, and every such pod took its whole grace period to go (found by
/// a review, 2026-12-06). It exits 143: nothing was installed.
#[test]
#[ignore = "needs root: network namespaces"]
fn the_installer_stops_on_sigterm_while_it_waits() {
    let bed = Bed::new();
    let root = bed.path("host-root");
    fs::create_dir(&root).unwrap();
    // An "agent" that takes the connection and never answers: the status
    // call must not hold the script (bash runs no trap until it ends).
    let socket = bed.path("silent.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut installer = Installer::start(&root, &socket);
    assert_waiting(&mut installer, &root, "no agent answers");
    installer.stop(143);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_agent_without_its_coordinator_is_not_ready() {
    let mut bed = Bed::with_hosts(1);
    bed.kill_coordinator();
    wait_for("the agent to notice the coordinator is gone", Duration::from_secs(30), || {
        bed.status(0).filter(|s| !s.coordinator_connected)
    });

    let root = bed.path("host-root");
    fs::create_dir(&root).unwrap();
    // Where the runtime finds them, besides its bin dir (CRI-O's plugin_dirs).
    chained_plugins(&root, "usr/libexec/cni");
    let socket = bed.hosts[0].socket.clone();
    let mut installer = Installer::start(&root, &socket);
    // The agent answers on its socket (running from its saved map), which
    // alone must not count as ready.
    assert_waiting(&mut installer, &root, "the coordinator is unreachable");
    assert!(bed.status(0).is_some(), "the agent kept answering");
    let probe = Command::new("bash")
        .arg(repo().join("deploy/kubernetes/weave-install-cni.sh"))
        .arg("--check")
        .env("WEAVE_AGENT_SOCKET", &socket)
        .env("WEAVE_AGENT_BIN", agent_bin())
        .status()
        .unwrap();
    assert!(!probe.success(), "readiness probe passes without the coordinator");

    bed.start_coordinator();
    assert_installed(&mut installer, &root);
    installer.stop(0);
}

/// The coordinator container's command in `coordinator.yaml`: the folded
/// (`>-`) block after `- -c`, its lines joined by spaces as YAML does.
fn manifest_coordinator_script() -> String {
    let yaml = fs::read_to_string(repo().join("deploy/kubernetes/coordinator.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "- -c").skip(1);
    let head = lines.next().expect("a line after `- -c`");
    assert_eq!(head.trim(), "- >-", "the command is a folded block");
    let indent = head.len() - head.trim_start().len();
    let body: Vec<&str> =
        lines.take_while(|l| l.len() - l.trim_start().len() > indent && !l.trim().is_empty()).map(str::trim).collect();
    assert!(!body.is_empty(), "an empty command");
    body.join(" ")
}

/// A bed whose coordinator is started, first start included, by the
/// manifest's command with the Service's cluster IP `service` (here the
/// coordinator's own underlay address, as kube-proxy would lead to it), and
/// two hosts that join with the token that start printed.
fn manifest_coordinator_bed(family: Underlay, service: &str) -> Bed {
    let mut bed = Bed::with_underlay(family);
    bed.kill_coordinator();
    fs::remove_dir_all(&bed.coordinator_dir).unwrap();
    bed.token.clear();
    let vars = vec![
        ("WEAVE_COORDINATOR_SERVICE_HOST".to_string(), service.to_string()),
        ("WEAVE_METRICS_LISTEN".to_string(), "[::]:6781".to_string()),
    ];
    bed.coordinator_script = Some((manifest_coordinator_script(), vars));
    bed.start_coordinator();
    for _ in 0..2 {
        bed.add_host();
    }
    for i in 0..2 {
        bed.wait_peers(i, 1);
    }
    bed
}

/// On an IPv6-only cluster the Service's address is IPv6: the manifest
/// once advertised `2001:db8::2:6783`, which no client parses, and listened
/// on 0.0.0.0, where no IPv6 client reaches it.
#[test]
#[ignore = "needs root: network namespaces"]
fn the_coordinator_manifest_serves_an_ipv6_only_cluster() {
    let service = v6_of(COORDINATOR_IP.parse().unwrap()).to_string();
    let bed = manifest_coordinator_bed(Underlay::V6, &service);
    assert_eq!(bed.admin.coordinator, format!("[{service}]:6783"), "the token and credential carry the Service");
    assert!(bed.status(0).unwrap().coordinator_connected);
    // Without --advertise, `[::]` on a host with no IPv4 advertises its IPv6
    // address (it was 127.0.0.1). A first start for 5 s, in a data dir of its own.
    let bare = |listen: &str, dir: &str| {
        let (bin, dir) = (common::coordinator_bin(), bed.path(dir));
        let serve = ["serve", "--listen", listen, "--metrics-listen", "off", "--data-dir", dir.to_str().unwrap()];
        common::in_ns(&bed.coordinator_ns, &[&["timeout", "5", bin.to_str().unwrap()][..], &serve].concat())
    };
    let out = bare("[::]:6790", "coordinator-bare");
    let banner = String::from_utf8_lossy(&out.stdout);
    assert!(banner.contains(&format!("(advertised as [{service}]:6790)")), "{banner}");
    // On 0.0.0.0 there it has nothing to advertise but loopback: it says so.
    let out = bare("0.0.0.0:6791", "coordinator-v4");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no address other hosts could dial") && said.contains("give --advertise"), "{said}");
}

/// The same command on IPv4: `[::]` answers IPv4 clients too.
#[test]
#[ignore = "needs root: network namespaces"]
fn the_coordinator_manifest_serves_an_ipv4_cluster() {
    let bed = manifest_coordinator_bed(Underlay::V4, COORDINATOR_IP);
    assert_eq!(bed.admin.coordinator, format!("{COORDINATOR_IP}:6783"));
    let metrics = common::ok_in(&bed.coordinator_ns, &["ss", "-Htln", "sport = :6781"]);
    assert!(metrics.contains("[::]:6781") || metrics.contains("*:6781"), "metrics on [::]: {metrics}");
    assert!(bed.status(1).unwrap().coordinator_connected);
}

/// The manifests run the script this test exercises, under the name the
/// image gives it (no root needed).
#[test]
fn daemonset_runs_the_installer_the_image_ships() {
    let read = |p: &str| fs::read_to_string(repo().join(p)).unwrap();
    let daemonset = read("deploy/kubernetes/agent-daemonset.yaml");
    assert!(daemonset.contains("command: [weave-install-cni]"), "install-cni container command");
    assert!(daemonset.contains("value: http://127.0.0.1:6782/readyz"), "installer's second readiness check");
    let containerfile = read("deploy/image/Containerfile");
    assert!(containerfile.contains("COPY weave-install-cni /usr/local/bin/weave-install-cni"));
    assert!(containerfile.contains("COPY 10-weave.conflist /usr/local/share/weave/10-weave.conflist"));
    let build = read("deploy/image/build.sh");
    // iptables in the image: the agent opens a FORWARD that drops by default
    // with it (without it, nothing crossed nodes; `e2e_forward_drop`).
    assert!(build.contains("--include=nftables,iproute2,iptables "), "the base's packages");
    assert!(containerfile.contains("install -y --no-install-recommends nftables iproute2 iptables"));
    assert!(build.contains(r#"cp "$src/deploy/kubernetes/weave-install-cni.sh" "$ctx/weave-install-cni""#));
    // Kubernetes' conflist: weave's resolver stays out of pods (cluster DNS
    // binds port 53 in its own pods; kubelet writes pods' resolv.conf).
    assert!(build.contains(r#"cp "$src/deploy/kubernetes/10-weave.conflist" "$ctx/10-weave.conflist""#));
    let conflist: serde_json::Value = serde_json::from_str(&read("deploy/kubernetes/10-weave.conflist")).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weave-cni");
    assert_eq!(conflist["plugins"][0]["resolver"], false);
    assert!(conflist["plugins"][0].get("dns").is_none(), "libcni reads \"dns\" as the spec's DNS dictionary");
}
