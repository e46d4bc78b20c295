#!/usr/bin/env python3
"""The test executables of one workspace package, from the JSON messages of
`cargo test --workspace --no-run --message-format=json-render-diagnostics`
on stdin: one path per line (its unit tests and its tests/*.rs binaries),
in cargo's order. deploy/test.sh runs the coordinator's a second time on
PostgreSQL from these, without rebuilding."""
import json
import sys

package = sys.argv[1]
seen = []
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m.get("profile", {}).get("test"):
        continue
    # package_id: "path+file:///…/coordinator#weave-coordinator@0.1.0"
    if f"#{package}@" not in m.get("package_id", "") and not m.get("package_id", "").startswith(f"{package} "):
        continue
    if m["executable"] not in seen:
        seen.append(m["executable"])
if not seen:
    sys.exit(f"test-binaries.py: no test executables of {package} in cargo's messages")
print("\n".join(seen))
