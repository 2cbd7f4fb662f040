"""``drsn-stream bench``: engine windows/s and latency per batch size, against baselines run in
the same process: (a) a naive loop calling the eager PyTorch model once per window, (b) plain
TorchScript (the artifact as loaded, not frozen) at the same batch size, and on CUDA (c) a
hand-captured CUDA graph of the fp16 model. Prints a table and ratios; ``--json`` prints one
JSON document. No assertion here: these are measurements, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from drsn_stream.engine.contract import BENCH_BATCH_SIZES as DEFAULT_SIZES
from drsn_stream.engine.runner import Runner, cpu_threads_for_inference, pick_device
from drsn_stream.models.artifact import eager_from_artifact, load_artifact, load_validation
from drsn_stream.models.outputs import to_probs

ENGINE_RUN = 8  # batches per timed engine call (back to back, as under load)


def _timeit(fn, seconds: float, sync) -> tuple[float, int]:
    fn()
    sync()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3 and time.perf_counter() - t0 >= seconds:
            break
    sync()
    return time.perf_counter() - t0, n


def run_bench(
    model: str = "bearing-cwru",
    *,
    device: str = "auto",
    batch_sizes: tuple[int, ...] = DEFAULT_SIZES,
    seconds: float = 1.0,
    threads: int | None = None,
    naive_windows: int = 200,
    lanes: int = 2,
    cpu_layout: str = "auto",
) -> dict[str, Any]:
    dev = pick_device(device)
    threads = threads or (cpu_threads_for_inference() if dev.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    module, meta = load_artifact(model, map_location="cpu")
    n = meta.window
    rng = np.random.default_rng(0)
    max_b = max(batch_sizes)
    data = rng.standard_normal((max_b, n)).astype(np.float32)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    # (a) naive: eager model, one window per call, numpy in and out as a user would write it
    eager = eager_from_artifact(module, meta)
    if dev.type != "cpu":
        eager = eager.to(dev)
    k = min(naive_windows, max_b)

    def naive() -> None:
        with torch.no_grad():
            for i in range(k):
                logits, _ = eager(torch.from_numpy(data[i : i + 1]).to(dev))
                to_probs(logits, meta.scores).cpu().numpy()

    dt, reps = _timeit(naive, seconds, sync)
    naive_wps = k * reps / dt

    runner = Runner(
        module, window=n, device=dev, max_batch=max_b, batch_sizes=list(batch_sizes), threads=threads,
        validation=load_validation(model), lanes=lanes, net_config=meta.model_config, cpu_layout=cpu_layout,
        scores=meta.scores,
    )
    t0 = time.perf_counter()
    runner.warmup()
    warmup_s = time.perf_counter() - t0
    plain = module.eval() if dev.type == "cpu" else copy.deepcopy(module).to(dev).eval()
    graph16 = _graph_fp16(module, dev, n, meta.scores) if dev.type == "cuda" else None

    rows = []
    for b in batch_sizes:
        x = data[:b]

        def engine(x=x) -> None:  # as the inference loop drives it: up to `lanes` batches in flight
            pend: deque = deque()
            for _ in range(ENGINE_RUN):
                if len(pend) >= runner.lanes:
                    runner.collect(pend.popleft())
                pend.append(runner.submit(x))
            while pend:
                runner.collect(pend.popleft())

        dt, reps = _timeit(engine, seconds, sync)
        eng = b * ENGINE_RUN * reps / dt
        dt, reps = _timeit(lambda x=x: runner.infer(x), seconds / 4, sync)
        eng_lat = dt / reps * 1000.0  # one batch alone, submit to result

        xt = torch.from_numpy(x)

        def ts(xt=xt) -> None:
            with torch.no_grad():
                logits, noise = plain(xt.to(dev))
                to_probs(logits, meta.scores).cpu().numpy()
                noise.cpu().numpy()

        dt, reps = _timeit(ts, seconds, sync)
        ts_wps = b * reps / dt
        row = {"batch": b, "engine_wps": round(eng, 1), "engine_batch_ms": round(eng_lat, 3),
               "torchscript_wps": round(ts_wps, 1)}
        best = ts_wps
        if graph16 is not None:
            g = graph16(b)
            dt, reps = _timeit(lambda g=g, x=x: g(x), seconds, sync)
            row["cuda_graph_fp16_wps"] = round(b * reps / dt, 1)
            best = max(best, row["cuda_graph_fp16_wps"])
        row["x_best_baseline"] = round(eng / best, 3)
        row["x_naive"] = round(eng / naive_wps, 1)
        rows.append(row)
    return {
        "model": meta.name,
        "network": meta.model,
        "window": n,
        "device": runner.device_name,
        "torch": torch.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "fp16": runner.fp16,
        "fp16_agreement": runner.fp16_agreement,
        "lanes": runner.lanes,
        "channels_last": runner.channels_last,
        "compiled_tails": runner.compiled_tails,
        "compiled_whole_below": runner.small_below,
        "channels_last_check": runner.layout_check,
        "warmup_s": round(warmup_s, 3),
        "naive_wps": round(naive_wps, 1),
        "results": rows,
        "notes": runner.notes,
    }


def _graph_fp16(module: torch.jit.ScriptModule, dev: torch.device, n: int, scores: str = "logits"):
    """A hand-made CUDA graph of the fp16 model per batch size (the GPU baseline)."""
    half = copy.deepcopy(module).to(dev).half().eval()
    cache: dict[int, Any] = {}

    def make(b: int):
        if b in cache:
            return cache[b]
        static = torch.zeros(b, n, device=dev, dtype=torch.float16)
        s = torch.cuda.Stream(device=dev)
        s.wait_stream(torch.cuda.current_stream(dev))
        with torch.inference_mode(), torch.cuda.stream(s):
            for _ in range(3):
                half(static)
        torch.cuda.current_stream(dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            logits, noise = half(static)
            probs = to_probs(logits, scores)
        host = torch.empty(b, n, pin_memory=True)

        def call(x: np.ndarray) -> np.ndarray:
            host.copy_(torch.from_numpy(x))
            static.copy_(host, non_blocking=True)
            g.replay()
            return probs.cpu().numpy()

        cache[b] = call
        return call

    return make


def run(args: argparse.Namespace) -> int:
    if args.peers:
        from drsn_stream.engine import peers

        return peers.run(args)
    sizes = tuple(int(s) for s in str(args.batch_sizes or ",".join(map(str, DEFAULT_SIZES))).split(",") if s.strip())
    res = run_bench(args.model, device=args.device, batch_sizes=sizes, seconds=args.seconds,
                    threads=args.threads, naive_windows=args.naive_windows, lanes=args.lanes,
                    cpu_layout=args.cpu_layout)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    from rich.table import Table

    from drsn_stream.console import PipeConsole as Console

    t = Table(title=f"drsn-stream bench: {res['model']} ({res['network']}, window {res['window']}) on "
                    f"{res['device']}, torch {res['torch']}")
    cols = ["batch", "engine windows/s", "one batch ms", "TorchScript windows/s"]
    if any("cuda_graph_fp16_wps" in r for r in res["results"]):
        cols.append("CUDA graph fp16 windows/s")
    cols += ["engine / best baseline", "engine / naive"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in res["results"]:
        cells = [str(r["batch"]), f"{r['engine_wps']:,.0f}", f"{r['engine_batch_ms']:.2f}", f"{r['torchscript_wps']:,.0f}"]
        if "cuda_graph_fp16_wps" in r:
            cells.append(f"{r['cuda_graph_fp16_wps']:,.0f}")
        cells += [f"{r['x_best_baseline']:.2f}x", f"{r['x_naive']:.1f}x"]
        t.add_row(*cells)
    c = Console()
    c.print(t)
    c.print(f"naive eager loop (one window per call): {res['naive_wps']:,.0f} windows/s; "
            f"{res['threads']} torch thread(s) of {res['cpu_count']} cores; warm-up {res['warmup_s']} s; "
            f"engine: {ENGINE_RUN} batches back to back, {res['lanes']} in flight")
    if res["channels_last_check"]:
        agree, dp, dn = res["channels_last_check"]
        form = "channels-last form" + (" with compiled tails" if res.get("compiled_tails") else "")
        if res.get("compiled_whole_below"):
            form += f" (compiled whole below batch {res['compiled_whole_below']})"
        c.print(f"{form} {'used' if res['channels_last'] else 'refused'}: {agree:.2%} label agreement "
                f"with the module on the validation windows, max |d prob| {dp:.1e}, max |d noise index| {dn:.1e}")
    for note in res["notes"]:
        c.print(f"note: {note}")
    return 0
