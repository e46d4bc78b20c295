#!/usr/bin/env python3
"""Where the time of one ping RTT over weave goes (the 'added latency' profile).

    sudo python3 bench/latency.py      # after bench/dataplane.sh built target/release
    sudo WVB_ARGS="--cpu-latency-hold-ms 0" python3 bench/latency.py   # extra agent arguments

Sets up the same two-host weave path as bench/dataplane.py (namespaces wvl<pid>-*,
removed on exit), captures on both workload ports and both underlay interfaces
while 200 pings run at 10 ms, and prints the median time of each leg.
"""
import os, shutil, sys, time, subprocess, signal, struct
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("WVB_PREFIX", f"wvl{os.getpid()}")
import dataplane as d  # noqa: E402

def pcap_times(path, want):
    """(ts, frame) per captured frame of a pcap (little-endian, us)."""
    data = open(path, "rb").read()
    pos, out = 24, []
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[pos:pos+16])
        frame = data[pos+16:pos+16+incl]
        pos += 16 + incl
        if want(frame):
            out.append((sec + usec / 1e6, frame))
    return out

def main():
    os.makedirs(d.DIR, exist_ok=True)
    u = d.underlay()
    p = d.setup_weave(u, "weave", os.environ.get("WVB_ARGS", "").split() or None)
    (ha, _), (hb, _) = [(ns, s) for ns, s in zip(p.host_nss, d.WEAVE["sockets"])]
    caps = {}
    procs = []
    for name, ns, ifname, flt in (("a_port", ha, p.ports[0], "icmp"), ("a_eth", ha, "eth0", "udp port 6784"),
                                  ("b_eth", hb, "eth0", "udp port 6784"), ("b_port", hb, p.ports[1], "icmp")):
        f = os.path.join(d.DIR, name + ".pcap")
        caps[name] = f
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-s", "128", "-U", "-n",
                                       "-w", f] + flt.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(2)
    r = d.ns_run(p.client_ns, ["ping", "-n", "-c", "200", "-i", "0.01", p.server_ip], check=False)
    print(r.stdout.splitlines()[-1])
    time.sleep(1)
    for pr in procs:
        pr.send_signal(signal.SIGINT)
        pr.wait()
    icmp = lambda t: (lambda f: len(f) > 42 and f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == t)
    big = lambda f: len(f) >= 42 and f[12:14] == b"\x08\x00" and f[23] == 17
    req_a = pcap_times(caps["a_port"], icmp(8)); rep_a = pcap_times(caps["a_port"], icmp(0))
    req_b = pcap_times(caps["b_port"], icmp(8)); rep_b = pcap_times(caps["b_port"], icmp(0))
    a_eth = pcap_times(caps["a_eth"], big); b_eth = pcap_times(caps["b_eth"], big)
    src = lambda f: bytes(f[26:30])
    seq = lambda f: struct.unpack(">H", f[40:42])[0]
    # A's address: the source of the first datagram on A's underlay after the
    # first request (the very first may be a handshake or keepalive from B).
    first_req = min((t for t, _ in req_a), default=0)
    a_ip = next((src(f) for t, f in a_eth if t >= first_req), None)
    out_a = [t for t, f in a_eth if src(f) == a_ip]       # A -> B datagrams as they leave A
    in_a = [t for t, f in a_eth if src(f) != a_ip]        # B -> A as they reach A
    bymap = lambda lst: {seq(f): t for t, f in lst}
    RA, PA, RB, PB = bymap(req_a), bymap(rep_a), bymap(req_b), bymap(rep_b)
    first_after = lambda lst, t: next((x for x in lst if x >= t), None)
    rows = []
    for s, t0 in RA.items():
        if s not in PA or s not in RB or s not in PB:
            continue
        t1 = first_after(out_a, t0); t2 = RB[s]; t3 = PB[s]; t4 = first_after(in_a, t3); t5 = PA[s]
        if t1 is None or t4 is None or not (t0 <= t1 <= t2 <= t3 <= t4 <= t5):
            continue
        rows.append((t1 - t0, t2 - t1, t3 - t2, t5 - t4, t4 - t3, t5 - t0))
    if not rows:
        print("no complete samples"); return
    med = lambda i: sorted(r[i] for r in rows)[len(rows) // 2] * 1e6
    names = ["A: container -> underlay (route, TUN, agent A encrypts, sends)",
             "underlay -> B's container (agent B receives, decrypts, TUN, route)",
             "B's container answers",
             "underlay -> A's container (agent A receives, decrypts)",
             "B: container -> underlay (agent B encrypts, sends)",
             "total RTT at A's bridge port"]
    print(f"{len(rows)} pings, medians in microseconds:")
    for i, n in enumerate(names):
        print(f"  {med(i):7.1f}  {n}")

if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("latency.py: needs root (network namespaces)")
    try:
        main()
    finally:
        d.cleanup()
        shutil.rmtree(d.DIR, ignore_errors=True)
