"""Refuse to guess: pooled features from every network, the shipped model's "unknown" statistics
on real CWRU windows and on signals no bearing makes, and the label ``unknown`` in the running
monitor (JSON lines, decisions, dashboard, metrics)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from helpers import require_cwru
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.engine import predictions_from
from drsn_stream.engine.procrunner import ProcessRunner
from drsn_stream.engine.runner import Runner
from drsn_stream.errors import ArtifactError, DataError
from drsn_stream.models.artifact import load_artifact, read_meta, script_model
from drsn_stream.models.ensemble import Ensemble
from drsn_stream.models.ood import UNKNOWN, UnknownDetector
from drsn_stream.models.registry import create_model, list_models
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine, Level
from drsn_stream.monitor.snapshot import build_snapshot
from drsn_stream.sinks.dashboard import stream_table
from drsn_stream.sinks.metrics import format_metrics
from drsn_stream.train import cwru
from drsn_stream.types import Prediction, Window, batch_columns
from drsn_stream.view import Header, StreamRow

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
LABELS = list(cwru.LABELS_10)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.endswith("_mel")])
def test_every_network_scripts_forward_features_whose_linear_layer_gives_the_logits(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name, num_classes=10).eval()
    scripted = script_model(net)
    x = torch.randn(3, 2048)
    with torch.no_grad():
        logits, noise = scripted(x)
        l2, n2, feats = scripted.forward_features(x)
    assert feats.shape == (3, net.fc.in_features)
    assert torch.equal(logits, l2) and torch.equal(noise, n2)
    assert torch.allclose(net.fc(feats), logits, atol=1e-5)


def test_an_ensemble_gives_its_members_features_side_by_side() -> None:
    torch.manual_seed(0)
    members = [create_model("drsn_cw_paper", num_classes=4).eval() for _ in range(2)]
    ens = script_model(Ensemble(members).eval())
    x = torch.randn(2, 2048)
    with torch.no_grad():
        _, _, f = ens.forward_features(x)
        _, _, f0 = members[0].forward_features(x)
    assert f.shape == (2, 2 * members[0].fc.in_features)
    assert torch.allclose(f[:, : f0.shape[1]], f0)


def _shipped() -> tuple[object, object, UnknownDetector]:
    module, meta = load_artifact("bearing-cwru")
    return module, meta, UnknownDetector.from_dict(meta.unknown)


def _features(module, meta, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.forward_features(torch.from_numpy(normalize(x, meta.normalization)))[2].numpy()


def test_the_shipped_model_refuses_at_most_one_percent_of_its_test_windows_and_almost_every_synthetic_one() -> None:
    require_cwru()
    module, meta, det = _shipped()
    assert meta.features == det.features == 16
    recs = cwru.load_set(None, meta.labels, files=meta.training["data"]["files"])
    test = cwru.windows_of(recs, meta.labels, tuple(meta.training["split"]["test"]), window=meta.window, hop=meta.hop)
    refused = det.score(_features(module, meta, test.x)) > 1.0
    assert refused.mean() <= 0.01, f"{refused.mean():.2%} of the in-distribution test windows refused"
    rate, t = meta.sample_rate, np.arange(10 * meta.sample_rate) / meta.sample_rate
    rng = np.random.default_rng(3)
    signals = {
        "sine 440 Hz": np.sin(2 * np.pi * 440 * t),
        "square 60 Hz": np.sign(np.sin(2 * np.pi * 60 * t)),
        "white noise": rng.standard_normal(t.size),
        "chirp": np.sin(2 * np.pi * (20 * t + (0.45 * rate - 20) / (2 * t[-1]) * t**2)),
    }
    for name, sig in signals.items():
        w = cwru.cut_windows(sig.astype(np.float32), cwru.window_starts(t.size, meta.window, meta.hop), meta.window)
        share = float((det.score(_features(module, meta, w)) > 1.0).mean())
        assert share >= 0.99, f"{name}: only {share:.2%} refused"


@pytest.mark.slow
def test_both_runners_return_the_features_the_model_computes() -> None:
    module, meta, _ = _shipped()
    x = np.random.default_rng(0).standard_normal((40, meta.window)).astype(np.float32)
    want = _features(module, meta, x * 1.0)  # zscore of a z-scored window is itself, to rounding
    local = Runner(module, window=meta.window, device="cpu", threads=1, features=meta.features,
                   net_config=meta.model_config)
    h = local.submit(normalize(x, meta.normalization))
    probs, _ = local.collect(h)
    assert np.allclose(h.features, want, atol=1e-4) and probs.shape == (40, 10)
    proc = ProcessRunner("bearing-cwru", window=meta.window, classes=10, features=meta.features, max_batch=64)
    try:
        h2 = proc.submit(normalize(x, meta.normalization))
        p2, _ = proc.collect(h2)
    finally:
        proc.close()
    assert np.allclose(h2.features, h.features, atol=1e-5) and np.allclose(p2, probs, atol=1e-6)


def test_malformed_unknown_statistics_are_refused_with_what_to_do() -> None:
    with pytest.raises(ArtifactError, match="fit_unknown.py"):
        UnknownDetector.from_dict({"kind": "class-gaussian-mahalanobis", "means": [[0.0]], "whiteners": [[1.0]],
                                   "threshold": 1.0})
    assert read_meta("digits-fsdd").unknown == {}  # a model without statistics never refuses


def test_a_threshold_from_nan_features_is_refused_not_kept() -> None:
    # A NaN threshold compares False with every score: unknown detection would be silently off in
    # the artifact a training run writes. The calibration refuses it and keeps the one it had.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 4)), np.repeat([0, 1], 200)
    det = UnknownDetector.fit(x, y, 2)
    good = det.calibrate(x[:100])
    assert good > 0 and np.isfinite(good)
    held = x[:100].copy()
    held[::3, 1] = np.nan
    for bad in (held, x[:0]):
        with pytest.raises(DataError, match="NaN"):
            det.calibrate(bad)
        assert det.threshold == good


def test_the_distance_is_the_smallest_mahalanobis_distance_to_a_class() -> None:
    # one matrix product whitens a batch for every class at once; the figure must be the plain
    # one: the smallest over the classes of |(x - mean) W|^2
    det = UnknownDetector.from_dict(read_meta("bearing-cwru").unknown)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, det.features)) * 2 + det.means[rng.integers(len(det.means), size=300)]
    plain = np.min([np.sum(((x - m) @ w) ** 2, axis=1) for m, w in zip(det.means, det.whiteners)], axis=0)
    np.testing.assert_allclose(det.distance2(x), plain, rtol=1e-12)
    np.testing.assert_allclose(det.distance2(x[:1]), plain[:1], rtol=1e-12)


def test_a_batch_from_the_engine_and_the_same_rows_in_a_list_are_refused_alike() -> None:
    """The engine's batch (``predictions_from``: its features read as one matrix) and the same
    windows as a plain list (each row's features gathered) get the same scores and labels; a list
    with rows lacking features scores the others only."""
    det = UnknownDetector.from_dict(read_meta("bearing-cwru").unknown)
    rng = np.random.default_rng(4)
    b = 64
    # near a class (whitened distance ~0.1 per feature) or far from all (~30)
    k = rng.integers(len(det.means), size=b)
    z = rng.normal(size=(b, det.features)) * rng.choice([0.1, 30.0], size=(b, 1))
    feats = (det.means[k] + np.einsum("bf,bfg->bg", z, np.linalg.inv(det.whiteners[k]))).astype(np.float32)
    feats[5] = np.nan
    probs = rng.dirichlet(np.ones(len(LABELS)), size=b).astype(np.float32)
    windows = [Window(f"m{i}", i, float(i), np.zeros(4, np.float32)) for i in range(b)]

    def batch() -> list[Prediction]:
        return predictions_from(windows, probs, np.zeros(b), LABELS, levels=np.ones(b), latency_ms=np.ones(b),
                                t_batched=0.0, t_done=0.0, features=feats)

    engine_batch, plain = batch(), list(batch())
    assert batch_columns(engine_batch) is engine_batch and batch_columns(plain) is None
    for reorder in (engine_batch.reverse, lambda: engine_batch.sort(key=lambda p: p.t_last),
                    lambda: engine_batch.__setitem__(0, plain[1])):
        with pytest.raises(TypeError, match="columns' order"):
            reorder()
    assert batch_columns(engine_batch[:10]) is None and batch_columns(engine_batch + plain) is None
    det.refuse(engine_batch)
    det.refuse(plain)
    def outcome(rows: list[Prediction]) -> list[tuple]:
        return [(repr(p.unknown_score), p.label, p.model_label) for p in rows]  # repr: NaN equals NaN

    seen = outcome(engine_batch)
    assert seen == outcome(plain)
    refused = [p.label == UNKNOWN for p in engine_batch]
    assert refused[5] and 5 < sum(refused) < b - 5  # NaN features are refused; the far ones too, the near kept
    mixed = list(batch())
    for p in mixed[::2]:
        p.features = None
    det.refuse(mixed)
    assert outcome(mixed[1::2]) == seen[1::2]
    assert all(p.unknown_score is None and p.label != UNKNOWN for p in mixed[::2])


def _pred(label: str, refused: bool, t: float) -> Prediction:
    probs = np.full(10, 0.01, np.float32)
    probs[LABELS.index(label)] = 0.91
    p = Prediction("m0", 0, t, probs, label, 0.91, 0.2, 5.0)
    if refused:
        p.model_label, p.label = label, UNKNOWN
    return p


def test_a_refused_label_raises_no_alarm_and_shows_unknown() -> None:
    engine = DecisionEngine(LABELS, DecisionConfig.for_labels(LABELS, set_windows=2))
    events = []
    for i in range(10):
        events += engine.update(_pred("ball_014", True, float(i)))
    assert events == [] and engine.state("m0").label == UNKNOWN and engine.state("m0").level == Level.NORMAL
    for i in range(10, 13):
        events += engine.update(_pred("ball_014", False, float(i)))
    assert [e.data["to"] for e in events] == ["ALERT"]  # the same label, backed, does raise it
    rows = (StreamRow("m0", label=UNKNOWN, confidence=0.0),)
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(stream_table(rows, width=120))
    assert "unknown" in console.file.getvalue()
    snap = build_snapshot(header=Header(model="bearing-cwru", labels=tuple(LABELS), refuses=True), decisions=engine)
    found = {}
    for fam in text_string_to_metric_families(format_metrics(snap)):
        for s in fam.samples:
            if s.name == "drsn_stream_label":
                found[s.labels["label"]] = s.value
    assert found[UNKNOWN] == 0.0 and found["ball_014"] == 1.0


@pytest.mark.parametrize("learning", [False, True])
def test_the_monitor_calls_a_sine_unknown_and_raises_no_alarm(tmp_path: Path, cli_in_process, learning: bool) -> None:
    # and says once that the stream's labels say nothing and only a learned baseline would alarm
    # on it (an engineer seeing "unknown" on every window had no word of what to do); not while
    # a baseline is being learned for it
    t = np.arange(12000 * 4) / 12000
    wav = tmp_path / "sine.wav"
    scipy.io.wavfile.write(wav, 12000, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    extra = ["--learn", "60s", "--baseline", str(tmp_path / "p.json")] if learning else []
    res = cli_in_process("--source", f"file:{wav}", "--fast", "--headless", "--jsonl", "-", *extra)
    assert res.returncode == 0, res.stderr
    objs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    preds = [o for o in objs if o["type"] == "prediction"]
    assert preds and all(o["label"] == UNKNOWN and o["unknown_score"] > 1 and o["model_label"] for o in preds)
    assert not [o for o in objs if o["type"] == "alarm"]
    assert f"sine: {len(preds)} windows; unknown 100%" in res.stderr
    said = [o for o in objs if o["type"] == "note" and "refused" in o["message"]]
    if learning:
        assert not said, said
    else:
        assert len(said) == 1 and said[0]["stream"] == "sine", said
        assert said[0]["message"].startswith("the model refused 100% of this stream's ") and "--learn" in said[0]["message"]


@pytest.mark.parametrize("kind", ["flat", "clipped"])
def test_flat_and_clipped_signals_claim_no_condition_and_the_sensor_needs_checking(tmp_path: Path, kind: str,
                                                                                   cli_in_process) -> None:
    t = np.arange(12000 * 4) / 12000
    if kind == "flat":
        x = np.zeros(t.size, np.int16)
    else:
        noisy = 3 * np.sin(2 * np.pi * 50 * t) + 0.3 * np.random.default_rng(0).standard_normal(t.size)
        x = (np.clip(noisy, -1, 1) * 32767).astype(np.int16)
    wav = tmp_path / f"{kind}.wav"
    scipy.io.wavfile.write(wav, 12000, x)
    res = cli_in_process("--source", f"file:{wav}", "--fast", "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    preds = [o for o in objs if o["type"] == "prediction"]
    # the sensor check wins: no fault and no "unknown" is claimed for a window it rejects
    refused = [o for o in preds if o["label"] in ("check_sensor", UNKNOWN) and o["model_label"]]
    assert preds and len(refused) >= 0.99 * len(preds)
    assert [o for o in preds if o["label"] == "check_sensor"] and all(
        o["health"] == "CHECK_SENSOR" for o in preds if o["label"] == "check_sensor")
    health = [o for o in objs if o["type"] == "health"]
    assert health and health[0]["to"] == "CHECK_SENSOR"
    assert not [o for o in objs if o["type"] == "alarm"]


def test_an_artifact_that_promises_features_it_does_not_give_is_refused_on_load(tmp_path: Path) -> None:
    from drsn_stream.models.artifact import save_artifact

    meta = {"name": "t", "model": "drsn_cw_paper", "labels": ["a", "b"], "sample_rate": 1000, "window": 256,
            "hop": 128, "input": {"kind": "raw"}, "normalization": {"kind": "zscore"},
            "outputs": {"scores": "logits", "features": 32}}
    path = save_artifact(create_model("drsn_cw_paper", num_classes=2), tmp_path / "t.pt", meta)
    with pytest.raises(ArtifactError, match="promises 32 pooled features.*fit_unknown.py"):
        load_artifact(path)
    meta["outputs"]["features"] = 16
    save_artifact(create_model("drsn_cw_paper", num_classes=2), path, meta)
    assert load_artifact(path)[1].features == 16
