"""``drsn-stream bench --peers``: the CPU engine against other runtimes on the same network.

Contenders, each given the artifact's network, the same batch of real validation windows and the
same number of threads (default 1), each call returning probabilities and noise index, each in a
process of its own (one heap, one set of thread pools, one runtime per process):

- engine: the monitor's ``Runner`` (the verified channels-last form where it agrees), in a process
  started as the monitor starts its engine process: with jemalloc where it is installed
  (``procrunner.allocator_env``);
- TorchScript frozen: ``torch.jit.freeze`` of the artifact as loaded;
- ONNX Runtime: the eager network (+ softmax) exported to ONNX, CPU execution provider;
- OpenVINO: the same ONNX file on the CPU plugin at f32 (``INFERENCE_PRECISION_HINT``); on a CPU
  with bf16 OpenVINO defaults to bf16, which is other arithmetic: measured apart as
  ``openvino-bf16`` and never counted as the best peer;
- torch.compile (inductor) of the eager network, which must compile every batch size within
  ``--compile-limit`` seconds or is ended and reported as such.

Where the engine gets jemalloc, every peer that can take it runs twice, on glibc's malloc and with
jemalloc preloaded, and counts at its better figure: jemalloc speeds some peers up and slows others
down, and each peer is compared at its best. OpenVINO runs on glibc's alone (its
``compile_model`` aborts under a preloaded jemalloc). ``DRSN_STREAM_MALLOC=system`` runs every
contender on glibc's malloc. Peers whose package is missing are listed as skipped
(``pip install 'drsn-stream[bench]'``). Repeats are interleaved (every contender once per batch
size per repeat, in rotating order) so that load from other programs falls on all of them alike;
the table shows medians, wall-clock and the contender process's CPU time. Label agreement with the
engine on the validation windows is printed for every contender.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drsn_stream.engine.procrunner import allocator_env, jemalloc_loaded
from drsn_stream.engine.runner import Runner
from drsn_stream.models.artifact import eager_from_artifact, load_artifact, load_validation
from drsn_stream.models.outputs import to_probs

PEER_SIZES = (64, 256)
COUNTED = ("torchscript-frozen", "onnxruntime", "openvino", "torch.compile")  # same-precision peers

SHORT = {"engine": "engine", "torchscript-frozen": "TS frozen", "onnxruntime": "ORT", "openvino": "OV f32",
         "openvino-bf16": "OV bf16", "torch.compile": "compile"}

Infer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class _Head(torch.nn.Module):
    """The eager model returning what the engine returns: (probabilities, noise index)."""

    def __init__(self, net: torch.nn.Module, scores: str) -> None:
        super().__init__()
        self.net = net
        self.scores = scores  # ArtifactMeta.scores: what the first output is

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, noise = self.net(x)
        return to_probs(first, self.scores), noise


def _eager_head(model: str) -> tuple[_Head, int]:
    """The artifact's network rebuilt in eager PyTorch (what ONNX export and inductor take)."""
    module, meta = load_artifact(model, map_location="cpu")
    return _Head(eager_from_artifact(module, meta), meta.scores).eval(), meta.window


def _onnx_file(model: str, folder: Path) -> Path:
    head, window = _eager_head(model)
    path = folder / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on TorchScript-based export
        torch.onnx.export(head, (torch.zeros(2, window),), str(path), input_names=["x"],
                          output_names=["probs", "noise"], dynamic_axes={"x": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return path


def _onnxruntime(path: Path, threads: int) -> Infer:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: tuple(sess.run(None, {"x": x}))  # type: ignore[return-value]


def _openvino(path: Path, threads: int, precision: str) -> Infer:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    })
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = request.infer({0: x})
        return out[0], out[1]

    return run


def _frozen(model: str) -> Infer:
    module, meta = load_artifact(model, map_location="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13
        frozen = torch.jit.freeze(module.eval())

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            first, noise = frozen(torch.from_numpy(x))
            return to_probs(first, meta.scores).numpy(), noise.numpy()

    return run


JEMALLOC_PEERS = ("torchscript-frozen", "onnxruntime", "torch.compile")  # OpenVINO aborts under jemalloc
JE = "@jemalloc"  # the key of a peer's process with jemalloc preloaded
READY_LIMIT_S = 300.0  # to load a contender and run every batch size once (torch.compile: --compile-limit)


def _build(name: str, model: str, threads: int, sizes: tuple[int, ...],
           onnx_path: str | None) -> tuple[Infer, dict[str, Any]]:
    """Contender ``name`` in this process: its inference function and what it says of itself."""
    if name == "engine":
        module, meta = load_artifact(model, map_location="cpu")
        runner = Runner(module, window=meta.window, device="cpu", max_batch=max(sizes),
                        batch_sizes=list(sizes), threads=threads, validation=load_validation(model),
                        net_config=meta.model_config, cpu_layout="auto", scores=meta.scores)
        runner.warmup()
        return runner.infer, {"channels_last": runner.channels_last, "compiled_tails": runner.compiled_tails,
                              "compiled_whole_below": runner.small_below}
    if name == "torchscript-frozen":
        return _frozen(model), {}
    if name == "torch.compile":
        head, _ = _eager_head(model)
        compiled = torch.compile(head, dynamic=False)

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                p, n = compiled(torch.from_numpy(x))
                return p.numpy(), n.numpy()

        return run, {}
    if onnx_path is None:
        raise RuntimeError("no ONNX file (the export failed)")
    if name == "onnxruntime":
        return _onnxruntime(Path(onnx_path), threads), {}
    return _openvino(Path(onnx_path), threads, "bf16" if name == "openvino-bf16" else "f32"), {}


def _child(conn: Any, name: str, model: str, threads: int, sizes: tuple[int, ...], data: np.ndarray,
           onnx_path: str | None) -> None:
    """One contender in a process of its own: build it, run every size once (torch.compile compiles
    them), say ``ready`` or why it cannot run, then serve timing runs until told to stop."""
    torch.set_num_threads(threads)
    try:
        fn, info = _build(name, model, threads, sizes, onnx_path)
        for b in sizes:
            fn(data[:b])
    except ImportError:
        conn.send(("skip", "not installed (pip install 'drsn-stream[bench]')"))
        return
    except Exception as exc:  # noqa: BLE001 - e.g. no bf16 on this CPU: the contender is skipped, with why
        conn.send(("skip", f"{exc!r}"[:200]))
        return
    conn.send(("ready", {**info, "malloc": "jemalloc" if jemalloc_loaded() else "system"}))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, b, seconds = msg
        conn.send(_rate(fn, data[:b], seconds) if kind == "rate" else fn(data[:b]))


class _Contender:
    """The parent's handle on one contender's process, started with ``LD_PRELOAD`` set to
    ``preload`` (None: unset), which chooses the allocator it runs on."""

    def __init__(self, key: str, preload: str | None, model: str, threads: int, sizes: tuple[int, ...],
                 data: np.ndarray, onnx_path: str | None) -> None:
        self.key, self.name = key, key.removesuffix(JE)
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child, self.name, model, threads, sizes, data, onnx_path),
                                daemon=True)
        saved = os.environ.get("LD_PRELOAD")
        self.t0 = time.perf_counter()
        try:  # a spawned process takes this process's environment as it is at start()
            _set_preload(preload)
            self.proc.start()
        finally:
            _set_preload(saved)
        child.close()
        self.info: dict[str, Any] = {}

    def wait_ready(self, limit_s: float, what: str = "start") -> float:
        """Seconds it took to be ready; raises ``RuntimeError`` with the reason it cannot run."""
        if not self.conn.poll(max(0.0, limit_s - (time.perf_counter() - self.t0))):
            self.close()
            raise RuntimeError(f"did not {what} within {limit_s:.0f} s")
        try:
            kind, info = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(timeout=5)
            raise RuntimeError(f"its process died (exit code {self.proc.exitcode})") from None
        if kind != "ready":
            self.close()
            raise RuntimeError(info)
        self.info = info
        return time.perf_counter() - self.t0

    def rate(self, b: int, seconds: float) -> tuple[float, float]:
        self.conn.send(("rate", b, seconds))
        return self.conn.recv()

    def infer(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        self.conn.send(("infer", b, 0.0))
        return self.conn.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)


def _set_preload(value: str | None) -> None:
    if value:
        os.environ["LD_PRELOAD"] = value
    else:
        os.environ.pop("LD_PRELOAD", None)


def _rate(fn: Infer, x: np.ndarray, seconds: float) -> tuple[float, float]:
    """(windows/s, CPU microseconds per window) of ``fn`` on batch ``x`` over about ``seconds``
    (after one untimed call). On a loaded machine the wall-clock rate mostly says how much of a
    core the scheduler gave; the process's CPU time per window says what the work itself cost."""
    fn(x)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return x.shape[0] * n / wall, 1e6 * cpu / (x.shape[0] * n)


def run_peers(
    model: str = "bearing-cwru",
    *,
    batch_sizes: tuple[int, ...] = PEER_SIZES,
    threads: int = 1,
    seconds: float = 1.0,
    repeats: int = 3,
    compile_limit_s: float = 300.0,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Measure the engine and every available peer; returns the figures and the ratios."""
    _, meta = load_artifact(model, map_location="cpu")
    val = load_validation(model)
    if val is None:
        raise ValueError(f"{meta.name} carries no validation windows; the peers' bench needs real windows")
    reps = -(-max(batch_sizes) // len(val))
    data = np.ascontiguousarray(np.tile(val, (reps, 1))[: max(batch_sizes)])
    sizes = tuple(batch_sizes)
    skipped: dict[str, str] = {}
    ready: dict[str, _Contender] = {}
    compile_s = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx_path: str | None = str(_onnx_file(model, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - an exporter failure skips the ONNX peers, not the bench
            onnx_path = None
            skipped.update(dict.fromkeys(("onnxruntime", "openvino", "openvino-bf16"),
                                         f"ONNX export failed: {exc!r}"[:200]))
        # The engine starts as the monitor starts its engine process (jemalloc where installed);
        # every peer that can take jemalloc runs twice, with and without, and counts at its better.
        plain = os.environ.get("LD_PRELOAD")
        deployed = allocator_env(dict(os.environ)).get("LD_PRELOAD")
        plan = [("engine", deployed)]
        for n in ("torchscript-frozen", "onnxruntime", "openvino", "openvino-bf16", "torch.compile"):
            if n not in skipped:
                plan += [(n, plain)] + ([(n + JE, deployed)] if deployed != plain and n in JEMALLOC_PEERS else [])
        try:
            now = [(k, pre) for k, pre in plan if not k.startswith("torch.compile")]
            later = [(k, pre) for k, pre in plan if k.startswith("torch.compile")]
            say(f"starting {len(now)} contenders, each in a process of its own ...")
            starting = [_Contender(k, pre, model, threads, sizes, data, onnx_path) for k, pre in now]
            for c in starting:
                try:
                    c.wait_ready(READY_LIMIT_S)
                    ready[c.key] = c
                except RuntimeError as exc:
                    skipped[c.key] = str(exc)
            if "engine" not in ready:
                raise RuntimeError(f"the engine did not start: {skipped.get('engine')}")
            # one at a time, so that a compile time is its own and not shared with others' start-up
            for k, pre in later:
                say(f"compiling {k} (inductor) in its process, limit {compile_limit_s:.0f} s ...")
                c = _Contender(k, pre, model, threads, sizes, data, None)
                try:
                    took = round(c.wait_ready(compile_limit_s, "compile"), 1)
                    compile_s = max(compile_s or 0.0, took)
                    ready[c.key] = c
                except RuntimeError as exc:
                    skipped[c.key] = str(exc)
            figures = _measure(ready, sizes, seconds, repeats, say)
            # on the largest batch of validation windows (the compiled peer knows only the timed sizes)
            top = max(sizes)
            outputs = {name: c.infer(top)[0].argmax(1) for name, c in ready.items()}
        finally:
            for c in ready.values():
                c.close()
    agreement: dict[str, float] = {}
    for key, labels in outputs.items():  # a peer's lower agreement of its two processes
        name = key.removesuffix(JE)
        agreement[name] = min(agreement.get(name, 1.0), float(np.mean(labels == outputs["engine"])))
    rows = []
    for b in sizes:
        wps, cpu, via = _fold({k: statistics.median(w for w, _ in v[b]) for k, v in figures.items()},
                              {k: statistics.median(c for _, c in v[b]) for k, v in figures.items()})
        peers = {k: v for k, v in wps.items() if k in COUNTED}
        best = max(peers, key=peers.get) if peers else None
        best_cpu = min((k for k in cpu if k in COUNTED), key=cpu.get, default=None)
        rows.append({"batch": b, "wps": {k: round(v, 1) for k, v in wps.items()},
                     "cpu_us_per_window": {k: round(v, 1) for k, v in cpu.items()}, "jemalloc": via,
                     "runs": {k: [[round(w, 1), round(c, 1)] for w, c in v[b]] for k, v in figures.items()},
                     "best_peer": best, "x_best_peer": round(wps["engine"] / peers[best], 3) if best else None,
                     "best_peer_cpu": best_cpu,
                     "x_best_peer_cpu": round(cpu[best_cpu] / cpu["engine"], 3) if best_cpu else None})
    return {"model": meta.name, "network": meta.model, "window": meta.window, "threads": threads,
            "cpu_count": os.cpu_count(), "cpu": _cpu_name(), "torch": torch.__version__, "repeats": repeats,
            "seconds": seconds, "channels_last": ready["engine"].info.get("channels_last"),
            "compiled_tails": ready["engine"].info.get("compiled_tails"),
            "compiled_whole_below": ready["engine"].info.get("compiled_whole_below"),
            "malloc": {key: c.info.get("malloc") for key, c in ready.items()},
            "versions": _versions(), "compile_s": compile_s, "skipped": skipped,
            "label_agreement_with_engine": agreement, "results": rows}


def _fold(wps: dict[str, float], cpu: dict[str, float]) -> tuple[dict[str, float], dict[str, float], dict[str, list[str]]]:
    """Each contender at the better of its processes: the highest windows/s, the lowest CPU per
    window; ``via`` names the figures ("wps", "cpu") that came from the process with jemalloc."""
    out_wps: dict[str, float] = {}
    out_cpu: dict[str, float] = {}
    via: dict[str, list[str]] = {}
    for name in dict.fromkeys(k.removesuffix(JE) for k in wps):
        keys = [k for k in wps if k.removesuffix(JE) == name]
        kw, kc = max(keys, key=wps.__getitem__), min(keys, key=cpu.__getitem__)
        out_wps[name], out_cpu[name] = wps[kw], cpu[kc]
        marks = [m for m, k in (("wps", kw), ("cpu", kc)) if k.endswith(JE)]
        if marks:
            via[name] = marks
    return out_wps, out_cpu, via


def _measure(contenders: dict[str, _Contender], batch_sizes: tuple[int, ...], seconds: float, repeats: int,
             say: Callable[[str], None]) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """Every contender once per batch size per repeat, in rotating order (no contender always runs
    first), one at a time: the others' processes wait on their pipes meanwhile."""
    names = list(contenders)
    figures: dict[str, dict[int, list[tuple[float, float]]]] = {n: {b: [] for b in batch_sizes} for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for b in batch_sizes:
            for name in order:
                figures[name][b].append(contenders[name].rate(b, seconds))
        say(f"repeat {r + 1}/{repeats} done")
    return figures


def _cpu_name() -> str:
    """The CPU's model name (Linux), for the record: figures differ widely between machines."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for mod in ("onnxruntime", "openvino"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def print_peers(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(res["results"][0]["wps"])
    t = Table(title=f"drsn-stream bench --peers: {res['model']} ({res['network']}, window {res['window']}), "
                    f"{res['threads']} thread(s), median of {res['repeats']} interleaved runs")
    for c in ["batch", "", *[SHORT.get(n, n) for n in names], "best peer", "engine / best"]:
        t.add_column(c, justify="right")
    for r in res["results"]:
        je = r.get("jemalloc", {})
        t.add_row(str(r["batch"]), "w/s", *[f"{r['wps'][n]:,.0f}{'*' * ('wps' in je.get(n, ()))}" for n in names],
                  SHORT.get(r["best_peer"], "-"), f"{r['x_best_peer']:.2f}x" if r["x_best_peer"] else "-")
        t.add_row("", "CPU us", *[f"{r['cpu_us_per_window'][n]:,.0f}{'*' * ('cpu' in je.get(n, ()))}"
                                  for n in names],
                  SHORT.get(r["best_peer_cpu"], "-"), f"{r['x_best_peer_cpu']:.2f}x" if r["x_best_peer_cpu"] else "-")
    c = Console(width=None if sys.stdout.isatty() else 132)  # a log keeps the table's rows whole
    c.print(t)
    c.print("label agreement with the engine on the validation windows: " + ", ".join(
        f"{k} {v:.2%}" for k, v in res["label_agreement_with_engine"].items()))
    if res["compile_s"] is not None:
        c.print(f"torch.compile: compiled {len(res['results'])} batch size(s) in {res['compile_s']} s")
    c.print("engine / best: windows/s over the best peer's (wall clock), and the best peer's CPU time per window "
            "over the engine's (what the work costs, whatever share of a core the scheduler gave)")
    c.print("peers counted for 'best': " + ", ".join(COUNTED) + " (openvino-bf16 is other arithmetic)")
    engine_malloc = res["malloc"].get("engine")
    if any(k.endswith(JE) for k in res["malloc"]):
        c.print(f"malloc: the engine {engine_malloc}, as the monitor's engine process; each peer but OpenVINO "
                "(which aborts under jemalloc) ran with glibc's and with jemalloc, and shows its better figure "
                "(* = with jemalloc)")
    else:
        c.print(f"malloc: every contender {engine_malloc} (no jemalloc here, or DRSN_STREAM_MALLOC=system)")
    for name, why in res["skipped"].items():
        c.print(f"skipped {name}: {why}")
    c.print(f"{res['cpu']}, {res['cpu_count']} cores; versions: "
            + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))


def run(args: argparse.Namespace) -> int:
    sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip()) if args.batch_sizes else PEER_SIZES
    res = run_peers(args.model, batch_sizes=sizes, threads=args.threads or 1, seconds=args.seconds,
                    repeats=args.repeat, compile_limit_s=args.compile_limit,
                    say=(lambda line: None) if args.json else (lambda line: print(line, flush=True)))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_peers(res)
    return 0
