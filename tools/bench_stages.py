#!/usr/bin/env python3
"""The most windows/s one monitor process takes after ingest, whatever the model.

A real ``Pipeline`` (the artifact's normalization, unknown label, envelope stage, decisions and
alarms, and the sinks asked for) is fed windows as fast as its engine loop takes them, from
``--streams`` stream ids, with a runner that answers each window at once with the outputs the
real model gave for it. The windows are the shipped CWRU excerpts' (for the bearing model; noise
for another), stream ``s`` always the same one, so each stream keeps its label and the stages
after the model do the work they do on real machines. Ingest is left out: its windows are made
once, before the measured seconds. Prints the windows/s that came out
of the output thread, the CPU per window of the engine loop, the output thread, the envelope
stage and the hand-over of windows, and the monitor process's CPU in all: the threads share one
interpreter lock, so once Python is the limit the process stays near one core however many a
host has (the limit of a GPU host, where the model costs little; docs/performance.md).

    python tools/bench_stages.py --seconds 6
    python tools/bench_stages.py --streams 10240 --batch 256 --repeat 3
    python tools/bench_stages.py --jsonl /dev/null      # with the per-window result log
    python tools/bench_stages.py --normalized           # windows as ingest processes hand them over
    python tools/bench_stages.py --catch-up 0           # every batch 256 (the default lets a backlog
                                                        # leave in batches of up to 1,024, as on CUDA)
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import threading
import time

import numpy as np

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.dsp.normalize import BatchNormalizer
from drsn_stream.engine.contract import MAX_BATCH, Pending, cuda_catch_up_batch
from drsn_stream.errors import run_tool
from drsn_stream.runtime import freeze_start_up_objects, thaw
from drsn_stream.sinks.jsonl import JsonlSink
from drsn_stream.sources.sim import EXCERPT_RATE, load_excerpts
from drsn_stream.types import Window


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds used so far by a running thread of this process."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class Replay:
    """A runner that costs nothing: each window gets at once the outputs the real model gave for
    it (the same window, recognised by its first samples), so each stream keeps its own label
    and the stages after the model do the work they do on real machines."""

    lanes = 1

    def __init__(self, real, inputs: np.ndarray) -> None:
        """``inputs``: the model inputs (normalized) of every distinct window the bench feeds."""
        self.window, self.max_batch, self.notes = real.window, real.max_batch, []
        self.device_name = f"replay of {real.device_name}"
        probs, noise, feats = [], [], []
        for i in range(0, len(inputs), real.max_batch):
            handle = real.submit(inputs[i : i + real.max_batch])
            p, n = real.collect(handle)
            probs.append(p)
            noise.append(n)
            feats.append(handle.features)
        self.probs, self.noise = np.concatenate(probs), np.concatenate(noise)
        self.features = None if feats[0] is None else np.concatenate(feats)
        keys = _keys(inputs)
        if len(np.unique(keys)) != len(keys):
            raise SystemExit("bench_stages: two windows share their first samples; the replay cannot tell them apart")
        self.order = np.argsort(keys)
        self.sorted = keys[self.order]

    def warmup(self) -> None:
        pass

    def submit(self, x: np.ndarray) -> Pending:
        at = self.order[np.searchsorted(self.sorted, _keys(x))]
        return Pending(len(x), probs=self.probs[at], noise=self.noise[at],
                       features=None if self.features is None else self.features[at])

    def done(self, pending: Pending) -> bool:
        return True

    def collect(self, pending: Pending) -> tuple[np.ndarray, np.ndarray]:
        return pending.probs, pending.noise


def _keys(x: np.ndarray) -> np.ndarray:
    """A window's first two samples' bits as one integer, per row."""
    return np.ascontiguousarray(x[:, :2], dtype=np.float32).view(np.int64)[:, 0]


def real_windows(meta, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` raw windows of the shipped CWRU excerpts, their classes in turn, where the model takes
    windows at their rate (the bearing model); Gaussian noise for any other model."""
    tracks = [x for x in load_excerpts().values() if len(x) > meta.window] if meta.sample_rate == EXCERPT_RATE else []
    if not tracks:
        return rng.standard_normal((n, meta.window)).astype(np.float32)
    out = np.empty((n, meta.window), dtype=np.float32)
    for k in range(n):
        x = tracks[k % len(tracks)]
        start = int(rng.integers(0, len(x) - meta.window))
        out[k] = x[start : start + meta.window]
    return out


def run(streams: int, batch: int, seconds: float, *, model: str, jsonl: str | None, normalized: bool = False,
        catch_up: int | None = None) -> dict:
    cfg = RunConfig(sources=(f"zmq+pull://127.0.0.1:{free_port()}",), model=model, device="cpu",
                    engine_process=False, max_batch=batch, eager_batch=0, stale_ms=0.0,
                    queue_capacity=1 << 16, idle_flush=False, max_streams=max(streams, 1), stats_every_s=3600)
    pipe = Pipeline(cfg, sinks=[JsonlSink(jsonl, flush_every=4096)] if jsonl else ())
    # a backlog's batches, as the monitor's batcher cuts them on CUDA (the config's max_batch turned them off)
    if catch_up is None:
        catch_up = cuda_catch_up_batch(pipe.meta.window) if batch == MAX_BATCH else 0
    pipe.batcher.catch_up_batch = most = max(batch, catch_up)
    # the windows a monitor's ingest would hand over: raw, as the DSP leaves them, one per stream
    # in turn (each stream's windows a hop apart, stream s always window s % 256: real machines
    # keep their label), made before the clock starts
    rng = np.random.default_rng(1)
    data = real_windows(pipe.meta, 256, rng)
    levels = np.zeros(len(data))
    inputs, in_levels = BatchNormalizer(pipe.meta.normalization).in_place(data.copy())
    if normalized:  # as the ingest processes hand them over without an envelope stage
        data, levels = inputs, in_levels
    pipe.engine.runner = pipe.runner = Replay(pipe.runner, inputs)
    hop_s = pipe.meta.hop / pipe.meta.sample_rate
    now = time.time()
    windows = [Window(f"m{k % streams}", k // streams, now + (k // streams) * hop_s, data[k % streams % 256], now,
                      float(levels[k % streams % 256]), normalized)
               for k in range(max(streams, 4096) * 2)]
    pipe.runner.warmup()
    thresholds = freeze_start_up_objects()  # as Pipeline.start does: the collector as in the monitor
    out = threading.Thread(target=pipe._output_loop, name="drsn-output", daemon=True)
    out.start()
    pipe.engine.start()
    if pipe.envelope is not None:
        pipe.envelope.start()
    stop = threading.Event()
    fed = threading.Thread(target=feed, args=(pipe, windows, most, stop), name="feed", daemon=True)
    fed.start()
    time.sleep(1.5)  # past the first batches' one-off costs
    tids = {"engine_loop": pipe.engine, "output": out, "hand-over": fed}
    if pipe.envelope is not None:
        tids["envelope"] = pipe.envelope._thread
    cpu0 = {k: thread_cpu_s(t) for k, t in tids.items()}
    ru0, n0, t0 = resource.getrusage(resource.RUSAGE_SELF), pipe.decisions.windows_total, time.perf_counter()
    time.sleep(seconds)
    ru1, n1, el = resource.getrusage(resource.RUSAGE_SELF), pipe.decisions.windows_total, time.perf_counter() - t0
    cpu1 = {k: thread_cpu_s(t) for k, t in tids.items()}
    stop.set()
    pipe.engine.stop()
    pipe.engine.join(5)
    pipe._out.put(None)
    out.join(5)
    pipe.outputs.close()
    thaw(thresholds)
    n = n1 - n0
    proc_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "streams": streams,
        "batch": batch,
        "catch_up": most,
        "normalized": normalized,
        "jsonl": bool(jsonl),
        "envelope": pipe.envelope is not None,
        "unknown": pipe.unknown is not None,
        "windows_per_s": round(n / el),
        "process_cpu_pct": round(100 * proc_s / el, 1),
        "process_us_per_window": round(1e6 * proc_s / n, 2) if n else None,
        "us_per_window": {k: round(1e6 * (cpu1[k] - cpu0[k]) / n, 2) if n else None for k in tids},
    }


def feed(pipe: Pipeline, windows: list[Window], batch: int, stop: threading.Event) -> None:
    """Keeps a few batches' worth of windows waiting, as a monitor's ingest does under full load."""
    k, chunk = 0, 256
    while not stop.is_set():
        if pipe.batcher.depth() >= 4 * batch:
            time.sleep(0.0005)
            continue
        if k + chunk > len(windows):
            k = 0
        pipe._windows_in(windows[k : k + chunk])
        k += chunk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10240, help="distinct stream ids the windows come from")
    ap.add_argument("--batch", type=int, default=MAX_BATCH, help="the micro-batch (256: the monitor's on CUDA)")
    ap.add_argument("--catch-up", type=int, default=None, metavar="N",
                    help=f"while more than --batch windows wait, batches of up to N (default with --batch {MAX_BATCH}: "
                         "the monitor's on CUDA for the model's windows, 1,024 of 2,048 samples; else none; 0: none)")
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--model", default="bearing-cwru")
    ap.add_argument("--jsonl", default=None, metavar="PATH", help="also log every result as JSON lines here")
    ap.add_argument("--normalized", action="store_true",
                    help="windows normalized already, as ingest processes hand them over (no envelope stage)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [run(args.streams, args.batch, args.seconds, model=args.model, jsonl=args.jsonl, normalized=args.normalized,
                catch_up=args.catch_up) for _ in range(args.repeat)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        per = ", ".join(f"{k} {v}" for k, v in r["us_per_window"].items())
        backlog = f" (a backlog's up to {r['catch_up']})" if r["catch_up"] > r["batch"] else ""
        print(f"{r['streams']} streams, batch {r['batch']}{backlog}{', normalized' if r['normalized'] else ''}"
              f"{', JSON lines' if r['jsonl'] else ''}: "
              f"{r['windows_per_s']:,} windows/s; monitor process {r['process_cpu_pct']} % of a core, "
              f"{r['process_us_per_window']} us per window (of which: {per})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_stages.py"))
