"""`eval` on the shipped artifact's held-out split, and the paper-reproduction smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CWRU, needs_cwru

from drsn_stream.models import read_meta
from drsn_stream.train.cli import main as train_cli

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_model_records_its_held_out_accuracy_and_split():
    meta = read_meta("bearing-cwru")
    assert meta.model == "drsn_cw_paper"
    assert meta.labels == [
        "normal",
        "ball_007",
        "ball_014",
        "ball_021",
        "inner_007",
        "inner_014",
        "inner_021",
        "outer_007",
        "outer_014",
        "outer_021",
    ]
    assert (meta.sample_rate, meta.window, meta.hop) == (12000, 2048, 512)
    assert meta.training["split"]["test"] == [0.75, 1.0]
    assert meta.accuracy["split"] == "test"
    assert {"clean", "gaussian@0dB", "laplacian@0dB", "pink@0dB"} <= set(meta.accuracy)


@needs_cwru
def test_eval_json_on_the_shipped_model_gives_held_out_accuracies(capsys):
    rc = train_cli(
        [
            "eval",
            "--model",
            "bearing-cwru",
            "--data",
            str(CWRU),
            "--noise",
            "gaussian",
            "--snr",
            "0,10",
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "bearing-cwru" and doc["split"] == "test" and doc["part"] == [0.75, 1.0]
    rows = {(r["noise"], r.get("snr_db")): r for r in doc["results"]}
    assert set(rows) == {("none", None), ("gaussian", 0.0), ("gaussian", 10.0)}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] > 500 for r in doc["results"])
    assert rows[("none", None)]["accuracy"] >= 0.95
    # More noise never helps much: 10 dB is at least about as good as 0 dB.
    assert rows[("gaussian", 10.0)]["accuracy"] >= rows[("gaussian", 0.0)]["accuracy"] - 0.02
    # The recorded clean accuracy is what eval measures again (same data, same split, no randomness).
    assert rows[("none", None)]["accuracy"] == pytest.approx(
        read_meta("bearing-cwru").accuracy["clean"], abs=1e-4
    )


@needs_cwru
def test_eval_table_and_bad_options(capsys):
    assert train_cli(["eval", "--model", "bearing-cwru", "--data", str(CWRU)]) == 0
    out = capsys.readouterr().out
    assert "test part" in out and "outer_021" in out
    # A negative range is typed as users would type it, not as --snr=-1:0.
    assert (
        train_cli(
            [
                "eval",
                "--model",
                "bearing-cwru",
                "--data",
                str(CWRU),
                "--noise",
                "pink",
                "--snr",
                "-1:0",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [(r["noise"], r.get("snr_db")) for r in doc["results"]] == [
        ("none", None),
        ("pink", -1.0),
        ("pink", 0.0),
    ]
    assert train_cli(["eval", "--model", "bearing-cwru", "--data", str(CWRU), "--noise", "purple"]) == 2
    assert "valid kinds" in capsys.readouterr().err
    assert train_cli(["eval", "--model", "no-such-model", "--data", str(CWRU)]) == 2
    assert "built-in" in capsys.readouterr().err


@pytest.mark.slow
@needs_cwru
def test_reproduce_paper_quick_writes_the_table(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "reproduce_paper.py"),
            "--quick",
            "--workers",
            "1",
            "--data",
            str(CWRU),
            "--out-dir",
            str(tmp_path / "docs"),
            "--run-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "docs" / "reproduction.md").read_text()
    for net in ("ConvNet", "ResNet", "DRSN-CS", "DRSN-CW"):
        assert f"| {net} |" in md
    doc = json.loads((tmp_path / "docs" / "reproduction.json").read_text())
    assert len(doc["rows"]) == 4 and not doc["missing"]
    accs = [r["accuracy"] for row in doc["rows"] for r in row["results"]]
    assert accs and all(0.0 <= a <= 1.0 for a in accs)
    assert doc["protocol"]["snrs"] == [-5.0, 5.0]
