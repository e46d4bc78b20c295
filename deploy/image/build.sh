#!/usr/bin/env bash
# Builds the weave image with podman, with no registry: the base is a minimal
# Debian made by debootstrap and `podman import`ed, the binaries are built on
# this host with cargo (see Containerfile for why), then `podman build`.
# Outside CI (it downloads a Debian base and makes a release build).
#
#   sudo deploy/image/build.sh          # -> localhost/weave:<version>, and an archive
#
# The binaries come from a committed revision (`git archive`, built in the work
# dir with its own target dir), never from uncommitted edits in the work tree:
# the image is what that commit says, and the image's label records it.
#
# Environment:
#   WEAVE_IMAGE_REF    the revision to build                         (HEAD)
#   WEAVE_IMAGE_WORK   work dir: podman storage, base rootfs, sources, archive (/var/tmp/weave-image)
#   WEAVE_IMAGE_TAG    image name                  (localhost/weave:<workspace version>)
#   DEBIAN_SUITE       base release; must match this host's glibc (bookworm)
#   DEBIAN_MIRROR      (http://deb.debian.org/debian)
#
# The image ends up in a private podman store under the work dir (so it never
# touches another store's driver settings) and as an OCI archive,
# $WEAVE_IMAGE_WORK/weave.oci.tar, for `podman load`, `ctr -n k8s.io images
# import` or `kind load image-archive` on cluster nodes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WEAVE_IMAGE_WORK:-/var/tmp/weave-image}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
REF=${WEAVE_IMAGE_REF:-HEAD}
COMMIT=$(git -C "$ROOT" rev-parse --verify "$REF^{commit}")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
TAG=${WEAVE_IMAGE_TAG:-localhost/weave:$VERSION}
# (The tag names what the base holds: one built before iptables was in it is not reused.)
BASE=localhost/weave-debian-base:$SUITE-iptables

[[ $(id -u) == 0 ]] || { echo "build.sh: needs root (debootstrap, podman's vfs store)" >&2; exit 1; }

need=()
for pair in debootstrap:debootstrap podman:podman runc:runc conmon:conmon strip:binutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}"
fi

mkdir -p "$WORK"
# This sandbox's constraints (and harmless elsewhere): crun cannot run with
# hybrid cgroups, so runc with cgroupfs; rlimits cannot be raised.
cat >"$WORK/containers.conf" <<'EOF'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
EOF
export CONTAINERS_CONF=$WORK/containers.conf
pod() { podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs "$@"; }

if ! pod image exists "$BASE"; then
    echo "== base: debootstrap $SUITE (minbase + nftables, iproute2, iptables)"
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=nftables,iproute2,iptables "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log"
    # What a slim image leaves out: package caches, lists, docs, man pages, locales.
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar --numeric-owner -C "$rootfs" -c . | pod import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

echo "== binaries: cargo build --release of $COMMIT (host toolchain)"
PATH=$HOME/.cargo/bin:$PATH
src=$WORK/src
# Same commit as last time: keep the tree (and its mtimes), so cargo has nothing to redo.
if [[ $(cat "$src/.weave-commit" 2>/dev/null) != "$COMMIT" ]]; then
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$ROOT" archive --format=tar "$COMMIT" | tar -x -C "$src"
    echo "$COMMIT" >"$src/.weave-commit"
fi
(cd "$src" && CARGO_TARGET_DIR=$WORK/target nice cargo build --release --locked \
    -p weave-coordinator -p weave-agent -p weavectl --bin coordinator --bin agent --bin weave-cni --bin weavectl)

ctx=$WORK/context
rm -rf "$ctx"
mkdir -p "$ctx/bin"
for b in coordinator agent weave-cni weavectl; do cp "$WORK/target/release/$b" "$ctx/bin/"; done
# The release profile keeps line tables (for backtraces on the host); in the
# image they would be 3/4 of its size. Symbols stay, so backtraces keep names.
strip --strip-debug "$ctx"/bin/*
cp "$src/deploy/kubernetes/weave-install-cni.sh" "$ctx/weave-install-cni"
chmod 0755 "$ctx/weave-install-cni"
# Kubernetes' conflist: no resolver in pods (cluster DNS binds port 53 in its own).
cp "$src/deploy/kubernetes/10-weave.conflist" "$ctx/10-weave.conflist"

echo "== podman build $TAG"
pod build --build-arg BASE="$BASE" --label org.opencontainers.image.revision="$COMMIT" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -t "$TAG" -f "$src/deploy/image/Containerfile" "$ctx"

echo "== smoke: every binary runs in the image"
for b in coordinator agent weavectl; do pod run --rm --network none "$TAG" "$b" --version; done
pod run --rm --network none "$TAG" sh -c 'nft --version && ip -V && iptables --version && test -x /usr/local/bin/weave-cni &&
    test -x /usr/local/bin/weave-install-cni && test -s /usr/local/share/weave/10-weave.conflist'

rm -f "$WORK/weave.oci.tar"
pod save --format oci-archive -o "$WORK/weave.oci.tar" "$TAG"
size=$(pod image inspect --format '{{.Size}}' "$TAG")
base_size=$(pod image inspect --format '{{.Size}}' "$BASE")
echo "== $TAG: $((size / 1000000)) MB (base $((base_size / 1000000)) MB); archive $WORK/weave.oci.tar ($(du -m "$WORK/weave.oci.tar" | cut -f1) MiB)"
