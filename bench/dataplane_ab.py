#!/usr/bin/env python3
"""Interleaved A/B runs on bench/dataplane.py's setup (issue 15's measurements).

    sudo WVB_BIN=target/release python3 bench/dataplane_ab.py ROUNDS SECS VARIANTS [PATHS]

PATHS (default veth,weave): veth, weave (extra agent arguments in $WVB_ARGS), weaves0 (agents with --spin-us 0, the
default since 9b30905, so now the same as weave),
weaveB (agents from the binaries in $WVB_BIN_B, default $WVB_BIN, with the
extra arguments in $WVB_ARGS_B, e.g. "--queue-threads 2"; $WVB_GSO_SEGS_B sets gso_max_segs on its workloads' ethwe,
$WVB_NICE_B the nice value of every thread of its agents; $WVB_HOOK_B a command run once its agents are up, with
its two host namespaces, its two workload namespaces and the server's address as arguments: bench/ab_hooks.sh). $WVB_SUBNETS and $WVB_SUBNETS_B: that many
more subnets in weave's and weaveB's clusters (each host builds them all; the workloads stay on the default). VARIANTS, comma-separated,
each PATH:TEST[:OPTION...], TEST one of udp (500 Mbit/s), tcp1, tcp4, ping;
options: qN sets txqueuelen N on both weave hosts' wvtun0 first (and
leaves it so), wSIZE passes
iperf3 -w SIZE. Each round runs every variant once, in order; the UDP runs
print the drop counters that moved; medians at the end. Namespaces wvx<pid>-*,
removed on exit."""
import os, sys, time, json, statistics, signal, shlex
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("WVB_PREFIX", f"wvx{os.getpid()}")
import dataplane as d

def sleeps(pids):
    """Voluntary context switches (waits that slept) of every thread of `pids`."""
    total = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    total += int(next(l for l in f if l.startswith("voluntary_ctxt_switches:")).split()[1])
            except (OSError, StopIteration):
                pass
    return total

def setq(ns, dev, n):
    d.run(["ip", "-n", ns, "link", "set", dev, "txqueuelen", str(n)])

def main():
    rounds, secs, tests = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    paths_wanted = sys.argv[4].split(",") if len(sys.argv) > 4 else ["veth", "weave"]
    os.makedirs(d.DIR, exist_ok=True)
    u = d.underlay()
    paths = {}
    if "veth" in paths_wanted:
        paths["veth"] = d.setup_veth(u)
    if "weave" in paths_wanted:  # extra agent arguments: WVB_ARGS
        paths["weave"] = d.setup_weave(u, "weave", os.environ.get("WVB_ARGS", "").split(),
                                       subnets=int(os.environ.get("WVB_SUBNETS", "0")))
    orig_spawn = d.spawn
    def spawn(name, ns, args, logfile, env=None):
        if name == "agent" and ns.endswith("s0"):
            args = args + ["--spin-us", "0"]
        return orig_spawn(name, ns, args, logfile, env)
    d.spawn = spawn
    if "weaves0" in paths_wanted:
        paths["weaves0"] = d.setup_weave(u, "weaves0", None, "s0", 80, 80)
    if "weaveB" in paths_wanted:  # another binary dir (WVB_BIN_B) and/or agent arguments (WVB_ARGS_B)
        old = d.BIN; d.BIN = os.environ.get("WVB_BIN_B", old)
        env_b = os.environ.get("WVB_ENV_B")  # NAME=VALUE in weaveB's agents' environment only
        if env_b:
            os.environ[env_b.split("=", 1)[0]] = env_b.split("=", 1)[1]
        paths["weaveB"] = d.setup_weave(u, "weaveB", os.environ.get("WVB_ARGS_B", "").split(), "B", 90, 90,
                                        subnets=int(os.environ.get("WVB_SUBNETS_B", "0")))
        if env_b:
            del os.environ[env_b.split("=", 1)[0]]
        d.BIN = old
        hook = os.environ.get("WVB_HOOK_B")  # e.g. "bash bench/ab_hooks.sh notrack"
        if hook:
            pb = paths["weaveB"]
            d.run(shlex.split(hook) + [pb.host_nss[0], pb.host_nss[1], pb.client_ns, pb.server_ns, pb.server_ip])
        segs = os.environ.get("WVB_GSO_SEGS_B")  # gso_max_segs on weaveB's two workload interfaces
        if segs:
            for ns in (paths["weaveB"].client_ns, paths["weaveB"].server_ns):
                d.run(["ip", "-n", ns, "link", "set", "ethwe", "gso_max_segs", segs])
        nice = os.environ.get("WVB_NICE_B")  # every thread of weaveB's agents at this nice value
        if nice:
            for pid in paths["weaveB"].pids:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.setpriority(os.PRIO_PROCESS, int(tid), int(nice))
    for p in paths.values():
        d.spawn("iperf3-server", p.server_ns, ["iperf3", "-s", "-B", p.server_ip, "-p", "5201"],
                os.path.join(d.DIR, f"iperf3-{p.key}.log"))
    time.sleep(0.5)
    w = paths.get("weave")
    res = {}
    for r in range(rounds):
        for t in tests:
            # variant syntax: path:kind[:opt]
            key, kind, *opt = t.split(":")
            p = paths[key]
            for o in opt:
                if o.startswith("q") and key.startswith("weave"):
                    for ns in p.host_nss: setq(ns, "wvtun0", int(o[1:]))
            extra = []
            for o in opt:
                if o.startswith("w"): extra = ["-w", o[1:]]
            if kind == "udp":
                size = p.mtu - 28
                before = d.drop_counters(p.all_nss)
                with d.Probe(p) as pr:
                    j = d.iperf(p, secs, ["-u", "-b", "500M", "-l", str(size)] + extra)
                after = d.drop_counters(p.all_nss)
                where = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
                s = j["end"]["sum"]
                v = s.get("lost_percent")
                print(f"r{r} {t:24} loss {v:.3f}% lost {s.get('lost_packets')} cpu {pr.cpu:.2f} {where}", flush=True)
            elif kind in ("tcp1", "tcp4"):
                s0 = sleeps(p.pids)
                x = d.tcp(p, secs, 1 if kind == "tcp1" else 4)
                v = x["gbit_s"]
                # The agents' sleeps per GB received.
                per_gb = (sleeps(p.pids) - s0) / max(x["bytes"] / 1e9, 1e-9)
                print(f"r{r} {t:24} {v:.2f} Gbit/s cpu/GB {x['tunnel_cpu_s_per_gb'] or 0:.2f} util {x['tunnel_cpu_util'] or 0:.2f} retr {x['retransmits']} sleeps/GB {per_gb:.0f}", flush=True)
                res.setdefault(t + "/sleepsgb", []).append(per_gb)
                res.setdefault(t + "/cpugb", []).append(x["tunnel_cpu_s_per_gb"] or 0)
            elif kind == "ping":
                x = d.ping(p)
                v = x["avg_ms"]
                print(f"r{r} {t:24} avg {v:.3f} p99 {x['p99_ms']:.3f}", flush=True)
                res.setdefault(t + "/p99", []).append(x["p99_ms"])
            res.setdefault(t, []).append(v)
            time.sleep(0.5)
        print(f"   load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    print("MEDIANS")
    for k, v in res.items():
        print(f"  {k:30} {statistics.median(v):.3f}  {['%.3f' % x for x in v]}")

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        main()
    finally:
        d.cleanup()
