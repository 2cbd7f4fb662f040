#!/usr/bin/env python3
"""Cluster mode against the single-machine monitor, in the same run, on the same live streams.

For each N: a `drsn-stream publish` process sends N simulated machines (real CWRU excerpts,
512-sample frames) over ZeroMQ on loopback at real-time pace. First the ordinary monitor
(`Pipeline`, `zmq://` source) classifies them for --seconds; then a fresh publisher and a local
Ray cluster (head + --hosts worker nodes, --host-actors host actors each, telemetry off, no dashboard)
classify them in cluster mode: each host subscribes to its share of the topics and runs the same
pipeline, results fan in to the aggregator. Latency is the same measure in both: capture of a
window's last sample -> its label, every window of the measured seconds. Prints p50/p99 and
windows/s of both, and the differences; --json for JSON.

    python tools/bench_cluster.py --streams 64 --seconds 20
    unshare -n sh -c 'ip link set lo up && exec python tools/bench_cluster.py'   # loopback only

Not a test: timings depend on the machine and its load (docs/cluster.md has the figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.errors import run_tool
from drsn_stream.sinks.jsonl import JsonlSink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _publisher(port: int, n: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--to", f"tcp://127.0.0.1:{port}",
         "--source", f"sim:bearing?machines={n}&noise=gaussian&snr=10&seed=1", "--duration", str(seconds)])


def _figures(lat: np.ndarray, elapsed: float) -> dict:
    if not lat.size:
        return {"windows_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    p50, p99 = np.percentile(lat, (50, 99))
    return {"windows_per_s": round(lat.size / elapsed, 1), "p50_ms": round(float(p50), 1),
            "p99_ms": round(float(p99), 1), "windows": int(lat.size)}


def single(n: int, seconds: float, cfg: RunConfig, jsonl: bool) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sinks = [JsonlSink(Path(tmp) / "single.jsonl", flush_every=64)] if jsonl else []
        return _single(port, n, seconds, Pipeline(dataclasses.replace(cfg, sources=(f"zmq://127.0.0.1:{port}",)),
                                                  sinks=sinks))


def _single(port: int, n: int, seconds: float, pipe: Pipeline) -> dict:
    pipe.start()
    pub = _publisher(port, n, seconds + 6)
    time.sleep(3.0)  # subscriber joined, first windows through
    pipe.stats.start_recording()
    t0 = time.time()
    time.sleep(seconds)
    lat, _ = pipe.stats.stop_recording()
    out = _figures(lat, time.time() - t0)
    out["dropped"] = pipe.batcher.dropped_total() + pipe.dropped_output
    pipe.stop()
    pub.kill()
    pub.wait()
    return out


def cluster(n: int, seconds: float, cfg: RunConfig, hosts: int, ray_cluster, jsonl: bool, host_actors: int = 1) -> dict:
    from drsn_stream.cluster.deploy import start_cluster
    from drsn_stream.cluster.ray_app import ClusterConfig

    port = free_port()
    with tempfile.TemporaryDirectory() as ckpt:
        cc = ClusterConfig(gateway=f"127.0.0.1:{port}", checkpoint_dir=ckpt,
                           streams=tuple(f"sim/m{i}" for i in range(n)), discover=False, host_actors=host_actors,
                           jsonl=str(Path(ckpt) / "cluster.jsonl") if jsonl else None)
        handle = start_cluster(cfg, cc, address=ray_cluster.address)
        try:
            handle.wait_subscribed(n)
            pub = _publisher(port, n, seconds + 6)
            time.sleep(3.0)
            handle.ray.get(handle.coordinator.latencies.remote(True))
            t0 = time.time()
            time.sleep(seconds)
            lat = np.asarray(handle.ray.get(handle.coordinator.latencies.remote(False)), dtype=np.float64)
            out = _figures(lat, time.time() - t0)
            sums = handle.summaries()
            out["hosts"] = len(sums)
            out["per_host_windows_per_s"] = {h: round(s["windows_per_s"], 1) for h, s in sorted(sums.items())}
        finally:
            handle.stop()
            pub.kill()
            pub.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[64], help="stream counts N (default 64)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (default 20)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate single/cluster runs K times (default 1)")
    ap.add_argument("--jsonl", action="store_true", help="cluster mode also writes every result to one JSONL "
                                                          "file (the single run then does too)")
    ap.add_argument("--hosts", type=int, default=1, help="worker nodes (default 1)")
    ap.add_argument("--host-actors", type=int, default=1, metavar="N",
                    help="host actors per worker node, each a process with its share of the streams (default 1)")
    ap.add_argument("--engine-process", choices=["auto", "on", "off"], default="auto",
                    help="the model in its own process, in both modes (default auto, as the monitor)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)

    from drsn_stream.cluster.ray_app import telemetry_off

    telemetry_off()
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(args.hosts):
        c.add_node(**node, resources={"drsn_host": 1})
    c.wait_for_nodes()
    cfg = RunConfig(stats_every_s=3600, engine_process={"on": True, "off": False}.get(args.engine_process))
    rows = []
    try:
        for n in args.streams:
            for _ in range(args.repeat):
                one = single(n, args.seconds, cfg, args.jsonl)
                many = cluster(n, args.seconds, cfg, args.hosts, c, args.jsonl, args.host_actors)
                rows.append({"streams": n, "single": one, "cluster": many,
                             "p99_delta_ms": round(many["p99_ms"] - one["p99_ms"], 1),
                             "p50_delta_ms": round(many["p50_ms"] - one["p50_ms"], 1)})
    finally:
        ray.shutdown()
        c.shutdown()
    if args.json:
        print(json.dumps({"seconds": args.seconds, "hosts": args.hosts, "host_actors": args.host_actors, "cpus": os.cpu_count(), "runs": rows},
                         indent=2))
        return 0
    print(f"{'N':>5} {'mode':<8} {'windows/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        for mode in ("single", "cluster"):
            f = r[mode]
            print(f"{r['streams']:>5} {mode:<8} {f['windows_per_s']:>10} {f['p50_ms']:>8} {f['p99_ms']:>8}")
        print(f"{'':>5} {'delta':<8} {'':>10} {r['p50_delta_ms']:>+8} {r['p99_delta_ms']:>+8}"
              f"   (cluster p99 target: within +10 ms)")
    for n in args.streams:
        mine = [r for r in rows if r["streams"] == n]
        if len(mine) > 1:
            med = {m: float(np.median([r[m]["p99_ms"] for r in mine])) for m in ("single", "cluster")}
            print(f"{n:>5} median p99 of {len(mine)} runs: single {med['single']:.1f} ms, cluster "
                  f"{med['cluster']:.1f} ms, delta {med['cluster'] - med['single']:+.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_cluster.py"))
