#!/usr/bin/env bash
# Run a command with a virtual ALSA microphone that plays RAW (float32 mono at RATE Hz).
# Clocked in real time by a private JACK dummy server when jackd is installed, else the unpaced
# file device. Usage: tests/alsa/virtual-mic.sh RAW RATE -- command [args...]
# SIGINT and SIGTERM are passed on to the command (a caller stops it as Ctrl-C would); the exit
# status is the command's. A shell started with a signal ignored cannot trap it (SIGINT under a
# background job): send it to the process group then, as a terminal's Ctrl-C does.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
raw="$1"; rate="$2"; shift 2
[[ "${1:-}" == "--" ]] && shift
[[ -f "$raw" ]] || { echo "raw file $raw not found" >&2; exit 2; }
export DRSN_MIC_RAW="$(realpath "$raw")"
jack_pid=""
child=""
cleanup() { [[ -n "$jack_pid" ]] && kill "$jack_pid" 2>/dev/null || true; }
trap cleanup EXIT
if command -v jackd >/dev/null && command -v jack_lsp >/dev/null; then
    export JACK_DEFAULT_SERVER="drsn-mic-$$"
    jackd --no-realtime -n "$JACK_DEFAULT_SERVER" -d dummy -r "$rate" -p 256 -C 1 -P 1 >/dev/null 2>&1 &
    jack_pid=$!
    for _ in $(seq 1 100); do jack_lsp >/dev/null 2>&1 && break; sleep 0.05; done
    export ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$here/jack-mic.conf"
else
    echo "jackd not installed: the virtual microphone is not paced in real time" >&2
    export ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$here/file-mic.conf"
fi
"$@" &
child=$!
trap 'kill -INT "$child" 2>/dev/null || true' INT
trap 'kill -TERM "$child" 2>/dev/null || true' TERM
set +e
while true; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break  # wait returned for a trapped signal: the command still runs
done
exit "$rc"
