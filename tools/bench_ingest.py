#!/usr/bin/env python3
"""The monitor's ingest path alone: frames/s and CPU per frame and per channel, no model running.

Encodes ``--streams`` streams of 12 kHz, 512-sample frames (``--channels`` C: streams / C
machines of C-channel frames) in the wire format, queues ``--seconds`` of them on a real ZeroMQ
PUSH socket on loopback, then lets the monitor's ingest (the same ``Pipeline._ingest`` the live
monitor runs: receive, decode, sequence checks, sensor health, resampling and windowing, hand-over
to the batcher) take all of them as fast as it can on this thread, while a second thread empties
the batcher as the engine would (without running the model). Prints the ingest thread's CPU time
per frame and per channel, its page faults per frame (new memory it touched), and frames/s
(wall). ``--profile`` prints the top of a cProfile of the same run instead of timing it;
``--stages`` adds the CPU time of the ingest's main stages per frame (a ``time.thread_time``
pair around each call, which adds ~0.3 us per call to the total): the compiled sensor-health
kernels and the windower's copy are bound by memory, not by Python, so they bound what any
rewrite of the Python around them can reach.

A run from a cold start also pays what a monitor pays once: every buffer new (the kernel faults in
and zeroes its pages at the first writes), the health's rows growing. ``--warm-up S`` queues S
more seconds of every stream first and counts only the frames after them, as in a monitor that
has run a while (docs/performance.md: without it, read the figures as an upper bound).

    python tools/bench_ingest.py --streams 256 --seconds 4
    python tools/bench_ingest.py --streams 256 --channels 16 --seconds 4
    python tools/bench_ingest.py --streams 1024 --channels 16 --hop 2048 --seconds 4
    python tools/bench_ingest.py --streams 1024 --channels 16 --hop 2048 --phases 4 --seconds 4
    python tools/bench_ingest.py --streams 256 --repeat 5 --slice-max 256,1024
    python tools/bench_ingest.py --streams 256 --repeat 3 --receive pyzmq,auto
    python tools/bench_ingest.py --streams 1024 --channels 16 --hop 2048 --phases 4 --warm-up 4
    python tools/bench_ingest.py --streams 1024 --channels 16 --hop 2048 --phases 4 --seconds 8 --stages
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import socket
import threading
import time
from typing import Any

import numpy as np
import zmq

from drsn_stream.app import ingest as ingest_mod
from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.runtime import freeze_start_up_objects, thaw
from drsn_stream.sources.wire import encode, encode_eos

RATE = 12000.0
FRAME = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(streams: int, channels: int, seconds: float, *, seed: int = 1) -> list[list[bytes]]:
    """Wire messages of ``streams / channels`` machines for ``seconds``, interleaved as a gateway
    sends them (every machine's frame k, then every machine's frame k + 1), then an end of stream each."""
    rng = np.random.default_rng(seed)
    machines = streams // channels
    frames = int(seconds * RATE / FRAME)
    t0 = time.time() - seconds
    noise = rng.standard_normal((64, FRAME, channels)).astype(np.float32) * 0.1
    out = []
    for k in range(frames):
        for m in range(machines):
            x = noise[(k * 7 + m) % len(noise)]
            out.append(encode(f"m{m}", k, t0 + k * FRAME / RATE, RATE, x if channels > 1 else x[:, 0]))
    out += [encode_eos(f"m{m}") for m in range(machines)]
    return out


RECEIVE = {"auto": None, "compiled": True, "pyzmq": False}  # the source's compiled_receive


def _stages() -> list[tuple[str, Any, str]]:
    """(label, owner, attribute) of the stages ``--stages`` times, outermost first."""
    from drsn_stream.dsp.bank import WindowBank
    from drsn_stream.dsp.stream import FrameDSP, StreamDSP
    from drsn_stream.dsp.window import Windower
    from drsn_stream.monitor import levels_jit
    from drsn_stream.monitor.health import HealthMonitor

    return [
        ("Ingest.frames (all after the source)", ingest_mod.Ingest, "frames"),
        ("  sensor health: push_judged (1-channel rounds, their flush too)", HealthMonitor, "push_judged"),
        ("  sensor health: push_channels (the others)", HealthMonitor, "push_channels"),
        ("    its gather into the level rows (compiled)", levels_jit, "gather_frames"),
        ("    its level tests (compiled)", levels_jit, "levels_rows"),
        ("  FrameDSP.push (multi-channel frames)", FrameDSP, "push"),
        ("  WindowBank.push_flat (1-channel frames)", WindowBank, "push_flat"),
        ("  StreamDSP.push (the others: resampled, NaN...)", StreamDSP, "push"),
        ("    the windower's copy (Windower._append)", Windower, "_append"),
        ("  judging the windows' streams: flush_many (the others)", HealthMonitor, "flush_many"),
    ]


class StageClock:
    """CPU time (this thread's) inside each of ``_stages()``, counted while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.cpu: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        for label, owner, name in _stages():
            original = getattr(owner, name)
            self._undo.append((owner, name, original))
            setattr(owner, name, self._timed(label, original))
            self.cpu[label] = 0.0

    def _timed(self, label: str, fn: Any) -> Any:
        cpu, clock = self.cpu, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[label] += clock() - t

        return timed

    def close(self) -> None:
        for owner, name, original in self._undo:
            setattr(owner, name, original)


def _faults() -> int | None:
    """This thread's page faults so far (Linux's per-thread resource usage), or None."""
    try:
        import resource  # (Unix only)

        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    except (ImportError, AttributeError, OSError):  # no per-thread usage here
        return None


def run(streams: int, channels: int, seconds: float, *, hop: int | None = None, phases: int = 1,
        profile: bool = False, receive: str = "auto", warm_up: float = 0.0, stages: bool = False) -> dict:
    clock = StageClock() if stages else None
    try:
        return _run(streams, channels, seconds, hop=hop, phases=phases, profile=profile, receive=receive,
                    warm_up=warm_up, clock=clock)
    finally:
        if clock is not None:
            clock.close()


def _run(streams: int, channels: int, seconds: float, *, hop: int | None, phases: int, profile: bool,
         receive: str, warm_up: float, clock: StageClock | None) -> dict:
    msgs = messages(streams, channels, warm_up + seconds)
    port = free_port()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.setsockopt(zmq.LINGER, 0)
    push.bind(f"tcp://127.0.0.1:{port}")
    # stale_ms 0: the queued frames' capture times lie in the past; capacity: nothing is dropped
    cfg = RunConfig(sources=(f"zmq+pull://127.0.0.1:{port}?until_eos=1&hwm={len(msgs) + 10}",), model="bearing-cwru",
                    engine_process=False, hop=hop, phases=phases, stale_ms=0.0, queue_capacity=1 << 20, idle_flush=False,
                    max_streams=max(streams, 1), stats_every_s=3600)
    pipe = Pipeline(cfg)
    src = pipe.sources[0]
    src.compiled_receive = RECEIVE[receive]
    src.open()
    for parts in msgs:
        push.send_multipart(parts, copy=False)
    time.sleep(0.5)  # the I/O threads move the queue over to the receiving socket
    windows = 0
    done = threading.Event()

    def drain() -> None:
        nonlocal windows
        while not (done.is_set() and pipe.batcher.depth() == 0):
            windows += len(pipe.batcher.next_batch(timeout=0.05, early=True))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    thresholds = freeze_start_up_objects()  # as Pipeline.start does: the collector as in the monitor
    # CPU time of this thread, not wall time: other processes on a loaded machine do not count
    prof = cProfile.Profile(time.thread_time) if profile else None
    start = {"cpu": time.thread_time(), "wall": time.perf_counter(), "frames": 0, "faults": _faults()}
    warm_frames = (streams // channels) * int(warm_up * RATE / FRAME)
    if warm_frames:  # the clocks start once the warm-up's frames are ingested
        ingest_frames, taken = pipe.ingest.frames, [0]

        def frames_then_clock(frames: list, source: object = None) -> list:
            out = ingest_frames(frames, source)
            taken[0] += len(frames)
            if taken[0] >= warm_frames and not start["frames"]:
                start.update(cpu=time.thread_time(), wall=time.perf_counter(), frames=taken[0], faults=_faults())
                if prof is not None:
                    prof.enable()
                if clock is not None:
                    clock.on = True
            return out

        pipe.ingest.frames = frames_then_clock
    else:
        if prof is not None:
            prof.enable()
        if clock is not None:
            clock.on = True
    pipe._ingest(src)
    if prof is not None:
        prof.disable()
    if clock is not None:
        clock.on = False
    cpu, wall = time.thread_time() - start["cpu"], time.perf_counter() - start["wall"]
    faults = _faults()
    faults = faults - start["faults"] if faults is not None and start["faults"] is not None else None
    done.set()
    drainer.join()
    thaw(thresholds)
    push.close(0)
    if warm_frames and not start["frames"]:  # else the figures would hold the warm-up after all
        raise RuntimeError(f"the ingest took fewer frames than the warm-up's {warm_frames}: nothing was timed")
    frames = src.stats.snapshot()["frames"] - start["frames"]
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return {
        "streams": streams,
        "channels_per_frame": channels,
        "hop": hop or pipe.meta.hop,
        "phases": phases,
        "warm_up_s": warm_up,
        "frames": frames,
        "windows": windows,
        "malformed": pipe.malformed_total(),
        "errors": pipe.errors[:3],
        "frames_per_s": round(frames / wall, 1),
        "channels_per_s": round(frames * channels / wall, 1),
        "ingest_us_per_frame": round(1e6 * cpu / frames, 1) if frames else None,
        "ingest_us_per_channel": round(1e6 * cpu / (frames * channels), 2) if frames else None,
        # page faults of the ingest thread (new memory touched: each costs the kernel a page's
        # zeroing and mapping, in the thread's CPU time above); None where the system does not say
        "page_faults_per_frame": round(faults / frames, 4) if frames and faults is not None else None,
        "stages_us_per_frame": {label: round(1e6 * t / frames, 2) for label, t in clock.cpu.items()}
        if clock is not None and frames else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=256, help="channels in all (a multiple of --channels)")
    ap.add_argument("--channels", type=int, default=1, help="channels per frame")
    ap.add_argument("--hop", type=int, default=None, help="window hop in samples (default: the model's)")
    ap.add_argument("--phases", type=int, default=1, help="the monitor's --phases (default 1)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of signal per stream queued and timed")
    ap.add_argument("--warm-up", type=float, default=0.0, metavar="S",
                    help="seconds of signal per stream queued before those and ingested untimed (buffers grown and "
                         "their pages faulted in, as in a monitor that has run a while)")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the figures of each are printed")
    ap.add_argument("--slice-max", default=None, metavar="LIST",
                    help="comma-separated widths (channels) of a poll's runs after the first (the pipeline's "
                         "INGEST_SLICE_MAX), alternated in every repeat, e.g. 256,1024")
    ap.add_argument("--receive", default="auto", metavar="LIST",
                    help="comma-separated ways to receive the messages, alternated in every repeat: auto (as the "
                         "monitor: the compiled loop for small payloads), compiled (always), pyzmq (never)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the ingest instead of timing it")
    ap.add_argument("--stages", action="store_true",
                    help="also print the CPU time per frame inside the ingest's main stages (a clock pair per call)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.streams % args.channels:
        raise ConfigError(f"--streams {args.streams} is not a multiple of --channels {args.channels}")
    if args.warm_up < 0:
        raise ConfigError(f"--warm-up {args.warm_up:g}: give the seconds of every stream ingested untimed, 0 or more")
    widths = [int(w) for w in args.slice_max.split(",")] if args.slice_max else [ingest_mod.INGEST_SLICE_MAX]
    receives = args.receive.split(",")
    if not set(receives) <= set(RECEIVE):
        raise SystemExit(f"--receive {args.receive!r}: each of them one of {', '.join(RECEIVE)}")
    rows = []
    for _ in range(args.repeat):
        for width in widths:
            for receive in receives:
                ingest_mod.INGEST_SLICE_MAX = width
                rows.append({**run(args.streams, args.channels, args.seconds, hop=args.hop, phases=args.phases,
                                 profile=args.profile, receive=receive, warm_up=args.warm_up,
                                 stages=args.stages),
                             "slice_max": width, "receive": receive})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['streams']} streams in {r['streams'] // r['channels_per_frame']} frames of "
              f"{r['channels_per_frame']} channel(s), hop {r['hop']}, phases {r['phases']}, later runs {r['slice_max']} wide, "
              f"received {r['receive']}" + (f", after {r['warm_up_s']:g} s of warm-up" if r["warm_up_s"] else "")
              + f": {r['frames']} frames, {r['windows']} windows, "
              f"{r['frames_per_s']:.0f} frames/s ({r['channels_per_s']:.0f} channels/s); ingest CPU "
              f"{r['ingest_us_per_frame']} us per frame, {r['ingest_us_per_channel']} us per channel"
              + (f", {r['page_faults_per_frame']} page faults per frame" if r["page_faults_per_frame"] is not None else "")
              + (f"; malformed {r['malformed']}, errors {r['errors']}" if r["malformed"] or r["errors"] else ""))
        for label, us in (r["stages_us_per_frame"] or {}).items():
            print(f"  {label:48s} {us:7.2f} us per frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_ingest.py"))
