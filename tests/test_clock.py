"""A step of the wall clock while the monitor runs: an NTP step after boot (a gateway without a
real-time clock), a laptop waking from suspend, ``date -s``.

The commands run as child processes whose C library reads the wall clock through
``tests/clockstep.c`` (preloaded): CLOCK_REALTIME runs ahead of the real clock by the number
in a file the test writes, and the monotonic clock is left alone, as NTP steps it. Before:
a step forward of an hour ended ``--duration`` at once and had the simulator replay the hour
as fast as it could (thousands of windows a second, latencies of an hour, every stream "no
data", a stats line every pass); a step back stopped the simulator for the hour.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0
WINDOWS_PER_S = 12000 / 512  # sim: 12 kHz, the bearing model's hop of 512 samples

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clock")]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("stepping a process's wall clock needs a C compiler (apt-get install gcc libc6-dev)")
    out = tmp_path_factory.mktemp("clockstep") / "clockstep.so"
    res = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(ROOT / "tests" / "clockstep.c")],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.skip(f"cannot build the clock shim: {res.stderr.strip()[:300]}")
    return out


class Clock:
    """The stepped wall clock of the processes started with ``env``."""

    def __init__(self, shim: Path, folder: Path) -> None:
        self.file = folder / "step"
        self.set(0.0)
        self.env = {**os.environ, "LD_PRELOAD": str(shim), "CLOCK_STEP_FILE": str(self.file),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}

    def set(self, seconds: float) -> None:
        """The wall clock ``seconds`` ahead of the real one, from now on (written in place: the
        processes map the file)."""
        data = struct.pack("<q", int(seconds * 1e9))
        if self.file.exists():
            with self.file.open("r+b") as f:
                f.write(data)
        else:
            self.file.write_bytes(data)


def _run_stepped(clock: Clock, args: list[str], *, ready: str, step: float, after: float,
                 limit: float) -> tuple[int, float, str, str]:
    """``drsn-stream ARGS`` with the clock stepped by ``step`` s ``after`` s past the line
    ``ready``; returns (exit status, seconds from ``ready`` to the exit on the monotonic clock,
    stdout, stderr). Killed after ``limit`` s."""
    proc = subprocess.Popen([sys.executable, "-m", "drsn_stream", *args], cwd=ROOT, env=clock.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    seen = threading.Event()

    def read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if ready in line:
                seen.set()

    out: list[str] = []
    readers = [threading.Thread(target=read, args=(proc.stderr, lines), daemon=True),
               threading.Thread(target=read, args=(proc.stdout, out), daemon=True)]
    for t in readers:
        t.start()
    try:
        assert seen.wait(120), f"never said {ready!r}: {''.join(lines)[-2000:]}"
        t_ready = time.monotonic()
        time.sleep(after)
        clock.set(step)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"still running {limit:g} s after the clock stepped by {step:+g} s: {''.join(lines)[-1500:]}")
        elapsed = time.monotonic() - t_ready
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in readers:
            t.join(timeout=10)
    return code, elapsed, "".join(out), "".join(lines)


def _monitor(clock: Clock, tmp_path: Path, step: float) -> tuple[float, list[dict]]:
    """The monitor on 2 simulated machines for 10 s, the clock stepped 3 s in; (seconds it ran,
    its JSON lines)."""
    log = tmp_path / "results.jsonl"
    code, elapsed, _, err = _run_stepped(
        clock, ["--source", "sim?machines=2", "--headless", "--duration", "10", "--jsonl", str(log)],
        ready="drsn-stream: ready", step=step, after=3.0, limit=60.0)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    return elapsed, [json.loads(line) for line in log.read_text().splitlines()]


def _said(rows: list[dict]) -> tuple[list[dict], list[str], list[dict]]:
    preds = [r for r in rows if r["type"] == "prediction"]
    no_data = [r["stream"] for r in rows if r["type"] == "health" and "no data" in r.get("reasons", [])]
    notes = [r for r in rows if r["type"] == "note" and "capture time they carry" in r.get("message", "")]
    return preds, no_data, notes


def test_a_step_forward_of_the_wall_clock_neither_floods_nor_ends_the_monitor(shim: Path, tmp_path: Path) -> None:
    clock = Clock(shim, tmp_path)
    elapsed, rows = _monitor(clock, tmp_path, +HOUR)
    preds, no_data, notes = _said(rows)
    # --duration is 10 s of running, whatever the wall clock reads (it ended at the step)
    assert elapsed >= 9.0, f"the run ended {elapsed:.1f} s after it started, the clock stepped at 3 s"
    # the simulator goes on in real time: it replayed the skipped hour in a burst (thousands of
    # windows a second), every window an hour late
    for sid in ("sim/m0", "sim/m1"):
        n = sum(p["stream"] == sid for p in preds)
        assert 0.5 * 10 * WINDOWS_PER_S <= n <= 2 * 14 * WINDOWS_PER_S, (sid, n)
    late = [p["latency_ms"] for p in preds if p["latency_ms"] > 5000]
    assert not late, f"{len(late)} results labelled over 5 s late, up to {max(late) / 1000:.0f} s"
    # capture times follow the wall clock across the step, as a gateway's would
    times = [p["time"] for p in preds if p["stream"] == "sim/m0"]
    assert times[-1] - times[0] > HOUR
    assert not no_data, f"streams taken for silent at the step: {no_data}"
    assert not notes, notes[0]["message"]
    stats = [r for r in rows if r["type"] == "stats"]
    assert len(stats) <= 10 / 5 + 2, f"{len(stats)} stats lines in 10 s (one every 5 s)"


def test_a_step_back_of_the_wall_clock_does_not_stop_the_monitor(shim: Path, tmp_path: Path) -> None:
    clock = Clock(shim, tmp_path)
    elapsed, rows = _monitor(clock, tmp_path, -HOUR)
    preds, no_data, notes = _said(rows)
    assert elapsed < 30.0  # --duration 10 (it would have run for the hour and ten seconds)
    # the simulator sent nothing for the hour the clock went back: after the step, no windows
    for sid in ("sim/m0", "sim/m1"):
        times = [p["time"] for p in preds if p["stream"] == sid]
        after = sum(t < times[0] for t in times)  # capture times an hour before the first one's
        assert after >= 0.5 * 6 * WINDOWS_PER_S, (sid, after, len(times))
    assert not no_data, f"streams taken for silent at the step: {no_data}"
    assert not notes, notes[0]["message"]
    assert max(p["latency_ms"] for p in preds) < 5000


def test_publish_goes_on_in_real_time_across_a_step_of_the_wall_clock(shim: Path, tmp_path: Path) -> None:
    clock = Clock(shim, tmp_path)
    port = free_port()
    code, elapsed, out, err = _run_stepped(
        clock, ["publish", "--source", "sim?machines=2", "--to", f"tcp://127.0.0.1:{port}", "--duration", "6"],
        ready="publishing", step=+HOUR, after=2.0, limit=60.0)
    assert code == 0, err[-2000:]
    assert elapsed >= 5.0, f"publish --duration 6 ended {elapsed:.1f} s in, the clock stepped at 2 s"
    m = re.search(r"published (\d+) messages .* in ([\d.]+) s", out)
    assert m, out[-1500:]
    messages, seconds = int(m.group(1)), float(m.group(2))
    assert 5.0 <= seconds <= 8.0, out[-500:]
    assert messages <= 2 * 2 * 8 * 12000 / 512, f"{messages} messages in {seconds} s: the skipped hour sent in a burst"


HEALTH_SCRIPT = """
import json, struct, sys, time
import numpy as np
from drsn_stream.monitor.health import HealthMonitor
from drsn_stream.types import Frame

step, path = float(sys.argv[1]), sys.argv[2]
health = HealthMonitor()  # "no data" after 2 s without a frame
rng = np.random.default_rng(0)
# single-channel streams (the bank's rows), and one of two channels judged together (its own state)
frames = [Frame(f"s{i}", 0, time.time(), 12000.0, rng.standard_normal((512, 1)).astype(np.float32)) for i in range(8)]
health.push_channels(frames)
health.push_many([Frame("m0", 0, time.time(), 12000.0, rng.standard_normal((512, 2)).astype(np.float32))])
assert health._streams["m0"].slot < 0 and health._streams["s0"].slot >= 0
with open(path, "r+b") as f:
    f.write(struct.pack("<q", int(step * 1e9)))
at_step = sorted(e.stream_id for e in health.tick(time.time()) if "no data" in e.data.get("reasons", []))
time.sleep(2.5)
later = sorted(e.stream_id for e in health.tick(time.time()) if "no data" in e.data.get("reasons", []))
print(json.dumps({"at_step": at_step, "later": later}))
"""


@pytest.mark.parametrize("step", [+HOUR, -HOUR], ids=["forward", "back"])
def test_sensor_health_measures_a_silence_in_the_time_that_passed_across_a_step(shim: Path, tmp_path: Path,
                                                                               step: float) -> None:
    """Arrival times taken before a step move with it: a step forward is no silence of an hour
    (every stream was "no data" at once), and after a step back a sensor that stops is still
    found silent after 2 s (it took the hour and 2 s)."""
    clock = Clock(shim, tmp_path)
    res = subprocess.run([sys.executable, "-c", HEALTH_SCRIPT, str(step), str(clock.file)], env=clock.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    streams = sorted([f"s{i}" for i in range(8)] + ["m0"])
    assert out["at_step"] == [], f"taken for silent at the step: {out['at_step']}"
    assert out["later"] == streams


ENGINE_SCRIPT = """
import json, struct, sys, time, warnings
import numpy as np
from drsn_stream.engine import MicroBatcher
from drsn_stream.engine.engine import InferenceLoop
from drsn_stream.engine.runner import Runner
from drsn_stream.models import load_artifact
from drsn_stream.types import Window

step, path = float(sys.argv[1]), sys.argv[2]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's, in this torch
    module, meta = load_artifact("bearing-cwru")
runner = Runner(module, window=meta.window, device="cpu", max_batch=4, threads=1)
loop = InferenceLoop(MicroBatcher(max_batch=4), runner, meta.labels, lambda preds: None)
x = np.zeros(meta.window, np.float32)
t0, m0 = time.time(), time.monotonic()  # each stamp with the monotonic time it was taken at
held = Window("m0", 0, t0, x, t_ready=t0)  # captured and formed before the step, done after it
with open(path, "r+b") as f:
    f.write(struct.pack("<q", int(step * 1e9)))
t1, m1 = time.time(), time.monotonic()
across = Window("m1", 0, t0, x, t_ready=t1)  # captured before the step, formed after it
after = Window("m2", 0, t1, x, t_ready=t1)  # captured and formed after it
time.sleep(0.2)
start = time.monotonic()
preds = loop.process([held, across, after])
end = time.monotonic()
# the latency that passed, on the clock no step moves: from the capture stamp's moment to before
# and after the batch (its results are stamped in between)
passed = {"m0": m0, "m1": m0, "m2": m1}
print(json.dumps({p.stream_id: [p.latency_ms, 1000 * (start - passed[p.stream_id]), 1000 * (end - passed[p.stream_id])]
                  for p in preds}))
"""


@pytest.mark.parametrize("step", [+HOUR, -HOUR], ids=["forward", "back"])
def test_a_window_whose_samples_were_captured_before_a_step_is_not_labelled_an_hour_off(shim: Path,
                                                                                      tmp_path: Path,
                                                                                      step: float) -> None:
    """Latency runs from the capture of a window's last sample: samples captured before a step of
    the wall clock and formed into a window after it are as late as the time that passed on the
    monotonic clock, not an hour more (nor an hour less). Before, only windows formed before the
    step were set right: the full suite's forward-step monitor run failed now and then with one
    result labelled 3,600 s late."""
    clock = Clock(shim, tmp_path)
    res = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(step), str(clock.file)], env=clock.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    said = json.loads(res.stdout.strip().splitlines()[-1])
    for sid in ("m0", "m1", "m2"):
        latency, lo, hi = said[sid]
        # reading the wall and the monotonic clock one after the other: well under a millisecond apart
        assert lo - 2.0 <= latency <= hi + 2.0, said


BATCHER_SCRIPT = """
import json, struct, sys, time
import numpy as np
from drsn_stream.engine import MicroBatcher
from drsn_stream.types import Window

step, path = float(sys.argv[1]), sys.argv[2]
batcher = MicroBatcher(max_batch=4, max_wait_ms=5, stale_ms=2000)
x = np.zeros(8, np.float32)
t = time.time()
for i in range(3):  # queued when the clock steps (the engine busy with the batch before)
    batcher.put(Window("m0", i, t, x, t_ready=t))
with open(path, "r+b") as f:
    f.write(struct.pack("<q", int(step * 1e9)))
time.sleep(0.1)
t = time.time()
batcher.put(Window("m0", 3, t, x, t_ready=t))
first = [w.index for w in batcher.next_batch(timeout=1.0)]
time.sleep(2.5)  # past stale_ms on this host's clock, step or not: stale
t = time.time()
batcher.put(Window("m0", 4, t - 3.0, x, t_ready=t - 3.0))
batcher.put(Window("m0", 5, t, x, t_ready=t))
second = [w.index for w in batcher.next_batch(timeout=1.0)]
print(json.dumps({"first": first, "second": second, "stale": dict(batcher.dropped_stale)}))
"""


@pytest.mark.parametrize("step", [+HOUR, -HOUR], ids=["forward", "back"])
def test_windows_queued_at_a_step_of_the_wall_clock_are_not_dropped_as_an_hour_old(shim: Path, tmp_path: Path,
                                                                                   step: float) -> None:
    """Windows waiting for the engine when the clock steps forward an hour are 0.1 s old, not an
    hour: they are classified, not dropped as stale (before, every window queued at that moment
    was dropped); a window older than ``stale_ms`` is still dropped after the step, forward or back."""
    clock = Clock(shim, tmp_path)
    res = subprocess.run([sys.executable, "-c", BATCHER_SCRIPT, str(step), str(clock.file)], env=clock.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["first"] == [0, 1, 2, 3], out
    assert out["second"] == [5] and out["stale"] == {"m0": 1}, out


DECISION_SCRIPT = """
import json, struct, sys, time
import numpy as np
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.types import Prediction

step, path = float(sys.argv[1]), sys.argv[2]
labels = ["normal", "inner_021"]
engine = DecisionEngine(labels, DecisionConfig.for_labels(labels, smoothing="ema", ema_alpha=1.0, set_windows=2,
                                                          danger_after_s=60.0, danger_confidence=None))
levels = []
for i in range(60):  # a fault, windows 50 ms apart stamped with the wall clock, as a local source's are
    if i == 30:
        with open(path, "r+b") as f:
            f.write(struct.pack("<q", int(step * 1e9)))
    t = time.time()
    engine.update(Prediction("m0", i, t, np.array([0.1, 0.9], dtype=np.float32), "inner_021", 0.9, 0.3, 12.0, level=0.5))
    levels.append(engine.state("m0").level.name)
    time.sleep(0.05)
print(json.dumps(levels))
"""


@pytest.mark.parametrize("step", [+HOUR, -HOUR], ids=["forward", "back"])
def test_an_alert_under_way_keeps_its_duration_across_a_step_of_this_hosts_clock(shim: Path, tmp_path: Path,
                                                                                  step: float) -> None:
    """An ALERT becomes DANGER after 60 s of fault (``danger_after_s``); 3 s of fault with a step
    of the wall clock in the middle are 3 s. Before, a step forward made it DANGER at once."""
    clock = Clock(shim, tmp_path)
    res = subprocess.run([sys.executable, "-c", DECISION_SCRIPT, str(step), str(clock.file)], env=clock.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    levels = json.loads(res.stdout.strip().splitlines()[-1])
    assert levels[1:] == ["ALERT"] * 59, levels
