#!/usr/bin/env bash
# Runs this vendored boringtun's own unit tests (among them those of weave's
# changes, WEAVE.md). The crate is not a member of weave's workspace (its
# dev-dependencies would join every build), so the tests run on a copy that
# is its own workspace, with this directory's Cargo.lock (`--locked`) and
# the build under weave's target/boringtun. deploy/test.sh runs this;
# arguments go to `cargo test` (e.g. `--features mock-instant`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$here/." "$copy/"
printf '\n[workspace]\n' >>"$copy/Cargo.toml"
sed -i "s|^path = \"../../aead\"\$|path = \"$root/aead\"|" "$copy/Cargo.toml"
grep -q "^path = \"$root/aead\"\$" "$copy/Cargo.toml" || {
    echo "vendor/boringtun/test.sh: no weave-aead path dependency to point at $root/aead" >&2
    exit 1
}
cargo test --locked --lib --manifest-path "$copy/Cargo.toml" --target-dir "$root/target/boringtun" "$@"
