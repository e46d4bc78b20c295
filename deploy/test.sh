#!/usr/bin/env bash
# Runs every weave test on this machine: installs what the tests need (Debian
# packages), checks formatting and lints, builds, and runs unit, gRPC, CLI and
# end-to-end tests. End-to-end tests build hosts out of network namespaces and
# need root; without root they are skipped by cargo's #[ignore] and this script
# says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    bash .ci/install-deps.sh
    ignored=(--include-ignored)
else
    echo "test.sh: not root: end-to-end tests (network namespaces) will be skipped" >&2
    ignored=()
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Kubernetes manifests against Kubernetes' schemas (oldest and newest minor).
bash deploy/check-manifests.sh
# Every fuzz target replays its saved corpus once (a regression check in
# seconds; the long runs are `bash fuzz/run.sh 600`, see fuzz/README.md).
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
bash fuzz/run.sh --replay
# One test binary at a time (each runs its tests in parallel): the end-to-end
# binaries each build several namespaces and share two cores.
cargo test --workspace --locked --no-fail-fast -- "${ignored[@]}"
# The coordinator's whole suite again on PostgreSQL: each test binary starts a
# throwaway server (initdb into a temporary directory, as the postgres user,
# a Unix socket only) and gives every coordinator a fresh database.
if [ "$(id -u)" = 0 ]; then
    WEAVE_TEST_STORE=postgres cargo test -p weave-coordinator --locked --no-fail-fast --tests -- "${ignored[@]}"
else
    echo "test.sh: not root: the coordinator's suite on PostgreSQL is skipped (it starts postgres via runuser)" >&2
fi
