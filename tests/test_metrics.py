"""The Prometheus endpoint as Prometheus sees it: official parser, promtool, a real monitor over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsn_stream.app.cli import add_arguments, config_from_args
from drsn_stream.engine.stats import EngineStats
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.monitor.health import HealthConfig, HealthMonitor
from drsn_stream.monitor.snapshot import build_snapshot
from drsn_stream.sinks.metrics import STREAM_GAUGES, MetricsServer, format_metrics, parse_address
from drsn_stream.train.cwru import LABELS_10
from drsn_stream.types import Frame, Prediction
from drsn_stream.view import Counters, EventLog, Footer, Header

ROOT = Path(__file__).resolve().parents[1]
LABELS = list(LABELS_10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} through the official parser (which raises on bad text)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(text: str) -> dict[str, str]:
    return {fam.name: fam.type for fam in text_string_to_metric_families(text)}


def promtool_check(text: str) -> None:
    """``promtool check metrics`` must report nothing (skipped where promtool is not installed)."""
    tool = shutil.which("promtool")
    if tool is None:
        return
    done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def plant_snapshot(counters: Counters | None = None, envelope: dict[str, tuple[str, float, bool]] | None = None):
    """Real decisions, health and event log for 4 streams: m1 in ALERT, m2 in DANGER, m3's sensor flat."""
    decisions = DecisionEngine(LABELS, DecisionConfig.for_labels(LABELS, set_windows=2, danger_labels=("*_021",)))
    health = HealthMonitor(HealthConfig())
    stats = EngineStats()
    log = EventLog()
    ids = [f"sim/m{i}" for i in range(4)]
    faults = {1: "inner_007", 2: "ball_021"}
    rng = np.random.default_rng(0)
    t = 1_700_000_000.0
    for _ in range(6):
        t += 0.1
        for i, sid in enumerate(ids):
            x = np.zeros((1200, 1), np.float32) if i == 3 else rng.normal(size=(1200, 1)).astype(np.float32)
            log.extend(health.push(Frame(sid, int(t * 10), t, 12000.0, x), now=t))
            probs = np.full(len(LABELS), 0.02, np.float32)
            probs[LABELS.index(faults.get(i, "normal"))] = 0.82
            p = Prediction(sid, 0, t, probs, faults.get(i, "normal"), 0.82, 0.31, 9.0 + i)
            stats.record_batch([sid], np.array([p.latency_ms]), 0.01)
            log.extend(decisions.update(p, healthy=health.healthy(sid)))
    header = Header(sources=("sim:bearing",), model="bearing-cwru", labels=tuple(LABELS), sample_rate=12000,
                    window=2048, hop=1024, device="cpu", ready=True)
    counters = counters or Counters(
        batches=5, batch_sizes={4: 3, 6: 2}, infer_s=0.25,
        dropped={"stale": 3, "queue_overflow": 1},
        stream_dropped={("sim/m0", "stale"): 3, ("sim/m1", "queue_overflow"): 1},
        malformed={"bad_json": 2},
        alarm_changes=log.alarm_changes_by_stream(),
        health=health.states(),
        cpu_s=1.5,
    )
    footer = Footer(queue_depth=4, windows_total=24, rss_mb=100.0)
    return build_snapshot(header=header, decisions=decisions, health=health, footer=footer, events=log,
                          now=t, counters=counters, latency=stats, envelope=envelope)


def test_metrics_follow_prometheus_conventions_and_show_the_plant():
    text = format_metrics(plant_snapshot())
    promtool_check(text)
    v = samples(text)
    kinds = families(text)
    # counters for rate(), histograms for latency and batch size, no percentages or precomputed rates
    assert kinds["drsn_windows"] == kinds["drsn_batches"] == kinds["drsn_dropped_windows"] == "counter"
    assert kinds["drsn_latency_seconds"] == kinds["drsn_batch_size_windows"] == "histogram"
    assert not [n for n in kinds if "percent" in n or "per_second" in n or "average" in n]
    assert v[("drsn_windows_total", ())] == 24 and v[("drsn_batches_total", ())] == 5
    assert v[("drsn_batch_size_windows_sum", ())] == 24 and v[("drsn_batch_size_windows_count", ())] == 5
    assert v[("drsn_batch_size_windows_bucket", (("le", "4.0"),))] == 3
    assert v[("drsn_batch_size_windows_bucket", (("le", "8.0"),))] == 5
    # latency in seconds: m0..m3 at 9, 10, 11, 12 ms, 6 windows each
    assert v[("drsn_latency_seconds_count", ())] == 24
    assert v[("drsn_latency_seconds_bucket", (("le", "0.005"),))] == 0
    assert v[("drsn_latency_seconds_bucket", (("le", "0.01"),))] == 12
    assert v[("drsn_latency_seconds_sum", ())] == pytest.approx(24 * 0.0105)
    # drops by cause, every cause present from the start
    assert v[("drsn_dropped_windows_total", (("cause", "stale"),))] == 3
    assert v[("drsn_dropped_windows_total", (("cause", "engine_restart"),))] == 0
    assert v[("drsn_stream_dropped_windows_total", (("cause", "stale"), ("stream", "sim/m0")))] == 3
    assert v[("drsn_stream_dropped_windows_total", (("cause", "stale"), ("stream", "sim/m2")))] == 0
    assert v[("drsn_malformed_messages_total", (("reason", "bad_json"),))] == 2
    assert v[("drsn_malformed_messages_total", (("reason", "bad_size"),))] == 0
    # alarms: per level, per stream, and changes per stream and level initialised at 0
    assert v[("drsn_alarm_streams", (("level", "DANGER"),))] == 1
    assert v[("drsn_alarm_streams", (("level", "ALERT"),))] == 1
    assert v[("drsn_check_sensor_streams", ())] == 1
    assert v[("drsn_stream_alarm_level", (("stream", "sim/m2"),))] == 2
    assert v[("drsn_alarm_changes_total", (("stream", "sim/m1"), ("to", "ALERT")))] == 1
    assert v[("drsn_alarm_changes_total", (("stream", "sim/m2"), ("to", "DANGER")))] == 1
    assert v[("drsn_alarm_changes_total", (("stream", "sim/m0"), ("to", "DANGER")))] == 0
    # per-stream label, confidence (0-1) and sensor health
    assert v[("drsn_stream_label", (("label", "inner_007"), ("stream", "sim/m1")))] == 1
    assert v[("drsn_stream_label", (("label", "normal"), ("stream", "sim/m1")))] == 0
    assert v[("drsn_stream_confidence_ratio", (("stream", "sim/m1"),))] == pytest.approx(0.82)
    assert v[("drsn_stream_sensor_ok", (("stream", "sim/m3"),))] == 0
    assert v[("drsn_stream_confidence_ratio", (("stream", "sim/m3"),))] == 0
    assert v[("drsn_stream_frames_total", (("stream", "sim/m0"),))] == 6
    assert v[("drsn_stream_samples_total", (("stream", "sim/m0"),))] == 7200
    assert v[("drsn_cpu_seconds_total", ())] == 1.5
    assert v[("drsn_resident_memory_bytes", ())] == 100 * 2**20
    # every per-stream gauge of the table is there for every stream
    for name, _, _ in STREAM_GAUGES:
        assert {dict(k[1])["stream"] for k in v if k[0] == name} == {f"sim/m{i}" for i in range(4)}


def test_the_envelopes_fault_type_and_evidence_are_series_where_a_bearing_is_configured():
    # an integrator's Grafana panel of the physics beside the labels: per stream the fault type the
    # envelope named (one series per type, 1 for the named one) and its evidence; none of either
    # without an envelope stage, and none for a stream whose sensor is sick (the dashboard's rule)
    assert "envelope" not in format_metrics(plant_snapshot())
    text = format_metrics(plant_snapshot(envelope={"sim/m1": ("inner_race", 14.6, True, False),
                                                   "sim/m0": ("none", 1.2, False, False),
                                                   "sim/m3": ("outer_race", 30.0, True, False)}))
    promtool_check(text)
    v = samples(text)
    assert v[("drsn_stream_envelope_evidence_decibels", (("stream", "sim/m1"),))] == pytest.approx(14.6)
    assert v[("drsn_stream_envelope_fault", (("stream", "sim/m1"), ("type", "inner_race")))] == 1
    assert v[("drsn_stream_envelope_fault", (("stream", "sim/m1"), ("type", "none")))] == 0
    assert v[("drsn_stream_envelope_fault", (("stream", "sim/m0"), ("type", "none")))] == 1
    assert v[("drsn_stream_envelope_held", (("stream", "sim/m1"),))] == 1
    assert v[("drsn_stream_envelope_held", (("stream", "sim/m0"),))] == 0
    assert ("drsn_stream_envelope_evidence_decibels", (("stream", "sim/m2"),)) not in v  # no result yet
    assert ("drsn_stream_envelope_evidence_decibels", (("stream", "sim/m3"),)) not in v  # its sensor is flat


def test_a_failing_snapshot_is_counted_not_fatal():
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("boom")

    with MetricsServer(broken, port=0) as server:
        for _ in range(2):
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                assert resp.status == 200
                text = resp.read().decode()
    assert samples(text)[("drsn_metrics_snapshot_errors_total", ())] == 2 and server.errors == 2
    assert ("process_cpu_seconds_total", ()) in samples(text)  # the rest of the registry still answers


def test_metrics_address_forms_and_errors():
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    assert parse_address(":9100") == ("127.0.0.1", 9100) == parse_address("9100")
    for bad in ("localhost", "::1:9100", "127.0.0.1:70000", "host:port"):
        with pytest.raises(ConfigError, match="HOST:PORT|brackets"):
            parse_address(bad)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def address(*argv: str) -> str | None:
        return config_from_args(parser.parse_args(["--source", "sim", *argv])).sinks.metrics_address

    assert address("--metrics-port", "9300") == "127.0.0.1:9300"
    assert address("--metrics-address", "0.0.0.0:9300") == "0.0.0.0:9300"
    assert address() is None
    with pytest.raises(ConfigError, match="not both"):
        address("--metrics-port", "1", "--metrics-address", "127.0.0.1:2")
    with pytest.raises(ConfigError, match=r"\[sinks\]: metrics address 'host:port'"):
        address("--metrics-address", "host:port")


def test_port_in_use_says_what_to_do(free_tcp_port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_tcp_port))
        s.listen()
        # the reason in words, not "[Errno 98] Address already in use"
        says = rf"cannot serve metrics on \S+:{free_tcp_port} \(Address already in use\); choose another --metrics-address"
        with pytest.raises(ConfigError, match=says):
            MetricsServer(lambda: plant_snapshot(), port=free_tcp_port).start()


def test_idle_connections_neither_pile_up_threads_nor_stay_open():
    snap = plant_snapshot()
    server = MetricsServer(lambda: snap, port=0, max_connections=8, idle_timeout_s=1.0).start()
    before = threading.active_count()
    conns = []
    try:
        for _ in range(200):  # connect and say nothing, as a stuck client or a port scanner would
            conns.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        time.sleep(0.3)
        assert threading.active_count() - before <= 8  # at most max_connections handler threads
        assert server.refused > 0  # the rest were closed unserved, not queued behind idle ones
        # every idle connection ends: refused ones at once, served ones after the idle timeout
        deadline = time.monotonic() + 60
        for c in conns:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert c.recv(1) == b""
            except ConnectionResetError:
                pass
        for _ in range(100):
            if threading.active_count() <= before:
                break
            time.sleep(0.1)
        assert threading.active_count() <= before
        with urllib.request.urlopen(server.url, timeout=10) as resp:  # and scrapes still work
            assert samples(resp.read().decode())[("drsn_windows_total", ())] == 24
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=10)
        assert err.value.code == 404
    finally:
        for c in conns:
            c.close()
        server.stop()


@pytest.mark.slow
def test_running_monitor_scraped_over_http(free_tcp_port, child_env):
    url = f"http://127.0.0.1:{free_tcp_port}/metrics"
    monitor = subprocess.Popen(
        [sys.executable, "-m", "drsn_stream", "--source", "sim:bearing?machines=3", "--headless",
         "--duration", "60", "--threads", "1", "--metrics-address", f"127.0.0.1:{free_tcp_port}",
         "--engine-process", "off"],  # the endpoint is the monitor's, wherever the model runs
        cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        text, v = "", {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and v.get(("drsn_windows_total", ()), 0) < 50:
            assert monitor.poll() is None, monitor.stderr.read()
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    text = resp.read().decode()
                v = samples(text)
            except urllib.error.URLError:
                pass
            time.sleep(0.5)
        assert v.get(("drsn_windows_total", ()), 0) >= 50, "the monitor classified no windows"
        for probe in ("healthz", "readyz"):  # a container's liveness and readiness probes
            with urllib.request.urlopen(url.replace("/metrics", f"/{probe}"), timeout=10) as resp:
                assert (resp.status, resp.read()) == (200, b"ok\n")
    finally:
        monitor.terminate()
        monitor.wait(30)
    promtool_check(text)
    streams = {f"sim/m{i}" for i in range(3)}
    assert v[("drsn_ready", ())] == 1 and v[("drsn_streams", ())] == 3
    assert {dict(k[1])["stream"] for k in v if k[0] == "drsn_stream_sensor_ok"} == streams
    assert v[("drsn_batch_size_windows_count", ())] >= 1
    assert v[("drsn_latency_seconds_count", ())] >= 1
    assert sum(val for (name, _), val in v.items() if name == "drsn_stream_frames_total") > 0
    for sid in streams:
        for level in ("NORMAL", "ALERT", "DANGER"):
            assert (("drsn_alarm_changes_total", (("stream", sid), ("to", level)))) in v
    assert ("process_resident_memory_bytes", ()) in v  # the standard process metrics come along
    assert 0 <= v[("drsn_engine_quiet_seconds", ())] < 30  # the engine loop turning (a hang would grow it)
