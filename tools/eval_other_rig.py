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

With ``--learn-speeds 0.7,0.8,0.9,1`` a machine run at several speeds (operating states) instead:
one baseline is learned on the first 80 % of the healthy recording at each of those speeds (in
1-s turns, a machine whose speed changes while it is learned; ``--order sequence``: one speed
after the other), and the held-out rest and every fault recording are monitored at each speed
against it: the held-out windows over the threshold and the alarms, the fault recordings alarmed
and those with fewer than half of their windows over the threshold.

With ``--stops`` the machine at each speed stops and starts again instead: a baseline learned on
the first 70 % of the healthy recording, then its held-out rest (looped, 50-ms crossfades) run for
4 s, brought to standstill abruptly or by a coast-down of 1, 3 or 5 s (the speed falling linearly
to 0, the amplitude with the speed squared), 5 s at rest (1 mg of sensor noise throughout), a
run-up as long as the coast-down, and 16 s at speed: the alarms raised, the sensor health events,
and the windows judged after the start-up (default hold) with those over the threshold.

Prints a Markdown table; ``--json`` writes the figures. Nothing is tuned here: the baseline and
the alarm rules are the defaults.

    python tools/eval_other_rig.py [--scales 0.8,0.9,1,1.1] [--data ../shared/data/cwru] [--json out.json]
    python tools/eval_other_rig.py --learn-speeds 0.7,0.8,0.9,1 [--order mixed|sequence]
    python tools/eval_other_rig.py --stops [--scales 1] [--config alarms.toml]
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

import numpy as np

from drsn_stream.config import writable_file
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.monitor.baseline import min_windows
from drsn_stream.sources.file import read_recording
from drsn_stream.train import cwru

HEALTHY = "normal_0_97.mat"
LEARN_SHARE = 0.7
# --learn-speeds: a state's windows next to a change of state are not learned from, so each speed
# is learned on more of the recording (a state needs min_windows after them)
STATES_SHARE = 0.8


def _cli(argv: list[str]) -> None:
    """``drsn-stream ARGV`` in this process, its output swallowed; a failure is one DataError."""
    from drsn_stream.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    gc.unfreeze()  # ``run`` freezes what it built before its exit; this process goes on
    if code != 0:
        raise DataError(f"drsn-stream {' '.join(argv[:3])} exited {code}: {_last_line(err.getvalue() or out.getvalue())}")


MONITOR_ARGS: list[str] = []  # more arguments of every monitor run (--config FILE)


def _monitor(*args: str) -> list[dict]:
    """``drsn-stream ARGS --jsonl FILE`` in this process; its JSON lines."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        _cli([*MONITOR_ARGS, *args, "--jsonl", str(out), "--engine-process", "off"])
        return [json.loads(ln) for ln in out.read_text().splitlines() if ln.startswith("{")]


def _learn(spec: str, profile: Path) -> None:
    _cli(["baseline", "learn", "--source", spec, "--out", str(profile)])


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(nothing said)"


def _split(healthy: tuple[np.ndarray, float], scale: float, least_s: float,
           share: float = LEARN_SHARE) -> tuple[int, float]:
    """(the healthy recording's declared rate at ``scale``, the seconds of it learned on);
    ``healthy``: its samples and rate (``read_recording``)."""
    x, rate = healthy
    declared = int(round(rate * scale))
    seconds = x.shape[0] / declared
    split = max(share * seconds, least_s)  # a faster machine's recording is shorter
    if seconds - split < least_s / 10:
        raise DataError(f"at x{scale:g} {HEALTHY} plays {seconds:.2f} s: too short to learn a baseline "
                        f"({least_s:.2f} s) and keep some of it held out; give lower speeds")
    return declared, split


def measure(data: Path, healthy: tuple[np.ndarray, float], scale: float, faults: dict[Path, float],
            fault_labels: set[str], least_s: float) -> dict:
    declared, split = _split(healthy, scale, least_s)
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
        for f, rate in faults.items():
            fr = int(round(rate * scale))
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


STOPS = {"abrupt": 0.0, "coast 1 s": 1.0, "coast 3 s": 3.0, "coast 5 s": 5.0}  # seconds to standstill and back


def _looped(x: np.ndarray, n: int, fade: int) -> np.ndarray:
    """``n`` samples of ``x`` played over and over, each repeat crossfaded into the last."""
    y = x
    while y.size < n:
        w = np.linspace(0.0, 1.0, fade)
        y = np.concatenate([y[:-fade], y[-fade:] * (1 - w) + x[:fade] * w, x[fade:]])
    return y[:n]


def _stop_start(run: np.ndarray, rate: int, stop_s: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """4 s of ``run``, a stop (abrupt, or a coast-down of ``stop_s``), 5 s at rest, a run-up as
    long, 16 s at speed; with 1 mg of sensor noise. Returns it and when the run-up ends (s)."""
    def warp(speed: np.ndarray, start: int) -> np.ndarray:  # the machine at ``speed`` (0..1) per sample
        pos = start + np.cumsum(speed)
        i0 = pos.astype(int)
        return (run[i0] + (run[i0 + 1] - run[i0]) * (pos - i0)) * speed**2

    n = int(stop_s * rate)
    ramp = np.arange(n) / max(n, 1)
    parts = [run[: 4 * rate], warp(1 - ramp, 4 * rate), np.zeros(5 * rate), warp(ramp, 0), run[rate : 17 * rate]]
    sig = np.concatenate(parts)
    return sig + 1e-3 * rng.standard_normal(sig.size), 9 + 2 * stop_s


def measure_stops(data: Path, healthy: tuple[np.ndarray, float], scale: float, least_s: float) -> list[dict]:
    """The healthy machine at ``scale`` stopping and starting again (``STOPS``), against a baseline
    learned at that speed."""
    import scipy.io.wavfile

    from drsn_stream.monitor.baseline import STARTUP_S

    declared, split = _split(healthy, scale, least_s)
    x = healthy[0][:, 0].astype(np.float64)
    run = _looped(x[int(split * declared) :], 25 * declared, int(0.05 * declared))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        profile, wav = Path(tmp) / "p.json", Path(tmp) / "stops.wav"
        _learn(f"file:{data / HEALTHY}?rate={declared}&duration={split:.6f}", profile)
        for k, (name, stop_s) in enumerate(STOPS.items()):
            sig, started = _stop_start(run, declared, stop_s, np.random.default_rng(k))
            scipy.io.wavfile.write(wav, declared, sig.astype(np.float32))
            objs = _monitor("--source", f"file:{wav}?stream=normal_0_97", "--baseline", str(profile),
                            "--fast", "--headless")
            preds = [o for o in objs if o["type"] == "prediction"]
            t0 = min((o["time"] for o in preds), default=0.0)  # (the first window's end: "after" errs late)
            after = [o for o in preds if o["time"] - t0 > started + STARTUP_S]  # judged again by now
            rows.append({"speed": scale, "stop": name,
                         "alarms": sum(o["type"] == "alarm" and o["to"] != "NORMAL" for o in objs),
                         "sensor_events": sum(o["type"] == "health" and o["to"] != "OK" for o in objs),
                         "after_start_up": len(after),
                         "after_start_up_over": sum(o.get("anomaly", 0.0) > 1 for o in after),
                         "after_start_up_judged": sum("anomaly" in o for o in after)})
    return rows


def measure_states(data: Path, healthy: tuple[np.ndarray, float], speeds: list[float], faults: dict[Path, float],
                   least_s: float, order: str, model_rate: int) -> list[dict]:
    """One baseline learned over the healthy recording at every speed of ``speeds``; each speed's
    held-out part and fault recordings monitored against it."""
    import scipy.io.wavfile
    from scipy.signal import resample_poly

    from drsn_stream.dsp.resample import rational_ratio

    x = healthy[0][:, 0].astype(np.float64)
    parts, splits = [], {}
    for s in speeds:
        declared, split = _split(healthy, s, least_s, STATES_SHARE)
        splits[s] = (declared, split)
        up, down = rational_ratio(declared, model_rate)
        parts.append(resample_poly(x[: int(split * declared)], up, down).astype(np.float32))
    if order == "mixed":  # 1-s turns of each speed
        turns = [p[i : i + model_rate] for i in range(0, max(len(p) for p in parts), model_rate) for p in parts]
        learn = np.concatenate([t for t in turns if t.size])
    else:
        learn = np.concatenate(parts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav, profile = Path(tmp) / "learn.wav", Path(tmp) / "p.json"
        scipy.io.wavfile.write(wav, model_rate, learn)
        _learn(f"file:{wav}?stream=normal_0_97", profile)
        from drsn_stream.monitor.baseline import Profile

        base = Profile.load(profile).streams["normal_0_97"]
        states = 1 + len(getattr(base, "states", ()))  # (versions before operating states: one)
        for s in speeds:
            declared, split = splits[s]
            objs = _monitor("--source", f"file:{data / HEALTHY}?rate={declared}&start={split:.6f}",
                            "--baseline", str(profile), "--fast", "--headless")
            preds = [o for o in objs if o["type"] == "prediction"]
            row = {"speed": s, "states": states,
                   "healthy": {"windows": len(preds), "over": sum(o.get("anomaly", 0.0) > 1 for o in preds),
                               "alarms": sum(o["type"] == "alarm" and o["to"] != "NORMAL" for o in objs)}}
            alarmed, under_half = 0, 0
            for f, rate in faults.items():
                fr = int(round(rate * s))
                objs = _monitor("--source", f"file:{f}?rate={fr}&stream=normal_0_97", "--baseline", str(profile),
                                "--fast", "--headless")
                preds = [o for o in objs if o["type"] == "prediction"]
                alarmed += any(o["type"] == "alarm" and o["to"] != "NORMAL" for o in objs)
                under_half += np.mean([o.get("anomaly", 0.0) > 1 for o in preds]) < 0.5 if preds else 1
            row["faults"] = {"recordings": len(faults), "alarmed": alarmed, "under_half_flagged": int(under_half)}
            rows.append(row)
            h, fs = row["healthy"], row["faults"]
            print(f"| x{s:g} | {row['states']} | {h['windows']} | {h['over']} | {h['alarms']} | "
                  f"{fs['alarmed']} of {fs['recordings']} | {fs['under_half_flagged']} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", help="speeds as multiples of the recordings' own (comma-separated; default "
                                     "0.8,0.85,0.9,0.95,1,1.05,1.1,1.2, with --stops 1)")
    ap.add_argument("--data", default=None, help="the CWRU folder (default: the shared data)")
    ap.add_argument("--learn-speeds", help="learn one baseline over the healthy recording at these speeds "
                                           "(comma-separated), then monitor each")
    ap.add_argument("--order", choices=("mixed", "sequence"), default="mixed",
                    help="--learn-speeds: the speeds in 1-s turns (mixed) or one after the other")
    ap.add_argument("--stops", action="store_true",
                    help="the healthy machine at each speed stopping and starting again (default --scales 1)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--config", help="a drsn-stream config the monitor runs with (e.g. [decision] set_windows = 5)")
    args = ap.parse_args(argv)
    if args.config:
        from drsn_stream.config import read_toml

        read_toml(args.config)  # a config that cannot be read is refused before the work
    MONITOR_ARGS[:] = ["--config", args.config] if args.config else []
    if args.stops and args.learn_speeds is not None:
        raise ConfigError("--stops and --learn-speeds are two measurements: give one")
    if args.scales is None:
        args.scales = "1" if args.stops else "0.8,0.85,0.9,0.95,1,1.05,1.1,1.2"
    flag = "--learn-speeds" if args.learn_speeds is not None else "--scales"
    text = args.learn_speeds if args.learn_speeds is not None else args.scales
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be numbers, comma-separated, e.g. 0.8,1,1.2, not {text!r}") from None
    if not scales or not all(math.isfinite(s) and 0.5 <= s <= 2 for s in scales):
        raise ConfigError(f"{flag} must be between 0.5 and 2 (multiples of the recordings' speed), not {text!r}")
    out = writable_file(args.json, "--json") if args.json else None
    data = cwru.cwru_dir(args.data)
    if not (data / HEALTHY).is_file():
        raise ConfigError(f"{data / HEALTHY} not found: give the CWRU folder with --data")
    healthy = read_recording(data / HEALTHY)
    from drsn_stream.models import load_artifact

    meta = load_artifact("bearing-cwru")[1]
    fault_labels = {lb for lb in meta.labels if lb != "normal"}
    least_s = ((min_windows(meta.features + 1) - 1) * meta.hop + meta.window) / meta.sample_rate + 0.01  # and the level
    for s in scales:  # every speed checked before the work
        _split(healthy, s, least_s, LEARN_SHARE if args.learn_speeds is None else STATES_SHARE)
    if args.stops:
        print("| speed | stop | alarms | sensor health events | windows judged after the start-up | over the threshold |")
        print("|---|---|---|---|---|---|")
        rows = []
        for s in scales:
            for r in measure_stops(data, healthy, s, least_s):
                rows.append(r)
                print(f"| x{s:g} | {r['stop']} | {r['alarms']} | {r['sensor_events']} | {r['after_start_up_judged']} of "
                      f"{r['after_start_up']} | {r['after_start_up_over']} |", flush=True)
        if out is not None:
            out.write_text(json.dumps({"model": "bearing-cwru", "stops": rows}, indent=1) + "\n")
        return 0
    faults = {f: read_recording(f)[1] for f in sorted(data.glob("12k_Drive_End_*.mat"))}  # their rates
    if args.learn_speeds is not None:
        print(f"one baseline learned at x{', x'.join(f'{s:g}' for s in scales)} ({args.order})")
        print("| speed | states learned | healthy windows (held out) | over the threshold | alarms | "
              "fault recordings alarmed | with under half their windows over |")
        print("|---|---|---|---|---|---|---|")
        rows = measure_states(data, healthy, scales, faults, least_s, args.order, meta.sample_rate)
        if out is not None:
            out.write_text(json.dumps({"model": "bearing-cwru", "learn_speeds": scales, "order": args.order,
                                       "rows": rows}, indent=1) + "\n")
        return 0
    rows = []
    print("| speed | healthy windows (held out) | named a fault by the model | shown as a fault | alarms | "
          "fault recordings alarmed |")
    print("|---|---|---|---|---|---|")
    for s in scales:
        t = time.perf_counter()
        r = measure(data, healthy, s, faults, fault_labels, least_s)
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
