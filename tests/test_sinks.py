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
