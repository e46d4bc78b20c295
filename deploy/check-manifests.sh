#!/usr/bin/env bash
# Validates deploy/kubernetes offline against Kubernetes' own schemas
# (kubernetes-validate from PyPI, strict: unknown fields are errors) for the
# oldest and the newest Kubernetes minor that kubernetes-validate knows.
# Every resource listed in kustomization.yaml is checked, and every YAML file
# in the folder must be listed there (a forgotten file would never be applied).
# Also checks the DaemonSet's CNI installer with bash -n.
#
#   deploy/check-manifests.sh
#
# The tool lives in a venv under $WEAVE_VENV_DIR (default
# ${XDG_CACHE_HOME:-~/.cache}/weave/manifests-venv), made on first run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/deploy/kubernetes
VENV=${WEAVE_VENV_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/weave/manifests-venv}
# Pinned: a new release brings new Kubernetes versions, so a run stays
# reproducible until this line changes.
TOOL=kubernetes-validate==1.37.0

if ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null </dev/null; then
    echo "check-manifests: installing $TOOL into $VENV" >&2
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        # Debian splits venv/ensurepip out of python3.
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq </dev/null
            apt-get install -y -qq --no-install-recommends python3-venv </dev/null
        else
            echo "check-manifests: python3's venv module is missing (Debian: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" </dev/null
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input "$TOOL" </dev/null
fi

# The resources the kustomization applies, in its order; fails on a listed
# file that is missing and on a YAML file in the folder that is not listed.
mapfile -t files < <("$VENV/bin/python" - "$DIR" <<'EOF'
import os, sys, yaml
d = sys.argv[1]
with open(os.path.join(d, "kustomization.yaml")) as f:
    listed = yaml.safe_load(f)["resources"]
present = sorted(n for n in os.listdir(d) if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml")
bad = [n for n in listed if not os.path.isfile(os.path.join(d, n))]
bad += [f"{n} (not in kustomization.yaml)" for n in present if n not in listed]
if bad:
    sys.exit("check-manifests: " + ", ".join(bad))
print("\n".join(os.path.join(d, n) for n in listed))
EOF
)
((${#files[@]})) || exit 1

read -r oldest newest < <("$VENV/bin/python" -c '
from kubernetes_validate.utils import all_versions
v = sorted(set(all_versions()), key=lambda s: tuple(int(x) for x in s.split(".")))
print(v[0], v[-1])')

for version in "$oldest" "$newest"; do
    echo "check-manifests: Kubernetes $version: ${files[*]##*/}"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${files[@]}" </dev/null
done

bash -n "$DIR/weave-install-cni.sh"
echo "check-manifests: ok (Kubernetes $oldest and $newest)"
