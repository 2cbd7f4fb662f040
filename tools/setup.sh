#!/usr/bin/env bash
# Installs drsn-stream into a virtual environment .venv in the repository (re-used if present), so
# it works on a stock Debian/Ubuntu Python that refuses system-wide pip installs (PEP 668). Usage:
#   tools/setup.sh          runtime: PortAudio, torch, the package (editable) and its dependencies
#   tools/setup.sh --dev    also what the tests need: virtual ALSA/JACK microphone, sox, TTS, tmux,
#                           a C compiler (a stepped wall clock), pytest and ruff
# Then run .venv/bin/drsn-stream, or `. .venv/bin/activate` first.
# Environment: PYTHON (the interpreter that creates .venv; default python3), VENV (default .venv),
# TORCH_SPEC (default: a torch in the tested range, the CPU build on a machine without an NVIDIA GPU;
# set it to choose another build).
# Run again, it re-does only what is missing (offline once everything is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_RANGE="torch>=2.2,<2.14"  # keep in step with pyproject.toml
CPU_INDEX=https://download.pytorch.org/whl/cpu
DEV=0
case "${1:-}" in
  --dev) DEV=1 ;;
  "") ;;
  *) echo "usage: tools/setup.sh [--dev]" >&2; exit 2 ;;
esac
say() { echo "setup: $*"; }

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here; install these yourself: ${missing[*]}" >&2
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # jackd2 asks whether to enable real-time scheduling; the tests run without it
  echo "jackd2 jackd/tweak_rt_limits boolean false" | $sudo debconf-set-selections 2>/dev/null || true
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PKGS=()
command -v dpkg-query >/dev/null 2>&1 && PKGS+=(libportaudio2 libjemalloc2)  # jemalloc: the engine process allocates with it
# Debian/Ubuntu ship venv (ensurepip) in a package of its own
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  PKGS+=("python3-venv")
fi
if [ "$DEV" = 1 ] && command -v dpkg-query >/dev/null 2>&1; then
  PKGS+=(libasound2-plugins alsa-utils jackd2 sox espeak-ng flite tmux prometheus prometheus-alertmanager gcc libc6-dev)  # gcc: tests/clockstep.c; alertmanager: amtool
fi
[ ${#PKGS[@]} -gt 0 ] && apt_install "${PKGS[@]}"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    say "installing $TORCH_SPEC (TORCH_SPEC)"
    pip_install "$TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "NVIDIA GPU found: installing $TORCH_RANGE from PyPI (a CUDA build)"
    pip_install "$TORCH_RANGE"
  else
    # PyPI's Linux torch pulls ~3 GB of CUDA libraries; without a GPU the CPU build does the same
    say "no NVIDIA GPU: installing $TORCH_RANGE, the CPU build ($CPU_INDEX)"
    pip_install --retries 1 --index-url "$CPU_INDEX" "$TORCH_RANGE"
  fi
fi
stamp="$VENV/.drsn-setup"
if [ "$DEV" = 1 ]; then stamp="$stamp-dev"; fi
want="$(cat pyproject.toml tools/setup.sh | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ "$DEV" = 1 ]; then
    pip_install -e ".[dev]"
  else
    pip_install -e .
  fi
  echo "$want" > "$stamp"
fi
"$PY" - <<'EOF'
import drsn_stream, torch
from drsn_stream.dsp import bank_jit
from drsn_stream.dsp.normalize import warm as warm_normalize
from drsn_stream.monitor import decision, levels_jit
from drsn_stream.sources import recv_jit
build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
# compiled now (and cached), so that the first monitor does not pay for it
bank_jit.warm()
recv_jit.warm()
warm_normalize()
compiled = ("compiled sensor-health tests and decisions" if levels_jit.warm() and decision.warm()
            else "numpy sensor-health tests and decisions (no numba)")
print(f"setup: drsn-stream {drsn_stream.__version__} with torch {torch.__version__} ({build}), {compiled}, "
      f"in {__import__('sys').prefix}")
EOF
say "done. Run .venv/bin/drsn-stream, or activate the environment first: . $VENV/bin/activate"
