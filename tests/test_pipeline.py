"""The whole monitor, end to end, with real components: CWRU recordings, the shipped TorchScript
model, ZeroMQ sockets on loopback, the drsn-stream command in child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CWRU, NoteSink, cwru_signal, require_cwru, wait_until
from prometheus_client.parser import text_string_to_metric_families

from drsn_stream.app.pipeline import Pipeline, RunConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
IR014_1 = "12k_Drive_End_IR014_1_170.mat"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drsn_stream", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_file_replay_labels_a_real_inner_race_fault() -> None:
    require_cwru()
    res = _cli("--source", f"file:{CWRU / IR014_1}", "--fast", "--headless", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    preds = [o for o in objs if o["type"] == "prediction"]
    assert len(preds) > 200  # ~10 s at 12 kHz, hop 512
    for o in preds[:5]:
        assert set(o) >= {"type", "stream", "time", "label", "confidence", "probs", "noise_index", "latency_ms"}
        assert len(o["probs"]) == 10 and abs(sum(o["probs"]) - 1) < 1e-3 and 0 <= o["noise_index"] <= 1
    counts = Counter(o["label"] for o in preds)
    assert counts.most_common(1)[0][0] == "inner_014" and counts["inner_014"] > 0.8 * len(preds), counts
    assert any(o["type"] == "alarm" and o["to"] in ("ALERT", "DANGER") for o in objs)
    assert objs[-1]["type"] == "stats" and objs[-1]["final"] and objs[-1]["engine"]["windows"] == len(preds)


@pytest.mark.slow
def test_a_test_rigs_matlab_file_gives_the_labels_the_cwru_file_gives(tmp_path: Path) -> None:
    """The same samples in another lab's MATLAB layout (a struct of the signal and its rate, as
    MFPT's files are), renamed so no CWRU naming rule can give the rate: the same decisions."""
    import scipy.io

    require_cwru()
    mat = scipy.io.loadmat(CWRU / IR014_1)
    scipy.io.savemat(tmp_path / "pump3.mat", {"bearing": {"gs": mat["X170_DE_time"], "sr": 12000.0, "rate": 29.4}})
    runs = [_lines(_cli("--source", src, "--fast", "--headless", "--jsonl", "-").stdout)
            for src in (f"file:{CWRU / IR014_1}", f"file:{tmp_path / 'pump3.mat'}")]
    cwru, rig = ([o for o in objs if o["type"] == "prediction"] for objs in runs)
    assert len(cwru) > 200 and [o["label"] for o in rig] == [o["label"] for o in cwru]
    # (micro-batches may group the windows differently: the same numbers to float precision)
    assert np.allclose([o["confidence"] for o in rig], [o["confidence"] for o in cwru], atol=1e-4)


@pytest.mark.slow
def test_engine_process_gives_the_same_labels() -> None:
    require_cwru()
    src = f"file:{CWRU / IR014_1}"
    res = _cli("--source", src, "--fast", "--headless", "--jsonl", "-", "--device", "cpu", "--engine-process", "on")
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    preds = [o for o in objs if o["type"] == "prediction"]
    assert len(preds) > 200 and objs[-1]["device"].endswith("engine process")
    counts = Counter(o["label"] for o in preds)
    assert counts["inner_014"] > 0.8 * len(preds), counts


@pytest.mark.slow
def test_a_killed_engine_process_is_replaced_and_the_monitor_goes_on() -> None:
    import signal

    got: list = []
    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=2",), device="cpu", engine_process=True,
                              stats_every_s=3600))
    pipe._on_predictions_orig = pipe._on_predictions
    pipe.engine.on_predictions = lambda preds: (got.extend(preds), pipe._on_predictions_orig(preds))
    pipe.start()
    try:
        wait_until(lambda: len(got) > 0, 60)
        before = len(got)
        assert before > 0
        first_pid = pipe.runner.pid
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.time() + 60
        while time.time() < deadline and len(got) < before + 40:
            pipe.wait(duration=0.5)
        assert len(got) >= before + 40, "no predictions after the engine process was killed"
        assert pipe.runner.pid != first_pid and pipe.runner.restarts == 1
        assert any("started a new one" in e for e in pipe.errors), pipe.errors
        assert pipe.engine.error is None
    finally:
        pipe.stop()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
@pytest.mark.parametrize("pin", [None, True, False])
def test_pin_cpus_gives_the_engine_process_a_core_and_restores_the_monitors(pin) -> None:
    # None (the default, one torch thread in the engine process) pins like True; False does not
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs 2 or more cores")
    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=1",), device="cpu", engine_process=True,
                              pin_cpus=pin, stats_every_s=3600))
    pipe.start()
    try:
        last = max(before)
        if pin is False:
            assert os.sched_getaffinity(0) == before
            assert os.sched_getaffinity(pipe.runner.pid) == before
            assert pipe.monitor_cpus is None  # a load generator beside it may go anywhere
        else:
            assert os.sched_getaffinity(0) == before - {last} == pipe.monitor_cpus
            assert os.sched_getaffinity(pipe.runner.pid) == {last}
        pipe.wait(duration=1.0)
        assert pipe.stats.windows > 0
    finally:
        pipe.stop()
    assert os.sched_getaffinity(0) == before


def _children() -> set[int]:
    """This process's child processes, zombies (ended, not yet reaped) included.

    By parent id alone: a child's command line reads empty while it is a zombie, and also for
    a moment after ``Popen`` returns (the kernel lets the parent go on before the new program's
    arguments are mapped), so a match on it missed a child that had started."""
    me, kids = str(os.getpid()), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                kids.add(int(pid))
        except (OSError, IndexError):
            continue
    return kids


def test_a_signal_while_the_monitor_is_built_ends_its_engine_process_and_frees_its_memory(monkeypatch) -> None:
    # SIGTERM (or Ctrl-C) during start-up, after the engine process started: that child has a
    # session of its own, so the signal does not reach it. It went on loading the model for a
    # monitor that was gone, then printed a traceback on the terminal when the shared memory it
    # was to attach had vanished with its parent.
    import signal

    from drsn_stream.app import pipeline as pl
    from drsn_stream.runtime import Terminated, forget_start_up_signal, start_up_signal_handler

    if not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm to see the shared memory")
    from multiprocessing import resource_tracker

    from drsn_stream.engine import procrunner

    resource_tracker.ensure_running()  # shared memory's helper process, a child too: not the one looked for
    kids_before = _children()
    # the segments this monitor made, by name: not a diff of /dev/shm, which the tests running
    # beside this one (other engines, the sound-card tests) change meanwhile
    made: list[str] = []
    real_shm = procrunner.shared_memory.SharedMemory

    def recorded(*args, **kwargs):
        shm = real_shm(*args, **kwargs)
        if kwargs.get("create"):
            made.append(shm.name.lstrip("/"))
        return shm

    monkeypatch.setattr(procrunner.shared_memory, "SharedMemory", recorded)
    seen: dict[str, set] = {}
    real = pl.MicroBatcher

    def batcher_after_a_signal(*args, **kwargs):  # a real SIGTERM, once the engine process runs
        seen["children"] = _children() - kids_before
        seen["shm"] = {name for name in made if os.path.exists(f"/dev/shm/{name}")}
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # the handler raises in this frame at once
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "MicroBatcher", batcher_after_a_signal)
    old = signal.signal(signal.SIGTERM, start_up_signal_handler)  # as the command has it while it starts
    try:
        with pytest.raises(Terminated):
            Pipeline(RunConfig(sources=("sim:bearing?machines=1",), device="cpu", engine_process=True))
    finally:
        signal.signal(signal.SIGTERM, old)
        forget_start_up_signal()
    assert len(seen["children"]) == 1 and seen["shm"], seen  # it had started, with its segments
    assert not (_children() & seen["children"])  # ended and reaped (not left a zombie)
    assert not (set(os.listdir("/dev/shm")) & seen["shm"])  # unlinked


def test_a_running_monitor_keeps_its_start_up_objects_out_of_full_collections() -> None:
    # torch, the model and the libraries (~200,000 objects) made a full collection of the cyclic
    # garbage collector stall every thread for 100-150 ms, once, some time into a live run. The
    # monitor freezes them at start: a collection then walks only what the run itself made.
    import gc

    from drsn_stream.runtime import GC_YOUNG_THRESHOLD

    tracked_before = len(gc.get_objects())
    thresholds = gc.get_threshold()
    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=4",), device="cpu", engine_process=False,
                              stats_every_s=3600))
    pipe.start()
    try:
        pipe.wait(duration=1.0)
        assert pipe.stats.windows > 0
        assert gc.get_freeze_count() > 50_000
        assert len(gc.get_objects()) < 20_000 < tracked_before
        # and the young generation collected after 10,000 allocations, not Python's 700: a busy
        # monitor makes and drops a few objects per window
        assert gc.get_threshold() == (max(thresholds[0], GC_YOUNG_THRESHOLD), *thresholds[1:])
    finally:
        pipe.stop()
    assert gc.get_freeze_count() == 0  # stop() hands them back (a library user's process goes on)
    assert gc.get_threshold() == thresholds  # and the collector's thresholds


def test_flags_asked_for_that_cannot_apply_here_are_said_in_notes() -> None:
    # --fp16 on with no GPU ran in float32, --ingest-procs with no zmq:// source had one ingest
    # thread, --threads beyond the cores oversubscribed them, all without a word; left unset they
    # stay quiet (nothing was asked)
    said, threads = {}, torch.get_num_threads()
    for asked in (True, False):
        kw = {"fp16": "on", "ingest_procs": 4, "threads": os.cpu_count() + 1} if asked else {}
        pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=1",), device="cpu", engine_process=False,
                                  stats_every_s=3600, **kw))
        notes = NoteSink()
        pipe.outputs.add(notes)
        pipe.start()
        try:
            pipe.wait(duration=0.5)
        finally:
            pipe.stop()
            torch.set_num_threads(threads)  # the model ran in this process: the next test's as it was
        said[asked] = sorted(line for line in notes.lines if line.startswith(("--fp16", "--ingest-procs", "--threads")))
    cores = len(os.sched_getaffinity(0))
    assert said == {True: ["--fp16 on: half precision runs on CUDA GPUs; on the CPU the model runs in float32",
                           "--ingest-procs 4 is ignored: it shares out zmq:// (SUB) sources, and this run reads "
                           "sim:bearing?machines=1",
                           f"--threads {os.cpu_count() + 1} on {cores} core{'s' if cores != 1 else ''}: the model's "
                           f"threads take turns on them (a batch waits for the last); {cores} or fewer do not"],
                    False: []}, said


@pytest.mark.slow
def test_batch_sizes_default_to_the_cpu_size_live_and_to_big_batches_for_fast_replay_or_when_asked() -> None:
    from drsn_stream.app.cli import config_from_args
    from drsn_stream.cli import build_parser
    from drsn_stream.engine.contract import CPU_EAGER_BATCH, CPU_LIVE_MAX_BATCH, MAX_BATCH

    def batcher(**kw):
        return Pipeline(RunConfig(device="cpu", engine_process=False, stats_every_s=3600, **kw)).batcher

    live = batcher(sources=("sim:bearing?machines=2",))
    assert (live.max_batch, live.eager_batch) == (CPU_LIVE_MAX_BATCH, CPU_EAGER_BATCH)
    assert batcher(sources=("sim:bearing?machines=2",), max_batch=16).eager_batch == 16  # never above max_batch
    replay = batcher(sources=("sim:bearing?machines=2",), fast=True)  # nothing is live: big batches
    assert (replay.max_batch, replay.eager_batch) == (MAX_BATCH, 0)
    cfg = config_from_args(build_parser("run").parse_args(["run", "--source", "sim", "--eager-batch", "0",
                                                           "--max-batch", "200"]))
    asked = batcher(sources=cfg.sources, eager_batch=cfg.eager_batch, max_batch=cfg.max_batch)
    assert (asked.max_batch, asked.eager_batch) == (200, 0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_file_replay_on_the_gpu_gives_the_cpu_labels() -> None:
    require_cwru()
    src = f"file:{CWRU / IR014_1}"
    gpu = _cli("--source", src, "--fast", "--headless", "--jsonl", "-", "--device", "cuda")
    cpu = _cli("--source", src, "--fast", "--headless", "--jsonl", "-", "--device", "cpu")
    assert gpu.returncode == 0 and cpu.returncode == 0, gpu.stderr + cpu.stderr
    g = [o for o in _lines(gpu.stdout) if o["type"] == "prediction"]
    c = [o for o in _lines(cpu.stdout) if o["type"] == "prediction"]
    assert len(g) == len(c) > 200
    assert _lines(gpu.stdout)[-1]["device"].startswith(torch.cuda.get_device_name(0))
    same = np.mean([a["label"] == b["label"] for a, b in zip(g, c)])
    assert same >= 0.99 and Counter(o["label"] for o in g).most_common(1)[0][0] == "inner_014", same


_BAD_PUBLISHER = r"""
import json, sys, time
import numpy as np, zmq
from scipy.io import loadmat
from drsn_stream.sources.wire import encode
path, port = sys.argv[1], int(sys.argv[2])
mat = loadmat(path)
x = np.asarray(mat[[k for k in mat if k.endswith("_DE_time")][0]], dtype=np.float32).ravel()
sock = zmq.Context.instance().socket(zmq.PUB)
sock.bind(f"tcp://127.0.0.1:{port}")
time.sleep(1.5)  # let the subscriber join (ZeroMQ slow joiner)
t0, chunk, seq = time.time(), 512, 0
for i in range(0, 12000 * 3, chunk):
    if seq == 30:
        sock.send_multipart([b"sensor-1", b"{not json", b"\x00" * 16])   # malformed
    if seq == 40:
        seq += 3                                                           # a gap of 3 frames
    sock.send_multipart(encode("sensor-1", seq, t0 + i / 12000, 12000, x[i:i + chunk]))
    seq += 1
    time.sleep(max(0.0, t0 + (i + chunk) / 12000 - time.time()))   # real time
sock.close(linger=1000)
"""


@pytest.mark.slow
def test_zmq_end_to_end_counts_bad_input_and_picks_up_a_restarted_publisher(tmp_path: Path, free_tcp_port: int) -> None:
    require_cwru()
    port = free_tcp_port
    out = tmp_path / "results.jsonl"
    monitor = subprocess.Popen(
        # it ends on the restarted publisher's end-of-stream (--duration only bounds a broken run)
        [sys.executable, "-m", "drsn_stream", "--source", f"zmq://127.0.0.1:{port}?until_eos=1", "--jsonl", str(out),
         "--duration", "120", "--stale-ms", "60000", "--engine-process", "off"],  # an ingest test
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = monitor.stderr.readline()  # the monitor says when its sources are open
        assert "ready" in ready, ready
        time.sleep(0.5)
        first = subprocess.run([sys.executable, "-c", _BAD_PUBLISHER, str(CWRU / IR014_1), str(port)], env=ENV,
                               capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        t_restart = time.time()
        second = _cli("publish", "--source", f"file:{CWRU / '12k_Drive_End_OR021@6_1_235.mat'}?stream=sensor-1",
                      "--to", f"tcp://127.0.0.1:{port}", "--duration", "4", "--wait-subscriber", "5", "--quiet",
                      timeout=60)
        assert second.returncode == 0, second.stderr
        stdout, stderr = monitor.communicate(timeout=120)
    finally:
        monitor.kill()
    assert monitor.returncode == 0, stderr
    objs = _lines(out.read_text())
    preds = [o for o in objs if o["type"] == "prediction" and o["stream"] == "sensor-1"]
    before = Counter(o["label"] for o in preds if o["time"] < t_restart)
    after = Counter(o["label"] for o in preds if o["time"] >= t_restart)
    assert before.most_common(1)[0][0] == "inner_014", before
    # the restarted publisher's data. Its first 2 s are check_sensor when the restart took longer
    # than the health's timeout (a loaded machine): "no data", then recovery_s of clean signal
    labelled = Counter({k: v for k, v in after.items() if k != "check_sensor"})
    assert sum(labelled.values()) >= 10 and labelled.most_common(1)[0][0] == "outer_021", after
    final = [o for o in objs if o["type"] == "stats"][-1]
    src = next(iter(final["sources"].values()))
    assert final["malformed"] >= 1 and sum(src["malformed"].values()) >= 1
    assert src["gaps"].get("sensor-1", 0) >= 1 and src["restarts"].get("sensor-1", 0) >= 1
    health = [o for o in objs if o["type"] == "health" and o["stream"] == "sensor-1"]
    assert any("gap" in " ".join(o.get("reasons", [])) for o in health), health
    assert "malformed 1" in stdout or "malformed 2" in stdout  # the summary names it too


@pytest.mark.slow
def test_simulated_machines_are_labelled_as_the_simulator_says() -> None:
    cfg = RunConfig(sources=("sim:bearing?machines=3&seed=5&speed=6&noise=gaussian&snr=10",), stats_every_s=3600,
                    stale_ms=60000)
    pipe = Pipeline(cfg)
    got = []
    pipe.outputs.add(type("S", (), {"write": lambda self, o: got.append(o), "close": lambda self: None})())
    sim = pipe.sources[0]
    # A window straddling a change of state may go either way: compare the window's first and
    # last sample's truth and score only windows that lie in one state.
    win_s = 2048 / 12000 / 6

    def scored_windows() -> list[tuple[str, str]]:
        preds = [o for o in list(got) if o["type"] == "prediction"]
        return [(o["label"], sim.truth(o["stream"], o["time"])) for o in preds
                if sim.truth(o["stream"], o["time"]) == sim.truth(o["stream"], o["time"] - win_s)]

    pipe.start()
    try:  # until enough windows of at least two states are in (about 6 s at most on a quiet machine)
        wait_until(lambda: (lambda sc: len(sc) > 300 and len({b for _, b in sc}) >= 2)(scored_windows()), 60, 0.5)
    finally:
        pipe.stop()
    preds = [o for o in got if o["type"] == "prediction"]
    streams = {o["stream"] for o in preds}
    assert streams == {"sim/m0", "sim/m1", "sim/m2"}
    scored = scored_windows()
    agree = np.mean([a == b for a, b in scored])
    truths = {b for _, b in scored}
    assert len(scored) > 300 and agree >= 0.9, (agree, Counter(scored).most_common(8))
    assert len(truths) >= 2  # healthy and at least one fault were simulated and recognised
    # six times real time: capture stamps run ahead of the wall clock, so latency counts from the
    # window's forming (as with --fast), never negative
    assert pipe.engine.latency_from_ready and min(o["latency_ms"] for o in preds) >= 0


def test_alarms_reach_the_dashboard_when_no_result_is_written_anywhere() -> None:
    # the dashboard alone (no --jsonl, no feed): the results are decided and dropped, their alarm
    # events still go to the events the dashboard shows
    cfg = RunConfig(sources=("sim:bearing?machines=2&fault=inner_014&seed=1&speed=6",), stats_every_s=3600,
                    stale_ms=60000)
    pipe = Pipeline(cfg)
    assert not pipe.outputs

    def raised() -> set[str]:
        return {sid for (sid, to) in pipe.events.alarm_changes_by_stream() if to != "NORMAL"}

    pipe.start()
    try:
        wait_until(lambda: raised() == {"sim/m0", "sim/m1"}, 60, 0.25)
    finally:
        pipe.stop()
    assert raised() == {"sim/m0", "sim/m1"}
    assert {sid: c.most_common(1)[0][0] for sid, c in pipe.label_counts.items()} == dict.fromkeys(raised(), "inner_014")


def test_missing_model_and_bad_source_give_clear_errors(cli_in_process) -> None:
    _cli = cli_in_process  # what the command says; its exit as a process: test_first_hour.py
    res = _cli("--source", "sim", "--model", "/nonexistent/model.pt", "--duration", "1")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = _cli("--source", "bogus:thing", "--duration", "1")
    assert res.returncode == 2 and "unknown source kind" in res.stderr and "zmq://" in res.stderr
    res = _cli("--source", "sim", "--eager-batch", "-1", "--max-batch", "0", "--duration", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "eager_batch must be from 0 to 16,384" in res.stderr and "max_batch must be from 1 to 16,384" in res.stderr
    res = _cli("--source", "sim", "--device", "cuda", "--duration", "1")
    import torch

    if not torch.cuda.is_available():
        assert res.returncode == 2 and "--device cpu" in res.stderr


def test_nan_samples_never_reach_the_model_and_are_reported(tmp_path: Path, cli_in_process) -> None:
    require_cwru()
    _cli = cli_in_process
    x = cwru_signal("12k_Drive_End_B021_0_222.mat")[:12000 * 3].astype(np.float32)
    x[5000:5600] = np.nan
    path = tmp_path / "nan_sensor.npy"
    np.save(path, x)
    res = _cli("--source", f"file:{path}?rate=12000", "--fast", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    preds = [o for o in objs if o["type"] == "prediction"]
    assert preds and all(np.isfinite(o["probs"]).all() for o in preds)
    assert any(o["type"] == "health" and o["to"] == "CHECK_SENSOR" for o in objs)
    final = objs[-1]
    assert final["type"] == "stats" and final["nonfinite_samples"]["nan_sensor"] == 600


def test_a_recording_shorter_than_one_window_is_said_not_passed_over(tmp_path: Path, cli_in_process) -> None:
    # a recording that ends before its first window got no decision, and the run said nothing of
    # it ("0 windows ... latency None/None/None ms"); a 44.1 kHz clip so short that its resampler
    # gave the windower no sample yet too
    require_cwru()
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    wavfile.write(tmp_path / "short.wav", 12000, (rng.standard_normal(1500) * 3000).astype(np.int16))
    wavfile.write(tmp_path / "clip.wav", 44100, (rng.standard_normal((239, 2)) * 3000).astype(np.int16))
    np.save(tmp_path / "long.npy", cwru_signal(IR014_1)[: 12000 * 2].astype(np.float32))
    res = cli_in_process(*(a for f in ("short.wav", "clip.wav", "long.npy?rate=12000")
                           for a in ("--source", f"file:{tmp_path / f}")), "--fast", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    said = {o["stream"]: o["message"] for o in objs if o["type"] == "note" and "first window" in o["message"]}
    assert said == {
        "short": "ended after 0.125 s of samples, before its first window (2,048 samples at 12,000 Hz, 0.171 s): "
                 "no decision for it; give it a recording at least that long",
        "clip": "ended after 0.00542 s of samples, before its first window (2,048 samples at 12,000 Hz, 0.171 s): "
                "no decision for it; give it a recording at least that long"}, said
    assert {o["stream"] for o in objs if o["type"] == "prediction"} == {"long"}
    alone = cli_in_process("--source", f"file:{tmp_path / 'short.wav'}", "--fast", "--headless")
    out = alone.stdout + alone.stderr  # (headless: the lines and the summary on stdout)
    assert alone.returncode == 0 and "0 windows in" in out and "before its first window" in out, out
    assert "None" not in out, out
    learn = cli_in_process("baseline", "learn", "--source", f"file:{tmp_path / 'short.wav'}", "--out",
                           str(tmp_path / "p.json"))  # said there too, before "no stream gave enough windows"
    assert learn.returncode == 2 and "short: ended after 0.125 s of samples" in learn.stderr, learn.stderr


def test_two_sources_sending_one_stream_id_are_not_cut_into_one_stream(tmp_path: Path, cli_in_process) -> None:
    """Before: two sources with the same stream ids (two simulators, two gateways naming their
    machines alike) had their frames cut into the same windows, two signals in one stream, with
    twice the windows and not a word. Now the second source's frames of that id are refused,
    counted and said once, and the stream's results are the first source's alone."""
    require_cwru()
    _cli = cli_in_process
    x = cwru_signal("12k_Drive_End_B021_0_222.mat")[: 12000 * 3].astype(np.float32)
    np.save(tmp_path / "rec.npy", x)
    np.save(tmp_path / "other.npy", -x)
    alone = _cli("--source", f"file:{tmp_path / 'rec.npy'}?rate=12000", "--fast", "--jsonl", "-")
    both = _cli("--source", f"file:{tmp_path / 'rec.npy'}?rate=12000",
                "--source", f"file:{tmp_path / 'other.npy'}?rate=12000&stream=rec", "--fast", "--jsonl", "-")
    assert alone.returncode == both.returncode == 0, both.stderr
    preds = {name: sorted((o["index"], o["label"], o["probs"]) for o in _lines(res.stdout) if o["type"] == "prediction")
             for name, res in (("alone", alone), ("both", both))}
    assert preds["both"] == preds["alone"] and len(preds["alone"]) > 50
    final = _lines(both.stdout)[-1]
    second = final["sources"][f"file:{tmp_path / 'other.npy'}?rate=12000&stream=rec"]
    assert second["malformed"] == {"stream_conflict": second["frames"]} and second["frames"] > 0
    said = [line for line in both.stderr.splitlines() if "stream_conflict" in line]
    assert len(said) == 1 and "stream rec: also sent by source 2" in said[0] and "after source 1" in said[0]


def test_ctrl_c_that_lands_while_the_main_thread_holds_the_quit_event_still_stops_the_run() -> None:
    """A signal handler runs in the main thread between any two bytecodes, also inside
    ``quit.wait()`` while that holds the event's lock. A handler that waited for that lock would
    wait for its own thread forever: the monitor would run on and ignore every later Ctrl-C."""
    import signal
    import threading

    from drsn_stream.app.cli import _stop_on_signals

    pipe = Pipeline(RunConfig(sources=("sim?machines=1",), engine_process=False))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    lock = pipe.quit._cond  # what Event.wait holds between its checks of the flag
    forced: list[bool] = []

    def unstick() -> None:  # only if the handler waits for the lock: release it from here
        forced.append(True)
        lock.release()

    try:
        _stop_on_signals(pipe)
        handler = signal.getsignal(signal.SIGINT)
        lock.acquire()
        watchdog = threading.Timer(5.0, unstick)
        watchdog.start()
        handler(signal.SIGINT, None)  # as the interpreter runs it, in this thread, lock held
        watchdog.cancel()
        if not forced:
            lock.release()
        assert not forced, "the Ctrl-C handler waited for the lock its own thread held"
        pipe.wait(duration=30.0)  # returns at once: the stop was asked for
        assert pipe.quit.is_set()
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)
        pipe.stop()


def test_chunk_size_gives_identical_windows_and_labels() -> None:
    from drsn_stream.dsp import StreamDSP
    from drsn_stream.engine.runner import Runner
    from drsn_stream.models import load_artifact
    from drsn_stream.types import Frame

    x = cwru_signal(IR014_1)[:24000].astype(np.float32)[:, None]
    module, meta = load_artifact("bearing-cwru")
    runner = Runner(module, window=meta.window, device="cpu", max_batch=64)
    results = []
    for chunk in (1, 333, 4096):
        dsp = StreamDSP(meta)
        windows = []
        for seq, i in enumerate(range(0, len(x), chunk)):
            windows += dsp.push(Frame("s", seq, i / 12000, 12000.0, x[i : i + chunk]))
        data = np.stack([w.data for w in windows])
        probs, _ = runner.infer(data)
        results.append((data, [meta.labels[k] for k in probs.argmax(1)]))
    (d1, l1), (d2, l2), (d3, l3) = results
    assert len(d1) == (24000 - 2048) // 512 + 1
    assert np.array_equal(d1, d2) and np.array_equal(d1, d3)
    assert l1 == l2 == l3 and l1.count("inner_014") > 0.8 * len(l1)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory):
    """A real monitor over 3 s of a real CWRU recording (raw samples in a .npy): the raw signal,
    every prediction object it wrote, and its snapshot at the end."""
    require_cwru()
    x = cwru_signal("12k_Drive_End_B021_0_222.mat")[: 12000 * 3].astype(np.float32)
    path = tmp_path_factory.mktemp("replay") / "b021.npy"
    np.save(path, x)
    got: list[dict] = []
    sink = type("S", (), {"write": lambda self, o: got.append(o), "close": lambda self: None})()
    pipe = Pipeline(RunConfig(sources=(f"file:{path}?rate=12000",), fast=True, engine_process=False,
                              stats_every_s=3600), sinks=[sink])
    pipe.run()
    preds = sorted((o for o in got if o["type"] == "prediction"), key=lambda o: o["index"])
    return x, preds, pipe.snapshot()


def test_the_model_sees_each_window_normalized_once_as_the_artifact_says(replay) -> None:
    # Raw windows leave the DSP; the batch normalization step scales them once. Not at all: the
    # model scores raw samples and the levels stay 0; twice: the levels are those of normalized
    # windows (1.0 for z-scores), not the sensor's.
    from drsn_stream.dsp.normalize import normalize_with_level
    from drsn_stream.engine.runner import Runner
    from drsn_stream.models import load_artifact

    x, preds, snap = replay
    module, meta = load_artifact("bearing-cwru")
    assert meta.normalization == {"kind": "zscore"}
    n = (x.size - meta.window) // meta.hop + 1
    assert [o["index"] for o in preds] == list(range(n))  # every window, once
    raw = np.stack([x[k * meta.hop : k * meta.hop + meta.window] for k in range(n)])
    normed, levels = normalize_with_level(raw, meta.normalization)
    probs, _ = Runner(module, window=meta.window, device="cpu", max_batch=64).infer(normed)
    np.testing.assert_allclose([o["probs"] for o in preds], probs, atol=2e-4)
    # the dashboard's input-level sparkline: the sensor's RMS of the stream's latest windows
    (row,) = snap.rows
    shown = np.array(row.levels)
    assert shown.size == 32 and np.array_equal(shown, levels[-32:])
    assert np.all(np.abs(shown - 1.0) > 0.5)  # the sensor's scale, far from a normalized window's


def test_dashboard_latency_and_the_metrics_histogram_count_the_same_windows(replay) -> None:
    from drsn_stream.sinks.metrics import format_metrics

    _, preds, snap = replay
    lat = np.array([o["latency_ms"] for o in preds])  # rounded to 1 us in the JSON
    (row,) = snap.rows
    p50, p99 = np.percentile(lat, (50, 99))
    assert row.latency_p50_ms == pytest.approx(p50, abs=1e-3) and row.latency_p99_ms == pytest.approx(p99, abs=1e-3)
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(format_metrics(snap)) for s in fam.samples}
    assert metrics[("drsn_latency_seconds_count", ())] == len(preds) == snap.footer.windows_total
    assert metrics[("drsn_latency_seconds_sum", ())] == pytest.approx(lat.sum() / 1000.0, abs=len(preds) * 1e-6)
    for (name, labels), value in metrics.items():
        if name == "drsn_latency_seconds_bucket":  # every bucket holds exactly these windows
            # a window the JSON shows at a bucket's edge (rounded to 1 us) may lie either side of it
            edge = float(dict(labels)["le"]) * 1000.0
            assert np.count_nonzero(lat < edge - 6e-4) <= value <= np.count_nonzero(lat <= edge + 6e-4), labels


def test_error_lines_that_name_streams_do_not_grow_the_monitor_without_bound() -> None:
    """A peer sending a new stream id at a rate the model cannot take, again and again: each gives
    an error line naming the stream. The first MAX_ERRORS kinds are kept and their repeats counted;
    the rest are only counted, and the summary says how many."""
    from drsn_stream.app import pipeline as pipeline_mod

    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=1",), device="cpu", engine_process=False))
    for i in range(500):
        pipe.error(f"stream s{i}: sends 7000 Hz, a rate the model cannot take")
    pipe.error("stream s0: sends 7000 Hz, a rate the model cannot take")  # a kept line's repeat
    keep = pipeline_mod.MAX_ERRORS
    assert len(pipe.errors) == len(pipe.error_counts) == keep
    assert pipe.error_counts["stream s0: sends 7000 Hz, a rate the model cannot take"] == 2
    assert pipe.errors_not_kept == 500 - keep and pipe.stats_json()["errors_not_kept"] == 500 - keep
    assert f"and {500 - keep} more error lines" in pipe.summary()
