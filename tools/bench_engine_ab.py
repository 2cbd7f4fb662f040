#!/usr/bin/env python3
"""The CPU engine's channels-last form at a git revision against the working tree's, in one run.

Both forms go through the monitor's ``Runner`` (verified on the artifact's validation windows,
1 thread) on the same real windows: the baseline's frozen in TorchScript, the working tree's as
the runner runs it (each unit's tail compiled where numba is there; ``--cpu-layout script``: frozen
too, to compare the TorchScript forms alone); ONNX Runtime runs beside them when installed (the
best peer of ``drsn-stream bench --peers``). Measurements alternate between the contenders
(``--repeat`` rounds, rotating order) and the medians of the process's CPU time per window are
printed with the ratios: on a shared, loaded machine CPU time per window is the steadier figure,
and only ratios from one interleaved run compare.

    python tools/bench_engine_ab.py --baseline main --repeat 7 --seconds 0.5

Not a test: timings depend on the machine and its load (docs/performance-peers.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from drsn_stream.engine import cpu_layout, peers
from drsn_stream.engine.runner import Runner
from drsn_stream.errors import ArtifactError, ConfigError, run_tool
from drsn_stream.models.artifact import load_artifact, load_validation

ROOT = Path(__file__).resolve().parents[1]


def _layout_at(rev: str, folder: Path) -> ModuleType:
    """``drsn_stream/engine/cpu_layout.py`` as it was at ``rev``, imported under another name."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:drsn_stream/engine/cpu_layout.py"],
                         check=True, capture_output=True, text=True).stdout
    path = folder / "cpu_layout_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("cpu_layout_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _engine(model: str, layout: ModuleType, cpu_layout_mode: str = "auto") -> peers.Infer:
    """The monitor's runner with ``layout``'s channels-last form (refused forms are an error); a
    baseline's form is never compiled (``cpu_layout.compiled`` takes this tree's class only)."""
    module, meta = load_artifact(model, map_location="cpu")
    val = load_validation(model)
    convert = cpu_layout.convert
    cpu_layout.convert = layout.convert  # the runner converts through this module
    try:
        runner = Runner(module, window=meta.window, device="cpu", max_batch=256, threads=1, validation=val,
                        net_config=meta.model_config, scores=meta.scores, cpu_layout=cpu_layout_mode)
    finally:
        cpu_layout.convert = convert
    if not runner.channels_last:
        raise SystemExit(f"{layout.__name__}: channels-last form not used: {runner.notes}")
    runner.warmup()
    return runner.infer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision of the baseline form (default main)")
    parser.add_argument("--model", "-m", default="bearing-cwru")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender, batch size and round")
    parser.add_argument("--cpu-layout", choices=["auto", "script"], default="auto",
                        help="the working tree's form as the runner picks it (auto) or frozen in TorchScript (script)")
    args = parser.parse_args()
    try:
        sizes = [int(v) for v in args.batch_sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= b <= 65536 for b in sizes):
        raise ConfigError(f"--batch-sizes {args.batch_sizes!r}: give comma-separated whole numbers from 1 to 65536")
    if args.repeat < 1 or not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError("--repeat must be >= 1 and --seconds a finite number > 0")
    load_artifact(args.model)  # a missing or corrupt file is said so, not "carries no validation windows"
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # TorchScript, at our call sites
    val = load_validation(args.model)
    if val is None:
        raise ArtifactError(f"{args.model} carries no validation windows; add them with tools/attach_validation.py")
    data = np.ascontiguousarray(np.tile(val, (-(-max(sizes) // len(val)), 1))[: max(sizes)])
    with tempfile.TemporaryDirectory() as tmp:
        tree = _engine(args.model, cpu_layout, args.cpu_layout)
        wt_device = tree.__self__.device_name  # the runner behind its bound infer
        fns = {"baseline": _engine(args.model, _layout_at(args.baseline, Path(tmp))), "working tree": tree}
        try:
            fns["ORT"] = peers._onnxruntime(peers._onnx_file(args.model, Path(tmp)), 1)
        except ImportError:
            print("ONNX Runtime not installed (pip install -e '.[bench]'): engine forms only")
        cpu: dict[tuple[str, int], list[float]] = {}
        names = list(fns)
        for rep in range(args.repeat):
            for b in sizes:
                for name in names[rep % len(names):] + names[: rep % len(names)]:
                    cpu.setdefault((name, b), []).append(peers._rate(fns[name], data[:b], args.seconds)[1])
    print(f"{args.model}, 1 thread, CPU us per window (median of {args.repeat} interleaved rounds); "
          f"baseline = {args.baseline}; working tree: {wt_device}")
    for b in sizes:
        med = {name: statistics.median(cpu[(name, b)]) for name in names}
        line = "  ".join(f"{name} {v:.1f}" for name, v in med.items())
        line += f"  | baseline / working tree x{med['baseline'] / med['working tree']:.2f}"
        if "ORT" in med:
            line += (f"  ORT / baseline x{med['ORT'] / med['baseline']:.2f}"
                     f"  ORT / working tree x{med['ORT'] / med['working tree']:.2f}")
        print(f"batch {b}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_engine_ab.py"))
