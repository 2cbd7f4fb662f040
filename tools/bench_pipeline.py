#!/usr/bin/env python3
"""How many live 12 kHz streams does the monitor hold in real time on this machine?

For each N, a separate process (`drsn-stream publish`) publishes N simulated machines (real CWRU
excerpts, 512-sample frames) over ZeroMQ on loopback at real-time pace; the monitor (in this
process) subscribes with `zmq://`, windows (2048, hop 512), batches and classifies them with the
built-in bearing model on the CPU (or GPU), exactly as `drsn-stream --source zmq://...` does.
A run "holds" N when it dropped no window (stale, overflow or output), received at least 97 % of
the windows the publisher's signal holds (windows come in bursts of up to N per hop, so a span
may hold one burst more or less than its length: "received" reads within about hop / span of 100 %,
0.3 % at 15 s), and its p99 latency (capture of the window's last sample
-> result, over every window of the measured seconds) is within the bound; with --repeat K, in
every one of K runs. Prints a table and the largest N held; --json prints JSON. The model runs
in its own process by default on the CPU (--engine-process auto|on|off), as in the monitor; the
publisher runs on the monitor's cores, not the engine's (--publisher-on).
With --channels C the N streams are N/C machines sending C-channel frames (a DAQ module per
machine; every channel monitored). Each run prints the ingest thread's CPU time per frame and per
channel (receive, decode, health, DSP, hand-over to the batcher), and the CPU per window of the
monitor process's threads (ingest, engine loop, output: one interpreter lock, so their sum bounds
the windows/s one monitor process takes). With
--ingest-procs 1,8 each N is run with the source read by one ingest thread and by 8 ingest
processes (app/shards.py), alternating, and the ingest processes' CPU per frame is printed too
(docs/performance.md). With --phases 1,4 each N is run with every stream's windows completed by
the same frames and with them spread over 4 quarters of the hop (the monitor's --phases),
alternating. With --publishers P the machines are split over P publisher processes
(``sim:bearing?first=``, distinct stream ids), which the monitor's one source subscribes to
together (``zmq://HOST:PORT,HOST:PORT``): one publisher process simulates some 40,000 channels/s,
so ten thousand streams (240,000 channels/s) need several (a GPU host). With --ingest-backlog each
live run is followed by the same streams' frames queued and ingested as fast as they go
(tools/bench_ingest.py, no model, in a process of its own; runs with one ingest thread only), and the
live ingest per frame is printed as a ratio to that: a host's slow spell moves both, the live run's own costs (cache misses after
idle, waits for the rest of a burst) only the first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.engine.stats import p50_p99
from drsn_stream.errors import run_tool

ROOT = Path(__file__).resolve().parents[1]


def _child_env() -> dict[str, str]:
    """The environment for this script's child processes: this checkout's package ahead of any
    PYTHONPATH given."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat "cpu" line, in ticks), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def busy_and_steal(t0: list[int] | None, t1: list[int] | None) -> tuple[float | None, float | None]:
    """(% of the machine's CPU time busy, % stolen by the hypervisor) between two cpu_times()."""
    if not t0 or not t1:
        return None, None
    d = [b - a for a, b in zip(t0, t1)]
    total = sum(d[:8]) or 1  # user nice system idle iowait irq softirq steal (guest is in user)
    idle = d[3] + d[4]
    steal = d[7] if len(d) > 7 else 0
    return round(100.0 * (total - idle) / total, 1), round(100.0 * steal / total, 1)


def process_cpu_s(pids: list[int], *, self_too: bool = True) -> float:
    """CPU seconds (user + system, all threads) used so far by this process (unless not
    ``self_too``) and ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [*(["self"] if self_too else []), *map(str, pids)]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds (user + system) used so far by one thread of this process."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def sched_ns(pid: int | str, tid: int | None = None) -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for one) so far of one thread (``tid``) or of every
    thread of ``pid`` together (/proc/.../schedstat); None where the kernel does not keep them."""
    try:
        tids = [str(tid)] if tid is not None else os.listdir(f"/proc/{pid}/task")
        run = wait = 0
        for t in tids:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    r, w, _ = f.read().split()
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            run, wait = run + int(r), wait + int(w)
        return run, wait
    except (OSError, ValueError):
        return None


def sched_ns_of(where: list[tuple[int | str, int | None]]) -> tuple[int, int] | None:
    """``sched_ns`` of several threads or processes together (``(pid, tid)`` each, as ``sched_ns`` takes)."""
    each = [sched_ns(*w) for w in where]
    if any(v is None for v in each):
        return None
    return sum(v[0] for v in each), sum(v[1] for v in each)  # type: ignore[index]


def sched_shares(before: dict[str, tuple[int, int] | None], after: dict[str, tuple[int, int] | None],
                 span_s: float) -> dict[str, dict[str, float]]:
    """Per part, % of the span on a CPU and % runnable but waiting for one (a core's run queue)."""
    out = {}
    for name, b in after.items():
        a = before.get(name)
        if a is not None and b is not None:
            out[name] = {"cpu_pct": round(100 * (b[0] - a[0]) / 1e9 / span_s, 1),
                         "wait_pct": round(100 * (b[1] - a[1]) / 1e9 / span_s, 1)}
    return out


# the longest the publisher may take to start sending; it runs for the measured span plus this
START_S = 60.0


def run_one(n: int, *, seconds: float, model: str, device: str, max_wait_ms: float, hop: int | None,
            threads: int | None = None, engine_process: bool | None = None, max_batch: int | None = None,
            cpu_layout: str = "auto", channels: int = 1, publisher_on: str = "monitor", publishers: int = 1,
            **overrides) -> dict:
    """One run with N streams (N/channels machines of ``channels``-channel frames); ``overrides``
    are further RunConfig fields (for A/B experiments).

    ``publisher_on``: "monitor" runs the publisher on the monitor's own cores, not the engine
    process's (where the monitor pins one): it stands for the gateways, which send from other
    hosts, and where the scheduler put it on the engine's core its bursts took that core from
    the model in the middle of batches (docs/performance.md). "engine": on the engine process's
    core, to measure ingest without a load generator on its core. "any": wherever the scheduler
    puts it.
    """
    if n % channels:
        raise SystemExit(f"--streams {n} is not a multiple of --channels {channels}")
    machines = n // channels
    if not 1 <= publishers <= machines:
        raise SystemExit(f"--publishers {publishers}: between 1 and the {machines} machines")
    ports = [free_port() for _ in range(publishers)]
    # publisher k sends machines first[k] .. first[k] + count[k] - 1
    count = [machines // publishers + (k < machines % publishers) for k in range(publishers)]
    first = np.cumsum([0, *count[:-1]]).tolist()
    # a live-learned baseline (--baseline-ab) learns during a longer warm-up; the publisher runs on through it
    warm = 2.0 + (1.0 + overrides["learn_s"] if overrides.get("learn_s") else 0.0)
    env = _child_env()
    cfg = RunConfig(sources=("zmq://" + ",".join(f"127.0.0.1:{port}" for port in ports),), model=model, device=device, max_wait_ms=max_wait_ms,
                    hop=hop, threads=threads, stats_every_s=3600, engine_process=engine_process,
                    max_batch=max_batch, cpu_layout=cpu_layout, **overrides)
    pipe = Pipeline(cfg)
    if publisher_on == "engine" and pipe.engine_cpu is None:
        raise SystemExit("--publisher-on engine: the engine process has no core of its own here "
                         "(fewer than 2 cores, --engine-process off, or a GPU)")
    cores = {"monitor": pipe.monitor_cpus,
             "engine": {pipe.engine_cpu} if pipe.engine_cpu is not None else None}.get(publisher_on)
    pubs = []
    for port, m, k in zip(ports, count, first):
        pubs.append(subprocess.Popen(
            [sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--to", f"tcp://127.0.0.1:{port}",
             "--source", f"sim:bearing?machines={m}&first={k}&channels={channels}&noise=gaussian&snr=10&seed=1",
             "--duration", str(seconds + warm + START_S),
             "--wait-subscriber", "10"],
            env=env,
        ))
        if cores:
            # Popen returns once the new interpreter has been exec'd and before it has imported
            # anything, so its one thread is pinned before ZeroMQ's threads exist; they inherit it
            os.sched_setaffinity(pubs[-1].pid, cores)
    pipe.start()
    # the measured span starts once the publisher sends (it starts up in seconds, and more
    # slowly the more machines it simulates), then the first windows fill (a baseline learns)
    t_wait = time.time()
    while pipe.sources[0].stats.snapshot()["frames"] == 0:
        if time.time() - t_wait > START_S or any(pub.poll() is not None for pub in pubs):
            pipe.stop()
            for pub in pubs:
                pub.kill()
            raise SystemExit(f"the publishers sent nothing within {START_S:.0f} s (exit status "
                             f"{[pub.poll() for pub in pubs]})")
        time.sleep(0.02)
    time.sleep(warm)
    monitoring = sum(1 for v in pipe.baseline.state.values() if v == "monitoring") if pipe.baseline else None
    drops0 = pipe.batcher.dropped_total() + pipe.dropped_output + pipe.engine.lost
    pipe.stats.start_recording()
    ticks0 = cpu_times()
    child = [pipe.runner.pid] if getattr(pipe.runner, "pid", None) else []
    shards = pipe._ingest_pids()  # the ingest processes (--ingest-procs > 1)
    proc0, shards0 = process_cpu_s(child + shards), process_cpu_s(shards, self_too=False)
    env0 = pipe.envelope.cpu_s if pipe.envelope is not None else 0.0
    ingest = next((t.native_id for t in pipe._threads if t.name.startswith("drsn-ingest")), None)
    ingest0, frames0 = thread_cpu_s(ingest), pipe.sources[0].stats.snapshot()["frames"]
    judge0 = pipe.judge_cpu_s
    # which parts wait for a core: the monitor's threads, the engine process, the publisher
    parts = {t.name.removeprefix("drsn-").split("-")[0]: [("self", t.native_id)] for t in pipe._threads
             if t.name.startswith(("drsn-ingest", "drsn-output"))}
    parts["engine_loop"] = [("self", pipe.engine.native_id)]
    if child:
        parts["engine_process"] = [(child[0], None)]
    parts["publisher"] = [(pub.pid, None) for pub in pubs]  # all of them together
    sched0 = {name: sched_ns_of(where) for name, where in parts.items()}
    batch_times = getattr(pipe.runner, "batch_times", None)  # the engine process's per-batch times
    if batch_times is not None:
        batch_times.clear()
    t0 = time.time()
    time.sleep(seconds)
    lat, batches = pipe.stats.stop_recording()  # every window of the measured span, not the live view's last 8192
    elapsed = time.time() - t0
    busy, steal = busy_and_steal(ticks0, cpu_times())
    sched = sched_shares(sched0, {name: sched_ns_of(where) for name, where in parts.items()}, elapsed)
    proc_cpu = process_cpu_s(child + shards) - proc0
    shards_cpu = process_cpu_s(shards, self_too=False) - shards0
    ingest_cpu = thread_cpu_s(ingest) - ingest0
    frames = pipe.sources[0].stats.snapshot()["frames"] - frames0
    env_cpu = (pipe.envelope.cpu_s - env0) if pipe.envelope is not None else 0.0
    judge_cpu = pipe.judge_cpu_s - judge0
    stages = pipe.stats.stage_ms()
    engine = {}
    if batch_times:
        bt = np.array(list(batch_times), dtype=np.float64)
        for i, name in ((1, "to_child"), (2, "compute"), (3, "from_child"), (4, "compute_cpu")):
            stages[name] = p50_p99(bt[:, i] * 1000.0)
        rows = bt[:, 0].sum()
        # The engine's speed per window on its own clock and on the CPU's: wall well above CPU
        # time means its core was taken away (other processes, the hypervisor); CPU time up
        # from one run to the next means the core itself ran slower.
        engine = {"wall_us_per_window": round(1e6 * bt[:, 2].sum() / rows, 1),
                  "cpu_us_per_window": round(1e6 * bt[:, 4].sum() / rows, 1),
                  "batches": len(bt), "batches_preempted": int((bt[:, 5] > 0).sum())}
    windows = len(lat)
    drops = pipe.batcher.dropped_total() + pipe.dropped_output + pipe.engine.lost - drops0
    p50, p95, p99 = (float(v) for v in np.percentile(lat, (50, 95, 99))) if windows else (float("nan"),) * 3
    cpu = pipe.usage.read()
    pipe.stop()
    for pub in pubs:
        pub.send_signal(signal.SIGINT)  # it sends until stopped (or its duration ends)
    for pub in pubs:
        pub.wait(timeout=30)
    if pipe.engine.error is not None:  # a run whose engine stopped measured nothing: say why
        raise SystemExit(f"the engine stopped during the run: {pipe.engine.error!r}")
    hop_s = (hop or pipe.meta.hop) / pipe.meta.sample_rate
    expected = n * elapsed / hop_s
    return {
        "streams": n,
        "channels_per_frame": channels,
        "publisher_cpus": sorted(cores) if cores else "any",
        "publishers": publishers,
        "windows_per_s": round(windows / elapsed, 1),
        "expected_per_s": round(expected / elapsed, 1),
        "received": round(windows / expected, 3),
        "dropped": drops,
        "malformed": pipe.malformed_total(),
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
        "avg_batch": round(windows / batches, 1) if batches else 0.0,
        "max_batch": pipe.batcher.max_batch,
        "eager_batch": pipe.batcher.eager_batch,
        "device": pipe.runner.device_name,
        "process_cpu": cpu.get("cpu_percent"),
        # CPU time (monitor + engine process) per classified window over the measured seconds, and
        # the envelope stage's own share of it
        "cpu_us_per_window": round(1e6 * proc_cpu / windows, 1) if windows else None,
        "envelope_cpu_us_per_window": round(1e6 * env_cpu / windows, 1) if windows else None,
        # the ingest thread's CPU time (clock ticks of 10 ms: read over several seconds) per frame
        # received and per channel of those frames
        "ingest_us_per_frame": round(1e6 * ingest_cpu / frames, 1) if frames else None,
        "ingest_us_per_channel": round(1e6 * ingest_cpu / (frames * channels), 2) if frames else None,
        # with ingest processes: how many, and their CPU time (all of them) per frame received; the
        # ingest thread above is then the parent's reading loop (windows from shared memory)
        "ingest_procs": len(shards) or 1,
        "ingest_procs_us_per_frame": round(1e6 * shards_cpu / frames, 1) if frames and shards else None,
        # the output thread's CPU for the unknown label and the anomaly score
        "judge_cpu_us_per_window": round(1e6 * judge_cpu / windows, 1) if windows else None,
        # streams scored against a learned baseline when the measurement began (--baseline-ab)
        "baseline_streams": monitoring,
        # the whole machine over the measured seconds: how busy, and how much the hypervisor took
        "machine_busy_pct": busy,
        "steal_pct": steal,
        # where the time goes (ms, p50/p99): capture -> window formed (ingest), -> batch sent (queue),
        # -> results back (engine); with the engine process, the engine part split into the wait
        # before the child starts the batch (to_child), running it (compute), and the way back
        "stages_ms": stages,
        # the engine process's batches over the measured seconds (see above)
        "engine": engine,
        # per part (the monitor's ingest, engine-loop and output threads, the engine process, the
        # publisher): % of the measured seconds on a CPU and % runnable but waiting for a core
        "sched": sched,
        # CPU per window classified of the monitor process's threads: ingest (with ingest
        # processes: the reading loop), the engine loop (batching, normalization, hand-over to the
        # model) and the output thread (decisions, sinks). They share one interpreter lock (only
        # long numpy steps overlap), so 1e6 / their sum is about the most windows/s one monitor
        # process takes whatever the model's speed (the limit on a GPU host; tools/bench_stages.py)
        "thread_us_per_window": {k: round(sched[k]["cpu_pct"] * elapsed * 1e4 / windows, 1)
                                 for k in ("ingest", "engine_loop", "output") if k in sched and windows},
    }


def backlog_ingest(n: int, channels: int, hop: int | None, phases: int) -> float | None:
    """The ingest CPU per frame of ``n`` streams' frames (``channels`` per frame) queued on a socket
    and taken as fast as they go (tools/bench_ingest.py: 6 s of every stream after 4 s of warm-up),
    in a process of its own; None where it failed (its error on stderr)."""
    cmd = [sys.executable, str(ROOT / "tools" / "bench_ingest.py"), "--streams", str(n), "--channels", str(channels),
           "--phases", str(phases), "--seconds", "6", "--warm-up", "4", "--json"]
    if hop is not None:
        cmd += ["--hop", str(hop)]
    res = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        print(f"tools/bench_ingest.py failed ({res.returncode}): {res.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout)[0]["ingest_us_per_frame"]


def cpu_ratio(rows: list[dict], result: dict, key: str, what: str, *, quiet: bool) -> None:
    """An alternating A/B run's CPU per window with (the rows run with ``machine``) over without, as
    medians over the runs, into ``result[key]``; printed as ``what`` unless ``quiet``."""
    on = [r["cpu_us_per_window"] for r in rows if r["envelope"] and r["cpu_us_per_window"]]
    off = [r["cpu_us_per_window"] for r in rows if not r["envelope"] and r["cpu_us_per_window"]]
    if on and off:
        result[key] = round(float(np.median(on)) / float(np.median(off)), 3)
        if not quiet:
            print(f"{what}: CPU per window {np.median(on):.0f} us with, {np.median(off):.0f} us without "
                  f"(medians of {len(on)}/{len(off)} runs): x{result[key]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="16,32,64,96,128,160,192", help="comma-separated N to try, ascending")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per N (from 2 s after the publisher's first frame)")
    ap.add_argument("--model", default="bearing-cwru")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--max-batch", type=int, default=None,
                    help="largest micro-batch (default: the monitor's, 64 on the CPU, 256 on CUDA)")
    ap.add_argument("--hop", type=int, default=None)
    ap.add_argument("--channels", type=int, default=1,
                    help="channels per frame: N streams are N/C machines of C-channel frames (N a multiple of C)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores - 1)")
    ap.add_argument("--engine-process", choices=["auto", "on", "off"], default="auto",
                    help="CPU: the model in its own process (auto: on with 2 or more cores)")
    ap.add_argument("--cpu-layout", choices=["auto", "script", "off"], default="auto",
                    help="CPU: the model's verified channels-last form (auto: its units' tails compiled on one "
                         "thread; script: all in TorchScript) or the module as stored (off)")
    ap.add_argument("--eager-batch", type=int, default=None,
                    help="a batch leaves the idle engine's queue at this many windows (default: the monitor's, 64 on "
                         "the CPU; 0: off)")
    ap.add_argument("--ingest-procs", default=None, metavar="LIST",
                    help="comma-separated ingest process counts to run each N with, alternating (e.g. 1,8: one ingest "
                         "thread against 8 processes sharded by stream id; default: the monitor's, 1 below 8 cores)")
    ap.add_argument("--phases", default=None, metavar="LIST",
                    help="comma-separated --phases of the monitor to run each N with, alternating (e.g. 1,4: every "
                         "stream's windows on the same frames against spread over 4 quarters of the hop)")
    ap.add_argument("--publisher-on", default="monitor", metavar="LIST",
                    help="where the publisher runs: monitor (the monitor's own cores, not the engine process's; "
                         "default), engine (the engine process's core: ingest without a load generator on its core) "
                         "or any (where the scheduler puts it); comma-separated to alternate, e.g. monitor,engine")
    ap.add_argument("--publishers", type=int, default=1,
                    help="publisher processes the machines are split over (one source subscribed to all of them)")
    ap.add_argument("--all", action="store_true", help="try every N even after one is not held")
    ap.add_argument("--p99-ms", type=float, default=100.0, help="latency bound for 'held'")
    ap.add_argument("--repeat", type=int, default=1, help="runs per N; N counts as held only if every run holds it")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ingest-backlog", action="store_true",
                    help="after each run, the same streams' frames queued and ingested as fast as they go "
                         "(tools/bench_ingest.py, about 10 s more per run), and the live ingest per frame printed as a "
                         "ratio to that")
    ap.add_argument("--envelope-ab", action="store_true",
                    help="run each N without and with the envelope evidence (6205 bearing, 1797 rpm), alternating, "
                         "and print the CPU per window of both and their ratio")
    ap.add_argument("--baseline-ab", action="store_true",
                    help="run each N without the judges (no unknown label, no baseline, no envelope) and with all "
                         "three (unknown, a baseline learned live over the first 3.5 s, envelope evidence), "
                         "alternating, and print the CPU per window of both and their ratio")
    args = ap.parse_args(argv)
    places = [s.strip() for s in args.publisher_on.split(",") if s.strip()]
    if not set(places) <= {"monitor", "engine", "any"}:
        ap.error(f"--publisher-on takes monitor, engine and any, not {args.publisher_on!r}")
    rows = []
    best = 0
    failed = False
    for n in (int(s) for s in args.streams.split(",")):
        held_all = True
        variants = [{}, {"machine": {"bearing": "6205", "rpm": 1797}}] if args.envelope_ab else [{}]
        if args.baseline_ab:
            variants = [{"unknown": False}, {"learn_s": 3.5, "machine": {"bearing": "6205", "rpm": 1797}}]
        if args.ingest_procs:
            variants = [{**v, "ingest_procs": int(k)} for v in variants for k in args.ingest_procs.split(",")]
        if args.phases:
            variants = [{**v, "phases": int(k)} for v in variants for k in args.phases.split(",")]
        variants = [{**v, "publisher_on": p} for v in variants for p in places]
        for rep, extra in ((r, v) for r in range(args.repeat) for v in variants):
            r = run_one(n, seconds=args.seconds, model=args.model, device=args.device, max_wait_ms=args.max_wait_ms,
                        hop=args.hop, threads=args.threads, max_batch=args.max_batch,
                        engine_process={"on": True, "off": False}.get(args.engine_process),
                        cpu_layout=args.cpu_layout, eager_batch=args.eager_batch, channels=args.channels,
                        publishers=args.publishers, **extra)
            r["envelope"] = "machine" in extra
            r["phases"] = extra.get("phases", 1)
            r["held"] = r["dropped"] == 0 and r["received"] >= 0.97 and r["p99_ms"] <= args.p99_ms
            r["repeat"] = rep
            if args.ingest_backlog:
                # bench_ingest reads with one ingest thread: no like for like with ingest processes
                backlog = backlog_ingest(n, args.channels, args.hop, r["phases"]) if r["ingest_procs"] == 1 else None
                r["backlog_ingest_us_per_frame"] = backlog
                r["live_to_backlog"] = (round(r["ingest_us_per_frame"] / backlog, 2)
                                        if backlog and r["ingest_us_per_frame"] else None)
            rows.append(r)
            held_all = held_all and r["held"]
            if not args.json:
                print(f"N={n:4d}  {r['windows_per_s']:8.1f} windows/s of {r['expected_per_s']:8.1f}  received "
                      f"{r['received']:.1%}  dropped {r['dropped']:5d}  p50/p95/p99 {r['p50_ms']}/{r['p95_ms']}/"
                      f"{r['p99_ms']} ms  avg batch {r['avg_batch']}  machine busy {r['machine_busy_pct']} % "
                      f"(steal {r['steal_pct']} %)  "
                      f"{'publisher' if r['publishers'] == 1 else str(r['publishers']) + ' publishers'} on {r['publisher_cpus']}"
                      f"{'  phases ' + str(r['phases']) if args.phases else ''}  {'HELD' if r['held'] else 'not held'}",
                      flush=True)
                print(f"        ingest thread CPU: {r['ingest_us_per_frame']} us per frame of {args.channels} "
                      f"channel(s), {r['ingest_us_per_channel']} us per channel", flush=True)
                if args.ingest_backlog and r["ingest_procs"] == 1:
                    print(f"        the same frames queued (tools/bench_ingest.py, after this run): "
                          f"{r['backlog_ingest_us_per_frame']} us per frame; live / queued "
                          f"{r['live_to_backlog']}x", flush=True)
                if r["ingest_procs"] > 1:
                    print(f"        {r['ingest_procs']} ingest processes: {r['ingest_procs_us_per_frame']} us CPU per "
                          f"frame (all of them); the ingest thread above is the parent's reading loop", flush=True)
                if r["stages_ms"]:
                    print("        ms p50/p99: " + "  ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in r["stages_ms"].items()),
                          flush=True)
                if r["sched"]:
                    print("        % on a CPU / waiting for one: " + "  ".join(
                        f"{k} {v['cpu_pct']}/{v['wait_pct']}" for k, v in r["sched"].items()), flush=True)
                per = r["thread_us_per_window"]
                if len(per) == 3 and sum(per.values()) > 0:
                    print(f"        CPU per window in the monitor process: ingest {per['ingest']} us, engine loop "
                          f"{per['engine_loop']} us, output thread {per['output']} us (one interpreter lock: at most "
                          f"~{round(1e6 / sum(per.values()), -3):,.0f} windows/s at these batch sizes)", flush=True)
                if args.baseline_ab:
                    print(f"        judges {'on ' if r['envelope'] else 'off'}: CPU {r['cpu_us_per_window']} us/window "
                          f"(envelope stage {r['envelope_cpu_us_per_window']}, unknown + anomaly "
                          f"{r['judge_cpu_us_per_window']}; {r['baseline_streams']} streams "
                          "scored against a baseline)", flush=True)
                if args.envelope_ab:
                    print(f"        envelope {'on ' if r['envelope'] else 'off'}: CPU {r['cpu_us_per_window']} us/window "
                          f"(envelope stage {r['envelope_cpu_us_per_window']})", flush=True)
                if r["engine"]:
                    e = r["engine"]
                    print(f"        engine us/window: {e['wall_us_per_window']} wall, {e['cpu_us_per_window']} CPU; "
                          f"{e['batches_preempted']} of {e['batches']} batches lost the core meanwhile", flush=True)
        if held_all and not failed:
            best = n  # held in every run, and so was every smaller N tried
        elif not held_all:
            failed = True
            if best and not args.all:
                break
    result = {"cpu_count": os.cpu_count(), "device": rows[0]["device"] if rows else "", "largest_held": best,
              "channels_per_frame": args.channels,
              "p99_bound_ms": args.p99_ms, "repeat": args.repeat, "runs": rows}
    if args.baseline_ab:
        cpu_ratio(rows, result, "judges_cpu_ratio", "unknown + baseline + envelope", quiet=args.json)
    if args.envelope_ab:
        cpu_ratio(rows, result, "envelope_cpu_ratio", "envelope evidence", quiet=args.json)
    ratios = [r["live_to_backlog"] for r in rows if r.get("live_to_backlog")]
    if ratios:
        result["live_to_backlog_median"] = round(float(np.median(ratios)), 2)
        if not args.json:
            print(f"ingest live / the same frames queued: {result['live_to_backlog_median']}x (median of "
                  f"{len(ratios)} run(s); {min(ratios)}-{max(ratios)}x)")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"largest N held in real time with zero drops and p99 <= {args.p99_ms:g} ms in all {args.repeat} "
              f"run(s), every smaller N tried too: {best} ({rows[0]['device'] if rows else ''}, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_pipeline.py"))
