"""The JSON-lines log writes strict JSON, whatever floats a result carries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
