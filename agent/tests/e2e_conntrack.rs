//! No workload fills its host's connection tracking table (`--flow-limit`).
//! The table is one per network namespace, and the host's own connections
//! and all its containers' share it: a container that opened connections to
//! a peer that answers (another container of its owner's) kept every entry
//! for days, and a full table dropped every new connection on the host.
//! Now an address of a weave device holds at most `--flow-limit` tracked
//! connections on a host, a local workload's and a remote one's alike; the
//! others' connections go on.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use common::*;

const LIMIT: usize = 100;
const PORT: &str = "7000";

/// `python3 -c SERVER PORT`: accepts TCP connections on PORT and holds each
/// until its client closes it (then closes it too); prints `ready`.
const SERVER: &str = r#"
import resource, selectors, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', int(sys.argv[1]))); l.listen(4096)
sel = selectors.DefaultSelector(); sel.register(l, selectors.EVENT_READ)
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is l:
            c, _ = l.accept(); sel.register(c, selectors.EVENT_READ)
        else:
            if not key.fileobj.recv(4096):
                sel.unregister(key.fileobj); key.fileobj.close()
"#;

/// `python3 -c CLIENT IP PORT N`: opens N TCP connections to IP:PORT at once,
/// prints how many were established within 4 s, holds them until a line
/// arrives on its standard input, then closes them all.
const CLIENT: &str = r#"
import resource, select, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex((ip, port)); socks.append(s)
p = select.poll(); pending = {s.fileno(): s for s in socks}
for s in socks: p.register(s, select.POLLOUT)
up, end = 0, time.time() + 4
while pending and time.time() < end:
    for fd, _ in p.poll(100):
        s = pending.pop(fd, None)
        if s is None: continue
        p.unregister(fd)
        up += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
print(up, flush=True)
sys.stdin.readline()
for s in socks: s.close()
time.sleep(0.5)
"#;

fn python(ns: &str, args: &[&str]) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
    (child, stdin, stdout)
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// A connection server in `ns` (ended when dropped).
struct Server(Child);

impl Server {
    fn start(ns: &str) -> Self {
        let (child, _stdin, mut out) = python(ns, &[SERVER, PORT]);
        assert_eq!(line(&mut out), "ready");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` connections from `ns` to `to`, held until [`Held::close`].
struct Held(Child, ChildStdin, usize);

impl Held {
    fn open(ns: &str, to: Ipv4Addr, n: usize) -> Self {
        let (child, stdin, mut out) = python(ns, &[CLIENT, &to.to_string(), PORT, &n.to_string()]);
        let up = line(&mut out);
        Held(child, stdin, up.parse().unwrap_or_else(|_| panic!("a count from the client: {up:?}")))
    }

    fn close(mut self) {
        self.1.write_all(b"close\n").unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

fn refused(host_ns: &str) -> u64 {
    let out = ok_in(host_ns, &["nft", "list", "counter", "inet", "weave_flows", "refused"]);
    let packets = out.split_whitespace().skip_while(|w| *w != "packets").nth(1).unwrap().to_string();
    packets.parse().unwrap()
}

/// Host 1 runs with `--flow-limit 100`, host 2 without a limit. a and c are
/// on host 1, b on host 2, all in one subnet.
#[test]
#[ignore = "needs root: network namespaces"]
fn no_workload_holds_more_than_its_share_of_a_hosts_tracked_connections() {
    let mut bed = Bed::new();
    bed.agent_args = vec!["--flow-limit".into(), LIMIT.to_string()];
    bed.add_host();
    bed.agent_args = vec!["--flow-limit".into(), "0".into()];
    bed.add_host();
    let host = bed.hosts[0].ns.clone();
    let (a, a_ip) = attached_at(&mut bed, 0, "a");
    let (c, _) = attached_at(&mut bed, 0, "c");
    let (b, b_ip) = attached_at(&mut bed, 1, "b");
    for from in [&a, &c] {
        wait_for("host 1's workloads to reach b", Duration::from_secs(15), || ping_once(from, b_ip).then_some(()));
    }
    assert!(!in_ns(&bed.hosts[1].ns, &["nft", "list", "table", "inet", "weave_flows"]).status.success());
    let server = Server::start(&b);
    // a's connections past the limit do not start; host 1 counts them.
    let held = Held::open(&a, b_ip, 3 * LIMIT);
    eprintln!("a opened {} of {} connections to b", held.2, 3 * LIMIT);
    assert!(held.2 <= LIMIT, "a holds {} connections through host 1 (limit {LIMIT})", held.2);
    assert!(held.2 >= LIMIT * 9 / 10, "a got only {} connections: the test is void", held.2);
    assert!(refused(&host) > 0, "host 1 counted no refused connection");
    // An agent restart keeps the table and its counts: a gets no more.
    bed.signal_agent(0, nix::sys::signal::Signal::SIGTERM);
    bed.agent_args = vec!["--flow-limit".into(), LIMIT.to_string()];
    bed.start_agent(0, false);
    wait_for("host 1's agent to be back", Duration::from_secs(20), || bed.status(0).map(|_| ()));
    wait_for("c to reach b again", Duration::from_secs(15), || ping_once(&c, b_ip).then_some(()));
    let more = Held::open(&a, b_ip, 20);
    let after_restart = more.2;
    more.close();
    assert_eq!(after_restart, 0, "after an agent restart a opened more connections past its limit");
    // Meanwhile c, on the same host, opens its own.
    let c_held = Held::open(&c, b_ip, LIMIT / 2);
    assert_eq!(c_held.2, LIMIT / 2, "c could not open its connections while a held its share");
    c_held.close();
    // Connections that ended no longer count: a gets its share back.
    held.close();
    wait_for("a to open connections again", Duration::from_secs(10), || {
        let again = Held::open(&a, b_ip, LIMIT / 2);
        let up = again.2;
        again.close();
        (up == LIMIT / 2).then_some(())
    });
    drop(server);

    // A remote workload's connections into host 1 are held to the same
    // limit there (b is on a host without one) ...
    let server = Server::start(&a);
    let held = Held::open(&b, a_ip, 3 * LIMIT);
    eprintln!("b opened {} of {} connections to a", held.2, 3 * LIMIT);
    assert!(held.2 <= LIMIT, "b holds {} connections into host 1 (limit {LIMIT})", held.2);
    held.close();
    // ... and without the limit's table (the control) all of them start.
    ok_in(&host, &["nft", "delete", "table", "inet", "weave_flows"]);
    let held = Held::open(&b, a_ip, 3 * LIMIT);
    assert_eq!(held.2, 3 * LIMIT, "without the limit b's connections still did not all start");
    held.close();
    // The agent puts the table back (at its next 10 s check).
    wait_for("host 1's agent to put the flow limit back", Duration::from_secs(60), || {
        in_ns(&host, &["nft", "list", "chain", "inet", "weave_flows", "forward"]).status.success().then_some(())
    });
    let held = Held::open(&b, a_ip, 3 * LIMIT);
    assert!(held.2 <= LIMIT, "after the repair b holds {} connections into host 1", held.2);
    held.close();
    drop(server);
    // Prometheus sees the refusals (the counter is read every 60 s).
    wait_for("weave_flows_refused_total on host 1", Duration::from_secs(80), || {
        (total(&scrape(&host), "weave_flows_refused_total") > 0.0).then_some(())
    });
    // Its other chain emptied (connections into the host's own addresses) is
    // put back too: until 2026-12-04 the check looked at `forward` alone and
    // the table is never replaced on a timer, so `input` stayed empty until
    // the agent's next start.
    ok_in(&host, &["nft", "flush", "chain", "inet", "weave_flows", "input"]);
    wait_for("host 1's agent to refill the flow limit's input chain", Duration::from_secs(75), || {
        let out = in_ns(&host, &["nft", "list", "chain", "inet", "weave_flows", "input"]);
        String::from_utf8_lossy(&out.stdout).contains("ct count").then_some(())
    });
}
