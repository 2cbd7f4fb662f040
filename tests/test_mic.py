"""The ``mic`` source on a real PortAudio stream, fed by a virtual ALSA microphone.

Each check runs in a child process because PortAudio reads the ALSA configuration once, when
sounddevice is imported. The microphone plays a real FSDD recording converted to float32 at
48 kHz; see tests/alsa/README.md for the two virtual devices and the packages they need.
"""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

ALSA = Path(__file__).resolve().parent / "alsa"
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
RATE = 48000

pytestmark = pytest.mark.audio

if ctypes.util.find_library("portaudio") is None:
    pytest.skip("libportaudio2 is not installed (apt-get install libportaudio2)", allow_module_level=True)
if not Path(SYSTEM_ALSA_CONF).is_file():
    pytest.skip(f"ALSA configuration {SYSTEM_ALSA_CONF} missing (apt-get install libasound2)",
                allow_module_level=True)

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    args = json.loads(sys.argv[1])
    out = {}
    try:
        if args["mode"] == "devices":
            import argparse
            from drsn_stream.sources import devices
            out["rc"] = devices.run(argparse.Namespace(json=False))
        else:
            from drsn_stream.sources import make_source
            ref = np.load(args["ref"]) if args.get("ref") else None
            got, times, overflow = [], [], 0
            with make_source(args["spec"]) as src:
                for f in src:
                    got.append(f.samples[:, 0]); times.append([f.t_capture, f.n]); overflow += f.overflow
                    if ref is None or sum(g.size for g in got) >= ref.size:
                        break
                out["device"] = src.device_name
            x = np.concatenate(got)
            out["equal"] = bool(ref is not None and np.array_equal(x[: ref.size], ref))
            out["n"] = int(x.size); out["times"] = times; out["overflow"] = overflow
    except Exception as exc:
        out["error"] = type(exc).__name__ + ": " + str(exc)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def recording(data_dir, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """An FSDD digit as float32 at 48 kHz: (raw file for the device, .npy reference, samples)."""
    wav = data_dir / "fsdd" / "recordings" / "7_jackson_0.wav"
    if not wav.is_file():
        pytest.skip(f"FSDD recording {wav} not found")
    rate, x = wavfile.read(wav)
    y = resample_poly(x.astype(np.float64) / 32768.0, RATE // rate, 1).astype(np.float32)
    d = tmp_path_factory.mktemp("mic")
    # The file plugin repeats stale buffers after the end of the file: pad with 5 s of silence.
    np.concatenate([y, np.zeros(5 * RATE, np.float32)]).tofile(d / "mic.f32")
    np.save(d / "ref.npy", y)
    return d / "mic.f32", d / "ref.npy", y


def _env(child_env: dict[str, str], conf: str, raw: Path, jack: str | None = None) -> dict[str, str]:
    env = dict(child_env)
    env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{ALSA / conf}"  # the system file MUST come first
    env["DRSN_MIC_RAW"] = str(raw)
    if jack:
        env["JACK_DEFAULT_SERVER"] = jack
    return env


def _child(env: dict[str, str], **args) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"child died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    result["stdout"] = proc.stdout
    return result


def test_file_microphone_delivers_the_recording_bit_exact(recording, child_env):
    raw, ref_path, ref = recording
    # The file device is not paced (it runs far faster than real time): a big ring buffer rides
    # the flood so that the comparison sees every sample.
    r = _child(_env(child_env, "file-mic.conf", raw), mode="capture",
               spec=f"mic?rate={RATE}&channels=1&buffer=120", ref=str(ref_path))
    assert "error" not in r, r.get("error")
    assert r["equal"], f"{r['n']} samples differ from the recording"
    assert r["overflow"] == 0


def test_unknown_device_error_lists_the_inputs(recording, child_env):
    raw, _, _ = recording
    r = _child(_env(child_env, "file-mic.conf", raw), mode="open", spec="mic:no-such-card")
    assert r["error"].startswith("SourceError: input device no-such-card not usable")
    assert "inputs: [" in r["error"] and "default" in r["error"]


def test_devices_command_lists_the_virtual_input(recording, child_env):
    raw, _, _ = recording
    r = _child(_env(child_env, "file-mic.conf", raw), mode="devices")
    assert r["rc"] == 0
    assert "default input" in r["stdout"] and "* " in r["stdout"]


def _jack_plugin() -> bool:
    return bool(glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_jack.so")
                or glob.glob("/usr/lib/alsa-lib/libasound_module_pcm_jack.so"))


def _start_jack(name: str) -> subprocess.Popen:
    """A private JACK dummy server at 48 kHz named ``name``, answering (or the test skipped)."""
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None or not _jack_plugin():
        pytest.skip("JACK clocked microphone needs jackd2 and libasound2-plugins (see tests/alsa/README.md)")
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    proc = subprocess.Popen(["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", "256",
                             "-C", "1", "-P", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        if subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0:
            return proc
        if proc.poll() is not None:
            pytest.skip(f"jackd did not start: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.05)
    _stop(proc)
    pytest.skip("jackd did not answer within 5 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def jack_server():
    """A private JACK dummy server at 48 kHz, clocking the virtual microphone in real time."""
    name = f"drsn-test-{os.getpid()}"
    proc = _start_jack(name)
    try:
        yield name
    finally:
        _stop(proc)


def test_jack_clocked_microphone_in_real_time(recording, child_env, jack_server):
    raw, ref_path, ref = recording
    t_start = time.time()
    r = _child(_env(child_env, "jack-mic.conf", raw, jack_server), mode="capture", spec="mic",
               ref=str(ref_path))
    assert "error" not in r, r.get("error")
    assert r["equal"] and r["overflow"] == 0
    times = np.array(r["times"])
    # Capture times are wall-clock and follow the sample clock within a few blocks.
    assert t_start - 1 < times[0, 0] < time.time()
    offsets = np.cumsum(np.concatenate([[0], times[:-1, 1]])) / RATE
    assert np.max(np.abs((times[:, 0] - times[0, 0]) - offsets)) < 0.5


def test_refused_rate_lists_the_rates_the_device_takes(recording, child_env, jack_server):
    raw, _, _ = recording
    r = _child(_env(child_env, "jack-mic.conf", raw, jack_server), mode="open", spec="mic?rate=16000")
    assert r["error"].startswith("SourceError: device")
    assert "refuses 16000 Hz" in r["error"] and "accepts 48000 Hz" in r["error"]


def test_a_microphone_that_stops_is_said_and_monitored_again_once_it_is_back(recording, child_env):
    # A sound server stopped (or a USB card pulled): PortAudio's stream stays "active" and its
    # callback is never called again, without a word. The monitor sat on a silent stream for good;
    # now it says the device is lost, tries to open it again, and labels it once it is back.
    raw, _, _ = recording
    name = f"drsn-lost-{os.getpid()}"
    jack = _start_jack(name)
    mon = subprocess.Popen([sys.executable, "-m", "drsn_stream", "--source", "mic", "--jsonl", "-",
                            "--engine-process", "off", "--duration", "180"],
                           env=_env(child_env, "jack-mic.conf", raw, name), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    seen: list[dict] = []
    said: list[str] = []  # stderr, read as it comes: a full pipe would stall the monitor
    readers = [threading.Thread(target=target, daemon=True)
               for target in (lambda: seen.extend(json.loads(line) for line in mon.stdout),
                              lambda: said.extend(mon.stderr))]
    for reader in readers:
        reader.start()

    def until(what: str, cond, timeout: float = 60.0) -> int:
        end = time.time() + timeout
        while time.time() < end and mon.poll() is None:
            for i, obj in enumerate(list(seen)):
                if cond(obj):
                    return i
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout:g} s: {seen[-5:]} {''.join(said)[-2000:]}")

    def note(words: str):
        return lambda o: o.get("type") == "note" and words in o.get("message", "")

    try:
        until("first label", lambda o: o.get("type") == "prediction")
        _stop(jack)
        lost = until("note of the lost device", note("stopped delivering samples"))
        jack = _start_jack(name)
        back = until("note of its return", note("is back: capturing again"))
        assert back > lost
        until("label after its return", lambda o: o.get("type") == "prediction" and seen.index(o) > back)
    finally:
        mon.send_signal(signal.SIGINT)
        try:
            mon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            mon.kill()
        _stop(jack)
        for left in Path("/dev/shm").glob(f"jack*{name}*"):  # the first server's clients' semaphores
            left.unlink(missing_ok=True)
    for reader in readers:  # they end with the monitor's output
        reader.join(timeout=30)
    assert mon.returncode == 0 and "Traceback" not in "".join(said), "".join(said)[-2000:]
