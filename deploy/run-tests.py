#!/usr/bin/env python3
"""Runs the workspace's test executables, a few at a time (`--lanes`).

Reads the JSON messages of `cargo test --workspace --no-run
--message-format=json-render-diagnostics` on stdin and runs every test
executable they name as `cargo test` would (in its package's directory, with
cargo's variables), passing on the arguments after `--` (e.g.
`--include-ignored`). With `--postgres PKG`, PKG's executables run a second
time with WEAVE_TEST_STORE=postgres (each starts its own throwaway server).

Why several at a time: an end-to-end binary builds its hosts out of network
namespaces and runs its tests one bed at a time (agent/tests/common: one
`Bed` per binary at once); most of its time is spent waiting (for a
handshake, for a packet that must not come), so three binaries share this
2-core machine well (deploy/test.sh's `--lanes 3`; two until 2026-12-06),
and the suite takes well under half as long. The binaries
in ALONE run with nothing beside them: they push traffic as fast as they
can, count CPU time, drive a real runtime (dockerd, podman) or bound how
fast a loaded coordinator must answer; sharing the cores would measure the
neighbour, not weave.

Each executable's output is printed whole when it ends (cargo's `Running`
line first), so two never interleave; the exit status is 1 if any failed,
and the failed ones are named at the end."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Executable names (the file name up to cargo's `-hash`).
ALONE = {
    "e2e_cpu_latency", "e2e_flood", "e2e_udp_flood", "e2e_dns_flood", "e2e_queues",
    "e2e_conntrack", "e2e_docker", "e2e_podman", "e2e_cni_portmap", "e2e_aead",
    "dataplane_alloc", "docker_retry", "limits", "read_flood", "store_engines",
}
# Executables whose tests run one at a time within them: `limits` counts
# connections per source in /proc/net/tcp and failures per second, and two
# of its tests at once once failed both (a CI run, 2026-12-06).
SERIAL = {"limits"}
# Seconds each took in a CI run: the longest start first, so that the
# lanes end together. Only an order; an executable not listed counts 5.
HINT = {
    "e2e_l2_guard": 160, "e2e_isolation": 125, "e2e_attach_gone": 100, "e2e_outage": 65,
    "e2e_l2": 55, "e2e_underlay_nat": 50, "e2e_egress": 50, "e2e_failover": 45,
    "e2e_pg_outage": 30, "e2e_outsider": 25, "e2e_attach": 25, "membership": 18,
    "e2e_rogue": 17, "e2e_migrate": 12, "e2e_dns": 12, "e2e_underlay_mtu": 12,
    "e2e_daemonset": 11, "e2e_membership": 11, "e2e_underlay_guard": 10, "e2e_mesh": 9,
    "e2e_cni": 8, "e2e_prometheus": 7, "e2e_restart": 7, "e2e_underlay_move": 7,
}


def executables(lines):
    """(package, manifest directory, path, kind) of every test executable, in cargo's order."""
    seen, out = set(), []
    for line in lines:
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        if not m.get("profile", {}).get("test"):
            continue
        if m["executable"] in seen:
            continue
        seen.add(m["executable"])
        package = package_name(m["package_id"])
        kind = m["target"]["kind"][0]
        label = f"tests/{m['target']['name']}.rs" if kind == "test" else f"unittests {os.path.relpath(m['target']['src_path'], os.path.dirname(m['manifest_path']))}"
        out.append((package, os.path.dirname(m["manifest_path"]), m["executable"], label))
    return out


def package_name(package_id):
    """`path+file:///…/coordinator#weave-coordinator@0.1.0`, or
    `path+file:///…/weavectl#0.1.0` where the directory is the package's
    name, or the older `weavectl 0.1.0 (path+file:///…)`."""
    if "#" not in package_id:
        return package_id.split(" ")[0]
    url, fragment = package_id.rsplit("#", 1)
    return fragment.split("@")[0] if "@" in fragment else url.rstrip("/").rsplit("/", 1)[-1]


def name_of(path):
    return os.path.basename(path).rsplit("-", 1)[0]


# A binary still running after this long is killed, with every process of
# its session, and counted as failed: the longest takes about 200 s, and one
# hung (an agent that never exits, a wait with no bound) held the whole run
# until CI's own limit.
TIMEOUT = 1800


def in_group(pgid):
    """The command lines of the live processes in process group `pgid`
    (not zombies: dead already, they wait for a parent to reap them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # After the command's name (in parentheses, which may hold spaces):
        # state, ppid, pgrp.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            found.append(f"{entry} {cmdline[:120]}")
    return found


def run_binary(argv, cwd, env, out):
    """Runs one test binary in a session of its own; kills that session's
    leftovers (by process group) when it ends or times out, and removes the
    namespaces its beds named after its pid (`wv<pid>x…`, agent/tests/common)
    that its Drop did not get to: a binary killed by a signal runs no Drop,
    and the next one given its pid would find them. Returns (code, note)."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    note = ""
    try:
        code = child.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        note = f"run-tests.py: still running after {TIMEOUT} s: killed\n"
        code = -9
    child.kill()
    child.wait()
    left = in_group(child.pid)
    if left:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        note += f"run-tests.py: killed {len(left)} process(es) it left: {'; '.join(left)}\n"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in listed.splitlines()
            if line.split() and line.split()[0].startswith(f"wv{child.pid}x")]
    for ns in left:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if left:
        note += f"run-tests.py: removed {len(left)} namespace(s) it left: {' '.join(left)}\n"
    return code, note


def main():
    argv = sys.argv[1:]
    test_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    opts = argv[: argv.index("--")] if "--" in argv else argv
    postgres = opts[opts.index("--postgres") + 1] if "--postgres" in opts else None
    lanes = int(opts[opts.index("--lanes") + 1]) if "--lanes" in opts else 2

    found = executables(sys.stdin)
    if not found:
        sys.exit("run-tests.py: no test executables in cargo's messages")
    jobs = []
    for package, cwd, path, label in found:
        jobs.append((package, cwd, path, label, {}))
    if postgres:
        pg = [j for j in found if j[0] == postgres]
        if not pg:
            sys.exit(f"run-tests.py: no test executables of {postgres} in cargo's messages")
        for package, cwd, path, label in pg:
            jobs.append((package, cwd, path, label + " (WEAVE_TEST_STORE=postgres)", {"WEAVE_TEST_STORE": "postgres"}))

    # A renamed binary would quietly leave ALONE and share the cores.
    unknown = (ALONE | SERIAL) - {name_of(j[2]) for j in jobs}
    if unknown:
        sys.exit(f"run-tests.py: no test executable named {', '.join(sorted(unknown))} (ALONE or SERIAL is out of date)")
    shared = [j for j in jobs if name_of(j[2]) not in ALONE]
    alone = [j for j in jobs if name_of(j[2]) in ALONE]
    shared.sort(key=lambda j: -HINT.get(name_of(j[2]), 5))

    cargo = os.environ.get("CARGO") or shutil.which("cargo") or "cargo"
    print_lock, queue_lock = threading.Lock(), threading.Lock()
    failed, timings = [], []

    def run(job):
        package, cwd, path, label, extra = job
        env = dict(os.environ, CARGO=cargo, CARGO_MANIFEST_DIR=cwd, CARGO_PKG_NAME=package, **extra)
        args = [*test_args, "--test-threads=1"] if name_of(path) in SERIAL else test_args
        start = time.monotonic()
        # A binary that cannot even start is a failure too (not a lane gone quiet).
        try:
            with tempfile.TemporaryFile() as out:
                code, note = run_binary([path, *args], cwd, env, out)
                out.seek(0)
                text = out.read().decode(errors="replace") + note
        except Exception as e:  # noqa: BLE001 (reported, then counted as a failure)
            code, text = -1, f"run-tests.py: cannot run it: {e!r}\n"
        took = time.monotonic() - start
        with print_lock:
            rel = os.path.relpath(path)
            print(f"     Running {label} ({rel}){'' if code == 0 else f' FAILED (exit {code})'}", flush=True)
            sys.stdout.write(text)
            sys.stdout.flush()
            timings.append((took, label, rel))
            if code != 0:
                failed.append(f"{label} ({rel})")

    def lane():
        while True:
            with queue_lock:
                if not shared:
                    return
                job = shared.pop(0)
            run(job)

    started = time.monotonic()
    threads = [threading.Thread(target=lane) for _ in range(max(1, lanes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job in alone:
        run(job)

    total = time.monotonic() - started
    if len(timings) != len(jobs):
        failed.append(f"{len(jobs) - len(timings)} test executable(s) never ran")
    print(f"run-tests.py: {len(jobs)} test executables in {total:.0f} s ({lanes} at a time, "
          f"{len(alone)} alone); the longest:")
    for took, label, rel in sorted(timings, reverse=True)[:8]:
        print(f"    {took:6.1f} s  {label}")
    if failed:
        print(f"run-tests.py: {len(failed)} failed:", *failed, sep="\n    ")
        sys.exit(1)


if __name__ == "__main__":
    main()
