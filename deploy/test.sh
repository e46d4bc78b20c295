#!/usr/bin/env bash
# Runs every weave test on this machine: installs what the tests need (Debian
# packages), checks formatting and lints, builds, and runs unit, gRPC, CLI and
# end-to-end tests. End-to-end tests build hosts out of network namespaces and
# need root; without root they are skipped by cargo's #[ignore] and this script
# says so.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages install while the lints compile (neither needs the
# other; on a fresh machine each takes minutes).
deps_pid=
if [ "$(id -u)" = 0 ]; then
    deps_log=$(mktemp)
    bash .ci/install-deps.sh >"$deps_log" 2>&1 &
    deps_pid=$!
    # A lint failure must not leave apt running (or its lock held) behind us.
    trap '[ -n "$deps_pid" ] && wait "$deps_pid" 2>/dev/null; rm -f "$deps_log"' EXIT
    ignored=(--include-ignored)
else
    echo "test.sh: not root: end-to-end tests (network namespaces) will be skipped" >&2
    ignored=()
fi

cargo fmt --all -- --check
# Each phase's end, in seconds since the start (where CI's time goes).
phase() { echo "test.sh: $1 done at ${SECONDS} s"; }
cargo clippy --workspace --all-targets --locked -- -D warnings
phase clippy
# The code's own docs (private items too): no broken link, no stray HTML.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked
phase docs
if [ -n "$deps_pid" ]; then
    deps_ok=0
    wait "$deps_pid" || deps_ok=$?
    deps_pid=
    cat "$deps_log"
    [ "$deps_ok" = 0 ] || { echo "test.sh: .ci/install-deps.sh failed ($deps_ok)" >&2; exit 1; }
fi
# The Kubernetes manifests against Kubernetes' schemas (oldest and newest minor).
bash deploy/check-manifests.sh
phase "packages and manifests"
# Every fuzz target's saved corpus is replayed by the test run below
# (agent/tests/fuzz_corpus.rs: the targets' bodies in the ordinary test
# build); the long runs, under libFuzzer and ASan, are `bash fuzz/run.sh 600`.
# Every test binary built once, for the whole workspace (features unified
# as in `cargo test --workspace`), then run by deploy/run-tests.py: three at
# a time (an end-to-end binary spends most of its time waiting on its
# namespaces), the ones that load the machine alone; the coordinator's suite
# a second time on PostgreSQL from these same binaries (`cargo test -p`
# would resolve features for one package and rebuild half the
# dependencies): each of those binaries starts a throwaway server (initdb
# into a temporary directory, as the postgres user, a Unix socket only) and
# gives every coordinator a fresh database.
artifacts=$(cargo test --workspace --locked --no-run --message-format=json-render-diagnostics)
phase "test build"
cargo test --workspace --locked --doc
phase "doc tests"
# The vendored boringtun's own unit tests (its rate limiter and timers carry
# weave's changes; vendor/boringtun/WEAVE.md): not a workspace member.
bash vendor/boringtun/test.sh
# And those on a mock clock (its timers' rekeys, weave's idle-tunnel rule).
bash vendor/boringtun/test.sh --features mock-instant
phase "boringtun's tests"
postgres=()
if [ "$(id -u)" = 0 ]; then
    postgres=(--postgres weave-coordinator)
else
    echo "test.sh: not root: the coordinator's suite on PostgreSQL is skipped (it starts postgres via runuser)" >&2
fi
python3 deploy/run-tests.py --lanes 3 "${postgres[@]}" -- "${ignored[@]}" <<<"$artifacts"
phase tests
