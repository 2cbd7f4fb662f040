"""The dashboard as a user sees it (rendered text) and its key handling (metrics: test_metrics.py)."""

from __future__ import annotations

import io
import os
import re
import threading
import time

import numpy as np
import pytest
from rich.console import Console

from drsn_stream.engine.stats import EngineStats
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.monitor.health import HealthConfig, HealthMonitor
from drsn_stream.monitor.snapshot import build_snapshot
from drsn_stream.runtime import ResourceMeter
from drsn_stream.sinks.dashboard import Dashboard, render, render_once, sparkline
from drsn_stream.sinks.keys import KeyReader, parse_keys
from drsn_stream.train.cwru import LABELS_10
from drsn_stream.types import Event, Frame, Prediction
from drsn_stream.view import EventLog, Footer, Header, Snapshot

LABELS = list(LABELS_10)
HEADER = Header(
    sources=("sim:bearing",),
    model="bearing-cwru",
    labels=tuple(LABELS),
    sample_rate=12000,
    window=2048,
    hop=1024,
    device="cpu (2 threads)",
    ready=True,
)


class Plant:
    """Real decision + health + event log fed with synthetic frames and predictions."""

    def __init__(
        self, n: int, *, faults: dict[int, str] | None = None, flat: tuple[int, ...] = (), latching=False
    ):
        self.decisions = DecisionEngine(
            LABELS,
            DecisionConfig.for_labels(LABELS, set_windows=2, latching=latching, danger_labels=("*_021",)),
        )
        self.health = HealthMonitor(HealthConfig())
        self.stats = EngineStats()
        self.log = EventLog()
        self.ids = [f"sim/m{i}" for i in range(n)]
        self.faults = faults or {}
        self.flat = flat
        self.t = 1_700_000_000.0
        self.rng = np.random.default_rng(0)

    def step(self, windows: int = 6) -> None:
        for _ in range(windows):
            self.t += 0.1
            for i, sid in enumerate(self.ids):
                x = (
                    np.zeros((1200, 1), np.float32)
                    if i in self.flat
                    else self.rng.normal(size=(1200, 1)).astype(np.float32)
                )
                self.log.extend(
                    self.health.push(Frame(sid, int(self.t * 10), self.t, 12000.0, x), now=self.t)
                )
                label = self.faults.get(i, "normal")
                probs = np.full(len(LABELS), 0.02, np.float32)
                probs[LABELS.index(label)] = 0.82
                p = Prediction(
                    sid, 0, self.t, probs, label, 0.82, 0.31, 9.0 + i % 5, level=1.0 + 0.1 * np.sin(self.t)
                )
                self.stats.record_batch([sid], np.array([p.latency_ms]), 0.01)
                self.log.extend(self.decisions.update(p, healthy=self.health.healthy(sid)))

    def snapshot(self, **kw) -> Snapshot:
        footer = Footer(
            windows_per_s=812.5,
            avg_batch=12.3,
            queue_depth=4,
            dropped=7,
            malformed=2,
            **ResourceMeter().read(),
        )
        return build_snapshot(
            header=HEADER,
            decisions=self.decisions,
            health=self.health,
            footer=footer,
            events=self.log,
            now=self.t,
            latency=self.stats,
            **kw,
        )


def text_of(renderable, width: int = 100) -> str:
    buf = io.StringIO()
    Console(width=width, file=buf, force_terminal=False).print(renderable)
    return buf.getvalue()


def test_one_stream_shows_label_alarm_health_and_figures():
    plant = Plant(1, faults={0: "inner_007"})
    plant.step()
    out = text_of(render(plant.snapshot(), height=40, width=100))
    assert "bearing-cwru" in out and "READY" in out and "cpu (2 threads)" in out and "12000 Hz" in out
    row = next(line for line in out.splitlines() if line.startswith("sim/m0"))
    assert "inner_007" in row and "ALERT" in row and "82%" in row and "OK" in row
    assert re.search(r"\b9\.0/9\.0\b", row)  # latency p50/p99 in ms
    assert "1 stream: 0 DANGER · 1 ALERT · 0 NORMAL · 0 CHECK SENSOR" in out
    assert "NORMAL → ALERT" in out  # the events pane
    assert "812.5 windows/s" in out and "dropped 7" in out and "malformed 2" in out
    assert "q quit" in out and "page" not in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_unhealthy_stream_shows_check_sensor_and_no_label():
    plant = Plant(2, faults={1: "ball_014"}, flat=(1,))
    plant.step()
    out = render_once(plant.snapshot(), width=100)
    row = next(line for line in out.splitlines() if line.startswith("sim/m1"))
    assert "CHECK flat" in row and "ball_014" not in row and " ? " in row and " 0%" in row
    assert "OK → CHECK_SENSOR" in out and "1 CHECK SENSOR" in out


def test_200_streams_page_worst_first_with_a_summary():
    faults = {i: ("inner_021" if i % 50 == 7 else "ball_007") for i in range(0, 200, 10)}
    plant = Plant(200, faults=faults, flat=(3,))
    plant.step()
    snap = plant.snapshot()
    out = text_of(render(snap, height=30, width=100))
    lines = out.splitlines()
    assert len(lines) <= 30 and max(len(line) for line in lines) <= 100
    assert "200 streams: 0 DANGER · 20 ALERT · 180 NORMAL · 1 CHECK SENSOR" in out
    assert "worst first" in out and re.search(r"page 1/\d+", out)
    rows = [line for line in lines if line.startswith("sim/")]
    assert rows and all("ALERT" in r for r in rows)  # 20 ALERT streams fill the first page
    assert rows[0].startswith("sim/m0 ")  # id order within a level

    pages = int(re.search(r"page 1/(\d+)", out).group(1))
    last = text_of(render(snap, height=30, width=100, page=pages - 1))
    assert f"page {pages}/{pages}" in last
    assert "page 1/" in text_of(render(snap, height=30, width=100, page=pages))  # wraps around
    # The CHECK SENSOR stream comes right after the alarms, before the healthy NORMAL ones.
    order = []
    for page in range(pages):
        page_out = text_of(render(snap, height=30, width=100, page=page))
        order += [line.split()[0] for line in page_out.splitlines() if line.startswith("sim/")]
    assert len(order) == len(set(order)) == 200  # paging reaches every stream once
    assert order[20] == "sim/m3" and order[21] == "sim/m1"


def test_danger_and_latched_alarm_are_flagged_for_acknowledgement():
    plant = Plant(3, faults={1: "outer_021", 2: "ball_007"}, latching=True)
    plant.step()
    plant.faults = {1: "outer_021"}  # m2 recovers, but its alarm is latched
    plant.step(8)
    out = render_once(plant.snapshot(), width=100)
    row1 = next(line for line in out.splitlines() if line.startswith("sim/m1"))
    row2 = next(line for line in out.splitlines() if line.startswith("sim/m2"))
    assert "DANGER" in row1 and "outer_021" in row1
    assert "ALERT*" in row2 and "normal" in row2
    assert "2 latched alarms: press a to acknowledge" not in out
    assert "1 latched alarm: press a to acknowledge" in out


def test_speech_transcript_help_and_pause():
    labels = [str(d) for d in range(10)] + ["_silence"]
    snap = Snapshot(
        time=0.0,
        header=Header(
            model="digits-fsdd", labels=tuple(labels), sample_rate=8000, window=8000, hop=2000, ready=False
        ),
        transcript=("3", "1", "4", "1", "5"),
        events=(Event("detection", "mic", 0.0, {"label": "5", "confidence": 0.97}),),
    )
    out = text_of(render(snap, height=30, width=100, paused=True, show_help=True))
    assert "heard: 3 1 4 1 5" in out and "WARMING UP" in out and "PAUSED" in out
    assert "acknowledge latched alarms" in out and "0 streams" in out
    out = text_of(render(snap, height=30, width=100))
    assert "HEARD  mic  5 97%" in out


def test_render_once_shows_every_row_and_narrow_terminals_keep_the_essentials():
    plant = Plant(40, faults={5: "inner_014"})
    plant.step()
    out = render_once(plant.snapshot(), width=100)
    assert sum(line.startswith("sim/") for line in out.splitlines()) == 40
    narrow = render_once(plant.snapshot(), width=72)
    row = next(line for line in narrow.splitlines() if line.startswith("sim/m5 "))
    assert "inner_014" in row and "ALERT" in row and max(len(line) for line in narrow.splitlines()) <= 72
    wide = render_once(plant.snapshot(), width=160)
    assert "top-3" in wide and "inner_014 82% normal 2%" in wide


def test_sparkline_follows_the_input_level():
    assert sparkline([0.0, 1.0, 2.0, 3.0]) == "▁▃▆█"
    assert sparkline([5.0, 5.0]) == "▄▄" and sparkline([]) == ""


def test_keys_drive_paging_pause_help_ack_and_quit():
    plant = Plant(2, faults={0: "ball_007"}, latching=True)
    plant.step()
    plant.faults = {}
    plant.step(8)
    acks = []
    dash = Dashboard(plant.snapshot, on_ack=lambda: acks.extend(plant.decisions.acknowledge()), keys=False)
    for key in ("n", "pgdn", "b", "p", "?", "a"):
        dash.handle_key(key)
    assert dash.page == 1 and dash.paused and dash.show_help
    assert [(e.stream_id, e.data["to"]) for e in acks] == [("sim/m0", "NORMAL")]
    assert plant.decisions.state("sim/m0").level.name == "NORMAL"
    assert not dash.quit_event.is_set()
    dash.handle_key("q")
    assert dash.quit_event.is_set()


def test_dashboard_thread_draws_snapshots_and_stops():
    plant = Plant(3, faults={2: "inner_007"})
    plant.step()
    calls = []

    def snapshot_fn():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("engine restarting")  # a failing snapshot keeps the last screen
        return plant.snapshot()

    buf = io.StringIO()
    console = Console(width=100, height=40, file=buf, force_terminal=False)
    dash = Dashboard(snapshot_fn, refresh_per_second=50, console=console, keys=False).start()
    deadline = time.monotonic() + 10
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    dash.stop()
    assert not dash.running and len(calls) >= 4
    out = buf.getvalue()
    assert "inner_007" in out and "bearing-cwru" in out
    # not a terminal: the last screen ends its line, so what is printed next starts on its own
    assert out.endswith("help\n"), out[-200:]


def test_key_reader_on_a_real_terminal_restores_it():
    termios = pytest.importorskip("termios")
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        with KeyReader(fd=slave) as reader:
            assert reader.active
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # no Enter needed
            os.write(master, b"n\x1b[6~q")
            keys: list[str] = []
            deadline = time.monotonic() + 5
            while len(keys) < 3 and time.monotonic() < deadline:
                keys += reader.read(timeout=0.2)
            assert keys == ["n", "pgdn", "q"]
            assert reader.read(timeout=0.0) == []
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_live_dashboard_on_a_terminal_pages_and_quits_with_keys():
    termios = pytest.importorskip("termios")
    plant = Plant(60, faults={7: "outer_007"})
    plant.step()
    master, slave = os.openpty()
    screen = bytearray()

    def drain() -> None:  # the terminal's reader: keeps the pty from filling up
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    before = termios.tcgetattr(slave)
    out = os.fdopen(os.dup(slave), "w", encoding="utf-8")
    console = Console(file=out, force_terminal=True, width=100, height=24, color_system="standard")
    dash = Dashboard(plant.snapshot, console=console, input_fd=slave, refresh_per_second=20).start()
    try:
        deadline = time.monotonic() + 10
        while dash.frames < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.write(master, b"n")
        while dash.page != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dash.page == 1
        # the page was turned; wait until the terminal got it drawn (a quit right after the key
        # can come before the next refresh reaches the screen)
        while b"page 2/" not in screen and time.monotonic() < deadline:
            time.sleep(0.02)
        os.write(master, b"q")
        assert dash.quit_event.wait(5)
        dash.stop()
        assert not dash.running
        assert termios.tcgetattr(slave) == before  # cbreak undone on exit
    finally:
        dash.stop()
        out.close()
        os.close(slave)
        os.close(master)
    text = screen.decode("utf-8", errors="replace")
    assert "outer_007" in text and "page 2/" in text


def test_key_reader_is_inactive_without_a_terminal():
    r, w = os.pipe()
    try:
        with KeyReader(fd=r) as reader:
            os.write(w, b"q")
            assert not reader.active and reader.read(timeout=0.0) == []
    finally:
        os.close(r)
        os.close(w)
    assert parse_keys("a\x1b[5~?\x1b[99~b") == ["a", "pgup", "?", "b"]


def test_resource_meter_adds_the_engine_process() -> None:
    # the footer's CPU and RSS must include the model's child process, not only the monitor
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(30)"])
    try:
        time.sleep(1.0)
        alone, both = ResourceMeter(), ResourceMeter()
        both.extra_pids.append(child.pid)
        assert both.read()["rss_mb"] - alone.read()["rss_mb"] > 150
        both.extra_pids.append(2**22 + 12345)  # a pid that does not exist is skipped, not fatal
        assert both.read()["cpu_percent"] is not None
    finally:
        child.kill()
        child.wait()
