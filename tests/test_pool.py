"""The idle engine (engine/pool.py): a second engine process at idle priority that takes batches
while the first is busy, behind the inference loop, which hands results on in the order it sent
the batches. Real engine processes, the shipped artifact and its validation windows; a process
is held still with SIGSTOP where a test needs one batch to finish after a later one."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest

from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.engine import InferenceLoop
from drsn_stream.engine.pool import EnginePool
from drsn_stream.engine.procrunner import ProcessRunner
from drsn_stream.engine.runner import Runner
from drsn_stream.models.artifact import load_artifact, load_validation
from drsn_stream.types import Prediction, Window

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling")]

MODEL = "bearing-cwru"
BATCH = 4


@pytest.fixture(scope="module")
def model():
    module, meta = load_artifact(MODEL)
    x = load_validation(MODEL)[:4 * BATCH]
    local = Runner(module, window=meta.window, device="cpu", max_batch=BATCH, threads=1,
                   net_config=meta.model_config, validation=load_validation(MODEL))
    return meta, x, local.infer(x)[0]


def _pool(meta, *, helper_model: str = MODEL, start: bool = True) -> EnginePool:
    primary = ProcessRunner(MODEL, window=meta.window, classes=len(meta.labels), max_batch=BATCH)
    pool = EnginePool(primary, lambda: ProcessRunner(helper_model, window=meta.window, classes=len(meta.labels),
                                                     max_batch=BATCH, lanes=1, idle=True))
    pool.warmup()
    if start:
        pool.start_helper()
    return pool


def _until(check, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _windows(x: np.ndarray, first: int) -> list[Window]:
    now = time.time()
    return [Window("s", first + i, now, row, t_ready=now, normalized=True, level=1.0) for i, row in enumerate(x)]


def test_the_idle_engine_starts_when_the_engine_process_is_full_and_runs_at_idle_priority(model) -> None:
    meta, x, want = model
    pool = _pool(meta, start=False)
    try:
        # no second process while the first keeps up: one batch in flight leaves it a lane free
        first = pool.submit(x[:BATCH])
        assert pool.poll() == [] and len(pool.runners) == 1 and pool.batch_limit is None
        np.testing.assert_allclose(pool.collect(first)[0], want[:BATCH], rtol=0, atol=1e-6)
        handles = [pool.submit(x[:BATCH]), pool.submit(x[BATCH:2 * BATCH])]
        assert pool.lanes == 2 and pool.batch_limit == 32  # the helper's batches are small
        pool.poll()  # every lane of the first busy: the helper starts (and loads meanwhile)
        assert len(pool.runners) == 2
        for h in handles:
            pool.collect(h)
        primary, helper = pool.runners
        _until(lambda: pool.lanes == 3)  # the helper's lane counts once it is ready
        assert os.sched_getscheduler(helper.pid) == os.SCHED_IDLE
        assert os.sched_getscheduler(primary.pid) == os.SCHED_OTHER
        # in the monitor's session (one scheduling group with it: idle priority means idle
        # there) but out of its process group (a terminal's Ctrl-C is the monitor's to handle)
        assert os.getsid(helper.pid) == os.getsid(0) and os.getpgid(helper.pid) != os.getpgid(0)
        assert os.getsid(primary.pid) != os.getsid(0)
        assert "+ 1 on idle time" in pool.device_name
        handles = [pool.submit(x[i * BATCH:(i + 1) * BATCH]) for i in range(3)]
        # the primary's two lanes first; the third batch, sent while both are busy, to the helper
        assert [h.slot.k for h in handles] == [0, 0, 1]
        with pytest.raises(RuntimeError, match="all 3 lanes are in flight"):
            pool.submit(x[:BATCH])
        got = np.concatenate([pool.collect(h)[0] for h in handles])
        np.testing.assert_allclose(got, want[:3 * BATCH], rtol=0, atol=1e-6)
    finally:
        pool.close()


def _loop(pool: EnginePool, meta, delivered: list[Prediction]) -> tuple[InferenceLoop, MicroBatcher]:
    batcher = MicroBatcher(max_batch=BATCH, max_wait_ms=0.0)
    loop = InferenceLoop(batcher, pool, list(meta.labels), delivered.extend)
    loop.start()
    return loop, batcher


def test_a_stalled_idle_engine_holds_nothing_back_and_results_stay_in_order(model) -> None:
    # The idle engine runs only when the monitor's core has nothing else to do, which may be a
    # long while: once the engine process is free it runs a copy of the idle one's batch, and the
    # first result is used. Held here with SIGSTOP, the idle engine never answers in time.
    meta, x, want = model
    pool = _pool(meta)
    primary, helper = pool.runners
    delivered: list[Prediction] = []
    loop, batcher = _loop(pool, meta, delivered)
    try:
        _until(lambda: pool.lanes == 3)
        os.kill(primary.pid, signal.SIGSTOP)
        os.kill(helper.pid, signal.SIGSTOP)
        # batches 1 and 2 to the engine process, 3 to the idle one, 4 waits for a lane
        batcher.put_many(_windows(x, 0))
        _until(lambda: helper.in_flight == 1 and primary.in_flight == 2)
        os.kill(primary.pid, signal.SIGCONT)
        # 4 goes to the engine process and finishes before 3, whose copy runs after it
        _until(lambda: len(delivered) == 4 * BATCH)
        assert [p.index for p in delivered] == list(range(4 * BATCH))  # handed on in order all the same
        np.testing.assert_allclose(np.stack([p.probs for p in delivered]), want, rtol=0, atol=1e-6)
        assert pool.copies == 1 and helper.in_flight == 1  # the idle engine still holds its (stopped) batch
        os.kill(helper.pid, signal.SIGCONT)
        _until(lambda: helper.in_flight == 0)  # its late result is thrown away
        assert len(delivered) == 4 * BATCH and pool.lanes == 3
        batcher.put_many(_windows(x[:BATCH], 4 * BATCH))
        _until(lambda: len(delivered) == 5 * BATCH)
        np.testing.assert_allclose(np.stack([p.probs for p in delivered[-BATCH:]]), want[:BATCH], rtol=0, atol=1e-6)
        assert loop.error is None and loop.lost == 0
    finally:
        for r in pool.runners:
            os.kill(r.pid, signal.SIGCONT)
        loop.stop()
        loop.join(timeout=30)
        pool.close()


def test_an_idle_engine_that_dies_loses_only_its_own_batch_and_comes_back(model) -> None:
    meta, x, want = model
    pool = _pool(meta)
    primary, helper = pool.runners
    delivered: list[Prediction] = []
    loop, batcher = _loop(pool, meta, delivered)
    try:
        _until(lambda: pool.lanes == 3)
        dead = helper.pid
        os.kill(primary.pid, signal.SIGSTOP)
        os.kill(helper.pid, signal.SIGSTOP)
        batcher.put_many(_windows(x[:3 * BATCH], 0))
        _until(lambda: helper.in_flight == 1)
        os.kill(helper.pid, signal.SIGKILL)
        helper._proc.wait(timeout=10)  # dead before the engine process is free to copy its batch
        os.kill(primary.pid, signal.SIGCONT)
        _until(lambda: loop.lost == BATCH and len(delivered) == 2 * BATCH)
        assert [p.index for p in delivered] == list(range(2 * BATCH))  # the primary's, in order
        assert any("its batches in flight are lost" in n for n in loop.notes)
        _until(lambda: pool.lanes == 3)  # a new idle engine, ready, takes batches again
        assert helper.pid != dead and pool.restarts == 1
        assert os.sched_getscheduler(helper.pid) == os.SCHED_IDLE
        batcher.put_many(_windows(x[3 * BATCH:], 3 * BATCH))
        _until(lambda: len(delivered) == 3 * BATCH)
        np.testing.assert_allclose(np.stack([p.probs for p in delivered[-BATCH:]]), want[3 * BATCH:], rtol=0, atol=1e-6)
        assert loop.error is None
    finally:
        for r in pool.runners:
            try:
                os.kill(r.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        loop.stop()
        loop.join(timeout=30)
        pool.close()


def test_an_idle_engine_that_cannot_start_leaves_the_engine_process_alone_and_says_so(model, tmp_path) -> None:
    meta, x, want = model
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    pool = _pool(meta, helper_model=str(bad))
    try:
        said: list[str] = []
        _until(lambda: bool(said.extend(pool.poll()) or said))  # as the inference loop asks, each pass
        assert len(said) == 1 and "the idle engine process failed to start" in said[0]
        assert "engine process runs alone" in said[0]
        assert pool.lanes == 2 and "idle time" not in pool.device_name
        handles = [pool.submit(x[i * BATCH:(i + 1) * BATCH]) for i in range(2)]
        with pytest.raises(RuntimeError, match="all 2 lanes are in flight"):
            pool.submit(x[:BATCH])
        np.testing.assert_allclose(np.concatenate([pool.collect(h)[0] for h in handles]), want[:2 * BATCH],
                                   rtol=0, atol=1e-6)
    finally:
        pool.close()


def test_a_monitor_that_falls_behind_gets_an_idle_engine_and_says_when_it_cannot(cli_in_process) -> None:
    import json

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the idle engine needs a core apart from the engine process's")
    # a replay as fast as the engine takes it, one window a batch, keeps every lane of the engine
    # process busy
    res = cli_in_process("--source", "sim:bearing?machines=16", "--fast", "--duration", "2", "--max-batch", "1",
                         "--engine-process", "on", "--idle-engine", "on", "--headless", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    assert "engine process + 1 on idle time" in res.stderr  # the summary
    objs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert sum(o.get("type") == "prediction" for o in objs) >= 16 * 20
    # asked for where it cannot run (no engine process with a core of its own): said, not silent
    res = cli_in_process("--source", "sim:bearing?machines=1", "--duration", "1", "--engine-process", "off",
                         "--idle-engine", "on", "--headless", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    notes = [json.loads(ln)["message"] for ln in res.stdout.splitlines() if ln.startswith('{"type":"note"')]
    assert any(n.startswith("--idle-engine on: no idle engine process started") for n in notes), notes
