"""The dashboard at a default 80x24 terminal and at 200x60, rendered to text from real predictions.

The snapshot is the monitor's own (decision engine, health monitor, event log) after the shipped
bearing-cwru model labelled windows of the shipped CWRU excerpts: 64 streams, each replaying one
fault class, one with a flat-lined sensor (tools/bench_dashboard.py builds it, and times it).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from drsn_stream.sinks import dashboard
from drsn_stream.sinks.dashboard import COLUMN_PRIORITY, COLUMNS, Column, render, table_layout

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_dashboard", ROOT / "tools" / "bench_dashboard.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ESSENTIAL = ("label", "conf", "alarm", "health", "lat")


@pytest.fixture(scope="module")
def snap():
    return bench.real_snapshot(64)


def screen(snapshot, width: int, height: int, **kw) -> list[str]:
    console = Console(width=width, height=height, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render(snapshot, width=width, height=height, **kw))
    console.file.close()
    return console.export_text().splitlines()


def columns_at(rows, width: int) -> list[str]:
    return [col.key for col, _full, _w in table_layout(rows, width)]


def test_80x24_shows_label_confidence_alarm_health_and_latency_for_every_stream(snap):
    lines = screen(snap, 80, 24)
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    heads = next(line for line in lines if line.startswith("stream "))
    assert "p50/p99 ms" in heads and "conf %" in heads  # headings say their units
    rows = [line for line in lines if line.startswith("plant/")]
    assert len(rows) >= 10
    by_id = {r.stream_id: r for r in snap.rows}
    for line in rows:
        row = by_id[line.split()[0]]
        assert f"{row.confidence * 100:.0f}%" in line and row.level in line
        assert (row.label in line) and ("OK" in line if row.healthy else "CHECK" in line)
        assert f" {dashboard._ms(row.latency_p50_ms)}/{dashboard._ms(row.latency_p99_ms)}" in line
    # the model's real labels: the outer-race 0.021" excerpt is a DANGER fault, the flat sensor a check
    assert any("outer_021" in r and "DANGER" in r for r in rows)
    flat = next(r for r in rows if r.startswith(f"plant/m{bench.FLAT:03d}"))
    assert "CHECK flat" in flat and " ? " in flat


def test_80x24_help_and_pause_fit_the_screen(snap):
    lines = screen(snap, 80, 24, show_help=True, paused=True)
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "PAUSED" in lines[0] and any("lat p50/p99 ms: capture-to-label latency" in line for line in lines)
    assert sum(line.startswith("plant/") for line in lines) >= 3


def test_80x24_header_and_footer_leave_parts_out_whole(snap):
    lines = screen(snap, 80, 24)
    top, footer = lines[:2], lines[-2:]
    for line in top + footer:
        assert "…" not in line and len(line) <= 80
    # readiness, model and device stay (the device whole or without its details); the label count
    # and rates give way, whole
    assert "READY" in top[0] and "bearing-cwru" in top[0]
    short = dashboard.short_device(snap.header.device)
    assert snap.header.device in top[0] or f"· {short}" in top[0]
    assert "64 streams: " in top[1] and "CHECK SENSOR" in top[1]
    assert "windows/s" in footer[0] and "dropped 0" in footer[0] and "q quit" in footer[1]
    # every part of the full header line that shows, shows whole or in its short form
    wide = screen(snap, 200, 60)[0]
    for part in re.split(r" · ", top[0].strip()):
        whole = part.replace("12 kHz", "12000 Hz").replace("win/hop", "window/hop")
        assert whole in wide or part == short, part
    assert "window/hop 2048/512" in wide and "10 labels" in wide


@pytest.mark.parametrize("device, short", [
    ("CPU (1 torch thread, channels-last, compiled tails, jemalloc), engine process", "CPU, 1 thread"),
    ("CPU (15 torch threads, channels-last)", "CPU, 15 threads"),
    ("NVIDIA H200 (fp16, CUDA graphs)", "NVIDIA H200"),
])
def test_a_narrow_header_names_the_device_without_its_details(snap, device: str, short: str) -> None:
    named = dataclasses.replace(snap, header=dataclasses.replace(snap.header, device=device))
    top = screen(named, 80, 24)[0]
    assert f"· {short}" in top and "READY" in top and "bearing-cwru" in top and len(top) <= 80
    assert device in screen(named, 200, 24)[0]  # a wide terminal shows it whole


def test_200x60_shows_every_column_in_full(snap):
    lines = screen(snap, 200, 60)
    assert len(lines) <= 60 and max(len(line) for line in lines) <= 200
    heads = next(line for line in lines if line.startswith("stream "))
    for col in COLUMNS:
        if col.shown is None or col.shown(snap.rows):
            assert col.heading in heads, col.heading
    assert "lat p50/p99 ms" in heads and "top-3 %" in heads and "input RMS" in heads
    rows = [line for line in lines if line.startswith("plant/")]
    assert len(rows) >= 40
    assert all(re.search(r"\w+ \d+% \w+ \d+% \w+ \d+%", r) for r in rows if " ? " not in r)  # top-3


def test_columns_fold_in_the_stated_priority_order(snap):
    rows = snap.rows
    previous: list[str] = []
    for width in range(56, 201, 4):
        shown = columns_at(rows, width)
        assert all(k in shown for k in ESSENTIAL + ("stream",)), (width, shown)
        assert set(previous) <= set(shown), f"a column shown at {width - 4} is gone at {width}"
        previous = shown
    assert columns_at(rows, 80)[:3] == ["stream", "label", "conf"]


def test_a_new_column_is_one_entry_in_the_lists(snap, monkeypatch):
    extra = Column("spare", "spare x thr", "spr", lambda r, full: Text(f"{r.noise_index * 3:.1f}"), right=True)
    monkeypatch.setattr(dashboard, "COLUMNS", (*COLUMNS[:5], extra, *COLUMNS[5:]))
    monkeypatch.setattr(dashboard, "COLUMN_PRIORITY", (*COLUMN_PRIORITY[:6], "spare", *COLUMN_PRIORITY[6:]))
    wide = next(line for line in screen(snap, 200, 60) if line.startswith("stream "))
    assert "alarm, held for spare x thr" in wide
    assert "spare" in columns_at(snap.rows, 80) and "input" not in columns_at(snap.rows, 80)
