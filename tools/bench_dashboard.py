#!/usr/bin/env python3
"""Render time of one dashboard frame at 80x24 and 200x60, for 64 and 256 streams.

The snapshot is the monitor's own (decision engine, health monitor, event log, build_snapshot)
fed with real predictions: the shipped bearing-cwru model on windows of the shipped CWRU excerpts
(each stream replays one fault class, one stream has a flat-lined sensor). A frame is what the
dashboard thread does at every refresh: ``render`` (layout of the page that fits) and rich's
drawing of it into a Console of that size. Baseline, measured in the same run: the same frame
drawn as a rich ``Table`` (rich's own layout), which dashboard.py's hand layout replaced.

    python tools/bench_dashboard.py [--frames 50] [--json]
    git show 59acc82:drsn_stream/sinks/dashboard.py > /tmp/old_dashboard.py
    python tools/bench_dashboard.py --compare /tmp/old_dashboard.py   # also time an earlier layout
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.runner import Runner
from drsn_stream.engine.stats import EngineStats
from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.models.artifact import load_artifact, load_validation
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.monitor.health import HealthConfig, HealthMonitor
from drsn_stream.monitor.snapshot import build_snapshot
from drsn_stream.runtime import ResourceMeter
from drsn_stream.sources.sim import load_excerpts
from drsn_stream.types import Frame, Prediction
from drsn_stream.view import EventLog, Footer, Header, Snapshot

SIZES = ((80, 24), (200, 60))
STREAMS = (64, 256)
FLAT = 10  # this stream (a "normal" one)'s sensor reads a flat line: CHECK SENSOR, no label


def real_snapshot(n: int, *, windows: int = 4, model: str = "bearing-cwru") -> Snapshot:
    """A monitor snapshot of ``n`` streams after ``windows`` real predictions each."""
    module, meta = load_artifact(model)
    runner = Runner(module, window=meta.window, device="cpu", threads=1, scores=meta.scores,
                    net_config=meta.model_config, validation=load_validation(model))
    labels = list(meta.labels)
    excerpts = load_excerpts(meta.sample_rate)
    kinds = list(excerpts)
    decisions = DecisionEngine(labels, DecisionConfig.for_labels(labels, set_windows=2, danger_labels=("*_021",)))
    health = HealthMonitor(HealthConfig())
    stats = EngineStats()
    log = EventLog()
    ids = [f"plant/m{i:03d}" for i in range(n)]
    t0 = 1_700_000_000.0
    hop = meta.hop
    done = 0
    busy = 0.0
    for k in range(windows):
        t = t0 + (k + 1) * hop / meta.sample_rate
        raw = []
        for i, sid in enumerate(ids):
            x = excerpts[kinds[i % len(kinds)]]
            start = (i * 997 + k * hop) % (len(x) - meta.window)
            w = np.zeros(meta.window, np.float32) if i == FLAT else x[start : start + meta.window]
            raw.append(w)
            frame = Frame(sid, k, t, float(meta.sample_rate), w[-hop:, None].astype(np.float32))
            log.extend(health.push(frame, now=t))
        c0 = time.perf_counter()
        probs, noise = runner.infer(normalize(np.stack(raw), meta.normalization))
        ms = (time.perf_counter() - c0) * 1000.0
        busy += ms / 1000.0
        done += n
        stats.record_batch(ids, np.full(n, ms), ms / 1000.0)
        for i, sid in enumerate(ids):
            j = int(probs[i].argmax())
            level = float(np.sqrt(np.mean(raw[i].astype(np.float64) ** 2)))
            p = Prediction(sid, k, t, probs[i], labels[j], float(probs[i][j]), float(noise[i]), ms, level=level)
            log.extend(decisions.update(p, healthy=health.healthy(sid)))
    footer = Footer(windows_per_s=done / max(busy, 1e-9), avg_batch=float(n), queue_depth=0, dropped=0,
                    malformed=0, **ResourceMeter().read())
    header = Header(sources=("sim:bearing",), model=meta.name, labels=tuple(labels), sample_rate=meta.sample_rate,
                    window=meta.window, hop=hop, device=runner.device_name, ready=True)
    return build_snapshot(header=header, decisions=decisions, health=health, footer=footer, events=log,
                          now=t0 + windows * hop / meta.sample_rate, latency=stats)


def draw(renderable, width: int, height: int) -> str:
    from rich.console import Console

    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=False)
    console.print(renderable)
    return console.file.getvalue()


def rich_table(snapshot: Snapshot, height: int):
    """The baseline: the page of rows as a rich.Table with every column (rich decides the layout)."""
    from rich.table import Table

    from drsn_stream.sinks.dashboard import COLUMNS

    table = Table(box=None, padding=(0, 1), show_edge=False)
    for col in COLUMNS:
        table.add_column(col.heading, no_wrap=True, overflow="ellipsis")
    for row in snapshot.rows[: max(1, height - 10)]:
        table.add_row(*(col.cell(row, full=True) for col in COLUMNS))
    return table


def time_frames(fn, frames: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(frames):
        fn()
    return (time.perf_counter() - t0) / frames * 1000.0


def main(argv: list[str] | None = None) -> int:
    from drsn_stream.sinks.dashboard import render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50, help="frames timed per case")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare", type=Path, help="also time the render() of this dashboard.py (e.g. an earlier one)")
    args = ap.parse_args(argv)
    other = None
    if args.compare is not None:
        import importlib.util

        if args.compare.suffix != ".py" or not args.compare.is_file():
            raise ConfigError(f"--compare {args.compare}: not a .py file; give the path of an earlier dashboard.py")
        spec = importlib.util.spec_from_file_location("other_dashboard", args.compare)
        other = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(other)
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign file is the file's fault
            raise ConfigError(f"--compare {args.compare}: cannot load it ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); give an earlier dashboard.py") from None
        if not callable(getattr(other, "render", None)):
            raise ConfigError(f"--compare {args.compare}: it has no render(); give an earlier dashboard.py")
    rows = []
    for n in STREAMS:
        snap = real_snapshot(n)
        for w, h in SIZES:
            ours = time_frames(lambda snap=snap, w=w, h=h: draw(render(snap, height=h, width=w), w, h), args.frames)
            base = time_frames(lambda snap=snap, w=w, h=h: draw(rich_table(snap, h), w, h), args.frames)
            row = {"streams": n, "size": f"{w}x{h}", "frame_ms": round(ours, 2),
                   "rich_table_ms": round(base, 2), "x_faster": round(base / ours, 2)}
            if other is not None:
                ms = time_frames(lambda snap=snap, w=w, h=h: draw(other.render(snap, height=h, width=w), w, h), args.frames)
                row["compare_ms"] = round(ms, 2)
            rows.append(row)
    res = {"machine": f"{platform.machine()} {os.cpu_count()} cpu(s)", "python": platform.python_version(),
           "frames": args.frames, "results": rows}
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"dashboard frame (render + draw) on {res['machine']}, {args.frames} frames per case")
    extra = f" {'compared ms':>12}" if other is not None else ""
    print(f"{'streams':>8} {'size':>7} {'frame ms':>9} {'rich.Table ms':>14} {'x':>6}" + extra)
    for r in rows:
        more = f" {r['compare_ms']:>12.2f}" if "compare_ms" in r else ""
        print(f"{r['streams']:>8} {r['size']:>7} {r['frame_ms']:>9.2f} {r['rich_table_ms']:>14.2f} {r['x_faster']:>6.2f}"
              + more)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_dashboard.py"))
