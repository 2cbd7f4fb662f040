#!/usr/bin/env python3
"""Where does the GPU time of the built-in bearing model go? Variants of the same network, each
replayed from a CUDA graph at one batch size, measured in the same run:

- device-only throughput (graph replays back to back, no host copies) for TorchScript fp32/fp16,
  frozen fp16, frozen + optimize_for_inference fp16, the eager fp16 model, and (optionally)
  torch.compile fp16;
- kernels launched per replay (torch.profiler) for the TorchScript and frozen fp16 graphs;
- end to end through the engine's Runner (host copy -> H2D -> graph -> D2H) for comparison.

Prints one JSON object per line, flushed, so a run cut short still shows what it measured.
A measurement script, not a test; CUDA only.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from drsn_stream.engine.bench import eager_from_artifact
from drsn_stream.engine.runner import Runner
from drsn_stream.errors import EngineError, run_tool
from drsn_stream.models.artifact import load_artifact, load_validation, quiet_torchscript


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def graph_of(fn, x: torch.Tensor):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(s):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g):
        out = fn(x)
    return g, out


def device_wps(g, b: int, seconds: float) -> float:
    g.replay()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(20):
            g.replay()
        n += 20
        torch.cuda.synchronize()
        if time.perf_counter() - t0 >= seconds:
            break
    return b * n / (time.perf_counter() - t0)


def kernels_per_replay(g) -> int:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    top = sorted(evs, key=lambda e: -e.count)[:12]
    emit(top_kernels=[(e.key[:70], e.count // 5) for e in top])
    return sum(e.count for e in evs) // 5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bearing-cwru")
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    ap.add_argument("--all", action="store_true", help="also fp32, eager fp16 and optimize_for_inference")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise EngineError(f"gpu_probe needs a CUDA GPU; this torch ({torch.__version__}) sees none")
    dev = torch.device("cuda")
    emit(gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
         texpr_fuser=torch._C._jit_texpr_fuser_enabled(), can_fuse_gpu=torch._C._jit_can_fuse_on_gpu())
    module, meta = load_artifact(args.model, map_location="cpu")
    n = meta.window
    val = load_validation(args.model)
    ts32 = copy.deepcopy(module).to(dev).eval()
    ts16 = copy.deepcopy(module).to(dev).half().eval()
    with quiet_torchscript():
        fr16 = torch.jit.freeze(copy.deepcopy(module).to(dev).half().eval())
        try:
            ofi16 = torch.jit.optimize_for_inference(torch.jit.freeze(copy.deepcopy(module).to(dev).half().eval()))
        except Exception as exc:  # noqa: BLE001
            emit(variant="ts16_frozen_ofi", error=str(exc).splitlines()[0])
            ofi16 = None
    eager16 = eager_from_artifact(module, meta).to(dev).half().eval()
    variants = {"ts16": (ts16, torch.float16), "ts16_frozen": (fr16, torch.float16)}
    if args.all:
        variants.update(ts32=(ts32, torch.float32), eager16=(eager16, torch.float16))
        if ofi16 is not None:
            variants["ts16_frozen_ofi"] = (ofi16, torch.float16)
    if args.compile:
        t0 = time.perf_counter()
        try:
            comp = torch.compile(eager_from_artifact(module, meta).to(dev).half().eval(), mode="max-autotune-no-cudagraphs")
            with torch.inference_mode():
                comp(torch.zeros(256, n, device=dev, dtype=torch.float16))
            variants["compile16"] = (comp, torch.float16)
            emit(variant="compile16", build_s=round(time.perf_counter() - t0, 1))
        except Exception as exc:  # noqa: BLE001
            emit(variant="compile16", error=str(exc).splitlines()[0])

    xval = torch.from_numpy(val[:512]).to(dev)
    with torch.inference_mode():
        ref = ts32(xval)[0].argmax(1)
    for b in (int(s) for s in args.batches.split(",")):
        for name, (m, dt) in variants.items():
            try:
                with torch.inference_mode():
                    agree = float((m(xval.to(dt))[0].argmax(1) == ref).float().mean())
                x = torch.zeros(b, n, device=dev, dtype=dt)
                g, _ = graph_of(lambda t, m=m: m(t), x)
                row = {"variant": name, "batch": b, "device_wps": round(device_wps(g, b, args.seconds)),
                       "agree_fp32": round(agree, 4)}
                if b == 256:
                    row["kernels_per_replay"] = kernels_per_replay(g)
                emit(**row)
                del g
            except Exception as exc:  # noqa: BLE001
                emit(variant=name, batch=b, error=str(exc).splitlines()[0])
        # end to end through the engine's Runner, 1..3 batches in flight
        xh = np.random.default_rng(0).standard_normal((b, n)).astype(np.float32)
        for lanes in (1, 2, 3):
            runner = Runner(module, window=n, device=dev, max_batch=b, batch_sizes=[b], validation=val, lanes=lanes)
            runner.warmup()
            runner.infer(xh)
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                pend = []
                for _ in range(8):
                    if len(pend) >= lanes:
                        runner.collect(pend.pop(0))
                    pend.append(runner.submit(xh))
                for h in pend:
                    runner.collect(h)
                reps += 8
            dt_ = time.perf_counter() - t0
            emit(variant="runner_end_to_end", batch=b, lanes=lanes, wps=round(b * reps / dt_),
                 fp16=runner.fp16, device=runner.device_name, notes=runner.notes)
            del runner
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/gpu_probe.py"))
