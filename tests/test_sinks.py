"""The JSON-lines log writes strict JSON, whatever floats a result carries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from drsn_stream.sinks.jsonl import JsonlSink


def test_nan_and_inf_are_written_as_null_not_as_invalid_json(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.write({"type": "stats", "latency_ms": {"p99": float("nan")}, "probs": np.array([0.5, np.inf])})
    sink.write({"type": "prediction", "confidence": 0.9})
    sink.close()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    first = json.loads(lines[0], parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert first == {"type": "stats", "latency_ms": {"p99": None}, "probs": [0.5, None]}
    assert json.loads(lines[1])["confidence"] == 0.9 and sink.errors == 0


def test_a_log_rotated_under_the_monitor_is_followed(tmp_path: Path, monkeypatch) -> None:
    """logrotate renames results.jsonl and expects a new file at the path. Before, the monitor
    wrote on into the renamed file for good; now every line goes to the file at the path
    within ROTATION_CHECK_S (here 0: at the next line), none twice, none lost."""
    from drsn_stream.sinks import jsonl

    monkeypatch.setattr(jsonl, "ROTATION_CHECK_S", 0.0, raising=False)
    log = tmp_path / "results.jsonl"
    sink = JsonlSink(log)
    for i in range(5):
        sink.write({"type": "stats", "i": i})
    log.rename(tmp_path / "results.jsonl.1")  # logrotate's default (create)
    for i in range(5, 10):
        sink.write({"type": "stats", "i": i})
    kept = [json.loads(line)["i"] for line in (tmp_path / "results.jsonl.1").read_text().splitlines()]
    new = [json.loads(line)["i"] for line in log.read_text().splitlines()]
    assert (kept, new) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    log.unlink()  # removed by hand: made again at the next line
    sink.write({"type": "stats", "i": 10})
    sink.close()
    assert [json.loads(line)["i"] for line in log.read_text().splitlines()] == [10]
    assert sink.reopened == 2 and sink.errors == 0


def _prediction(stream: str, label: str, level: str = "NORMAL", latency: float = 5.0) -> dict:
    return {"type": "prediction", "stream": stream, "time": 0.0, "label": label, "confidence": 0.9,
            "level": level, "latency_ms": latency, "noise_index": 0.2}


def test_every_sums_a_streams_decisions_up_in_one_line_and_events_still_come_at_once(capsys) -> None:
    """``--every``: a journal gets one line per stream per span (its labels' shares, the level it
    ended at, its windows, latency mean / max) instead of ~23 a second, and an alarm as it
    happens; a stream that went silent is said once, not every span."""
    from drsn_stream.sinks.lines import LineSink

    sink = LineSink("-", every=3600.0)  # spans ended by summarize() here, not by the clock
    for i in range(10):
        sink.write(_prediction("pump/m10", "inner_007" if i < 6 else "normal", "ALERT", latency=5.0 + i))
        sink.write(_prediction("pump/m2", "normal"))
    sink.write({"type": "alarm", "stream": "pump/m10", "time": 0.0, "from": "NORMAL", "to": "ALERT",
                "label": "inner_007", "confidence": 0.9})
    alarm = capsys.readouterr().out.splitlines()
    assert len(alarm) == 1 and "ALARM" in alarm[0] and "NORMAL → ALERT" in alarm[0]  # not held for the span
    sink.summarize()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "pump/m2 " in lines[0] and "pump/m10" in lines[1]  # m2 before m10
    assert "ALERT  inner_007 60%, normal 40%" in lines[1] and "10 windows" in lines[1], lines[1]
    assert "latency mean/max 9.5/14.0 ms" in lines[1], lines[1]
    sink.write(_prediction("pump/m10", "normal"))
    sink.summarize()
    sink.summarize()
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1:3] for ln in lines] == [["pump/m2", "no"], ["pump/m10", "NORMAL"], ["pump/m10", "no"]], lines
    sink.write(_prediction("pump/m2", "normal"))
    sink.close()  # the last, shorter span is not lost
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "pump/m2 " in lines[0] and "1 window in" in lines[0], lines


def test_the_clusters_headless_lines_go_on_once_its_event_log_is_full() -> None:
    """The head node prints the events of its snapshots' bounded log. It counted the events it
    had printed, and once the log held its 200, the count stopped moving: no alarm was printed
    again. Now each snapshot's events after the last one printed are printed, no one twice."""
    from drsn_stream.cluster.cli import unseen
    from drsn_stream.types import Event
    from drsn_stream.view import EventLog

    log = EventLog(maxlen=5)
    printed: list[int] = []
    last = None
    n = 0
    for burst in (3, 4, 7, 1):  # the log full after the second burst
        log.extend(Event("alarm", "m0", 1000.0 + n + i, {"n": n + i}) for i in range(burst))
        n += burst
        fresh, last = unseen(log.recent(), last)
        printed += [e.data["n"] for e in fresh]
    # the third burst (7) overflowed the log of 5: its first two left before they could be seen
    assert printed == [0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14]


@pytest.mark.slow
def test_every_on_the_command_line_accounts_for_every_window_and_alarm(tmp_path: Path) -> None:
    """The monitor with ``--every``: stdout has a few lines per stream, not a line per decision;
    their window counts add up to the predictions the JSON-lines log holds, stream by stream, and
    each alarm of the log is an ALARM line."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
    env.pop("DRSN_STREAM_DURATION", None)
    log = tmp_path / "run.jsonl"
    res = subprocess.run([sys.executable, "-m", "drsn_stream", "--source", "sim?machines=2", "--every", "2s",
                          "--duration", "6", "--jsonl", str(log), "--engine-process", "off"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    objs = [json.loads(line) for line in log.read_text().splitlines()]
    predictions = Counter(o["stream"] for o in objs if o["type"] == "prediction")
    summed: Counter[str] = Counter()
    lines = res.stdout.splitlines()
    for line in lines:
        if m := re.match(r"\S+ (sim/m\d)\s+[A-Z]+\s+.*\((\d+) windows? in", line):
            summed[m[1]] += int(m[2])
    assert set(predictions) == {"sim/m0", "sim/m1"} and summed == predictions, (summed, predictions)
    assert sum(predictions.values()) > 10 * len(lines)  # summed up, not a line per decision
    alarms = [o for o in objs if o["type"] == "alarm"]
    assert len([ln for ln in lines if " ALARM " in ln]) == len(alarms)


def test_a_cluster_row_line_says_a_sick_sensor_and_a_silent_stream_in_words() -> None:
    from drsn_stream.sinks.lines import row_line
    from drsn_stream.view import StreamRow

    sick = row_line(StreamRow("gw/m2", health="CHECK_SENSOR", health_reasons=("flat line",), windows=40,
                              confidence=0.99, latency_p50_ms=7.0, latency_p99_ms=9.0), 0.0)
    assert "check_sensor (flat line)" in sick and "99%" not in sick  # no confidence in a label it refused
    assert "no windows yet" in row_line(StreamRow("gw/m3"), 0.0) and "nan" not in row_line(StreamRow("gw/m3"), 0.0)
    ok = row_line(StreamRow("gw/m1", label="inner_007", level="ALERT", confidence=0.93, windows=120,
                            latency_p50_ms=7.1, latency_p99_ms=12.0, host="node2"), 0.0)
    assert "ALERT  inner_007 93%" in ok and "host node2" in ok and "7.1/12.0 ms" in ok
