#!/usr/bin/env bash
# Checks that tools/setup.sh works on the system Python as a newcomer finds it: a fresh copy of
# this checkout (committed files only), PYTHON=/usr/bin/python3 (on Debian 12 / Ubuntu 24.04 it is
# "externally managed", PEP 668, and refuses pip), then the installed command. Needs the network
# (apt-get, pip) unless everything is cached. Usage: tools/check_setup.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/usr/bin/python3}
[ -x "$PY" ] || { echo "check_setup: $PY not found" >&2; exit 2; }
managed=$("$PY" -c 'import sysconfig, pathlib; print(pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").is_file())')
echo "check_setup: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'), externally managed: $managed)"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
git archive --format=tar HEAD | tar -x -C "$dir"
# the data folder next to a checkout (../shared/data) is not needed: the demo uses shipped excerpts
(cd "$dir" && PYTHON="$PY" tools/setup.sh)
out=$(cd "$dir" && DRSN_STREAM_DURATION=5 .venv/bin/drsn-stream --source sim --headless 2>&1) || {
  echo "$out" | tail -20; echo "check_setup: the demo failed" >&2; exit 1; }
echo "$out" | grep -q "drsn-stream: ready" || { echo "$out" | tail -20; echo "check_setup: no ready line" >&2; exit 1; }
(cd "$dir" && .venv/bin/drsn-stream models | head -1 >/dev/null) || { echo "check_setup: models | head failed" >&2; exit 1; }
(cd "$dir" && .venv/bin/drsn-stream --config demo --once --duration 1 >/dev/null) || {
  echo "check_setup: the shipped config demo was not found" >&2; exit 1; }
echo "check_setup: OK: tools/setup.sh installed drsn-stream into a venv of $PY and the demo ran"
