#!/usr/bin/env python3
"""Data-plane benchmark (run through bench/dataplane.sh, which builds, installs
and cleans up). Four paths between two namespace "hosts" on one underlay bridge:

  veth       host -> host over the underlay (veth + bridge + veth), no tunnel
  veth-poll  the same, measured while the benchmark holds the 0 us CPU-latency
             request that weave's agents hold while traffic flows (idle CPUs
             poll instead of halting): the baseline for weave's own added RTT
  boringtun  boringtun-cli (1 thread) between two hosts, configured with wg
  wggo       wireguard-go (Debian) between two hosts
  weave      coordinator + 2 agents, one workload namespace per host on the
             default subnet, workload -> workload
  weave6     the same on an IPv6-only underlay (2001:db8::/64; with --ipv6
             or --paths weave6): a cluster of its own on the same bridge

Per path and repeat: iperf3 TCP 1 stream, TCP 4 streams, UDP at a fixed
offered rate, 200 pings at 10 ms. Around each test: CPU (utime+stime from
/proc/PID/stat) of the tunnel processes and UdpRcvbufErrors (/proc/net/snmp)
of the host namespaces. Reports medians over repeats.
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = os.environ.get("WVB_PREFIX", f"wvb{os.getpid()}")
DIR = os.environ.get("WVB_DIR") or tempfile.mkdtemp(prefix=f"{PREFIX}.")
BIN = os.environ.get("WVB_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
UNDERLAY_MTU = 1500
# The UDP test runs twice: with iperf3's default socket buffers and with this
# (-w: 4 MiB asked, 8 MiB granted), which tells drops caused by a receiver
# that is not scheduled for ~2 ms from drops on the path (bench/ROUNDS.md, "Where the
# UDP loss is").
UDP_WINDOW = "4M"
WG_MTU = UNDERLAY_MTU - 80
PATHS = ["veth", "veth-poll", "boringtun", "wggo", "weave", "weave-nohold", "weave-t2", "weave-q2", "weave-q4",
         "weave6"]
DEFAULT_PATHS = ["veth", "veth-poll", "boringtun", "wggo", "weave", "weave-nohold", "weave-t2", "weave-q2", "weave-q4"]
LABELS = {
    "veth": "plain veth (underlay)",
    "veth-poll": "plain veth, idle CPUs polling",
    "boringtun": "boringtun-cli 1 thread",
    "wggo": "wireguard-go",
    "weave": "weave (workload->workload)",
    "weave-nohold": "weave, --cpu-latency-hold-ms 0",
    "weave-t2": "weave, --queue-threads 2",
    "weave-q2": "weave, --queues 2",
    "weave-q4": "weave, --queues 4",
    "weave6": "weave over an IPv6-only underlay",
}
# The weave paths: the agents' extra arguments (None: defaults), suffix of the
# namespace names, last octet of the coordinator's underlay address, of the hosts' (+1, +2).
WEAVE_PATHS = {"weave": (None, "", 2, 10), "weave-nohold": (["--cpu-latency-hold-ms", "0"], "nh", 90, 90),
               "weave-t2": (["--queue-threads", "2"], "t2", 80, 80),
               "weave-q2": (["--queues", "2"], "q2", 60, 60), "weave-q4": (["--queues", "4"], "q4", 70, 70),
               # (args, suffix, coordinator, base, IPv6-only underlay): 2001:db8::2, ::11, ::12
               "weave6": (None, "6", 2, 10, True)}

children = []  # (name, Popen)
namespaces = []


def log(msg):
    print(msg, flush=True)


def run(args, check=True, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}{r.stdout.strip()}")
    return r


def ns_run(ns, args, check=True, **kw):
    return run(["ip", "netns", "exec", ns] + args, check=check, **kw)


def spawn(name, ns, args, logfile, env=None):
    """Starts args in namespace ns (ip netns exec execs it: the pid is the program's)."""
    f = open(logfile, "ab")
    p = subprocess.Popen(["ip", "netns", "exec", ns] + args, stdout=f, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env)
    children.append((name, p))
    with open(os.path.join(DIR, "pids"), "a") as pf:
        pf.write(f"{p.pid}\n")
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cleanup():
    for _, p in reversed(children):
        try:
            stop(p)
        except Exception:
            pass
    for ns in reversed(namespaces):
        run(["ip", "netns", "del", ns], check=False)


def wait_for(what, f, timeout=30.0, interval=0.1):
    deadline = time.time() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.time() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- topology

def add_ns(name):
    ns = f"{PREFIX}-{name}"
    run(["ip", "netns", "add", ns])
    namespaces.append(ns)
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    return ns


def underlay():
    """The underlay: namespace `u` with bridge br0, which `plug` connects hosts to."""
    ns = add_ns("u")
    run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", ns, "link", "set", "br0", "up"])
    return ns


def plug(underlay, name, ip):
    """A host namespace with eth0 = ip/24 (or ip/64 for IPv6, usable at once) on the underlay bridge."""
    ns = add_ns(name)
    run(["ip", "-n", underlay, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "-n", underlay, "link", "set", name, "master", "br0", "up"])
    if ":" in ip:
        run(["ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", "eth0", "nodad"])
    else:
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    return ns


def setup_veth(underlay, key="veth", names=("v1", "v2"), last=31):
    """Plain veth: two host namespaces on the underlay (192.0.2.`last` and the
    next address), the first pinging the second; no tunnel."""
    ips = [f"192.0.2.{last}", f"192.0.2.{last + 1}"]
    a_ns, b_ns = (plug(underlay, n, ip) for n, ip in zip(names, ips))
    wait_for(f"{key} ping", lambda: ping_ok(a_ns, ips[1]), 10)
    return Path(key, a_ns, b_ns, ips[1], UNDERLAY_MTU, [], [a_ns, b_ns])


def ping_ok(ns, ip):
    return ns_run(ns, ["ping", "-c1", "-W1", ip], check=False).returncode == 0


class Path:
    """One thing to measure: client namespace -> server address, plus the processes that carry it."""

    def __init__(self, key, client_ns, server_ns, server_ip, mtu, pids, host_nss):
        self.key, self.client_ns, self.server_ns, self.server_ip = key, client_ns, server_ns, server_ip
        self.mtu, self.pids, self.host_nss = mtu, pids, host_nss
        # Every namespace the packets cross, for the drop counters (UDP test).
        self.all_nss = list(dict.fromkeys(host_nss + [client_ns, server_ns]))


def wg_keys():
    priv = run(["wg", "genkey"]).stdout.strip()
    pub = run(["wg", "pubkey"], input=priv).stdout.strip()
    return priv, pub


def setup_wg_pair(key, underlay, names, ips, inner, port, start):
    """Two hosts running a userspace WireGuard (start(ns, ifname, log) -> Popen), configured with wg."""
    nss = [plug(underlay, n, ip) for n, ip in zip(names, ips)]
    ifs = [f"{PREFIX}{n}" for n in names]
    keys = [wg_keys() for _ in names]
    procs = []
    for i, ns in enumerate(nss):
        p = start(ns, ifs[i], os.path.join(DIR, f"{key}-{names[i]}.log"))
        procs.append(p)
        sock = f"/var/run/wireguard/{ifs[i]}.sock"
        wait_for(f"{key} UAPI socket {sock}", lambda: os.path.exists(sock) or p.poll() is not None, 20)
        if p.poll() is not None:
            raise RuntimeError(f"{key} exited: see {DIR}/{key}-{names[i]}.log")
    for i, ns in enumerate(nss):
        j = 1 - i
        pk = os.path.join(DIR, f"{key}-{names[i]}.key")
        with open(pk, "w") as f:
            f.write(keys[i][0] + "\n")
        ns_run(ns, ["wg", "set", ifs[i], "private-key", pk, "listen-port", str(port),
                    "peer", keys[j][1], "endpoint", f"{ips[j]}:{port}", "allowed-ips", f"{inner[j]}/32"])
        run(["ip", "-n", ns, "addr", "add", f"{inner[i]}/24", "dev", ifs[i]])
        run(["ip", "-n", ns, "link", "set", ifs[i], "mtu", str(WG_MTU), "up"])
    wait_for(f"{key} tunnel ping", lambda: ping_ok(nss[0], inner[1]), 20)
    return Path(key, nss[0], nss[1], inner[1], WG_MTU, [p.pid for p in procs], nss)


def boringtun_start(ns, ifname, logfile):
    return spawn("boringtun-cli", ns, ["boringtun-cli", "--foreground", "--threads", "1",
                                       "--disable-drop-privileges", "--log", logfile, ifname], logfile + ".out")


def wggo_start(ns, ifname, logfile):
    env = dict(os.environ, LOG_LEVEL="error")
    return spawn("wireguard-go", ns, ["wireguard-go", "-f", ifname], logfile, env=env)


def agent_status(sock):
    r = run([f"{BIN}/agent", "status", "--json", "--socket", sock], check=False)
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return None


# The weave path's coordinator (namespace, join token) and agent sockets, for the 100-peer phase.
WEAVE = {}


def idle_with_peers(w, peers=100):
    """Joins nodes that never run an agent until each agent has `peers` - 1
    peers, then measures the agents' idle CPU and RSS."""
    ns_run(WEAVE["coordinator_ns"], [f"{BIN}/cp-bench", "fake-nodes", "--token", WEAVE["token"],
                                     "--count", str(peers - 2), "--first-endpoint", "192.0.2.100:6784"])

    def all_have_peers():
        return all((lambda s: s and len(s.get("peers", [])) == peers - 1)(agent_status(sock))
                   for sock in WEAVE["sockets"])

    wait_for(f"both agents to have {peers - 1} peers", all_have_peers, 60)
    time.sleep(5)  # the first handshake attempts to the new peers
    c0, p0 = cpu_seconds(w.pids), poll_idle_us()
    time.sleep(10)
    r = {"peers": peers - 1, "agents_cpu_pct_idle_10s": (cpu_seconds(w.pids) - c0) / 10 * 100,
         "cpus_polling_pct_idle_10s": polling_pct(poll_idle_us() - p0, 10),
         "agent_rss_mb": [rss_mb(pid) for pid in w.pids]}
    log(f"== weave agents with {peers - 1} peers, idle: {r['agents_cpu_pct_idle_10s']:.1f}% CPU (both, 10 s), "
        f"idle CPUs polling {r['cpus_polling_pct_idle_10s']:.2f}% of the time, RSS "
        + ", ".join(f"{x:.1f} MB" for x in r["agent_rss_mb"]))
    return r


def setup_weave(underlay, key="weave", agent_args=None, suffix="", coordinator=2, base=10, v6=False, subnets=0):
    """A coordinator and two agents; on an IPv6-only underlay (2001:db8::) with v6.
    With `subnets`, the admin adds that many more /24 subnets (10.100.0.0/24, ...)
    before the agents join: every host builds a segment (bridge, VXLAN device,
    firewall rules) for each, and the workloads stay on the default subnet."""
    main = key == "weave"
    addr = (lambda n: f"2001:db8::{n}") if v6 else (lambda n: f"192.0.2.{n}")
    sock_addr = (lambda n, port: f"[{addr(n)}]:{port}") if v6 else (lambda n, port: f"{addr(n)}:{port}")
    c = plug(underlay, f"c{suffix}", addr(coordinator))
    out = os.path.join(DIR, f"coordinator{suffix}.out")
    spawn("coordinator", c, [f"{BIN}/coordinator", "serve", "--listen", sock_addr(coordinator, 6783),
                             "--data-dir", os.path.join(DIR, f"coordinator{suffix}"),
                             # Both agents and the 98 fake nodes join with the first token.
                             "--first-token-uses", "0"], out)

    def token():
        try:
            m = re.search(r"^join token \(first start\): (\S+)", open(out).read(), re.M)
        except FileNotFoundError:
            return None
        return m and m.group(1)

    tok = wait_for("the coordinator's join token", token, 30)
    assert subnets <= 256, "extra subnets are 10.100.<i>.0/24: at most 256"
    for i in range(subnets):
        run(["ip", "netns", "exec", c, f"{BIN}/weavectl", "--data-dir", os.path.join(DIR, f"coordinator{suffix}"),
             "subnet", "add", f"10.100.{i}.0/24"])
    if main:
        WEAVE.update(token=tok, coordinator_ns=c)
    hosts, agents = [], []
    for i in (1, 2):
        h = f"h{i}{suffix}"
        ns = plug(underlay, h, addr(base + i))
        sock = os.path.join(DIR, f"{h}.sock")
        # No Docker plugin: the hosts share this machine's /run.
        env = dict(os.environ, RUST_LOG="warn", WEAVE_DOCKER_PLUGIN="off")
        extra = list(agent_args or [])
        p = spawn("agent", ns, [f"{BIN}/agent", "join", "--token", tok, "--name", h,
                                "--endpoint", sock_addr(base + i, 6784), "--data-dir", os.path.join(DIR, h),
                                "--socket", sock] + extra, os.path.join(DIR, f"{h}.log"), env=env)
        hosts.append((ns, sock))
        if main:
            WEAVE.setdefault("sockets", []).append(sock)
        agents.append(p)
    for ns, sock in hosts:
        wait_for(f"agent in {ns} to handshake with its peer",
                 lambda: (lambda s: s and len(s.get("peers", [])) == 1
                          and all(x.get("handshake_age_secs") is not None for x in s["peers"]))(agent_status(sock)),
                 60)
    workloads = []
    for i, (hns, sock) in enumerate(hosts, 1):
        # What a user does (`weavectl attach`, as `weave attach` was): the agent makes
        # the container's interface, as it does for CNI and Docker.
        wns = add_ns(f"w{i}{suffix}")
        att = wait_for(f"w{i} attached", lambda: (lambda r: r.returncode == 0 and json.loads(r.stdout))(
            run([f"{BIN}/weavectl", "--socket", sock, "attach", "--json", "--name", f"w{i}{suffix}",
                 f"/run/netns/{wns}"], check=False)), 30)[0]
        ports = [l.split(": ")[1].split("@")[0] for l in
                 run(["ip", "-n", hns, "-o", "link", "show", "master", att["bridge"]]).stdout.splitlines()]
        port = next(p for p in ports if p.startswith("wv") and not p.startswith("wvvx-"))
        workloads.append((wns, att["address"].split("/")[0], int(att["mtu"]), port))
    wait_for("w1 -> w2 ping", lambda: ping_ok(workloads[0][0], workloads[1][1]), 30)
    path = Path(key, workloads[0][0], workloads[1][0], workloads[1][1], workloads[0][2],
                [p.pid for p in agents], [h[0] for h in hosts])
    # Each workload's port in its host's bridge (bench/latency.py captures there).
    path.ports = [w[3] for w in workloads]
    return path


# ---------------------------------------------------------------- probes

class CpusPolling:
    """Holds a 0 us CPU-latency request (/dev/cpu_dma_latency) while open:
    what weave's agents do while traffic flows (path veth-poll)."""

    def __enter__(self):
        self.fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(self.fd, (0).to_bytes(4, sys.byteorder, signed=True))
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


def poll_idle_us():
    """Microseconds all CPUs spent in the POLL idle state (cpuidle): idle time
    that did not halt, e.g. while a CPU-latency request of 0 us is held."""
    total = 0
    base = "/sys/devices/system/cpu"
    for cpu in os.listdir(base):
        d = os.path.join(base, cpu, "cpuidle")
        if not re.fullmatch(r"cpu\d+", cpu) or not os.path.isdir(d):
            continue
        for st in os.listdir(d):
            try:
                if open(os.path.join(d, st, "name")).read().strip() == "POLL":
                    total += int(open(os.path.join(d, st, "time")).read())
            except OSError:
                pass
    return total


def polling_pct(us, secs):
    """`us` of POLL idle time over `secs` on every CPU, in % of all CPU time."""
    return us / 1e6 / (secs * os.cpu_count()) * 100


def cpu_seconds(pids):
    """CPU seconds of the processes and of the children they waited for
    (the agents' `nft` runs)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime (fields 14-17)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) / 1024 if m else None


def rcvbuf_errors(nss):
    total = 0
    for ns in nss:
        lines = [l.split() for l in ns_run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines() if l.startswith("Udp:")]
        total += int(lines[1][lines[0].index("RcvbufErrors")])
    return total


def link_drops(nss):
    """Every interface's rx/tx dropped counters in the namespaces, by ns/ifname/direction."""
    out = {}
    for ns in nss:
        r = ns_run(ns, ["ip", "-s", "-j", "link", "show"], check=False)
        try:
            links = json.loads(r.stdout or "[]")
        except json.JSONDecodeError:
            continue
        for link in links:
            st = link.get("stats64") or link.get("stats") or {}
            for d in ("rx", "tx"):
                out[f"{ns[len(PREFIX) + 1:]}/{link['ifname']}/{d}_dropped"] = (st.get(d) or {}).get("dropped", 0)
    return out


def udp_errors(nss):
    """Udp receive/send buffer and checksum errors of /proc/net/snmp, by ns/counter."""
    out = {}
    for ns in nss:
        lines = [l.split() for l in ns_run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines() if l.startswith("Udp:")]
        for name in ("InErrors", "RcvbufErrors", "SndbufErrors", "InCsumErrors"):
            out[f"{ns[len(PREFIX) + 1:]}/Udp{name}"] = int(lines[1][lines[0].index(name)])
    return out


def drop_counters(nss):
    return {**link_drops(nss), **udp_errors(nss)}


class Probe:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(self.path.pids)
        self.drop0 = rcvbuf_errors(self.path.host_nss)
        return self

    def __exit__(self, *exc):
        self.cpu = cpu_seconds(self.path.pids) - self.cpu0
        self.drops = rcvbuf_errors(self.path.host_nss) - self.drop0
        self.wall = time.monotonic() - self.t0
        return False


def iperf(path, secs, args):
    r = ns_run(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", "5201", "-t", str(secs), "-J",
                                "--connect-timeout", "5000"] + args, check=False, timeout=secs + 60)
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3 {args} on {path.key}: {r.stderr.strip() or r.stdout[:300]}")
    if "error" in j:
        raise RuntimeError(f"iperf3 {args} on {path.key}: {j['error']}")
    return j


def tcp(path, secs, streams):
    with Probe(path) as pr:
        j = iperf(path, secs, ["-P", str(streams)])
    recv = j["end"]["sum_received"]
    gb = recv["bytes"] / 1e9
    return {
        "gbit_s": recv["bits_per_second"] / 1e9,
        "retransmits": j["end"]["sum_sent"].get("retransmits"),
        "bytes": recv["bytes"],
        "tunnel_cpu_s": pr.cpu if path.pids else None,
        "tunnel_cpu_s_per_gb": (pr.cpu / gb if gb else None) if path.pids else None,
        "tunnel_cpu_util": (pr.cpu / pr.wall) if path.pids else None,
        "rcvbuf_errors": pr.drops,
    }


def udp(path, secs, rate, window=None):
    """window: iperf3 -w, the sockets' buffers at both ends (None: the
    kernel's default, 208 KiB of receive buffer, ~2 ms of this stream)."""
    size = path.mtu - 28
    before = drop_counters(path.all_nss)
    with Probe(path) as pr:
        j = iperf(path, secs, ["-u", "-b", rate, "-l", str(size)] + (["-w", window] if window else []))
    after = drop_counters(path.all_nss)
    where = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    s = j["end"]["sum"]
    return {
        "loss_pct": s.get("lost_percent"),
        "received_gbit_s": s["bits_per_second"] * (1 - (s.get("lost_percent") or 0) / 100) / 1e9,
        "datagram_bytes": size,
        "tunnel_cpu_s": pr.cpu if path.pids else None,
        "rcvbuf_errors": pr.drops,
        # Where datagrams were dropped: interface drop counters and Udp errors
        # in every namespace on the path (iperf3's own count is "lost_packets").
        "lost_packets": s.get("lost_packets"),
        "drops_where": where,
    }


def ping(path, count=200, interval="0.01"):
    with Probe(path) as pr:
        r = ns_run(path.client_ns, ["ping", "-n", "-c", str(count), "-i", interval, "-W", "1", path.server_ip],
                   check=False)
    rtts = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout))
    if not rtts:
        raise RuntimeError(f"ping on {path.key}: no replies: {r.stdout[-300:]}")
    p99 = rtts[min(len(rtts) - 1, int(round(0.99 * len(rtts))) - 1)]
    return {"avg_ms": statistics.fmean(rtts), "p99_ms": p99, "replies": len(rtts), "sent": count,
            "rcvbuf_errors": pr.drops}


# ---------------------------------------------------------------- report

def med(samples, test, field):
    vals = [s[test][field] for s in samples if s.get(test) and s[test].get(field) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def version(cmd):
    r = run(cmd, check=False)
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else None


def main():
    ap = argparse.ArgumentParser(description="weave data-plane benchmark")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat, 3 s runs")
    ap.add_argument("--time", type=int, default=10, help="seconds per iperf3 run")
    ap.add_argument("--udp-rate", default="500M")
    ap.add_argument("--paths", default=",".join(DEFAULT_PATHS))
    ap.add_argument("--ipv6", action="store_true", help="also weave over an IPv6-only underlay (path weave6)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-build", action="store_true", help="(handled by dataplane.sh)")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.time = 1, 3
    paths_wanted = [p for p in a.paths.split(",") if p]
    if a.ipv6 and "weave6" not in paths_wanted:
        paths_wanted.append("weave6")
    for p in paths_wanted:
        if p not in PATHS:
            ap.error(f"unknown path {p}; known: {','.join(PATHS)}")
    started = datetime.datetime.now(datetime.timezone.utc)
    if a.json is None:
        a.json = os.path.join(ROOT, "bench", "results", f"dataplane-{started:%Y-%m-%dT%H%M%SZ}.json")

    os.makedirs(DIR, exist_ok=True)
    load_start = open("/proc/loadavg").read().split()[:3]
    log(f"== namespaces {PREFIX}-*, files in {DIR}")
    underlay = add_ns("u")
    # Two machine facts on weave's path: OpenSSL's AVX-512 AEAD code, which
    # took an eighth off its CPU per GB (bench/ROUNDS.md, "Round seven"), and
    # br_netfilter (loaded once anything, Docker's tests for one, needs it),
    # which runs the IP hooks for every frame from a workload's bridge port
    # (bench/ROUNDS.md, "Round eleven": no difference measured here). Read in a fresh
    # namespace: its sysctl is per namespace, 1 by default once loaded.
    nf_call = ns_run(underlay, ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"], check=False)
    br_netfilter = nf_call.stdout.strip() == "1"
    cpuinfo = open("/proc/cpuinfo").read()
    avx512 = " avx512f " in cpuinfo.replace("\n", " ")
    run(["ip", "-n", underlay, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", underlay, "link", "set", "br0", "up"])

    paths = {}
    setup_notes = {}
    for key in paths_wanted:
        log(f"== setting up {LABELS[key]}")
        try:
            if key == "veth":
                paths[key] = setup_veth(underlay)
            elif key == "veth-poll":
                paths[key] = setup_veth(underlay, key, ("v3", "v4"), 33)
                with CpusPolling():
                    pass  # fails here, not mid-run, without the device
            elif key == "boringtun":
                paths[key] = setup_wg_pair(key, underlay, ["t1", "t2"], ["192.0.2.41", "192.0.2.42"],
                                           ["198.51.100.1", "198.51.100.2"], 51820, boringtun_start)
            elif key == "wggo":
                paths[key] = setup_wg_pair(key, underlay, ["g1", "g2"], ["192.0.2.51", "192.0.2.52"],
                                           ["203.0.113.1", "203.0.113.2"], 51821, wggo_start)
            elif key in WEAVE_PATHS:
                paths[key] = setup_weave(underlay, key, *WEAVE_PATHS[key])
        except Exception as e:  # a path that cannot be set up is reported, the others still run
            setup_notes[key] = str(e)
            log(f"!! {key}: {e}")
    for p in paths.values():
        spawn("iperf3-server", p.server_ns, ["iperf3", "-s", "-B", p.server_ip, "-p", "5201"],
              os.path.join(DIR, f"iperf3-{p.key}.log"))
    time.sleep(0.5)

    idle = {}
    if "weave" in paths:
        w = paths["weave"]
        c0, p0 = cpu_seconds(w.pids), poll_idle_us()
        time.sleep(5)
        idle = {"agents_cpu_pct_idle_5s": (cpu_seconds(w.pids) - c0) / 5 * 100,
                "cpus_polling_pct_idle_5s": polling_pct(poll_idle_us() - p0, 5),
                "agent_rss_mb": [rss_mb(pid) for pid in w.pids]}
        log(f"== weave agents idle: {idle['agents_cpu_pct_idle_5s']:.1f}% CPU (both, 5 s), idle CPUs polling "
            f"{idle['cpus_polling_pct_idle_5s']:.2f}% of the time, RSS "
            + ", ".join(f"{x:.1f} MB" for x in idle["agent_rss_mb"]))

    samples = {k: [] for k in paths}
    for r in range(a.repeat):
        for key, p in paths.items():  # interleaved, so drifts in machine load hit every path alike
            s = {}
            for test, f in (("tcp1", lambda: tcp(p, a.time, 1)), ("tcp4", lambda: tcp(p, a.time, 4)),
                            ("udp", lambda: udp(p, a.time, a.udp_rate)),
                            ("udp4m", lambda: udp(p, a.time, a.udp_rate, UDP_WINDOW)), ("ping", lambda: ping(p))):
                try:
                    if key == "veth-poll":
                        with CpusPolling():
                            s[test] = f()
                    else:
                        s[test] = f()
                except Exception as e:
                    s[test] = None
                    s.setdefault("errors", []).append(f"{test}: {e}")
                    log(f"!! {key} {test}: {e}")
                time.sleep(0.5)
            samples[key].append(s)
            t1, t4, u, u4, pg = (s.get(x) or {} for x in ("tcp1", "tcp4", "udp", "udp4m", "ping"))
            log(f"   run {r + 1}/{a.repeat} {key:9} tcp1 {fmt(t1.get('gbit_s'), '.2f')} "
                f"tcp4 {fmt(t4.get('gbit_s'), '.2f')} Gbit/s, udp loss {fmt(u.get('loss_pct'), '.2f')}% "
                f"({fmt(u4.get('loss_pct'), '.2f')}% with -w {UDP_WINDOW}), "
                f"ping {fmt(pg.get('avg_ms'), '.3f')}/{fmt(pg.get('p99_ms'), '.3f')} ms, "
                f"cpu/GB {fmt(t1.get('tunnel_cpu_s_per_gb'), '.2f')} s, drops {t1.get('rcvbuf_errors', '-')}")
            for name, x in (("udp", u), (f"udp -w {UDP_WINDOW}", u4)):
                if x.get("lost_packets"):
                    log(f"   {'':9} {name} lost {x['lost_packets']} datagrams; counters that moved: {x.get('drops_where')}")

    # Last, as it leaves the agents with peers that never answer.
    idle100 = {}
    if "weave" in paths:
        try:
            idle100 = idle_with_peers(paths["weave"])
        except Exception as e:
            setup_notes["weave_100_peers"] = str(e)
            log(f"!! weave with 100 peers: {e}")

    medians = {}
    for key, ss in samples.items():
        medians[key] = {
            "tcp1_gbit_s": med(ss, "tcp1", "gbit_s"),
            "tcp4_gbit_s": med(ss, "tcp4", "gbit_s"),
            "udp_loss_pct": med(ss, "udp", "loss_pct"),
            "udp4m_loss_pct": med(ss, "udp4m", "loss_pct"),
            "udp_received_gbit_s": med(ss, "udp", "received_gbit_s"),
            "ping_avg_ms": med(ss, "ping", "avg_ms"),
            "ping_p99_ms": med(ss, "ping", "p99_ms"),
            "tcp1_tunnel_cpu_s_per_gb": med(ss, "tcp1", "tunnel_cpu_s_per_gb"),
            "tcp4_tunnel_cpu_s_per_gb": med(ss, "tcp4", "tunnel_cpu_s_per_gb"),
            "tcp1_tunnel_cpu_util": med(ss, "tcp1", "tunnel_cpu_util"),
            "tcp1_rcvbuf_errors": med(ss, "tcp1", "rcvbuf_errors"),
            "tcp4_rcvbuf_errors": med(ss, "tcp4", "rcvbuf_errors"),
            "udp_rcvbuf_errors": med(ss, "udp", "rcvbuf_errors"),
        }

    rate = a.udp_rate
    print()
    print(f"Data plane, median of {a.repeat} run(s), {a.time} s iperf3 runs, UDP offered {rate}bit/s, "
          f"200 pings at 10 ms; {os.cpu_count()} CPUs, kernel {platform.release()}, load average "
          f"{' '.join(load_start)} at start, {' '.join(open('/proc/loadavg').read().split()[:3])} at end; "
          f"AVX-512 {'yes' if avx512 else 'no'}, br_netfilter {'on' if br_netfilter else 'off'}")
    hdr = ["path", "TCP 1 (Gbit/s)", "TCP 4 (Gbit/s)", f"UDP {rate} loss %", f"same, -w {UDP_WINDOW}", "ping avg (ms)", "ping p99 (ms)",
           "CPU s/GB (TCP 1)", "CPU s/GB (TCP 4)", "RcvbufErrors TCP1/TCP4/UDP"]
    rows = []
    for key in PATHS:
        if key not in medians:
            continue
        m = medians[key]
        drops = "/".join(fmt(m[x], ".0f") for x in ("tcp1_rcvbuf_errors", "tcp4_rcvbuf_errors", "udp_rcvbuf_errors"))
        rows.append([LABELS[key], fmt(m["tcp1_gbit_s"], ".2f"), fmt(m["tcp4_gbit_s"], ".2f"),
                     fmt(m["udp_loss_pct"], ".2f"), fmt(m["udp4m_loss_pct"], ".2f"), fmt(m["ping_avg_ms"], ".3f"), fmt(m["ping_p99_ms"], ".3f"),
                     fmt(m["tcp1_tunnel_cpu_s_per_gb"], ".2f"), fmt(m["tcp4_tunnel_cpu_s_per_gb"], ".2f"), drops])
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in rows:
        print("| " + " | ".join(row) + " |")

    ratios = {}
    if "weave" in medians and "weave6" in medians:
        w4, w6 = medians["weave"], medians["weave6"]
        r = {f: (w6[f] / w4[f]) if w6[f] is not None and w4[f] else None
             for f in ("tcp1_gbit_s", "tcp4_gbit_s", "ping_avg_ms", "tcp1_tunnel_cpu_s_per_gb")}
        ratios["weave6/weave"] = r
        print()
        print(f"weave IPv6/IPv4 underlay: TCP 1 {fmt(r['tcp1_gbit_s'], '.2f')}x, TCP 4 {fmt(r['tcp4_gbit_s'], '.2f')}x, "
              f"ping avg {fmt(r['ping_avg_ms'], '.2f')}x, CPU/GB {fmt(r['tcp1_tunnel_cpu_s_per_gb'], '.2f')}x")
    if "weave" in medians:
        w = medians["weave"]
        print()
        for base in ("boringtun", "wggo", "veth"):
            if base not in medians:
                continue
            b = medians[base]
            r = {}
            for f in ("tcp1_gbit_s", "tcp4_gbit_s", "ping_avg_ms", "ping_p99_ms", "tcp1_tunnel_cpu_s_per_gb"):
                r[f] = (w[f] / b[f]) if w[f] is not None and b[f] else None
            ratios[f"weave/{base}"] = r
            print(f"weave/{base:9}: TCP 1 {fmt(r['tcp1_gbit_s'], '.2f')}x, TCP 4 {fmt(r['tcp4_gbit_s'], '.2f')}x, "
                  f"ping avg {fmt(r['ping_avg_ms'], '.2f')}x, p99 {fmt(r['ping_p99_ms'], '.2f')}x"
                  + (f", CPU/GB {fmt(r['tcp1_tunnel_cpu_s_per_gb'], '.2f')}x" if base != "veth" else ""))
        # Issue 5 targets.
        print()
        checks = []
        bt, wg, ve = (medians.get(k, {}) for k in ("boringtun", "wggo", "veth"))

        def target(name, value, goal, ok):
            checks.append({"target": name, "value": value, "goal": goal, "met": ok})
            print(f"target {name}: {fmt(value, '.3f')} (goal {goal}) -> {'met' if ok else 'MISSED'}")

        if bt.get("tcp1_gbit_s") and w["tcp1_gbit_s"] is not None:
            v = w["tcp1_gbit_s"] / bt["tcp1_gbit_s"]
            target("TCP 1 stream vs boringtun-cli", v, ">= 2.5x", v >= 2.5)
        if wg.get("tcp1_gbit_s") and w["tcp1_gbit_s"] is not None:
            v = w["tcp1_gbit_s"] / wg["tcp1_gbit_s"]
            target("TCP 1 stream vs wireguard-go", v, ">= 5x", v >= 5)
        if ve.get("tcp1_gbit_s") and w["tcp1_gbit_s"] is not None:
            v = w["tcp1_gbit_s"] / ve["tcp1_gbit_s"]
            target("TCP 1 stream vs plain veth", v, ">= 0.25x", v >= 0.25)
        if ve.get("ping_avg_ms") is not None and w["ping_avg_ms"] is not None:
            v = w["ping_avg_ms"] - ve["ping_avg_ms"]
            target("added ping RTT over veth (ms)", v, "<= 0.1 ms", v <= 0.1)
        if w["tcp1_rcvbuf_errors"] is not None:
            v = w["tcp1_rcvbuf_errors"]
            target("UdpRcvbufErrors during TCP 1 stream", v, "0", v == 0)
        # Issue 15 targets.
        if ve.get("ping_p99_ms") is not None and w["ping_p99_ms"] is not None:
            v = w["ping_p99_ms"] - ve["ping_p99_ms"]
            target("added ping p99 over veth (ms)", v, "<= 0.3 ms", v <= 0.3)
        # The same against veth with idle CPUs polling as weave's agents make
        # them: what weave itself adds, without the idle policy's share.
        vp = medians.get("veth-poll", {})
        for f, name, goal in (("ping_avg_ms", "avg", 0.1), ("ping_p99_ms", "p99", 0.3)):
            if vp.get(f) is not None and w[f] is not None:
                v = w[f] - vp[f]
                target(f"added ping {name} over veth with idle CPUs polling (ms)", v, f"<= {goal} ms", v <= goal)
        for f, name in (("tcp1_tunnel_cpu_s_per_gb", "TCP 1"), ("tcp4_tunnel_cpu_s_per_gb", "TCP 4")):
            if w[f] is not None:
                target(f"agents' CPU s per GB, {name}", w[f], "<= 2.0 s", w[f] <= 2.0)
        if w["tcp1_gbit_s"] and w["tcp4_gbit_s"] is not None:
            v = w["tcp4_gbit_s"] / w["tcp1_gbit_s"]
            target("TCP 4 streams / TCP 1 stream", v, ">= 1.0x", v >= 1.0)
        for f, name in (("udp_loss_pct", "default buffers"), ("udp4m_loss_pct", f"-w {UDP_WINDOW}")):
            if w[f] is not None:
                target(f"UDP {rate} loss %, {name}", w[f], "0", w[f] == 0)
        if idle100.get("agent_rss_mb"):
            v = max(idle100["agent_rss_mb"])
            target("agent RSS with 99 peers (MB)", v, "<= 30 MB", v <= 30)
        ratios["targets"] = checks

    def git(*args):
        return run(["git", "-C", ROOT] + list(args), check=False).stdout.strip()

    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    cpu_model = model.group(1) if model else None
    result = {
        "started": started.isoformat(),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model, "kernel": platform.release(),
                    "avx512f": avx512, "br_netfilter": br_netfilter,
                    "loadavg_at_start": load_start, "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
        "git": {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "agent",
                                                                       "coordinator", "proto"))},
        "config": {"repeat": a.repeat, "seconds": a.time, "udp_rate": a.udp_rate, "pings": 200,
                   "ping_interval_s": 0.01, "underlay_mtu": UNDERLAY_MTU,
                   "mtu": {k: p.mtu for k, p in paths.items()}},
        "versions": {"boringtun-cli": version(["boringtun-cli", "--version"]),
                     "wireguard-go": version(["wireguard-go", "--version"]),
                     "iperf3": version(["iperf3", "--version"])},
        "setup_errors": setup_notes,
        "weave_idle": idle,
        "weave_idle_100_peers": idle100,
        "medians": medians,
        "ratios": ratios,
        "samples": samples,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nJSON: {a.json}")
    failed = bool(setup_notes) or any(s.get("errors") for ss in samples.values() for s in ss)
    return 1 if failed else 0


def _term(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _term)
    if os.geteuid() != 0:
        sys.exit("dataplane.py: needs root (network namespaces); run bench/dataplane.sh")
    rc = 1
    try:
        rc = main()
    finally:
        cleanup()
    sys.exit(rc)
