#!/usr/bin/env bash
# Data-plane benchmark: weave workload-to-workload next to plain veth,
# boringtun-cli and wireguard-go, all measured in the same run between two
# "hosts" that are network namespaces on one underlay bridge (192.0.2.0/24).
#
#   sudo bash bench/dataplane.sh [--repeat N] [--quick] [--json FILE]
#                                [--time SECONDS] [--udp-rate 500M]
#                                [--paths veth,boringtun,wggo,weave] [--no-build]
#                                [--ipv6]   (also weave over an IPv6-only underlay)
#
# Builds release binaries, installs missing tools (Debian packages and
# `cargo install boringtun-cli --locked`), then runs bench/dataplane.py, which
# does the measuring and prints the table. Everything lives in namespaces named
# wvb<pid>-* and in a temporary directory; both are removed on exit, also on
# failure or Ctrl-C. Nothing is configured in the machine's own namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=1
for a in "$@"; do
    case $a in
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    esac
done

[[ $(id -u) == 0 ]] || { echo "dataplane.sh: needs root (network namespaces)" >&2; exit 1; }

export PATH=$HOME/.cargo/bin:$PATH
missing=()
for pair in iperf3:iperf3 ping:iputils-ping ip:iproute2 wg:wireguard-tools wireguard-go:wireguard-go; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! boringtun-cli --version >/dev/null 2>&1; then
    echo "== cargo install boringtun-cli --locked (takes a few minutes)"
    cargo install boringtun-cli --locked
fi
if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release"
    (cd "$ROOT" && cargo build --release -q -p weave-agent -p weave-coordinator -p weavectl -p weave-bench)
fi

export WVB_PREFIX=wvb$$
export WVB_DIR
WVB_DIR=$(mktemp -d /tmp/wvb$$.XXXXXX)
export WVB_BIN=${WEAVE_BIN:-$ROOT/target/release}
PY=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PY ]]; then kill "$PY" 2>/dev/null || true; wait "$PY" 2>/dev/null || true; fi
    # Backstop for anything the Python side could not stop (it records every
    # pid it starts): only a pid still in one of this run's namespaces, as
    # every process it starts is; one that ended may be another's by now.
    if [[ -f $WVB_DIR/pids ]]; then
        local inodes=" " ns pid
        for ns in /run/netns/"$WVB_PREFIX"-*; do
            [[ -e $ns ]] && inodes+="$(stat -L -c %i "$ns") "
        done
        ours() { [[ $inodes == *" $(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) "* ]]; }
        while read -r pid; do ours "$pid" && { kill "$pid" 2>/dev/null || true; }; done <"$WVB_DIR/pids" || true
        sleep 0.3
        while read -r pid; do ours "$pid" && { kill -9 "$pid" 2>/dev/null || true; }; done <"$WVB_DIR/pids" || true
    fi
    for ns in $(ip netns list | awk '{print $1}' | grep "^$WVB_PREFIX-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f /var/run/wireguard/"$WVB_PREFIX"*.sock
    rm -rf "$WVB_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background and waited for, so that a TERM/INT runs the trap at once.
python3 "$ROOT/bench/dataplane.py" "$@" &
PY=$!
rc=0
wait "$PY" || rc=$?
PY=""
exit "$rc"
