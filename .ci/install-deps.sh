#!/usr/bin/env bash
# Everything the agent runs and the tests shell out to, from Debian's archive.
# Idempotent and non-interactive. The agent itself needs only nftables (`nft`,
# its firewall tables) and iproute2; the rest is for the tests and the demo
# (network namespaces, ping, capture, throughput, DNS queries).
set -euo pipefail
need=()
for pair in nft:nftables ip:iproute2 bridge:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 \
    pkill:procps sysctl:procps dig:bind9-dnsutils; do
    bin=${pair%%:*} pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
# The CNI test chains weave-cni with the standard portmap plugin.
[[ -x /usr/lib/cni/portmap ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
fi
