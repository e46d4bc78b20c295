#!/usr/bin/env bash
# weave on one machine: a coordinator and 3 agents, each host a network
# namespace on an underlay bridge (192.0.2.0/24), one workload per host on the
# default subnet; pings between the workloads, prints every agent's status,
# then tears everything down.
#
#   sudo deploy/demo.sh           # run, print, tear down
#   sudo deploy/demo.sh --keep    # leave it running (and say how to stop it)
#   sudo deploy/demo.sh --down    # tear down a kept demo
#
# Everything lives in namespaces named $WEAVE_DEMO_PREFIX-* (default wvdemo)
# and in $WEAVE_DEMO_DIR (default /tmp/weave-demo, /tmp/weave-demo-<prefix>
# with another prefix: two demos never share one); nothing touches the
# host's own namespace.
set -euo pipefail

P=${WEAVE_DEMO_PREFIX:-wvdemo}
if [[ $P == wvdemo ]]; then DIR=${WEAVE_DEMO_DIR:-/tmp/weave-demo}; else DIR=${WEAVE_DEMO_DIR:-/tmp/weave-demo-$P}; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${WEAVE_BIN:-$ROOT/target/debug}
HOSTS=${WEAVE_DEMO_HOSTS:-3}
# Host i is 192.0.2.1<i>; two at least: the demo is traffic between hosts.
[[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 2 && HOSTS <= 99)) ||
    { echo "demo.sh: WEAVE_DEMO_HOSTS must be 2 to 99 (was '$HOSTS')" >&2; exit 2; }

# The demo's own processes still running: a pid that is not a weave
# coordinator or agent of this demo's directory any more is another's by now
# (pids are reused; another demo's or a test's agent was signalled).
ours() {
    [[ -f $DIR/pids ]] || return 0
    local cmd
    while read -r pid; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        [[ $cmd =~ ^[^\ ]*(coordinator|agent)\  && $cmd == *" $DIR/"* ]] && echo "$pid"
    done <"$DIR/pids"
    return 0
}

down() {
    local pids
    pids=$(ours)
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    # Up to 5 s to stop as a service manager would let them, then SIGKILL.
    for _ in $(seq 50); do
        [[ -n $(ours) ]] || break
        sleep 0.1
    done
    for pid in $(ours); do kill -9 "$pid" 2>/dev/null || true; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
        ip netns del "$ns"
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$DIR"
}

case "${1:-}" in
--down) down; echo "demo removed"; exit 0 ;;
--keep) KEEP=1 ;;
"") KEEP=0 ;;
*) echo "usage: $0 [--keep|--down]" >&2; exit 2 ;;
esac

[[ $(id -u) == 0 ]] || { echo "demo.sh: needs root (network namespaces)" >&2; exit 1; }
if ip netns list | grep -q "^$P-"; then
    echo "demo.sh: a demo is already up ($P-*); remove it with: $0 --down" >&2
    exit 1
fi
[[ $KEEP == 1 ]] || trap down EXIT

# A fresh machine: the tools the demo runs (ip, ping), then the binaries.
bash "$ROOT/.ci/install-deps.sh"
if [[ -z ${WEAVE_BIN:-} ]]; then
    (cd "$ROOT" && cargo build -q -p weave-coordinator -p weave-agent -p weavectl)
fi
mkdir -p "$DIR"
: >"$DIR/pids"

# Underlay: a bridge in its own namespace; each host plugs one veth into it.
ip netns add "$P-u"
ip -n "$P-u" link add br0 type bridge
ip -n "$P-u" link set br0 up
plug() { # namespace, port name, address
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip -n "$P-u" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$P-u" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "demo.sh: timed out waiting for $what" >&2
    return 1
}

echo "== coordinator in $P-c (192.0.2.2:6783)"
plug "$P-c" c 192.0.2.2
# Its output holds the first-start join token: 0600, as the token files.
(umask 077; exec ip netns exec "$P-c" "$BIN/coordinator" serve --listen 192.0.2.2:6783 --data-dir "$DIR/coordinator" \
    >"$DIR/coordinator.out" 2>"$DIR/coordinator.log" </dev/null) &
echo $! >>"$DIR/pids"
wait_for "the coordinator" grep -q "join token" "$DIR/coordinator.out"
# The first-start token is single-use: one token for all the demo's hosts,
# in a 0600 file, so that it is on no command line (`ps` shows those).
(umask 077; ip netns exec "$P-c" "$BIN/weavectl" --data-dir "$DIR/coordinator" \
    token create --uses "$HOSTS" --ttl 1h --description demo | sed -n 1p >"$DIR/token")

for i in $(seq $HOSTS); do
    echo "== agent h$i in $P-h$i (192.0.2.1$i)"
    plug "$P-h$i" "h$i" "192.0.2.1$i"
    # No Docker plugin: the simulated hosts share this machine's /run, and
    # its dockerd (if any) must not find a demo agent's plugin there.
    ip netns exec "$P-h$i" "$BIN/agent" join --token-file "$DIR/token" --name "h$i" --endpoint "192.0.2.1$i:6784" \
        --data-dir "$DIR/h$i" --socket "$DIR/h$i.sock" --docker-plugin off >"$DIR/h$i.log" 2>&1 </dev/null &
    echo $! >>"$DIR/pids"
done

declare -a IPS
for i in $(seq $HOSTS); do
    wait_for "agent h$i" "$BIN/agent" status --socket "$DIR/h$i.sock"
    # A "container": a namespace that resolves through the agent (127.0.0.11),
    # attached while running, as `weave attach` did.
    ip netns add "$P-w$i"
    mkdir -p "/etc/netns/$P-w$i"
    echo "nameserver 127.0.0.11" >"/etc/netns/$P-w$i/resolv.conf"
    wait_for "w$i attached" "$BIN/weavectl" --socket "$DIR/h$i.sock" attach --name "w$i" "/run/netns/$P-w$i"
    addrs=$("$BIN/weavectl" --socket "$DIR/h$i.sock" attach --name "w$i" "/run/netns/$P-w$i")
    IPS[i]=${addrs%%/*}
    echo "== weavectl attach --name w$i on h$i: $addrs"
done

echo "== pings between workloads"
for a in $(seq $HOSTS); do
    for b in $(seq $HOSTS); do
        [[ $a == "$b" ]] && continue
        wait_for "w$a -> w$b" ip netns exec "$P-w$a" ping -c1 -W1 "${IPS[b]}"
        printf 'w%s -> w%s (%s): ' "$a" "$b" "${IPS[b]}"
        ip netns exec "$P-w$a" ping -c3 -i0.2 -q "${IPS[b]}" | tail -1
        printf 'w%s -> w%s by name: ' "$a" "$b"
        wait_for "w$a resolving w$b" ip netns exec "$P-w$a" ping -c1 -W1 "w$b"
        ip netns exec "$P-w$a" ping -c1 -W1 "w$b" | sed -n 1p
    done
done

echo "== egress: a subnet whose workloads leave through their own host"
# An outside machine on the underlay that never joined, and a subnet with
# egress: a container attached there gets a default route through its
# host, which masquerades it; the default subnet (no egress) stays inside.
plug "$P-o" o 192.0.2.100
# The host routes for its workloads: IPv4 forwarding, which the agent leaves
# to the admin (Docker and Kubernetes nodes have it on already).
ip netns exec "$P-h1" sysctl -qw net.ipv4.ip_forward=1
ADMIN=(ip netns exec "$P-c" "$BIN/weavectl" --data-dir "$DIR/coordinator")
"${ADMIN[@]}" subnet add 10.40.0.0/24 --name out --egress
ip netns add "$P-e1"
out=$("$BIN/weavectl" --socket "$DIR/h1.sock" attach --name e1 net:out "/run/netns/$P-e1")
echo "e1 on h1: $out, $(ip -n "$P-e1" route show default)"
wait_for "e1 -> outside" ip netns exec "$P-e1" ping -c1 -W1 192.0.2.100
printf 'e1 -> 192.0.2.100 (outside, never joined): '
ip netns exec "$P-e1" ping -c3 -i0.2 -q 192.0.2.100 | tail -1
if ip netns exec "$P-w1" ping -c1 -W1 192.0.2.100 >/dev/null 2>&1; then
    echo "demo.sh: w1 (default subnet, no egress) reached the outside" >&2
    exit 1
fi
echo "w1 -> 192.0.2.100: no route out (the default subnet has no egress), as it should"

for i in $(seq $HOSTS); do
    echo "== agent status h$i"
    "$BIN/agent" status --socket "$DIR/h$i.sock"
done
echo "== weavectl status (on the coordinator host)"
ip netns exec "$P-c" "$BIN/weavectl" --data-dir "$DIR/coordinator" status
ip netns exec "$P-c" "$BIN/weavectl" --data-dir "$DIR/coordinator" node ls
ip netns exec "$P-c" "$BIN/weavectl" --data-dir "$DIR/coordinator" ipam ls

if [[ $KEEP == 1 ]]; then
    # The tear-down line names this demo's prefix and directory: run bare,
    # --down would take the default demo's (someone else's) and leave this one.
    cat <<MSG
== the demo stays up
  workloads:   ip netns exec $P-w1 ping ${IPS[2]}
  agent:       $BIN/agent status --socket $DIR/h1.sock   (h1..h$HOSTS: $DIR/h<i>.sock, logs $DIR/h<i>.log)
  admin:       ip netns exec $P-c $BIN/weavectl --data-dir $DIR/coordinator status
  gRPC:        192.0.2.2:6783 from namespace $P-c (or any host's), credential $DIR/coordinator/admin.credential,
               certificate $DIR/coordinator/tls/coordinator.crt
  tear down:   WEAVE_DEMO_PREFIX=$P WEAVE_DEMO_DIR=$DIR $0 --down
MSG
fi
