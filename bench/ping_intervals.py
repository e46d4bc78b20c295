#!/usr/bin/env python3
"""Ping RTT against the gap between pings: plain veth and weave (workload to
workload) pinged in turn at each interval, on bench/dataplane.py's setup.

    sudo WVB_BIN=target/release python3 bench/ping_intervals.py [ROUNDS]

$IVL: the intervals in seconds (default "0.001 0.002 0.005 0.01 0.02"), $N
pings each (default 200), extra agent arguments in $WVB_ARGS. A path that
only runs cold after a pause gets slower as the gap grows (round eighteen).
Namespaces wvi<pid>-*, removed on exit."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("WVB_PREFIX", f"wvi{os.getpid()}")
import dataplane as d


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    os.makedirs(d.DIR, exist_ok=True)
    u = d.underlay()
    w = d.setup_weave(u, "weave", os.environ.get("WVB_ARGS", "").split() or None)
    v = d.setup_veth(u)
    for r in range(rounds):
        for ivl in os.environ.get("IVL", "0.001 0.002 0.005 0.01 0.02").split():
            for p in (v, w):
                x = d.ping(p, count=int(os.environ.get("N", "200")), interval=ivl)
                print(f"r{r} every {ivl:6s} s {p.key:6s} avg {x['avg_ms']:.3f} p99 {x['p99_ms']:.3f} ms", flush=True)


try:
    main()
finally:
    d.cleanup()
