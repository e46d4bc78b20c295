#!/usr/bin/env bash
# The DaemonSet's `install-cni` container (shipped in the image as
# /usr/local/bin/weave-install-cni): waits until this node's agent is ready,
# then installs weave-cni into <root>/opt/cni/bin and writes
# <root>/etc/cni/net.d/10-weave.conflist, each atomically (temporary file in
# the same directory, then rename), and stays running so that the pod's
# lifetime matches the agent's.
#
# Why wait: a container runtime marks the node's network ready as soon as any
# conflist exists in its directory, and the scheduler then sends pods here.
# Before the agent has joined and holds its watch on the coordinator, or
# while a plugin the conflist chains (portmap, bandwidth) is missing from the
# CNI bin directory, every one of those pods would fail its CNI ADD.
#
#   weave-install-cni            wait, install, stay running (the container command)
#   weave-install-cni --once     wait, install, exit 0
#   weave-install-cni --check    exit 0 if the agent is ready now, 1 otherwise
#                                (the agent container's readiness probe)
#
# Environment (defaults are the paths inside the DaemonSet's pod):
#   WEAVE_HOST_ROOT        where the host's root is mounted            (/host)
#   WEAVE_AGENT_SOCKET     the agent's local API                       (/run/weave/agent.sock)
#   WEAVE_AGENT_BIN        the agent binary (runs `agent status`)      (agent, from PATH)
#   WEAVE_READY_URL        optional http://host:port/path answering 200 when the
#                          agent is ready (e.g. http://127.0.0.1:6782/readyz);
#                          either check passing means ready
#   WEAVE_CNI_PLUGIN       the weave-cni binary to install             (/usr/local/bin/weave-cni)
#   WEAVE_CNI_CONFLIST     the conflist to install                     (/usr/local/share/weave/10-weave.conflist)
#   WEAVE_CNI_BIN_DIR      under the root                              (/opt/cni/bin)
#   WEAVE_CNI_CONF_DIR     under the root                              (/etc/cni/net.d)
#   WEAVE_CNI_PLUGIN_DIRS  under the root, `:`-separated: where the runtime finds
#                          the plugins the conflist chains (CRI-O's plugin_dirs,
#                          containerd's bin_dirs; mount them)   (WEAVE_CNI_BIN_DIR)
#   WEAVE_READY_INTERVAL   seconds between readiness checks            (2)
set -euo pipefail

ROOT=${WEAVE_HOST_ROOT:-/host}
SOCKET=${WEAVE_AGENT_SOCKET:-/run/weave/agent.sock}
AGENT=${WEAVE_AGENT_BIN:-agent}
READY_URL=${WEAVE_READY_URL:-}
PLUGIN=${WEAVE_CNI_PLUGIN:-/usr/local/bin/weave-cni}
CONFLIST=${WEAVE_CNI_CONFLIST:-/usr/local/share/weave/10-weave.conflist}
BIN_DIR=$ROOT${WEAVE_CNI_BIN_DIR:-/opt/cni/bin}
CONF_DIR=$ROOT${WEAVE_CNI_CONF_DIR:-/etc/cni/net.d}
PLUGIN_DIRS=${WEAVE_CNI_PLUGIN_DIRS:-${WEAVE_CNI_BIN_DIR:-/opt/cni/bin}}
INTERVAL=${WEAVE_READY_INTERVAL:-2}

log() { echo "weave-install-cni: $*" >&2; }

# Ready = the agent answers on its socket and its watch on the coordinator is
# open (it has joined and holds the current network map). An agent that answers
# but runs from its saved map with the coordinator unreachable is not ready.
# Within 3 s: an agent that accepts and never answers held the script, and
# bash runs no trap (SIGTERM) until the command it waits for ends (found by
# a review, 2026-12-06).
agent_ready() {
    local out
    out=$(timeout 3 "$AGENT" status --json --socket "$SOCKET" 2>/dev/null) || return 1
    [[ $out =~ \"coordinator_connected\":[[:space:]]*true ]]
}

# GET over bash's /dev/tcp: the image carries no HTTP client.
url_ready() {
    [[ -n $READY_URL ]] || return 1
    local rest=${READY_URL#http://} hostport path status
    hostport=${rest%%/*}
    path=/${rest#*/}
    [[ $rest == */* ]] || path=/
    # shellcheck disable=SC2016 # the inner bash expands them, from its arguments
    status=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$1" >&3
        IFS= read -r line <&3 && printf "%s" "$line"' _ "$hostport" "$path" 2>/dev/null) || return 1
    [[ $status =~ ^HTTP/[0-9.]+\ 200 ]]
}

ready() { agent_ready || url_ready; }

# Copies $1 to $2 through a temporary file in $2's directory, then renames:
# a runtime reading the directory sees either nothing or the whole file.
# The file being written, for the SIGTERM trap to remove.
partial=
install_atomic() {
    local src=$1 dst=$2 mode=$3
    partial=$(dirname "$dst")/.$(basename "$dst").weave-tmp.$$
    cp "$src" "$partial"
    chmod "$mode" "$partial"
    mv -f "$partial" "$dst"
    partial=
}

case "${1:-}" in
--check) ready; exit ;;
--once | "") ;;
*) echo "usage: $0 [--once|--check]" >&2; exit 2 ;;
esac

[[ -x $PLUGIN ]] || { log "no executable weave-cni at $PLUGIN"; exit 1; }
[[ -r $CONFLIST ]] || { log "no conflist at $CONFLIST"; exit 1; }

# SIGTERM ends it at once, also while it waits: as the container's PID 1
# without a handler it was ignored (the kernel drops it), and a pod whose
# agent waited for its token or coordinator took its whole grace period to
# stop. Every sleep runs in the background so that the trap runs at once.
# Stopped before both files are in place it exits 143, as a shell killed by
# SIGTERM does (`--once` must not pass for installed), leaving no partial
# file; once they are, 0.
sleeper= installed=
stop() {
    [[ -n $sleeper ]] && kill "$sleeper" 2>/dev/null
    [[ -n $partial ]] && rm -f "$partial"
    [[ -n $installed ]] && exit 0
    exit 143
}
trap stop TERM INT
nap() {
    sleep "$1" &
    sleeper=$!
    wait "$sleeper" || true
}

# The plugins the conflist chains after weave-cni (portmap, bandwidth). A
# runtime marks the node's network ready once the conflist loads, and finds
# a missing plugin only at each pod's ADD ("failed to find plugin
# \"bandwidth\" in path"): the node looked Ready and no pod started on it
# (found by a review, 2026-12-07). They are waited for as the agent is.
chained=$(grep -o '"type"[[:space:]]*:[[:space:]]*"[^"]*"' "$CONFLIST" | sed 's/.*"\([^"]*\)"$/\1/' | grep -vx weave-cni || true)
lacking() {
    local p d found out=() dirs
    IFS=: read -ra dirs <<<"$PLUGIN_DIRS"
    for p in $chained; do
        found=
        for d in "${dirs[@]}"; do [[ -x $ROOT$d/$p ]] && found=1; done
        [[ -n $found ]] || out+=("$p")
    done
    echo "${out[*]}"
}

log "waiting for the agent (socket $SOCKET${READY_URL:+, $READY_URL}) before installing the CNI config"
waited=0 said=
while :; do
    if ready; then
        missing=$(lacking)
        [[ -z $missing ]] && break
        why="the conflist chains CNI plugins missing from $PLUGIN_DIRS: $missing (install the containernetworking plugins there, or name the runtime's plugin directories in WEAVE_CNI_PLUGIN_DIRS)"
    else
        why="agent not ready yet"
    fi
    # At once when the reason changes, then every 30 s.
    if [[ $why != "$said" ]] || ((waited % 30 == 0)); then log "$why (${waited}s)"; fi
    said=$why
    nap "$INTERVAL"
    waited=$((waited + INTERVAL))
done

mkdir -p "$BIN_DIR" "$CONF_DIR"
# The plugin first: the conflist makes the runtime call it at once.
install_atomic "$PLUGIN" "$BIN_DIR/weave-cni" 0755
install_atomic "$CONFLIST" "$CONF_DIR/10-weave.conflist" 0644
installed=1
log "agent ready: installed $BIN_DIR/weave-cni and $CONF_DIR/10-weave.conflist"

[[ ${1:-} == --once ]] && exit 0

# Stay up with the agent. The conflist is left in place on exit: removing it
# would mark the node's network unready during every agent upgrade, while the
# interfaces of running pods survive an agent restart.
while :; do
    nap 3600
done
