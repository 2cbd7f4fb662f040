"""Micro-batcher and runner: batching rules, stale drops, and the same answers as the model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.contract import default_batch_sizes
from drsn_stream.engine.engine import InferenceLoop
from drsn_stream.engine.runner import Runner, pick_device
from drsn_stream.engine.stats import EngineStats
from drsn_stream.errors import ConfigError
from drsn_stream.models import create_model
from drsn_stream.models.artifact import script_model
from drsn_stream.types import Window


def _w(stream: str, i: int, *, t_last: float | None = None, t_ready: float | None = None, n: int = 2048) -> Window:
    now = time.time()
    return Window(stream, i, now if t_last is None else t_last, np.zeros(n, np.float32),
                  t_ready=now if t_ready is None else t_ready)


def test_full_batch_leaves_at_once_and_partial_only_after_max_wait() -> None:
    # max_wait far longer than the call's timeout: only a full batch can come out of this call
    b = MicroBatcher(max_batch=4, max_wait_ms=60_000)
    for i in range(6):
        b.put(_w("a", i))
    assert [w.index for w in b.next_batch(timeout=5.0)] == [0, 1, 2, 3]
    assert b.next_batch(timeout=0.2) == []  # two windows wait for more, not for the timeout
    # with a short max_wait the same partial batch leaves once its oldest window has waited
    b.max_wait = 0.05
    assert [w.index for w in b.next_batch(timeout=5.0)] == [4, 5]


def test_flush_sends_what_is_queued_at_once_but_not_what_comes_later() -> None:
    # A source that has handed over everything and waits for input flushes: its windows need not
    # wait max_wait for more that are not coming yet.
    b = MicroBatcher(max_batch=8, max_wait_ms=60_000)
    for i in range(3):
        b.put(_w("a", i))
    assert b.next_batch(timeout=0.1) == []  # partial, not flushed: waits
    b.flush()
    assert b.next_batch(timeout=0.1, early=False) == []  # the engine is busy: gather on
    b.put(_w("a", 3))  # arrived after the flush, behind flushed ones: leaves with them
    assert [w.index for w in b.next_batch(timeout=5.0)] == [0, 1, 2, 3]  # long before max_wait
    assert b.flushes == 1
    b.put(_w("a", 4))  # after the flushed ones left: waits again
    assert b.next_batch(timeout=0.1) == []
    # a flush from another thread wakes a waiting consumer
    threading.Timer(0.2, b.flush).start()
    assert [w.index for w in b.next_batch(timeout=5.0)] == [4]
    b.flush()  # with nothing queued, a flush leaves nothing behind for later windows
    b.put(_w("a", 5))
    assert b.next_batch(timeout=0.1) == []


def test_eager_batch_leaves_an_idle_engine_at_its_size_but_gathers_while_busy() -> None:
    # A burst of windows: the first eager_batch of them leave at once (the engine is idle), the
    # rest gather while that batch runs and leave with the windows after them.
    b = MicroBatcher(max_batch=16, max_wait_ms=60_000, eager_batch=4)
    for i in range(3):
        b.put(_w("a", i))
    assert b.next_batch(timeout=0.1) == []  # 3 < 4: waits
    threading.Timer(0.2, b.put, args=(_w("a", 3),)).start()  # the 4th wakes a waiting consumer
    assert [w.index for w in b.next_batch(timeout=5.0)] == [0, 1, 2, 3]
    assert b.eager_sends == 1
    for i in range(4, 10):
        b.put(_w("a", i))
    assert b.next_batch(timeout=0.1, early=False) == []  # the engine is busy: gather on
    assert [w.index for w in b.next_batch(timeout=5.0)] == list(range(4, 10))  # all 6 at once
    # off (0) by default: a partial batch waits for max_wait, a flush or a full batch
    plain = MicroBatcher(max_batch=16, max_wait_ms=60_000)
    for i in range(8):
        plain.put(_w("a", i))
    assert plain.next_batch(timeout=0.1) == []
    with pytest.raises(ValueError, match="eager_batch"):
        MicroBatcher(eager_batch=-1)


def test_a_backlog_leaves_in_catch_up_batches_and_a_kept_up_queue_in_normal_ones() -> None:
    # The engine fell behind: 10 windows wait where a batch is 4. They leave as one batch of 6 and
    # one of 4, not three of 4, 4 and 2: bigger batches cost less per window.
    b = MicroBatcher(max_batch=4, max_wait_ms=0, catch_up_batch=6)
    for i in range(10):
        b.put(_w("a", i))
    assert [len(b.next_batch(timeout=1.0)) for _ in range(2)] == [6, 4]
    assert b.catch_ups == 1
    # kept up: no more than max_batch wait, so none is larger
    for i in range(4):
        b.put(_w("a", i))
    assert len(b.next_batch(timeout=1.0)) == 4 and b.catch_ups == 1
    # off by default, and never below max_batch
    assert MicroBatcher(max_batch=4).catch_up_batch == MicroBatcher(max_batch=4, catch_up_batch=2).catch_up_batch == 4


def test_stale_windows_are_dropped_and_counted_per_stream() -> None:
    b = MicroBatcher(max_batch=8, max_wait_ms=1, stale_ms=500)
    old = time.time() - 5.0
    b.put(_w("s1", 0, t_last=old, t_ready=old))
    b.put(_w("s2", 0, t_last=old, t_ready=old))
    b.put(_w("s2", 1, t_last=old, t_ready=old))
    b.put(_w("s1", 1))
    batch = b.next_batch(timeout=1.0)
    assert [(w.stream_id, w.index) for w in batch] == [("s1", 1)]
    assert dict(b.dropped_stale) == {"s1": 1, "s2": 2}
    assert b.dropped_total() == 3


def test_a_sender_whose_clock_is_behind_is_labeled_and_said(free_tcp_port: int) -> None:
    # A gateway 10 s behind this host (no NTP): every window's capture time looked 10 s old, so
    # the batcher dropped them all as stale and the monitor labeled nothing, "dropped" its only
    # word. A window's age is now counted from when it was formed here, and the skew is said.
    import zmq

    from drsn_stream.app.pipeline import Pipeline
    from drsn_stream.app.runconfig import RunConfig
    from drsn_stream.sources.wire import encode, encode_eos

    pipe = Pipeline(RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1",),
                              engine_process=False, duration=60))
    pipe.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
    rate, n = 12000, 512
    rng = np.random.default_rng(0)
    try:
        t0 = time.time() - 10.0  # the sender's clock
        for seq in range(48):  # 2 s of vibration, in real time
            push.send_multipart(encode("gw/1", seq, t0 + seq * n / rate, rate, rng.standard_normal(n).astype(np.float32)))
            time.sleep(max(0.0, t0 + 10.0 + (seq + 1) * n / rate - time.time()))
        push.send_multipart(encode_eos("gw/1"))
        pipe.wait()
    finally:
        push.close()
        pipe.stop()
    assert sum(pipe.label_counts["gw/1"].values()) == (48 * n - 2048) // 512 + 1
    assert pipe.batcher.dropped_total() == 0
    said = [e.data["message"] for e in pipe.events.recent() if e.type == "note" and e.stream_id == "gw/1"]
    assert len(said) == 1 and "s after the capture time they carry (the sender's clock is behind" in said[0], said


def test_overflow_drops_the_oldest_and_counts_it() -> None:
    b = MicroBatcher(max_batch=100, max_wait_ms=1, capacity=3)
    for i in range(5):
        b.put(_w("x", i))
    assert b.dropped_overflow["x"] == 2
    assert [w.index for w in b.next_batch(timeout=1.0)] == [2, 3, 4]


def test_block_when_full_loses_nothing() -> None:
    b = MicroBatcher(max_batch=2, max_wait_ms=1, capacity=2, block_when_full=True)
    got: list[int] = []

    def consume() -> None:
        while True:
            batch = b.next_batch(timeout=0.5)
            if not batch and b.closed:
                return
            got.extend(w.index for w in batch)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        b.put(_w("f", i))
    b.close()
    t.join(5)
    assert got == list(range(50)) and b.dropped_total() == 0


@pytest.fixture(scope="module")
def scripted() -> tuple[torch.nn.Module, torch.jit.ScriptModule]:
    torch.manual_seed(0)
    model = create_model("drsn_cw_paper", num_classes=10).eval()
    return model, script_model(model)


def test_cpu_runner_matches_the_model_and_splits_large_batches(scripted) -> None:
    model, module = scripted
    runner = Runner(module, window=2048, device="cpu", max_batch=8)
    runner.warmup()
    assert runner.ready.is_set() and "CPU" in runner.device_name
    x = np.random.default_rng(0).standard_normal((20, 2048)).astype(np.float32)
    probs, noise = runner.infer(x)
    with torch.no_grad():
        logits, ref_noise = model(torch.from_numpy(x))
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(noise, ref_noise.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="2048"):
        runner.infer(x[:, :100])


def test_inference_loop_turns_windows_into_predictions(scripted) -> None:
    _, module = scripted
    labels = [f"c{i}" for i in range(10)]
    runner = Runner(module, window=2048, device="cpu", max_batch=4)
    runner.warmup()
    batcher = MicroBatcher(max_batch=4, max_wait_ms=5)
    out = []
    loop = InferenceLoop(batcher, runner, labels, out.extend)
    loop.start()
    for i in range(10):
        batcher.put(_w("m", i))
    batcher.close()
    loop.join(10)
    assert [p.index for p in out] == list(range(10))
    assert all(p.label in labels and 0 < p.confidence <= 1 and p.latency_ms >= 0 for p in out)
    assert loop.stats.windows == 10 and max(loop.stats.batch_sizes) == 4


def test_stats_recording_keeps_every_latency_of_the_span_and_only_those() -> None:
    # The live view keeps the last 8192 latencies over all streams (a few seconds at 3,000
    # windows/s); a benchmark's percentiles must cover its whole measured span.
    stats = EngineStats()
    stats.record_batch(["a"], np.array([1000.0]), 0.01)  # before the span: not recorded
    stats.start_recording()
    for i in range(100):
        stats.record_batch(["a"] * 60 + ["b"] * 40, np.full(100, float(i)), 0.01)
    lat, batches = stats.stop_recording()
    stats.record_batch(["a"], np.array([2000.0]), 0.01)  # after it: not recorded either
    assert batches == 100 and lat.size == 10_000 and lat.max() == 99.0 and lat.min() == 0.0
    assert stats.stop_recording()[0].size == 0


def test_stats_keep_each_streams_latest_latencies_for_its_percentiles() -> None:
    # The dashboard's p50/p99 of a stream are over its latest STREAM_KEEP windows; the histogram
    # and the all-streams view count every window.
    stats = EngineStats()
    stats.record_batch(["a"] * 300, np.full(300, 500.0), 0.01)  # old: pushed out of a's ring
    stats.record_batch(["a"] * 128 + ["b"] * 128, np.concatenate([np.arange(128.0), np.arange(128.0) + 200]), 0.01)
    stats.record_batch(["a"] * 128, np.arange(128.0) + 128, 0.01)
    rows = stats.stream_p50_p99(["a", "b", "c"])
    assert set(rows) == {"a", "b"}  # c has no measurement: no row figure
    assert rows["a"] == (pytest.approx(127.5), pytest.approx(np.percentile(np.arange(256.0), 99)))
    assert stats.percentiles("a", (50,)) == (pytest.approx(127.5),)
    assert rows["b"][0] == pytest.approx(263.5)
    assert stats.histogram.read().count == stats.windows == 684
    # batches of distinct streams (recorded in one step), new streams among them, past the ring's end
    many = [f"s{k}" for k in range(100)]
    for i in range(300):
        stats.record_batch(many[: 50 + i % 51], np.arange(50 + i % 51) * 1000.0 + i, 0.01)
    for k in (0, 49, 50, 99):
        got = [i for i in range(300) if k < 50 + i % 51][-256:]  # the values stream k got, its last 256
        want = np.percentile(np.array(got) + k * 1000.0, (50, 99))
        assert stats.stream_p50_p99([f"s{k}"])[f"s{k}"] == (pytest.approx(want[0]), pytest.approx(want[1])), k
        assert stats.percentiles(f"s{k}", (99,)) == (pytest.approx(want[1]),)


def test_raw_windows_without_a_normalization_step_are_refused(scripted) -> None:
    # The engine never normalizes: a raw window reaching it without the DSP's batch step would
    # be inferred on unscaled samples, so it is an error that names the step.
    _, module = scripted
    runner = Runner(module, window=2048, device="cpu", max_batch=4)
    loop = InferenceLoop(MicroBatcher(max_batch=4), runner, [f"c{i}" for i in range(10)], lambda preds: None)
    raw = Window("m", 0, time.time(), np.ones(2048, np.float32), normalized=False)
    with pytest.raises(ConfigError, match="BatchNormalizer"):
        loop.process([raw])
    assert loop.stats.windows == 0


def test_default_batch_sizes_and_device_choice() -> None:
    assert default_batch_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert default_batch_sizes(100)[-1] == 100
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="--device cpu"):
            pick_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runner_with_graphs_matches_cpu(scripted) -> None:
    model, module = scripted
    x = np.random.default_rng(1).standard_normal((37, 2048)).astype(np.float32)
    cpu = Runner(module, window=2048, device="cpu", max_batch=64)
    gpu = Runner(module, window=2048, device="cuda", max_batch=64, validation=x)
    gpu.warmup()
    assert gpu.graphs
    p_cpu, _ = cpu.infer(x)
    p_gpu, _ = gpu.infer(x)
    assert (p_cpu.argmax(1) == p_gpu.argmax(1)).mean() >= 0.97
    np.testing.assert_allclose(p_gpu, p_cpu, atol=2e-2 if gpu.fp16 else 1e-3)
    # two batches in flight on two lanes give the same results as one at a time; a third waits
    h1, h2 = gpu.submit(x[:20]), gpu.submit(x[20:])
    with pytest.raises(RuntimeError, match="collect one first"):
        gpu.submit(x[:20])
    (q1, _), (q2, _) = gpu.collect(h1), gpu.collect(h2)
    np.testing.assert_allclose(np.concatenate([q1, q2]), p_gpu, atol=1e-6)
    big = np.concatenate([x] * 5)  # 185 windows: slices of 64 overlapping on the lanes
    np.testing.assert_allclose(gpu.infer(big)[0], np.concatenate([p_gpu] * 5), atol=1e-6)


def test_the_engine_process_runs_the_monitors_own_code_from_a_folder_holding_another_copy(tmp_path, monkeypatch) -> None:
    # a user who starts the monitor in a checkout of another version (or any folder with a
    # drsn_stream package) must not get that copy in the engine process: python -m would import it
    from drsn_stream.engine.procrunner import ProcessRunner
    from drsn_stream.models.artifact import load_artifact, load_validation

    decoy = tmp_path / "drsn_stream"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the copy in the working directory was imported')\n")
    monkeypatch.chdir(tmp_path)
    module, meta = load_artifact("bearing-cwru")
    x = load_validation("bearing-cwru")[:8]
    proc = ProcessRunner("bearing-cwru", window=meta.window, classes=len(meta.labels), max_batch=8)
    try:
        proc.warmup()
        probs, _ = proc.infer(x)
    finally:
        proc.close()
    local = Runner(module, window=meta.window, device="cpu", max_batch=8, threads=1)
    np.testing.assert_array_equal(probs.argmax(1), local.infer(x)[0].argmax(1))


def test_an_engine_process_that_dies_starting_is_said_so_at_once_with_its_exit_code(monkeypatch) -> None:
    import sys

    from drsn_stream.engine import procrunner

    monkeypatch.setattr(procrunner, "child_process", lambda module, args: ([sys.executable, "-c", "raise SystemExit(3)"], {}))
    with pytest.raises(procrunner.ArtifactError, match=r"failed to start: it ended \(exit code 3\) before it was ready"):
        procrunner.ProcessRunner("bearing-cwru", window=2048, classes=10, max_batch=8).warmup()


@pytest.mark.slow
def test_process_runner_gives_the_in_process_numbers_and_cleans_up() -> None:
    # the model in a child process (shared memory + a pipe) must answer exactly like the Runner
    import os

    from drsn_stream.engine.procrunner import ProcessRunner
    from drsn_stream.models.artifact import load_artifact, load_validation

    module, meta = load_artifact("bearing-cwru")
    x = np.concatenate([load_validation("bearing-cwru")] * 5)[:300]
    local = Runner(module, window=meta.window, device="cpu", max_batch=128, threads=1,
                   net_config=meta.model_config, validation=load_validation("bearing-cwru"))
    proc = ProcessRunner("bearing-cwru", window=meta.window, classes=len(meta.labels), max_batch=128)
    try:
        proc.warmup()
        assert "engine process" in proc.device_name
        assert local.channels_last and "channels-last" in proc.device_name  # the same form on both sides
        p_local, n_local = local.infer(x)
        p_proc, n_proc = proc.infer(x)  # 3 slices, 2 in flight
        # each runner timed its two compiled forms at start and may send a slice of 44 through the
        # other one: the same labels, numbers within float rounding (a zero rounded across its
        # threshold moves the noise index by 1/(L*C))
        assert (p_proc.argmax(1) == p_local.argmax(1)).all()
        np.testing.assert_allclose(p_proc, p_local, rtol=0, atol=1e-5)
        np.testing.assert_allclose(n_proc, n_local, rtol=0, atol=1e-3)
        # where each batch's time went, as tools/bench_pipeline.py reports it
        times = list(proc.batch_times)
        assert [t[0] for t in times] == [128, 128, 44]
        for _rows, to_child, wall, back, cpu, switches in times:
            assert to_child >= 0 and back >= 0 and switches >= 0
            assert 0 < cpu <= wall + 0.005  # CPU seconds of the child's thread, within its wall time
        for runner in (local, proc):  # one input check, the same words from both
            with pytest.raises(ValueError, match=rf"expected windows of shape \(b, {meta.window}\)"):
                runner.submit(x[:4, :100])
        names = [s.name for s in proc._in + proc._out]
    finally:
        proc.close()
    assert proc._proc.returncode == 0
    assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


@pytest.mark.slow
def test_the_engine_process_allocates_with_jemalloc_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With libjemalloc2 installed (tools/setup.sh installs it) the engine process runs with it and
    says so; DRSN_STREAM_MALLOC=system keeps glibc's malloc."""
    import ctypes.util
    from pathlib import Path

    from drsn_stream.engine.procrunner import MALLOC_ENV, ProcessRunner, allocator_env
    from drsn_stream.models.artifact import read_meta

    for env in ({MALLOC_ENV: "system"}, {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}):
        assert allocator_env(env) == env  # turned off, or the user's own malloc
    if ctypes.util.find_library("jemalloc") is None:
        pytest.skip("libjemalloc2 is not installed (tools/setup.sh installs it)")
    assert "jemalloc" in allocator_env({"LD_PRELOAD": "libfoo.so"})["LD_PRELOAD"].split()[0]
    meta = read_meta("bearing-cwru")
    for setting, want in (("auto", True), ("system", False)):
        monkeypatch.setenv(MALLOC_ENV, setting)
        proc = ProcessRunner("bearing-cwru", window=meta.window, classes=len(meta.labels), max_batch=64)
        try:
            proc.warmup()
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert ("jemalloc" in maps) == want and ("jemalloc" in proc.device_name) == want, (setting, proc.device_name)
        finally:
            proc.close()


def test_process_runner_reports_a_broken_artifact(tmp_path) -> None:
    from drsn_stream.engine.procrunner import ProcessRunner

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    proc = ProcessRunner(str(bad), window=2048, classes=10, max_batch=8)
    from drsn_stream.errors import ArtifactError

    with pytest.raises(ArtifactError, match="engine process failed to start: error"):
        proc.warmup()


def test_stamps_are_moved_by_a_step_of_the_wall_clock_only_where_now_was_read_after_it() -> None:
    # A window's latency is "now" minus its capture stamp; a stamp taken before a step of the wall
    # clock is moved by the step. Where the step came between reading "now" and looking for it (a
    # busy host held the engine's thread there), both were on one side of it, and moving the stamp
    # made a window an hour late (seen once under the full suite's load after a step back).
    from drsn_stream.clock import across_step

    hour, t = 3600.0, 1.8e9
    stamps = np.array([t - 0.05, t - hour + 1.0])  # one taken before a step back by an hour, one after
    back = (-hour, t - hour + 1.5)  # as WallSteps.recent gives it: the bound is the wall time now
    assert across_step(stamps, t - hour + 1.2, *back).tolist() == [True, False]  # now read after the step
    assert across_step(stamps, t + 0.01, *back).tolist() == [False, False]  # now read before it, too
    fwd = (hour, t + 0.02)  # forward: the bound is what the clock would read without the step
    stamps = np.array([t - 0.05, t + hour + 0.5])
    assert across_step(stamps, t + hour + 0.6, *fwd).tolist() == [True, False]
    assert across_step(stamps, t + 0.01, *fwd).tolist() == [False, False]
    assert bool(across_step(t - 0.05, t + hour + 0.6, *fwd))  # a float stamp (the batcher's)
