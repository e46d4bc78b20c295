//! Multi-host test bed: hosts are network namespaces on an underlay bridge
//! (itself in its own namespace, 192.0.2.0/24 and/or 2001:db8::/64, see
//! [`Underlay`]), the real `coordinator` runs
//! in one more namespace and real `agent`s in every host. Workloads are
//! further namespaces with a veth (`ethwe`) plugged into their host's subnet
//! bridge, addressed through the coordinator's IPAM.
//!
//! Every name starts with a per-bed prefix (`wv<pid>x<n>`), and [`Bed`]'s
//! `Drop` kills every process it started (by pid) and deletes every
//! namespace, also when the test panics. Beds in one test binary run one at
//! a time (a global lock), which keeps the 2-core CI machine predictable.
#![allow(dead_code, unreachable_pub)]

pub mod cni;
pub mod flows;
pub mod rogue;
pub mod underlay;

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use weave_proto::local_api::AgentStatus;
use weave_proto::{client::Api, token::AdminCredential};

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const COORDINATOR_IP: &str = "192.0.2.2";
pub const WG_PORT: u16 = 6784;

/// The families of a bed's underlay. Every namespace plugged into it gets
/// 192.0.2.N/24, 2001:db8::N/64 (N written the same: 192.0.2.11 is
/// 2001:db8::11), or both; agents and the coordinator use IPv6 where the
/// underlay has only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    V4,
    V6,
    Dual,
}

impl Underlay {
    pub fn has_v4(self) -> bool {
        self != Underlay::V6
    }

    pub fn has_v6(self) -> bool {
        self != Underlay::V4
    }
}

/// The IPv6 underlay address that goes with an IPv4 one (192.0.2.11 -> 2001:db8::11).
pub fn v6_of(ip: Ipv4Addr) -> Ipv6Addr {
    format!("2001:db8::{}", ip.octets()[3]).parse().unwrap()
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent"))
}

/// The coordinator binary next to the agent's (built by `cargo test --workspace`
/// or `cargo build`); built on demand otherwise.
pub fn coordinator_bin() -> PathBuf {
    let path = agent_bin().with_file_name("coordinator");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "weave-coordinator", "--bin", "coordinator"])
            .status()
            .expect("run cargo build for the coordinator");
        assert!(status.success(), "building the coordinator failed");
    }
    path
}

/// The weavectl binary (built on demand: it is another package's).
pub fn weavectl_bin() -> PathBuf {
    let path = agent_bin().with_file_name("weavectl");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "weavectl", "--bin", "weavectl"])
            .status()
            .expect("run cargo build for weavectl");
        assert!(status.success(), "building weavectl failed");
    }
    path
}

/// Runs a command, returns its output (never panics on a non-zero exit).
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command and panics with its stderr unless it succeeds.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

pub fn ok_in(ns: &str, args: &[&str]) -> String {
    let out = in_ns(ns, args);
    assert!(
        out.status.success(),
        "in {ns}: {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (by its pid) and reaped when dropped: a test that
/// fails leaves it running no more than one that passes.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Starts `args` inside namespace `ns` (`ip netns exec`) and returns once
/// the process is in it. Its `/proc/<pid>/ns/net` read before then is the
/// namespace it was started from: a CI run (2026-12-07) attached the
/// machine's own namespace by such a pid.
pub fn spawn_in(ns: &str, args: &[&str]) -> Killed {
    use std::os::unix::fs::MetadataExt;
    let child = Killed(Command::new("ip").args(["netns", "exec", ns]).args(args).spawn().unwrap());
    let target = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    let path = format!("/proc/{}/ns/net", child.id());
    wait_for("the process to enter its namespace", Duration::from_secs(10), || {
        std::fs::metadata(&path).is_ok_and(|m| m.ino() == target).then_some(())
    });
    child
}

/// Starts `args` in a network namespace of its own (`unshare -n`) and
/// returns once the process is in it (see [`spawn_in`]).
pub fn spawn_unshared(args: &[&str]) -> Killed {
    let child = Killed(Command::new("unshare").arg("-n").args(args).spawn().unwrap());
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let path = format!("/proc/{}/ns/net", child.id());
    wait_for("the process in a namespace of its own", Duration::from_secs(10), || {
        std::fs::read_link(&path).is_ok_and(|l| l != own).then_some(())
    });
    child
}

/// One counter of a `/proc/net/snmp`-style table in `ns`: `file` ("snmp",
/// "netstat"), `group` ("Ip:", "Icmp:", "IpExt:", "TcpExt:"), `name`.
pub fn proc_counter(ns: &str, file: &str, group: &str, name: &str) -> u64 {
    let text = ok_in(ns, &["cat", &format!("/proc/net/{file}")]);
    let mut lines = text.lines().filter(|l| l.starts_with(group));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{group} {name} in /proc/net/{file}"))
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// One ping with a short timeout.
pub fn ping_once(ns: &str, ip: Ipv4Addr) -> bool {
    in_ns(ns, &["ping", "-c1", "-W1", &ip.to_string()]).status.success()
}

/// Pings every 100 ms until the first reply, for at most `secs` seconds:
/// when a path comes up is measured to 0.1 s (a loop of [`ping_once`] waits
/// a whole second on each probe that gets no answer).
pub fn ping_within(ns: &str, ip: Ipv4Addr, secs: u32) -> bool {
    in_ns(ns, &["ping", "-c1", "-i", "0.1", "-w", &secs.to_string(), &ip.to_string()]).status.success()
}

pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub agent: Option<Child>,
}

impl Host {
    pub fn endpoint(&self) -> String {
        format!("{}:{WG_PORT}", self.ip)
    }

    /// Its IPv6 underlay address (configured on a [`Underlay::V6`] or [`Underlay::Dual`] bed).
    pub fn ip6(&self) -> Ipv6Addr {
        v6_of(self.ip)
    }

    pub fn endpoint6(&self) -> String {
        format!("[{}]:{WG_PORT}", self.ip6())
    }
}

pub struct Workload {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub host: usize,
    pub subnet: String,
}

pub struct Bed {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub underlay: String,
    /// The underlay's families (set when the bed is made).
    pub family: Underlay,
    pub coordinator_ns: String,
    pub coordinator: Option<Child>,
    pub coordinator_dir: PathBuf,
    /// Extra flags for the coordinator from its next start on (e.g. `--store`).
    pub coordinator_args: Vec<String>,
    /// When set, the coordinator starts as `sh -c <script>` with these
    /// variables (and `coordinator` on PATH, its data dir in
    /// `WEAVE_DATA_DIR`): a manifest's command, as written. No `--listen`
    /// or `coordinator_args` are added.
    pub coordinator_script: Option<(String, Vec<(String, String)>)>,
    pub token: String,
    pub admin: AdminCredential,
    pub hosts: Vec<Host>,
    pub workloads: Vec<Workload>,
    /// Extra flags for every agent started after they are set (e.g. `--dns-upstream`).
    pub agent_args: Vec<String>,
    /// Host index -> pid of a process holding that host's own mount
    /// namespace, with a /run of its own: its agent runs there (with
    /// `nsenter`), beside its dockerd, and serves its Docker plugin.
    pub mount_holders: std::collections::BTreeMap<usize, u32>,
    /// Hosts joined while this is false get no `--endpoint`: they advertise
    /// their addresses and follow them (default true: pinned).
    pub pin_endpoints: bool,
    /// Pinned endpoints given as addresses alone (the agent adds its port).
    pub bare_endpoints: bool,
    /// While false, `agent join` gets no `--name` (the agent picks one).
    pub name_on_join: bool,
    namespaces: Vec<String>,
    /// Other processes to kill on drop.
    extra: Vec<Child>,
    _serial: MutexGuard<'static, ()>,
}

impl Bed {
    /// An IPv4 underlay and a running coordinator, no hosts yet.
    pub fn new() -> Self {
        Self::with_underlay(Underlay::V4)
    }

    /// An underlay of `family` and a running coordinator, no hosts yet.
    pub fn with_underlay(family: Underlay) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("wv{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir().unwrap();
        let mut bed = Bed {
            underlay: format!("{prefix}-u"),
            coordinator_ns: format!("{prefix}-c"),
            family,
            coordinator_dir: dir.path().join("coordinator"),
            coordinator_args: Vec::new(),
            coordinator_script: None,
            prefix,
            dir,
            coordinator: None,
            token: String::new(),
            admin: AdminCredential {
                coordinator: String::new(),
                pin: weave_proto::token::Pin([0; 32]),
                secret: String::new(),
            },
            hosts: Vec::new(),
            workloads: Vec::new(),
            agent_args: Vec::new(),
            mount_holders: Default::default(),
            pin_endpoints: true,
            bare_endpoints: false,
            name_on_join: true,
            namespaces: Vec::new(),
            extra: Vec::new(),
            _serial: serial,
        };
        let u = bed.underlay.clone();
        bed.add_ns(&u);
        // A plain switch: without snooping the bridge sends no IGMP of its own
        // (which would show up in underlay captures).
        ok_in(&u, &["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ok_in(&u, &["ip", "link", "set", "br0", "up"]);
        let c = bed.coordinator_ns.clone();
        bed.plug(&c, "c", COORDINATOR_IP.parse().unwrap());
        bed.start_coordinator();
        bed
    }

    /// A bed with `n` hosts whose agents have joined and see each other.
    pub fn with_hosts(n: usize) -> Self {
        Self::with_hosts_on(Underlay::V4, n)
    }

    /// Like [`Bed::with_hosts`], with `coordinator serve` given `args` too.
    pub fn with_hosts_and_coordinator_args(n: usize, args: &[&str]) -> Self {
        let mut bed = Self::new();
        bed.kill_coordinator();
        bed.coordinator_args = args.iter().map(|a| a.to_string()).collect();
        bed.start_coordinator();
        for _ in 0..n {
            bed.add_host();
        }
        for i in 0..n {
            bed.wait_peers(i, n - 1);
        }
        bed
    }

    /// Like [`Bed::with_hosts`] on an underlay of `family`.
    pub fn with_hosts_on(family: Underlay, n: usize) -> Self {
        let mut bed = Self::with_underlay(family);
        for _ in 0..n {
            bed.add_host();
        }
        for i in 0..n {
            bed.wait_peers(i, n - 1);
        }
        bed
    }

    fn add_ns(&mut self, ns: &str) {
        ok(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        ok_in(ns, &["ip", "link", "set", "lo", "up"]);
    }

    /// Creates namespace `ns` with `eth0` on the underlay bridge, addressed
    /// `ip`/24 and/or [`v6_of`]`(ip)`/64 as the bed's family says.
    fn plug(&mut self, ns: &str, port: &str, ip: Ipv4Addr) {
        self.add_ns(ns);
        ok(&["ip", "-n", &self.underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ok(&["ip", "-n", &self.underlay, "link", "set", port, "master", "br0", "up"]);
        if self.family.has_v4() {
            ok_in(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        }
        if self.family.has_v6() {
            // nodad: usable at once (no duplicate detection on a bed we made).
            ok_in(ns, &["ip", "addr", "add", &format!("{}/64", v6_of(ip)), "dev", "eth0", "nodad"]);
        }
        ok_in(ns, &["ip", "link", "set", "eth0", "up"]);
    }

    /// A second coordinator (own data dir and identity) on this bed's
    /// underlay at `ip`; returns its address. It runs until the bed drops.
    pub fn new_with_coordinator_ip_in(bed: &mut Bed, ip: &str) -> String {
        let ns = format!("{}-c2", bed.prefix);
        bed.plug(&ns, "c2", ip.parse().unwrap());
        let addr = format!("{ip}:6783");
        let out = bed.path("coordinator2.out");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(coordinator_bin())
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(bed.path("coordinator2"))
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the second coordinator");
        bed.extra.push(child);
        wait_for("the second coordinator to start", Duration::from_secs(30), || {
            fs::read_to_string(&out).ok().filter(|s| s.contains("listening on")).map(|_| ())
        });
        addr
    }

    /// A host namespace on the underlay with no agent.
    pub fn add_bare_host(&mut self, ip: &str) -> String {
        let ns = format!("{}-b{}", self.prefix, self.namespaces.len());
        let port = format!("b{}", self.namespaces.len());
        self.plug(&ns, &port, ip.parse().unwrap());
        ns
    }

    pub fn coordinator_addr(&self) -> String {
        match self.family {
            Underlay::V6 => format!("[{}]:6783", v6_of(COORDINATOR_IP.parse().unwrap())),
            _ => format!("{COORDINATOR_IP}:6783"),
        }
    }

    /// Host `i`'s `--endpoint` flags: one per family of the underlay.
    pub fn endpoints(&self, i: usize) -> Vec<String> {
        let h = &self.hosts[i];
        let mut out = Vec::new();
        if self.family.has_v4() {
            out.push(h.endpoint());
        }
        if self.family.has_v6() {
            out.push(h.endpoint6());
        }
        out
    }

    /// Starts (or restarts) the coordinator; on first start reads its join token.
    pub fn start_coordinator(&mut self) {
        let log = self.dir.path().join("coordinator.log");
        let out = self.dir.path().join("coordinator.out");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.coordinator_ns]);
        match &self.coordinator_script {
            Some((script, vars)) => {
                let bin = coordinator_bin();
                let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
                command.args(["sh", "-c", script]).envs(vars.iter().cloned()).env("PATH", path);
                command.env("WEAVE_DATA_DIR", &self.coordinator_dir)
            }
            None => command
                .arg(coordinator_bin())
                .args(["serve", "--listen", &self.coordinator_addr(), "--data-dir"])
                .arg(&self.coordinator_dir)
                .args(&self.coordinator_args),
        };
        let child = command
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .spawn()
            .expect("start coordinator");
        self.coordinator = Some(child);
        let stdout = wait_for("the coordinator to start", Duration::from_secs(30), || {
            let s = fs::read_to_string(&out).ok()?;
            s.contains("listening on").then_some(s)
        });
        if self.token.is_empty() {
            self.token = stdout
                .lines()
                .find_map(|l| l.strip_prefix("join token (first start): "))
                .expect("first start prints a join token")
                .trim()
                .to_string();
            let cred = fs::read_to_string(self.coordinator_dir.join("admin.credential")).unwrap();
            self.admin = AdminCredential::parse(cred.trim()).unwrap();
            // The first-start token is single-use: the bed's hosts share one made for them.
            self.token = self.admin(|mut api| async move {
                let r = weave_proto::v1::CreateTokenRequest { description: "test bed".into(), ..Default::default() };
                api.tokens.create_token(r).await.expect("create the bed's join token").into_inner().secret_token
            });
        }
    }

    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The namespace name host `i` will get from [`Bed::add_host`].
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{}", self.prefix, i + 1)
    }

    /// Adds a host namespace at 192.0.2.(11+i) and starts `agent join` in it.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = self.host_ns(i);
        let ip = Ipv4Addr::new(192, 0, 2, 11 + i as u8);
        self.plug(&ns, &format!("h{}", i + 1), ip);
        self.start_host(ns, ip)
    }

    /// Registers host namespace `ns` (already on some underlay, at `ip`) as
    /// the next host and starts `agent join` in it.
    fn start_host(&mut self, ns: String, ip: Ipv4Addr) -> usize {
        let i = self.hosts.len();
        self.hosts.push(Host {
            name: format!("h{}", i + 1),
            ns,
            ip,
            data_dir: self.dir.path().join(format!("h{}", i + 1)),
            socket: self.dir.path().join(format!("h{}.sock", i + 1)),
            log: self.dir.path().join(format!("h{}.log", i + 1)),
            agent: None,
        });
        self.start_agent(i, true);
        self.wait_status(i);
        i
    }

    /// The `agent` command line for host `i` (join with the token, or run).
    pub fn agent_command(&self, i: usize, join: bool) -> Command {
        let h = &self.hosts[i];
        let mut cmd = match self.mount_holders.get(&i) {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt")).arg(format!("--net=/run/netns/{}", h.ns));
                c
            }
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.ns]);
                c
            }
        };
        cmd.arg(agent_bin());
        if join {
            cmd.args(["join", "--token", &self.token]);
            if self.name_on_join {
                cmd.args(["--name", &h.name]);
            }
            for e in self.endpoints(i).into_iter().filter(|_| self.pin_endpoints) {
                let e = match self.bare_endpoints {
                    true => e.parse::<std::net::SocketAddr>().unwrap().ip().to_string(),
                    false => e,
                };
                cmd.args(["--endpoint", &e]);
            }
        } else {
            cmd.arg("run");
        }
        cmd.arg("--data-dir").arg(&h.data_dir).arg("--socket").arg(&h.socket);
        cmd.args(&self.agent_args);
        cmd.env("RUST_LOG", "info,weave_agent=debug");
        // Never the machine's Docker plugin directory (a test serves its own,
        // or gives the host a /run of its own: a mount holder's).
        if !self.mount_holders.contains_key(&i) {
            cmd.env("WEAVE_DOCKER_PLUGIN", "off");
        }
        cmd
    }

    /// Runs `agent reset` for host `i` (its agent stopped).
    pub fn reset_agent(&self, i: usize) -> Output {
        self.agent_on_files(i, "reset")
    }

    /// Runs `agent COMMAND` on host `i`'s data dir and socket (`reset`, `rekey`).
    pub fn agent_on_files(&self, i: usize, command: &str) -> Output {
        let h = &self.hosts[i];
        let agent = agent_bin();
        let (dir, socket) = (h.data_dir.to_str().unwrap(), h.socket.to_str().unwrap());
        in_ns(&h.ns, &[agent.to_str().unwrap(), command, "--data-dir", dir, "--socket", socket])
    }

    pub fn start_agent(&mut self, i: usize, join: bool) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.hosts[i].log).unwrap();
        let child =
            self.agent_command(i, join).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start agent");
        self.hosts[i].agent = Some(child);
    }

    /// Sends `signal` to host `i`'s agent (its pid: `ip netns exec` execs it) and reaps it.
    pub fn signal_agent(&mut self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(mut c) = self.hosts[i].agent.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = c.wait();
        }
    }

    pub fn status(&self, i: usize) -> Option<AgentStatus> {
        let out = Command::new(agent_bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.hosts[i].socket)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn wait_status(&self, i: usize) -> AgentStatus {
        wait_for(&format!("agent {} to answer status (log: {})", i + 1, self.log(i)), Duration::from_secs(30), || {
            self.status(i)
        })
    }

    /// Waits until host `i` knows `n` peers and has completed a handshake with each.
    pub fn wait_peers(&self, i: usize, n: usize) -> AgentStatus {
        wait_for(&format!("host {} to handshake with {n} peers", i + 1), Duration::from_secs(30), || {
            self.status(i).filter(|s| s.peers.len() == n && s.peers.iter().all(|p| p.handshake_age_secs.is_some()))
        })
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    /// Runs `f` with an admin API client, from a thread inside the
    /// coordinator's namespace (the coordinator is not reachable from here).
    pub fn admin<R: Send + 'static, F, Fut>(&self, f: F) -> R
    where
        F: FnOnce(Api) -> Fut + Send + 'static,
        Fut: Future<Output = R>,
    {
        let ns = self.coordinator_ns.clone();
        let cred = self.admin.clone();
        thread::spawn(move || {
            let fd = fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let channel = weave_proto::client::connect(&cred.coordinator, cred.pin).await.unwrap();
                f(Api::new(channel, &cred.secret).unwrap()).await
            })
        })
        .join()
        .expect("admin call panicked")
    }

    /// Runs `f` with host `i`'s own node credential (from its data dir), from
    /// a thread inside that host's namespace: what a member with bad intent
    /// can ask the coordinator for.
    pub fn member<R: Send + 'static, F, Fut>(&self, i: usize, f: F) -> R
    where
        F: FnOnce(Api) -> Fut + Send + 'static,
        Fut: Future<Output = R>,
    {
        let ns = self.hosts[i].ns.clone();
        let id: serde_json::Value =
            serde_json::from_slice(&fs::read(self.hosts[i].data_dir.join("identity.json")).unwrap()).unwrap();
        let field = |k: &str| id[k].as_str().unwrap_or_else(|| panic!("identity.json: {k}")).to_string();
        let (coordinator, secret) = (field("coordinator"), field("credential"));
        let pin = weave_proto::token::Pin::parse(&field("pin")).expect("the identity's pin");
        thread::spawn(move || {
            let fd = fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let channel = weave_proto::client::connect(&coordinator, pin).await.unwrap();
                f(Api::new(channel, &secret).unwrap()).await
            })
        })
        .join()
        .expect("member call panicked")
    }

    /// A workload namespace on host `i`, attached to `subnet` ("default", a
    /// name or a CIDR) with an address from the coordinator's IPAM.
    pub fn add_workload(&mut self, i: usize, subnet: &str) -> usize {
        let n = self.workloads.len();
        let ns = format!("{}-w{}", self.prefix, n + 1);
        let (node, container, sub) = (self.hosts[i].name.clone(), ns.clone(), subnet.to_string());
        let alloc = self.admin(move |mut api| async move {
            let req = weave_proto::v1::AllocateRequest { node, container, subnet: sub, ..Default::default() };
            api.ipam.allocate(req).await.unwrap().into_inner()
        });
        let (ip, prefix) = alloc.address.split_once('/').unwrap();
        let (ip, prefix): (Ipv4Addr, u8) = (ip.parse().unwrap(), prefix.parse().unwrap());
        let segment = wait_for(
            &format!("host {} to build the bridge for {}", i + 1, alloc.subnet),
            Duration::from_secs(15),
            || {
                let s = self.status(i)?;
                let seg = s.segments.into_iter().find(|g| g.subnet == alloc.subnet)?;
                let has = in_ns(&self.hosts[i].ns, &["ip", "link", "show", &seg.bridge]).status.success();
                has.then_some(seg)
            },
        );
        self.attach(i, ns, ip, prefix, &segment.bridge, segment.mtu, alloc.subnet)
    }

    /// Like [`Bed::add_workload`], but the address and bridge come from the
    /// host's agent (`agent allocate`, its local API) instead of the admin API.
    pub fn add_workload_via_agent(&mut self, i: usize, subnet: &str) -> usize {
        let ns = format!("{}-w{}", self.prefix, self.workloads.len() + 1);
        let out = run(&[
            agent_bin().to_str().unwrap(),
            "allocate",
            "--socket",
            self.hosts[i].socket.to_str().unwrap(),
            "--container",
            &ns,
            "--subnet",
            subnet,
        ]);
        assert!(out.status.success(), "agent allocate: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [address, bridge, mtu, mac] = parts[..] else { panic!("agent allocate printed {text}") };
        assert_eq!(mac, workload_mac(address.split('/').next().unwrap().parse().unwrap()), "agent allocate's MAC");
        let (ip, prefix) = address.split_once('/').unwrap();
        let subnet = self.status(i).unwrap().segments.into_iter().find(|g| g.bridge == bridge).unwrap().subnet;
        wait_for(&format!("{bridge} on host {}", i + 1), Duration::from_secs(15), || {
            in_ns(&self.hosts[i].ns, &["ip", "link", "show", bridge]).status.success().then_some(())
        });
        self.attach(i, ns, ip.parse().unwrap(), prefix.parse().unwrap(), bridge, mtu.parse().unwrap(), subnet)
    }

    /// Creates workload namespace `ns` with `ethwe` = `ip`/`prefix` plugged
    /// into `bridge` on host `i`, with the MAC weave gives that address.
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        i: usize,
        ns: String,
        ip: Ipv4Addr,
        prefix: u8,
        bridge: &str,
        mtu: u32,
        subnet: String,
    ) -> usize {
        let n = self.workloads.len();
        self.add_ns(&ns);
        let port = format!("wl{}", n + 1);
        let host_ns = self.hosts[i].ns.clone();
        let mtu = mtu.to_string();
        ok(&[
            "ip",
            "-n",
            &host_ns,
            "link",
            "add",
            &port,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "ethwe",
            "mtu",
            &mtu,
            "address",
            &workload_mac(ip),
            "netns",
            &ns,
        ]);
        ok(&["ip", "-n", &host_ns, "link", "set", &port, "master", bridge, "up"]);
        ok_in(&ns, &["ip", "addr", "add", &format!("{ip}/{prefix}"), "dev", "ethwe"]);
        ok_in(&ns, &["ip", "link", "set", "ethwe", "up"]);
        self.workloads.push(Workload { ns, ip, prefix, host: i, subnet });
        n
    }

    /// Waits until workload `a` pings workload `b`.
    pub fn wait_ping(&self, a: usize, b: usize, timeout: Duration) {
        let (from, to) = (&self.workloads[a], &self.workloads[b]);
        wait_for(&format!("{} to ping {}", from.ns, to.ip), timeout, || ping_once(&from.ns, to.ip).then_some(()));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A running "container": a namespace with only `lo` (up), no overlay
    /// interface. Returns its name (`/run/netns/<name>`).
    pub fn add_container(&mut self, name: &str) -> String {
        let ns = format!("{}-k-{name}", self.prefix);
        self.add_ns(&ns);
        ns
    }

    /// `weavectl <args>` against host `i`'s agent socket.
    pub fn weavectl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(weavectl_bin())
            .arg("--socket")
            .arg(&self.hosts[i].socket)
            .args(args)
            .output()
            .expect("run weavectl")
    }

    /// `weavectl <args>` as the admin, from the coordinator's namespace.
    pub fn weavectl_admin(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.coordinator_ns])
            .arg(weavectl_bin())
            .arg("--admin")
            .arg(self.admin.to_string())
            .args(args)
            .output()
            .expect("run weavectl")
    }

    /// `weavectl attach <args>` on host `i` (the container is the last
    /// argument); panics unless it succeeds. Each printed address becomes a
    /// [`Workload`] (in its order), so `wait_ping` works on it.
    /// `ns` is the container's namespace name (the workloads' `ns`).
    pub fn weavectl_attach(&mut self, i: usize, ns: &str, args: &[&str]) -> Vec<usize> {
        let mut all = vec!["attach", "--json"];
        all.extend_from_slice(args);
        let out = self.weavectl(i, &all);
        assert!(out.status.success(), "weavectl {all:?}: {}{}", String::from_utf8_lossy(&out.stderr), self.log(i));
        let attached: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("attach --json prints a list");
        attached
            .iter()
            .map(|a| {
                let (ip, prefix) = a["address"].as_str().unwrap().split_once('/').unwrap();
                self.workloads.push(Workload {
                    ns: ns.to_string(),
                    ip: ip.parse().unwrap(),
                    prefix: prefix.parse().unwrap(),
                    host: i,
                    subnet: a["subnet"].as_str().unwrap().to_string(),
                });
                self.workloads.len() - 1
            })
            .collect()
    }

    /// Every allocation in the cluster as `container subnet address` lines, sorted.
    pub fn allocations(&self) -> Vec<String> {
        let list = self.admin(|mut api| async move {
            let req = weave_proto::v1::ListAllocationsRequest::default();
            api.ipam.list_allocations(req).await.unwrap().into_inner().allocations
        });
        let mut out: Vec<String> =
            list.iter().map(|a| format!("{} {} {} {}", a.node, a.container, a.subnet, a.address)).collect();
        out.sort();
        out
    }
}

/// The names of `ns`'s links.
pub fn links(ns: &str) -> Vec<String> {
    let out = ok_in(ns, &["ip", "-o", "link", "show"]);
    out.lines().filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap().to_string())).collect()
}

/// The (first) workload port in `bridge` of host namespace `ns`: a `wv*`
/// link that is not the segment's VXLAN device.
pub fn workload_port(ns: &str, bridge: &str) -> String {
    let ports = ok_in(ns, &["ip", "-o", "link", "show", "master", bridge]);
    ports
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next())
        .find(|n| n.starts_with("wv") && !n.starts_with("wvvx-"))
        .unwrap_or_else(|| panic!("a workload port in {bridge}: {ports}"))
        .to_string()
}

/// Host namespace `ns`'s (one segment's) VXLAN device.
pub fn vxlan_device(ns: &str) -> String {
    let all = links(ns);
    all.iter().find(|n| n.starts_with("wvvx-")).cloned().unwrap_or_else(|| panic!("a VXLAN device in {ns}: {all:?}"))
}

/// A container attached by host `host`'s agent (its port, sysctls, MAC lock
/// and source guard): its workload index.
pub fn attached(bed: &mut Bed, host: usize, name: &str) -> usize {
    let ns = bed.add_container(name);
    bed.weavectl_attach(host, &ns, &[&format!("/run/netns/{ns}")])[0]
}

/// [`attached`]'s namespace and address.
pub fn attached_at(bed: &mut Bed, host: usize, name: &str) -> (String, Ipv4Addr) {
    let i = attached(bed, host, name);
    (bed.workloads[i].ns.clone(), bed.workloads[i].ip)
}

/// A namespace's interfaces and IPv4 addresses, as `name addr/len` lines (sorted; `lo` left out).
pub fn interfaces(ns: &str) -> Vec<String> {
    let addrs = ok_in(ns, &["ip", "-o", "-4", "addr", "show"]);
    let mut out: Vec<String> = links(ns).into_iter().filter(|n| n != "lo").collect();
    out.extend(addrs.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) != Some(&"lo")).then(|| format!("{} {}", f[1], f[3]))
    }));
    out.sort();
    out
}

impl Drop for Bed {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.signal_agent(i, nix::sys::signal::Signal::SIGKILL);
        }
        self.kill_coordinator();
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        if std::thread::panicking() {
            for (i, h) in self.hosts.iter().enumerate() {
                eprintln!("---- agent {} log ----\n{}", i + 1, fs::read_to_string(&h.log).unwrap_or_default());
            }
            eprintln!(
                "---- coordinator log ----\n{}",
                fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
            );
        }
    }
}

/// Files under `dir`, for "nothing left behind" checks.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            }
        }
    }
    out
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets it opens live there).
pub fn in_netns<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> thread::JoinHandle<R> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = fs::File::open(&path).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// GET /metrics from the agent's default listener (127.0.0.1:6782) inside
/// host namespace `host_ns` ("" when nothing answers).
pub fn scrape(host_ns: &str) -> String {
    use std::io::{Read, Write};
    in_netns(host_ns, || {
        let Ok(mut c) = std::net::TcpStream::connect("127.0.0.1:6782") else { return String::new() };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    })
    .join()
    .unwrap()
}

/// The sum of the samples of `metric` in a Prometheus text page.
pub fn total(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A packet capture running in namespace `ns` on `iface`, stopped on drop.
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(ns: &str, iface: &str, filter: &str, file: PathBuf) -> Self {
        let log = file.with_extension("log");
        let mut child = Command::new("ip")
            // --immediate-mode: a packet is written as it arrives, not when its
            // block is handed over (a stop right after the traffic would lose
            // the last block); -B: 32 MiB of ring, so a fast transfer's
            // packets are not dropped while tcpdump writes.
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-B",
                "32768",
                "-i",
                iface,
                "-s",
                "0",
                "-U",
                "-n",
                "-w",
            ])
            .arg(&file)
            .args(filter.split_whitespace())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tcpdump");
        wait_for("tcpdump to start listening", Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tcpdump exited with {status}: {}", fs::read_to_string(&log).unwrap_or_default());
            }
            fs::read_to_string(&log).ok().filter(|s| s.contains("listening on")).map(|_| ())
        });
        Self { child: Some(child), file }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGINT);
            let _ = c.wait();
        }
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One IPv4 packet of an Ethernet pcap file.
pub struct Captured {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub fragment: bool,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// Reads an Ethernet pcap file (tcpdump's default format); returns IPv4
/// packets and the number of non-IPv4 frames.
pub fn read_pcap(path: &Path) -> (Vec<Captured>, usize) {
    let data = fs::read(path).unwrap();
    assert!(data.len() >= 24, "pcap file too short");
    let le = data[0..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a: [u8; 4] = b[..4].try_into().unwrap();
        if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    };
    assert_eq!(u32_at(&data[20..24]), 1, "not an Ethernet capture");
    let (mut pos, mut packets, mut other) = (24, Vec::new(), 0);
    while pos + 16 <= data.len() {
        let incl = u32_at(&data[pos + 8..pos + 12]) as usize;
        let frame = &data[pos + 16..(pos + 16 + incl).min(data.len())];
        pos += 16 + incl;
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            other += 1;
            continue;
        }
        let ip = &frame[14..];
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        let fragment = frag & 0x3fff != 0;
        let protocol = ip[9];
        let l4 = &ip[ihl.min(ip.len())..];
        let (src_port, dst_port, payload) = if protocol == 17 && l4.len() >= 8 && !fragment {
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]), l4[8..].to_vec())
        } else {
            (0, 0, l4.to_vec())
        };
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        packets.push(Captured { src, dst, protocol, fragment, src_port, dst_port, payload });
    }
    (packets, other)
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Listens on `group`:5000 inside `ns` (joined on `ip`) for `secs`; the sender of the first datagram.
pub fn listen_multicast(
    ns: &str,
    ip: Ipv4Addr,
    group: Ipv4Addr,
    secs: u64,
) -> std::thread::JoinHandle<Option<std::net::IpAddr>> {
    use std::net::{SocketAddr, UdpSocket};
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = in_netns(ns, move || {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 5000))).unwrap();
        s.join_multicast_v4(&group, &ip).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf)
                && &buf[..n] == b"weave multicast"
            {
                return Some(from.ip());
            }
        }
        None
    });
    rx.recv().unwrap();
    handle
}

/// The MAC weave gives the workload interface of address `ip`: `0a:58:` and
/// the address (`plan/kernel.rs` `workload_mac`; a workload plugged by hand,
/// after `agent allocate`, takes it too).
pub fn workload_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `python3 -c ARP_WHO_HAS IFACE SRC TARGET`: one ARP request for TARGET
/// from IFACE (sender address SRC); prints `reply` if TARGET is answered
/// within a second, else `none`.
pub const ARP_WHO_HAS: &str = r#"
import socket, struct, sys, time
ifc, src, target = sys.argv[1], socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
mac = bytes.fromhex(open(f'/sys/class/net/{ifc}/address').read().strip().replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind((ifc, 0)); s.settimeout(0.1)
s.send(b'\xff' * 6 + mac + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + mac + src + bytes(6) + target)
end = time.time() + 1
while time.time() < end:
    try:
        f = s.recv(128)
    except socket.timeout:
        continue
    if f[20:22] == b'\x00\x02' and f[28:32] == target:
        print('reply'); sys.exit(0)
print('none')
"#;

/// Whether TARGET answers one ARP request from `iface` in `ns` (sender address `src`).
pub fn arp_answered(ns: &str, iface: &str, src: &str, target: &str) -> bool {
    match ok_in(ns, &["python3", "-c", ARP_WHO_HAS, iface, src, target]).trim() {
        "reply" => true,
        "none" => false,
        other => panic!("the ARP probe printed {other:?}"),
    }
}
