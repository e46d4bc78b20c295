#!/usr/bin/env bash
# Data-plane benchmark (not a test): TCP throughput (iperf3, 10 s) and ping
# latency between two namespaces over
#   1. a plain veth pair (the ceiling),
#   2. boringtun-cli + wg (userspace WireGuard, layer 3, no VXLAN),
#   3. weave: workload -> bridge -> VXLAN -> agent WireGuard -> underlay,
# all in the same run, and prints weave's ratios to the other two.
#
#   sudo deploy/bench-dataplane.sh            # release build of weave
#   WEAVE_BENCH_SECS=5 sudo deploy/bench-dataplane.sh
#
# Needs iperf3, ping, and for (2) boringtun-cli (`cargo install boringtun-cli`)
# and wg (Debian wireguard-tools); (2) is skipped if they are missing.
# Namespaces are named wvbench-*; everything is removed at exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${WEAVE_BENCH_SECS:-10}
P=wvbench
RUNDIR=/tmp/weave-bench
[[ $(id -u) == 0 ]] || { echo "bench: needs root (network namespaces)" >&2; exit 1; }

cleanup() {
    WEAVE_DEMO_PREFIX=$P-w WEAVE_DEMO_DIR=$RUNDIR/weave "$ROOT/deploy/demo.sh" --down >/dev/null 2>&1 || true
    for pid in $(cat "$RUNDIR"/bt.pids 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
    rm -rf "$RUNDIR"
}
trap cleanup EXIT
cleanup
mkdir -p "$RUNDIR"

# throughput_mbit <client ns> <server ns> <server ip>
throughput() {
    ip netns exec "$2" iperf3 -s -1 -D -B "$3" >/dev/null
    sleep 0.5
    ip netns exec "$1" iperf3 -c "$3" -t "$SECS" -f m | awk '/receiver/ {print $(NF-2)}'
}
# latency_ms <client ns> <ip>: average of 50 pings
latency() {
    ip netns exec "$1" ping -c 50 -i 0.02 -q "$2" | awk -F/ '/rtt/ {print $5}'
}
pair() { # ns-a ns-b ip-a ip-b: a veth between two new namespaces
    ip netns add "$1"; ip netns add "$2"
    ip -n "$1" link add eth0 type veth peer name eth0 netns "$2"
    ip -n "$1" addr add "$3/24" dev eth0; ip -n "$2" addr add "$4/24" dev eth0
    for ns in "$1" "$2"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
}

echo "building weave (release)…"
(cd "$ROOT" && cargo build -q --release -p weave-coordinator -p weave-agent)

echo "== plain veth"
pair $P-va $P-vb 192.0.2.1 192.0.2.2
VETH_T=$(throughput $P-va $P-vb 192.0.2.2)
VETH_L=$(latency $P-va 192.0.2.2)

BT_T="" BT_L=""
if command -v boringtun-cli >/dev/null && command -v wg >/dev/null; then
    echo "== boringtun-cli"
    pair $P-ba $P-bb 192.0.2.1 192.0.2.2
    ka=$(wg genkey) kb=$(wg genkey)
    for side in a b; do
        ns=$P-b$side
        # UAPI sockets live in /var/run/wireguard/<name>.sock (shared by all
        # namespaces), so the two interfaces need different names.
        ip netns exec "$ns" env WG_SUDO=1 boringtun-cli --disable-drop-privileges -f "wvb$side" >/dev/null 2>&1 &
        echo $! >>"$RUNDIR/bt.pids"
    done
    sleep 1
    ip netns exec $P-ba wg set wvba listen-port 51820 private-key <(echo "$ka") \
        peer "$(echo "$kb" | wg pubkey)" endpoint 192.0.2.2:51820 allowed-ips 10.99.0.2/32
    ip netns exec $P-bb wg set wvbb listen-port 51820 private-key <(echo "$kb") \
        peer "$(echo "$ka" | wg pubkey)" endpoint 192.0.2.1:51820 allowed-ips 10.99.0.1/32
    ip -n $P-ba addr add 10.99.0.1/24 dev wvba; ip -n $P-ba link set wvba mtu 1420 up
    ip -n $P-bb addr add 10.99.0.2/24 dev wvbb; ip -n $P-bb link set wvbb mtu 1420 up
    ip netns exec $P-ba ping -c3 -W2 10.99.0.2 >/dev/null
    BT_T=$(throughput $P-ba $P-bb 10.99.0.2)
    BT_L=$(latency $P-ba 10.99.0.2)
else
    echo "== boringtun-cli: skipped (install boringtun-cli and wireguard-tools)"
fi

echo "== weave (coordinator + 2 agents, workload to workload)"
WEAVE_DEMO_PREFIX=$P-w WEAVE_DEMO_DIR=$RUNDIR/weave WEAVE_DEMO_HOSTS=2 WEAVE_BIN=$ROOT/target/release \
    "$ROOT/deploy/demo.sh" --keep >"$RUNDIR/demo.log" 2>&1 || { cat "$RUNDIR/demo.log"; exit 1; }
W2=$(ip -n $P-w-w2 -4 -o addr show dev ethwe | awk '{print $4}' | cut -d/ -f1)
WV_T=$(throughput $P-w-w1 $P-w-w2 "$W2")
WV_L=$(latency $P-w-w1 "$W2")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
printf '%-16s %14s %14s\n' "path" "TCP Mbit/s" "ping avg ms"
printf '%-16s %14s %14s\n' "veth" "$VETH_T" "$VETH_L"
[[ -n $BT_T ]] && printf '%-16s %14s %14s\n' "boringtun-cli" "$BT_T" "$BT_L"
printf '%-16s %14s %14s\n' "weave" "$WV_T" "$WV_L"
echo
echo "weave / veth throughput:           $(ratio "$WV_T" "$VETH_T")"
[[ -n $BT_T ]] && echo "weave / boringtun-cli throughput:  $(ratio "$WV_T" "$BT_T")"
[[ -n $BT_T ]] && echo "weave / boringtun-cli latency:     $(ratio "$WV_L" "$BT_L")"
exit 0
