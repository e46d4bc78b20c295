#!/usr/bin/env python3
"""Where weave's ping time goes: three paths pinged in turn, in one run, on
bench/dataplane.py's setup (200 pings at 10 ms each, medians of ROUNDS):

    sudo WVB_BIN=target/release python3 bench/ping_paths.py [ROUNDS]

- weave-wl: workload -> workload (what dataplane.py's "weave" row pings:
  veth, subnet bridge, forwarding, TUN, agent, underlay, and back);
- weave-host: host -> host over the tunnel (node address on wvtun0), no
  workload veth or bridge: the same hops as boringtun-cli's row;
- boringtun: boringtun-cli, host -> host over its TUN.
Extra agent arguments in $WVB_ARGS. Namespaces wvp<pid>-*, removed on exit."""
import os, sys, re, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("WVB_PREFIX", f"wvp{os.getpid()}")
import dataplane as d


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    os.makedirs(d.DIR, exist_ok=True)
    u = d.underlay()
    w = d.setup_weave(u, "weave", os.environ.get("WVB_ARGS", "").split())
    bt = d.setup_wg_pair("boringtun", u, ["t1", "t2"], ["192.0.2.41", "192.0.2.42"],
                         ["198.51.100.1", "198.51.100.2"], 51820, d.boringtun_start)
    hb = w.host_nss[1]
    out = d.run(["ip", "-n", hb, "-4", "-o", "addr", "show", "wvtun0"]).stdout
    node_b = re.search(r"inet ([\d.]+)", out).group(1)
    host = d.Path("weave-host", w.host_nss[0], hb, node_b, 1420, w.pids, w.host_nss)
    res = {"weave-wl": [], "weave-host": [], "boringtun": []}
    for r in range(rounds):
        for k, p in (("weave-wl", w), ("weave-host", host), ("boringtun", bt)):
            x = d.ping(p)
            res[k].append((x["avg_ms"], x["p99_ms"]))
            print(f"r{r} {k:12s} avg {x['avg_ms']:.3f} p99 {x['p99_ms']:.3f}", flush=True)
    for k, v in res.items():
        print(f"MEDIAN {k:12s} avg {statistics.median(a for a, _ in v):.3f} "
              f"p99 {statistics.median(b for _, b in v):.3f}")


try:
    main()
finally:
    d.cleanup()
