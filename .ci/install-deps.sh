#!/usr/bin/env bash
# Tools the end-to-end tests shell out to (network namespaces, ping, capture,
# throughput). Idempotent and non-interactive.
set -euo pipefail
need=()
for pair in ip:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 pkill:procps dig:bind9-dnsutils; do
    bin=${pair%%:*} pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
# The CNI test chains weave-cni with the standard portmap plugin.
[[ -x /usr/lib/cni/portmap ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
