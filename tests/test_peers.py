"""``drsn-stream bench --peers``: the same network in other runtimes gives the engine's labels, the
engine runs with the allocator the monitor gives its engine process, and the table names the best
peer and the engine's ratio to it (figures are not asserted)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drsn_stream import jit
from drsn_stream.engine import cpu_layout as cl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peers_run_the_same_network_and_agree_with_the_engine() -> None:
    pytest.importorskip("onnxruntime")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DRSN_STREAM_MALLOC", None)
    res = subprocess.run([sys.executable, "-m", "drsn_stream", "bench", "--peers", "--batch-sizes", "64",
                          "--repeat", "1", "--seconds", "0.1", "--compile-limit", "1", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    row = out["results"][0]
    assert row["batch"] == 64 and out["threads"] == 1
    # the engine as the monitor runs it: the channels-last form with its units' tails compiled
    assert out["channels_last"] and out["compiled_tails"] == jit.available()
    # and where small batches go compiled whole: below one of the sizes its start-up timing
    # tries (0: never; which one depends on this machine's timing, not checked here)
    below = out["compiled_whole_below"]
    assert below in (0, *cl.CALIBRATE_SIZES, 2 * cl.CALIBRATE_SIZES[-1]) and (below == 0 or jit.available())
    assert {"engine", "torchscript-frozen", "onnxruntime"} <= set(row["wps"])
    assert row["best_peer"] in row["wps"] and row["x_best_peer"] == pytest.approx(
        row["wps"]["engine"] / row["wps"][row["best_peer"]], rel=0.01)
    cpu = row["cpu_us_per_window"]
    assert row["x_best_peer_cpu"] == pytest.approx(cpu[row["best_peer_cpu"]] / cpu["engine"], rel=0.01)
    agree = out["label_agreement_with_engine"]
    assert agree["onnxruntime"] >= 0.99 and agree["torchscript-frozen"] >= 0.99
    if "openvino" in row["wps"]:
        assert agree["openvino"] >= 0.99
    # the engine as deployed (jemalloc where the system has it); a peer that can take jemalloc runs
    # with it and without, and is counted at its better
    malloc = out["malloc"]
    if ctypes.util.find_library("jemalloc"):
        assert malloc["engine"] == "jemalloc" and malloc["onnxruntime@jemalloc"] == "jemalloc"
        assert malloc["onnxruntime"] == "system"
        runs = row["runs"]
        assert row["cpu_us_per_window"]["onnxruntime"] == pytest.approx(
            min(runs[k][0][1] for k in ("onnxruntime", "onnxruntime@jemalloc")), abs=0.11)
    else:
        assert malloc["engine"] == malloc["onnxruntime"] == "system" and "onnxruntime@jemalloc" not in malloc
    # one second is too short for inductor: left out with the reason, never a crash
    assert "torch.compile" in out["skipped"] and "did not compile within 1 s" in out["skipped"]["torch.compile"]
