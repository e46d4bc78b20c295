#!/usr/bin/env bash
# Everything the agent runs and the tests shell out to, from Debian's archive.
# Idempotent and non-interactive. The agent itself needs nftables (`nft`,
# its firewall tables; it builds interfaces over netlink, so iproute2 is only for
# looking at them); the rest is for the tests and the demo
# (network namespaces, ping, capture, throughput, DNS queries).
set -euo pipefail
# No service starts in this machine's own namespace as its package installs
# (docker.io would start dockerd there: docker0, its NAT rules, its plugin
# directory; postgresql a system cluster): the tests start their own
# daemons, inside their namespaces and temporary directories. Debian's
# policy-rc.d protocol, only while this runs, and only where none is set.
if [[ $(id -u) == 0 && ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# .ci/install-deps.sh: no service starts while it installs\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
need=()
for pair in nft:nftables ip:iproute2 bridge:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 \
    pkill:procps sysctl:procps dig:bind9-dnsutils iptables:iptables; do
    bin=${pair%%:*} pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
# The CNI test chains weave-cni with the standard portmap and bandwidth plugins.
[[ -x /usr/lib/cni/portmap ]] || need+=(containernetworking-plugins)
# e2e_podman: podman (CNI backend) with runc, and a busybox image made from busybox-static.
for pair in podman:podman runc:runc conmon:conmon; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# The image is /bin/busybox alone, so it must be the static build: Debian's
# `busybox` package (dynamically linked, on some fresh machines) replaced.
if ! [[ -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then need+=(busybox-static); fi
# Not here: the image build (deploy/image/build.sh, outside CI) installs its
# own tools when run: debootstrap, podman, runc, conmon, binutils.
# e2e_docker: Debian's dockerd (docker.io, 20.10) on two simulated hosts, the
# agent as its network and IPAM plugin (nsenter and unshare: util-linux).
# docker.io brings containerd, runc and iptables (Docker's DNS rules inside containers).
command -v dockerd >/dev/null 2>&1 && [[ -x /usr/bin/docker ]] || need+=(docker.io)
# Prometheus scrapes the daemons in e2e_prometheus (promtool checks the exposition).
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The automation test runs Python's grpcio from a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
fi

# Python clients for the automation test (coordinator/tests/python_automation.rs):
# grpcio and grpcio-reflection from PyPI in a venv of their own.
venv=${WEAVE_TEST_VENV:-/opt/weave-test/venv}
if ! "$venv/bin/python3" -c 'import grpc, grpc_reflection, google.protobuf' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-reflection protobuf
fi

# --- PostgreSQL store (issue 14) ---------------------------------------------
# The coordinator's suite runs a second time on PostgreSQL, and its store
# tests start throwaway servers: initdb into a temporary directory as the
# `postgres` user, a Unix socket in that directory (coordinator/tests/common/pg.rs).
# Debian's postgresql brings initdb/postgres/pg_dump under
# /usr/lib/postgresql/<major>/bin and the postgres user; no system cluster is used.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql
fi
