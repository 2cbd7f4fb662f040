#!/usr/bin/env bash
# Installs drsn-stream and what it needs on a fresh Debian/Ubuntu machine (or any machine with
# Python >= 3.10 and pip). Usage:
#   tools/setup.sh          runtime: PortAudio, torch, the package (editable) and its dependencies
#   tools/setup.sh --dev    also what the tests need: virtual ALSA/JACK microphone, sox, TTS, tmux,
#                           pytest and ruff
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0; set it to choose
# another build, e.g. a CUDA one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

apt_install() {
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # jackd2 asks whether to enable real-time scheduling; the tests run without it
    echo "jackd2 jackd/tweak_rt_limits boolean false" | $sudo debconf-set-selections 2>/dev/null || true
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "setup: no apt-get here; install these yourself: $*" >&2
  fi
}

PKGS=(libportaudio2)
if [ "$DEV" = 1 ]; then
  PKGS+=(libasound2-plugins alsa-utils jackd2 sox espeak-ng flite tmux prometheus)
fi
apt_install "${PKGS[@]}"

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
if [ "$DEV" = 1 ]; then
  "$PYTHON" -m pip install -q -e ".[dev]"
else
  "$PYTHON" -m pip install -q -e .
fi
"$PYTHON" -c "import drsn_stream, torch; print('drsn-stream', drsn_stream.__version__, 'with torch', torch.__version__)"
