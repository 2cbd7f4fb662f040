#!/usr/bin/env python3
"""A stand-in for another rig: the CWRU recordings replayed at another speed, through the monitor.

A recording declared at ``scale`` times its real sample rate plays as a machine running at
``scale`` times the speed with every resonance moved by the same factor: the shaft and fault
frequencies the model learned sit elsewhere, as they do on a machine other than the training rig.
For each scale, with the shipped model and the monitor as a user runs it (``drsn-stream``, in this
process, the engine in-process):

1. ``baseline learn`` on the first 70 % of the healthy recording (``normal_0_97``), or the
   first ``min_windows`` windows where 70 % holds fewer (at speeds over 1: the recording plays
   shorter);
2. the rest of it monitored against that baseline: the windows the model names a fault (its
   ``model_label``), the windows shown as one, and the alarms raised;
3. every fault recording (36: ball, inner and outer race, three sizes, four loads) at the same
   scale, monitored against the same baseline: the recordings that raise an alarm.

Prints a Markdown table; ``--json`` writes the figures. Nothing is tuned here: the baseline and
the alarm rules are the defaults.

    python tools/eval_other_rig.py [--scales 0.8,0.9,1,1.1] [--data ../shared/data/cwru] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from drsn_stream.config import writable_file
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.monitor.baseline import min_windows
from drsn_stream.sources.file import read_recording
from drsn_stream.train import cwru

HEALTHY = "normal_0_97.mat"
LEARN_SHARE = 0.7


def _monitor(*args: str) -> list[dict]:
    """``drsn-stream ARGS --jsonl FILE`` in this process; its JSON lines."""
    from drsn_stream.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        argv = [*args, "--jsonl", str(out), "--engine-process", "off"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(argv)
        gc.unfreeze()  # ``run`` freezes what it built before its exit; this process goes on
        if code != 0:
            raise DataError(f"drsn-stream {' '.join(args[:2])} exited {code}: {_last_line(err.getvalue())}")
        return [json.loads(ln) for ln in out.read_text().splitlines() if ln.startswith("{")]


def _learn(spec: str, profile: Path) -> None:
    from drsn_stream.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["baseline", "learn", "--source", spec, "--out", str(profile)])
    if code != 0:
        raise DataError(f"baseline learn --source {spec} exited {code}: {_last_line(err.getvalue() or out.getvalue())}")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(nothing said)"


def _split(data: Path, scale: float, least_s: float) -> tuple[int, float]:
    """(the healthy recording's declared rate at ``scale``, the seconds of it learned on)."""
    x, rate = read_recording(data / HEALTHY)
    declared = int(round(rate * scale))
    seconds = x.shape[0] / declared
    split = max(LEARN_SHARE * seconds, least_s)  # a faster machine's recording is shorter
    if seconds - split < least_s / 10:
        raise DataError(f"at x{scale:g} {HEALTHY} plays {seconds:.2f} s: too short to learn a baseline "
                        f"({least_s:.2f} s) and keep some of it held out; give lower --scales")
    return declared, split


def measure(data: Path, scale: float, faults: list[Path], fault_labels: set[str], least_s: float) -> dict:
    declared, split = _split(data, scale, least_s)
    row: dict = {"scale": scale, "healthy_rate": declared}
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "p.json"
        _learn(f"file:{data / HEALTHY}?rate={declared}&duration={split:.6f}", profile)
        objs = _monitor("--source", f"file:{data / HEALTHY}?rate={declared}&start={split:.6f}",
                        "--baseline", str(profile), "--fast", "--headless")
        preds = [o for o in objs if o["type"] == "prediction"]
        named = sum(o.get("model_label", o["label"]) in fault_labels for o in preds)
        shown = sum(o["label"] in fault_labels for o in preds)
        raised = [o for o in objs if o["type"] == "alarm" and o["to"] != "NORMAL"]
        row["healthy"] = {"windows": len(preds), "model_names_fault": named, "shown_fault": shown,
                          "alarms": len(raised), "anomaly_max": max((o.get("anomaly", 0.0) for o in preds), default=0.0)}
        alarmed, first = 0, []
        for f in faults:
            fr = int(round(read_recording(f)[1] * scale))
            objs = _monitor("--source", f"file:{f}?rate={fr}&stream=normal_0_97", "--baseline", str(profile),
                            "--fast", "--headless")
            preds = [o for o in objs if o["type"] == "prediction"]
            up = [o for o in objs if o["type"] == "alarm" and o["to"] != "NORMAL"]
            if up:
                alarmed += 1
                first.append(sum(p["time"] <= up[0]["time"] for p in preds) or 1)
        row["faults"] = {"recordings": len(faults), "alarmed": alarmed,
                         "first_alarm_window_max": max(first) if first else None}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="0.8,0.85,0.9,0.95,1,1.05,1.1,1.2",
                    help="speeds as multiples of the recordings' own (comma-separated)")
    ap.add_argument("--data", default=None, help="the CWRU folder (default: the shared data)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--scales must be numbers, comma-separated, e.g. 0.8,1,1.2, not {args.scales!r}") from None
    if not scales or not all(math.isfinite(s) and 0.5 <= s <= 2 for s in scales):
        raise ConfigError(f"--scales must be between 0.5 and 2 (multiples of the recordings' speed), not {args.scales!r}")
    out = writable_file(args.json, "--json") if args.json else None
    data = cwru.cwru_dir(args.data)
    if not (data / HEALTHY).is_file():
        raise ConfigError(f"{data / HEALTHY} not found: give the CWRU folder with --data")
    faults = sorted(data.glob("12k_Drive_End_*.mat"))
    from drsn_stream.models import load_artifact

    meta = load_artifact("bearing-cwru")[1]
    fault_labels = {lb for lb in meta.labels if lb != "normal"}
    least_s = ((min_windows(meta.features) - 1) * meta.hop + meta.window) / meta.sample_rate + 0.01
    for s in scales:
        _split(data, s, least_s)  # every speed checked before the work
    rows = []
    print("| speed | healthy windows (held out) | named a fault by the model | shown as a fault | alarms | "
          "fault recordings alarmed |")
    print("|---|---|---|---|---|---|")
    for s in scales:
        t = time.perf_counter()
        r = measure(data, s, faults, fault_labels, least_s)
        rows.append(r)
        h, f = r["healthy"], r["faults"]
        print(f"| x{s:g} | {h['windows']} | {h['model_names_fault']} | {h['shown_fault']} | {h['alarms']} | "
              f"{f['alarmed']} of {f['recordings']} |", flush=True)
        print(f"  ({time.perf_counter() - t:.0f} s; healthy anomaly max {h['anomaly_max']:.2f}; "
              f"first alarm by window {f['first_alarm_window_max']})", file=sys.stderr, flush=True)
    if out is not None:
        out.write_text(json.dumps({"model": "bearing-cwru", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/eval_other_rig.py"))
