"""CPU cost and detection latency of live spoken-digit recognition (prints figures, asserts nothing).

Replays ``sim:speech`` (real FSDD test-split digits over held-out background noise) through the
same path as the monitor: StreamDSP (resample, 1 s windows every 100 ms, rms normalization) ->
the TorchScript model, one window per call as a live stream delivers them -> WordDetector.

    nice python tools/bench_speech.py                     # 60 s of audio as fast as possible
    nice python tools/bench_speech.py --realtime 20       # plus 20 s paced in real time (wall latency)
    nice python tools/bench_speech.py --model runs/digits/digits-fsdd.pt --threads 2

Figures: CPU seconds per second of audio (process time: DSP, model, detector, and all together),
and latency from the end of each spoken digit to its detection: algorithmic (stream time of the
confirming window minus the word's end) and, with --realtime, wall-clock (time the event was
emitted minus the word's end).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from drsn_stream.dsp import StreamDSP
from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.models import load_artifact
from drsn_stream.models.outputs import to_probs
from drsn_stream.sources import make_source
from drsn_stream.speech.detector import WordDetector


def run(model, meta, spec: str) -> dict:
    det = WordDetector(meta.labels)
    cpu = {"dsp": 0.0, "model": 0.0, "detector": 0.0}
    events = []
    n_windows = 0
    with make_source(spec) as src:
        dsp = StreamDSP(meta)
        frames = list(src) if "fast=1" in spec else None
        iterator = frames if frames is not None else src
        for frame in iterator:
            c0 = time.process_time()
            wins = dsp.push(frame)
            c1 = time.process_time()
            cpu["dsp"] += c1 - c0
            for w in wins:
                c1 = time.process_time()
                with torch.no_grad():
                    logits, _ = model(torch.from_numpy(w.data[None]))
                probs = to_probs(logits, meta.scores)[0].numpy()
                c2 = time.process_time()
                for ev in det.update(w.stream_id, w.t_last, probs):
                    ev.data["t_wall"] = time.time()
                    events.append(ev)
                cpu["model"] += c2 - c1
                cpu["detector"] += time.process_time() - c2
                n_windows += 1
        words = src.words()
        audio_s = (words[-1][1] - src.t0) if words else 0.0
        audio_s = max(audio_s, sum(f.duration for f in frames) if frames else audio_s)
    return {"cpu": cpu, "events": events, "words": words, "windows": n_windows, "audio_s": audio_s}


def match(words: list, events: list) -> list[tuple[str, str, float, float]]:
    """(said, detected, algorithmic latency s, wall latency s) per word that has a detection."""
    out = []
    for ev in events:
        owner = [(s, e, lab) for (s, e, lab) in words if s <= ev.time <= e + 1.0]
        if owner:
            s, e, lab = owner[0]
            out.append((lab, ev.data["label"], ev.time - e, ev.data["t_wall"] - e))
    return out


def report(name: str, res: dict, wall: bool) -> None:
    audio = res["audio_s"]
    cpu = res["cpu"]
    total = sum(cpu.values())
    print(f"\n== {name}: {audio:.1f} s of audio, {res['windows']} windows ({res['windows'] / audio:.1f}/s)")
    print(f"CPU per second of audio: total {total / audio * 1000:.1f} ms  (DSP {cpu['dsp'] / audio * 1000:.1f} ms, "
          f"model {cpu['model'] / audio * 1000:.1f} ms, detector {cpu['detector'] / audio * 1000:.2f} ms)")
    print(f"model: {cpu['model'] / max(1, res['windows']) * 1000:.2f} ms CPU per window")
    m = match(res["words"], res["events"])
    said = [lab for _, _, lab in res["words"]]
    hits = sum(1 for a, b, _, _ in m if a == b)
    print(f"words said {len(said)}, detections {len(res['events'])}, correct {hits}, "
          f"in pauses {len(res['events']) - len(m)}")
    if m:
        alg = np.array([x[2] for x in m])
        print(f"latency end of word -> detection (stream time): median {np.median(alg) * 1000:.0f} ms, "
              f"p90 {np.percentile(alg, 90) * 1000:.0f} ms, max {alg.max() * 1000:.0f} ms")
        if wall:
            w = np.array([x[3] for x in m])
            print(f"latency end of word -> event emitted (wall clock): median {np.median(w) * 1000:.0f} ms, "
                  f"p90 {np.percentile(w, 90) * 1000:.0f} ms, max {w.max() * 1000:.0f} ms")


MAX_SECONDS = 86400.0  # a day of audio; more is a typo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="digits-fsdd")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--realtime", type=float, default=0.0, help="also run this many seconds paced in real time")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the monitor leaves a core for ingest)")
    args = ap.parse_args(argv)
    for flag, v in (("--seconds", args.seconds), ("--realtime", args.realtime)):
        if not (math.isfinite(v) and 0 <= v <= MAX_SECONDS) or (flag == "--seconds" and v == 0):
            raise ConfigError(f"{flag} must be a finite number of seconds up to {MAX_SECONDS:.0f}, not {v}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be 1 or more, not {args.threads}")
    torch.set_num_threads(args.threads)
    model, meta = load_artifact(args.model)
    if meta.input.get("kind") != "logmel":
        raise ConfigError(f"{args.model} is not a speech model (its input is {meta.input.get('kind', 'raw')}); "
                          "give one, e.g. --model digits-fsdd")
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(model.eval())) if hasattr(model, "graph") else model
    print(f"model {meta.name} ({meta.model}), {sum(p.numel() for p in model.parameters())} parameters, "
          f"torch threads {args.threads}, {torch.__version__}")
    for _ in range(5):  # TorchScript profiles the first calls: warm up as the monitor does
        with torch.no_grad():
            frozen(torch.zeros(1, meta.window))
    report("fast replay", run(frozen, meta, f"sim:speech?fast=1&duration={args.seconds}&seed=7&chunk=800"), wall=False)
    if args.realtime:
        report("real-time replay", run(frozen, meta, f"sim:speech?duration={args.realtime}&seed=8&chunk=400"), wall=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_speech.py"))
