"""Live spoken digits through a real PortAudio stream: a paced virtual microphone (ALSA file
plugin clocked by a JACK dummy server at 48 kHz) plays FSDD test-split digits from several
speakers, separated by silence, over real background noise, into
`drsn-stream --source "mic?rate=48000" --headless --jsonl -`. The spoken sequence must come back
in order (at least 9 of 10) with no detection during the silences. Positions come from the
windows' indices, never from the wall clock, so the test holds on a loaded machine."""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
ALSA = ROOT / "tests" / "alsa"
RATE = 48000
SEQUENCE = [("3", "george"), ("1", "jackson"), ("4", "lucas"), ("1", "nicolas"), ("5", "theo"),
            ("9", "yweweler"), ("2", "george"), ("6", "jackson"), ("8", "theo"), ("7", "lucas")]
GAP_S = 1.6
WINDOW_S, HOP_S = 1.0, 0.1  # digits-fsdd: 1 s windows every 100 ms

pytestmark = [pytest.mark.audio, pytest.mark.slow]


def _jack_ready() -> str | None:
    if ctypes.util.find_library("portaudio") is None:
        return "libportaudio2 is not installed (apt-get install libportaudio2)"
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        return "the paced virtual microphone needs jackd2 (tools/setup.sh --dev)"
    if not (glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_jack.so")
            or glob.glob("/usr/lib/alsa-lib/libasound_module_pcm_jack.so")):
        return "the paced virtual microphone needs libasound2-plugins (tools/setup.sh --dev)"
    return None


def _read(path: Path, rate: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wavfile.WavFileWarning)  # FSDD files carry a LIST chunk
        r, x = wavfile.read(path)
    x = x.astype(np.float64) / (32768.0 if x.dtype == np.int16 else 1.0)
    if r != rate:
        g = np.gcd(r, rate)
        x = resample_poly(x, rate // g, r // g)
    return x


def _speech_raw(data: Path, out: Path) -> list[tuple[str, float, float]]:
    """Writes the microphone's raw float32 file; returns (digit, start_s, end_s) per word."""
    rng = np.random.default_rng(0)
    pieces, spans, t = [np.zeros(int(1.5 * RATE))], [], 1.5
    for i, (digit, speaker) in enumerate(SEQUENCE):
        take = i % 5  # FSDD's own test split: takes 0-4
        x = _read(data / "fsdd" / "recordings" / f"{digit}_{speaker}_{take}.wav", RATE)
        x = 0.3 * x / (np.abs(x).max() + 1e-9)
        pieces.append(x)
        spans.append((digit, t, t + len(x) / RATE))
        t += len(x) / RATE
        pieces.append(np.zeros(int(GAP_S * RATE)))
        t += GAP_S
    speech = np.concatenate(pieces)
    noise = _read(data / "noise" / "running_tap.wav", RATE)
    noise = noise[-len(speech):] if len(noise) >= len(speech) else np.resize(noise, len(speech))
    voiced = np.concatenate([p for p in pieces if p.any()])
    noise *= np.sqrt(np.mean(voiced**2) / np.mean(noise**2)) * 10 ** (-20 / 20)  # 20 dB below the speech
    mic = (speech + noise + rng.normal(0, 1e-4, len(speech))).astype(np.float32)
    # silence after the words: past its end the device would repeat stale buffers
    np.concatenate([mic, np.zeros(30 * RATE, np.float32)]).tofile(out)
    return spans


def _lcs(a: list[str], b: list[str]) -> int:
    m = np.zeros((len(a) + 1, len(b) + 1), int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            m[i + 1, j + 1] = m[i, j] + 1 if x == y else max(m[i, j + 1], m[i + 1, j])
    return int(m[-1, -1])


def _run_until(cmd: list[str], env: dict[str, str], last_index: int, timeout: float) -> tuple[list[dict], str]:
    """Runs the monitor until it has published the prediction of window ``last_index``, then stops
    it with SIGINT (as Ctrl-C would). The end follows the stream's content, not the wall clock: on a
    loaded machine the paced microphone may fall behind real time, and a fixed --duration then cut
    the last word off."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: a timeout ends jackd and all
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    objs: list[dict] = []
    seen, sent = -1, 0
    def give_up() -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        # jackd makes a session of its own: the group kill misses it (its name holds the script's
        # pid). SIGTERM first: a jackd killed outright leaves its entry in JACK's server registry in
        # /dev/shm, and after a few such entries no JACK server starts on the machine.
        jackd = f"jackd .*-n drsn-mic-{proc.pid} "
        subprocess.run(["pkill", "-TERM", "-f", jackd], check=False)
        time.sleep(1.0)
        subprocess.run(["pkill", "-KILL", "-f", jackd], check=False)

    timer = threading.Timer(timeout, give_up)
    timer.start()
    try:
        for line in proc.stdout:
            obj = json.loads(line)  # --jsonl -: stdout carries JSON lines only
            objs.append(obj)
            if obj["type"] == "prediction":
                seen = max(seen, obj["index"])
                if obj["index"] >= last_index and proc.poll() is None:
                    # to the process group, as Ctrl-C in a terminal: the script passes it on, but
                    # a shell started with SIGINT ignored (pytest run as a background job, whose
                    # workers inherit that) cannot trap it, and the monitor then hears it only so
                    os.killpg(proc.pid, signal.SIGINT)
                    sent += 1
        proc.wait()
    finally:
        timer.cancel()
        reader.join(timeout=10)
    # says whether the monitor got to the last word and was asked to stop, or never got there
    assert proc.returncode == 0, (f"exit {proc.returncode}; highest window index {seen} (the last word ends in "
                                  f"{last_index}); SIGINT sent {sent} times\n" + "".join(err)[-3000:])
    return objs, "".join(err)


def test_spoken_digits_come_back_in_order_from_a_live_microphone(data_dir: Path, tmp_path: Path) -> None:
    reason = _jack_ready()
    if reason:
        pytest.skip(reason)
    if not (data_dir / "fsdd" / "recordings").is_dir():
        pytest.skip(f"FSDD not found under {data_dir}")
    raw = tmp_path / "mic.f32"
    spans = _speech_raw(data_dir, raw)
    end_s = spans[-1][2] + 1.5  # the last word has left the 1 s window
    last_index = int(np.ceil((end_s - WINDOW_S) / HOP_S))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    # --stale-ms: on a loaded machine late windows are still scored, so window i is always the
    # audio from (i * hop) to (i * hop + 1 s) and positions follow from the index, not a clock
    cmd = [str(ALSA / "virtual-mic.sh"), str(raw), str(RATE), "--", sys.executable, "-m", "drsn_stream",
           "--source", f"mic?rate={RATE}", "--headless", "--jsonl", "-", "--stale-ms", "600000"]
    objs, err = _run_until(cmd, env, last_index, timeout=240.0)
    preds = {o["index"]: o for o in objs if o["type"] == "prediction"}
    dets = [o for o in objs if o["type"] == "detection"]
    assert len(preds) > last_index, err[-2000:]
    # no window was lost between the first and the last: the indices are the audio's positions
    assert sorted(preds) == list(range(len(preds))), err[-2000:]
    at_time = {o["time"]: i for i, o in preds.items()}
    heard = [d["label"] for d in dets]
    truth = [d for d, _, _ in spans]
    print(f"said {truth}\nheard {heard}")
    assert _lcs(heard, truth) >= 9, f"heard {heard}, said {truth}"
    for d in dets:
        # a detection carries the capture time of the window that completed it
        assert d["time"] in at_time, f"detection {d} matches no window"
        pos = WINDOW_S + HOP_S * at_time[d["time"]]  # where that window ends in the played audio
        # a word is inside some 1 s window from its start until 1 s after its end (+ the
        # resampler's delay)
        inside = [s for s in spans if s[1] - 0.15 <= pos <= s[2] + WINDOW_S + 0.15]
        assert inside, f"detection {d['label']} at {pos:.2f} s lies in a silence; words at {spans}"
    assert len(dets) <= len(truth) + 1
