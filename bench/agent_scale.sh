#!/usr/bin/env bash
# Agent scale benchmark (issue 11): one real coordinator and one real agent,
# each in its own network namespace (underlay 192.0.2.0/24), and N fake nodes
# with M workloads each made through the coordinator's API
# (`cp-bench remote-workloads`), so the agent holds N*M remote workloads
# (a /32 route, a proxy-ARP entry and an nftables set element each). Then:
#
#  - one more remote attach: `cp-bench allocate` on a fake node; the window
#    runs from just before the allocation until 1 s after the agent's route
#    and set element for it are in. The agent's CPU in that window: utime+stime
#    from /proc/PID/stat (10 ms ticks), the run time of all its threads from
#    /proc/PID/task/*/schedstat (ns), the same for its threads but the data
#    plane's (wg-*: the timers handshake with the fake nodes, which never
#    answer, in bursts whatever the map does), and its waited-for children
#    (nft) from cutime+cstime; next to the same-length window with no change
#    (idle).
#    Median of --attaches.
#  - start-up from the saved map: the agent stopped, its interfaces and tables
#    removed, `agent run` started again and timed until every route and set
#    element is back.
#
#   sudo bash bench/agent_scale.sh [--nodes 100] [--per-node 100] [--attaches 9] [--no-build]
#
# Everything lives in namespaces named wvas<pid>-* and a temporary directory;
# both are removed on exit, also on failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES=100 PER=100 ATTACHES=9 BUILD=1
while (($#)); do
    case $1 in
    --nodes) NODES=$2; shift ;;
    --per-node) PER=$2; shift ;;
    --attaches) ATTACHES=$2; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "agent_scale.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "agent_scale.sh: needs root (network namespaces)" >&2; exit 1; }
for t in ip nft awk python3; do command -v $t >/dev/null || { echo "agent_scale.sh: needs $t" >&2; exit 1; }; done

export PATH=$HOME/.cargo/bin:$PATH
if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release"
    (cd "$ROOT" && cargo build --release -q -p weave-agent -p weave-coordinator -p weave-bench)
fi
BIN=${WEAVE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}

P=wvas$$
C=$P-c H=$P-h
DIR=$(mktemp -d /tmp/wvas$$.XXXXXX)
COORD="" AGENT=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $AGENT $COORD; do kill "$pid" 2>/dev/null || true; done
    for pid in $AGENT $COORD; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$H" 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$C"
ip netns add "$H"
ip link add vc netns "$C" type veth peer name vh netns "$H"
ip -n "$C" addr add 192.0.2.1/24 dev vc
ip -n "$H" addr add 192.0.2.2/24 dev vh
for ns in "$C" "$H"; do ip -n "$ns" link set lo up; done
ip -n "$C" link set vc up
ip -n "$H" link set vh up

ip netns exec "$C" env RUST_LOG=warn "$BIN/coordinator" serve --listen 192.0.2.1:6783 \
    --data-dir "$DIR/c" --first-token-uses 0 --metrics-listen off >"$DIR/c.out" 2>"$DIR/c.err" &
COORD=$!
for _ in $(seq 100); do grep -q '^join token' "$DIR/c.out" 2>/dev/null && break; sleep 0.1; done
TOKEN=$(sed -n 's/^join token (first start): //p' "$DIR/c.out" | tr -d ' ')
[[ -n $TOKEN ]] || { cat "$DIR/c.out" "$DIR/c.err" >&2; echo "no join token" >&2; exit 1; }
ADMIN=$DIR/c/admin.credential
TOTAL=$((NODES * PER))

echo "== $NODES fake nodes x $PER workloads"
ip netns exec "$C" "$BIN/cp-bench" remote-workloads --token "$TOKEN" --admin-file "$ADMIN" --nodes "$NODES" --per-node "$PER"

now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
routes() { ip -n "$H" -4 route show proto 87 | wc -l; }
elements() { ip netns exec "$H" nft list set inet weave remote0 2>/dev/null | grep -oE '10\.[0-9]+\.[0-9]+\.[0-9]+' | wc -l; }
# Waits until the agent routes $1 remote workloads (plus its subnet route) and holds them in its set.
converged() {
    local want=$1 deadline=$(($(date +%s) + 300))
    until [[ $(routes) -ge $((want + 1)) && $(elements) -ge $want ]]; do
        (($(date +%s) < deadline)) || { echo "the agent did not converge to $want workloads" >&2; tail -20 "$DIR/agent.err" >&2; exit 1; }
        sleep 0.2
    done
}
# utime+stime (ticks), threads' run time (ns), cutime+cstime (ticks) of the
# agent, and the run time of its threads but the data plane's (named wg-*:
# its packet threads and timers, which handshake with the fake nodes every
# few seconds whatever the map does) (ns).
cpu() {
    local stat sched control t
    stat=$(sed 's/.*) //' "/proc/$AGENT/stat")
    sched=$(cat /proc/"$AGENT"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}')
    control=0
    for t in /proc/"$AGENT"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == wg-* ]] && continue
        control=$((control + $(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0)))
    done
    echo "$stat" | awk -v s="$sched" -v c="$control" '{print $12 + $13, s, $14 + $15, c}'
}
TICK_MS=$((1000 / $(getconf CLK_TCK)))

echo "== agent join (snapshot of $TOTAL remote workloads)"
t0=$(now)
ip netns exec "$H" env WEAVE_TOKEN="$TOKEN" WEAVE_DOCKER_PLUGIN=off "$BIN/agent" join --name h --endpoint 192.0.2.2:6784 \
    --data-dir "$DIR/h" --socket "$DIR/h.sock" --metrics-listen off 2>>"$DIR/agent.err" &
AGENT=$!
converged "$TOTAL"
t1=$(now)
echo "joined and converged in $(minus "$t1" "$t0") s"
sleep 3

echo "== one more remote attach, $ATTACHES times"
rows=$DIR/rows
: >"$rows"
for i in $(seq "$ATTACHES"); do
    sleep 1
    read -r u0 s0 c0 k0 < <(cpu)
    w0=$(now)
    ip=$(ip netns exec "$C" "$BIN/cp-bench" allocate --admin-file "$ADMIN" --node "fake-$((i % NODES))" --container "extra-$i")
    until ip -n "$H" -4 route show "$ip/32" proto 87 | grep -q . &&
        ip netns exec "$H" nft get element inet weave remote0 "{ $ip }" >/dev/null 2>&1; do
        sleep 0.01
    done
    seen=$(now)
    sleep 1
    read -r u1 s1 c1 k1 < <(cpu)
    w1=$(now)
    len=$(minus "$w1" "$w0")
    # The same length with no change.
    read -r u2 s2 c2 k2 < <(cpu)
    sleep "$len"
    read -r u3 s3 c3 k3 < <(cpu)
    echo "$(((u1 - u0) * TICK_MS)) $(((s1 - s0) / 1000)) $(((c1 - c0) * TICK_MS)) $(((u3 - u2) * TICK_MS)) $(((s3 - s2) / 1000)) $(((c3 - c2) * TICK_MS)) $(minus "$seen" "$w0") $(((k1 - k0) / 1000)) $(((k3 - k2) / 1000))" >>"$rows"
    echo "attach $i ($ip): $(tail -1 "$rows")"
done
python3 - "$rows" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
col = lambda i: statistics.median(r[i] for r in rows)
print(f"median of {len(rows)} attaches (agent process; window = until its route and set element are in + 1 s):")
print(f"  utime+stime        : attach {col(0):7.1f} ms   idle window {col(3):7.1f} ms   (10 ms ticks)")
print(f"  threads' run time  : attach {col(1)/1000:7.2f} ms   idle window {col(4)/1000:7.2f} ms   attach - idle (per row, median) {statistics.median((r[1]-r[4])/1000 for r in rows):.2f} ms")
print(f"  control threads    : attach {col(7)/1000:7.2f} ms   idle window {col(8)/1000:7.2f} ms   attach - idle (per row, median) {statistics.median((r[7]-r[8])/1000 for r in rows):.2f} ms   (all but the data plane's wg-* threads)")
print(f"  children (nft)     : attach {col(2):7.1f} ms   idle window {col(5):7.1f} ms   (10 ms ticks)")
print(f"  allocation to route+element in the agent's namespace: {col(6)*1000:.0f} ms")
EOF

echo "== start-up from the saved map ($((TOTAL + ATTACHES)) remote workloads)"
kill -TERM "$AGENT"
wait "$AGENT" 2>/dev/null || true
AGENT=""
for l in $(ip -n "$H" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^wv(br|vx)-' || true); do
    ip -n "$H" link del "$l" 2>/dev/null || true
done
ip netns exec "$H" nft delete table inet weave 2>/dev/null || true
ip netns exec "$H" nft delete table bridge weave 2>/dev/null || true
[[ $(routes) == 0 ]] || { echo "routes left behind" >&2; exit 1; }
t0=$(now)
ip netns exec "$H" env WEAVE_DOCKER_PLUGIN=off "$BIN/agent" run --data-dir "$DIR/h" --socket "$DIR/h.sock" --metrics-listen off 2>>"$DIR/agent.err" &
AGENT=$!
converged $((TOTAL + ATTACHES))
t1=$(now)
read -r u s c _ < <(cpu)
printf 'start-up to every route and set element: %s s (agent CPU %d ms utime+stime, %d ms threads, children %d ms)\n' \
    "$(minus "$t1" "$t0")" $((u * TICK_MS)) $((s / 1000000)) $((c * TICK_MS))
