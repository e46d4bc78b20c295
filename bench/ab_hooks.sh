#!/bin/bash
# Experiments on weaveB's two hosts for bench/dataplane_ab.py (WVB_HOOK_B="bash bench/ab_hooks.sh MODE"),
# run once both agents are up. Round nineteen in bench/ROUNDS.md has what each measured.
#   usage: ab_hooks.sh MODE HOSTNS_A HOSTNS_B WORKLOADNS_A WORKLOADNS_B IP_B
# MODE:
#   bridge-bypass    routed IPv4 from the TUN straight to each workload's port (a /32 route, a
#                    permanent neighbour, a forward rule), not through the subnet's bridge
#   notrack          no connection tracking on either host (a raw-priority notrack chain)
#   no-br-netfilter  net.bridge.bridge-nf-call-{ip,ip6,arp}tables=0 in both hosts
#   empty-tables     weave's three nftables tables emptied: what all of its rules cost, an upper
#                    bound. Round nineteen ran it on agents of 6290966, which put back only deleted
#                    tables; since 397de3e the agents fill emptied ones again within 30 s, so run
#                    it with weaveB's agents from 6290966 (WVB_BIN_B) to repeat it
#   empty-inet       only `inet weave` emptied (its conntrack use goes with it; the same caveat)
#   inet-chains      every chain of `inet weave` emptied but `prerouting` (6 rules, which the agents'
#                    10 s check lists, so today's agents do not notice), emptied again every 20 s
#                    (their 5-minute full reload, a map change) by a loop that ends with the host's
#                    namespace: what the isolation rules of the forward, input and output paths cost
set -euo pipefail
mode=$1 ha=$2 hb=$3 wa=$4 wb=$5 ipb=$6
nsx() { ip netns exec "$@"; }

bypass() { # HOSTNS WORKLOADNS WORKLOADIP
    local mac port
    mac=$(ip -n "$2" -o link show ethwe | grep -o 'link/ether [0-9a-f:]*' | awk '{print $2}')
    port=$(nsx "$1" bridge fdb show | awk -v m="$mac" '$1 == m && /master/ {print $3; exit}')
    [ -n "$port" ] || { echo "ab_hooks: no port holds $mac in $1" >&2; exit 1; }
    ip -n "$1" neigh replace "$3" lladdr "$mac" dev "$port" nud permanent
    ip -n "$1" route replace "$3/32" dev "$port"
    nsx "$1" nft insert rule inet weave forward iifname wvtun0 oifname "$port" accept
}

case $mode in
bridge-bypass)
    ipa=$(ip -n "$wa" -4 -o addr show ethwe | awk '{print $4}' | cut -d/ -f1)
    bypass "$hb" "$wb" "$ipb"
    bypass "$ha" "$wa" "$ipa" ;;
notrack)
    for h in "$ha" "$hb"; do
        nsx "$h" nft -f - <<'N'
table inet wvab {
  chain pre { type filter hook prerouting priority raw; notrack; }
  chain out { type filter hook output priority raw; notrack; }
}
N
    done ;;
no-br-netfilter)
    for h in "$ha" "$hb"; do
        nsx "$h" sysctl -q -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
            net.bridge.bridge-nf-call-arptables=0
    done ;;
empty-tables | empty-inet)
    for h in "$ha" "$hb"; do
        nsx "$h" nft flush table inet weave
        if [ "$mode" = empty-tables ]; then
            nsx "$h" nft flush table bridge weave
            nsx "$h" nft flush table bridge weave_guard
        fi
    done ;;
inet-chains)
    flush_chains() { # HOSTNS: every base and regular chain of inet weave but prerouting
        local c
        for c in $(nsx "$1" nft list table inet weave | awk '$1 == "chain" && $2 != "prerouting" {print $2}'); do
            nsx "$1" nft flush chain inet weave "$c"
        done
    }
    for h in "$ha" "$hb"; do
        flush_chains "$h"
        # (Kept emptied while the namespace lives; ends with it, no PID to track.)
        (while sleep 20 && [ -e "/run/netns/$h" ]; do flush_chains "$h" 2>/dev/null || true; done) \
            > /dev/null 2>&1 < /dev/null &
    done ;;
*) echo "ab_hooks: unknown mode $mode" >&2; exit 2 ;;
esac
