"""The training loop, configs, and `train`/`export` end to end on real CWRU data."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_stream.errors import ConfigError, DataError
from drsn_stream.models import create_model, load_artifact
from drsn_stream.train.cli import main as train_cli
from drsn_stream.train.config import load_config, parse_config
from drsn_stream.train.loop import Recipe, accuracy, fit

DATA = Path(os.environ.get("DRSN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CWRU = DATA / "cwru"
needs_cwru = pytest.mark.skipif(
    not CWRU.is_dir(), reason=f"CWRU data not found at {CWRU}; set DRSN_DATA to the folder that holds cwru/"
)
ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
model = "drsn_cw_paper"
[data]
labels = ["normal", "ball_007", "inner_007", "outer_007"]
windows_per_class = 16
hop = 2048
[train]
epochs = 1
threads = 1
[augment]
snr_range = [0.0, 10.0]
[eval]
snr_db = [0.0]
"""


def test_learning_rate_follows_the_papers_steps():
    r = Recipe(epochs=10)
    assert [r.lr_at(e) for e in range(10)] == pytest.approx([0.1] * 4 + [0.01] * 4 + [0.001] * 2)
    assert (r.momentum, r.weight_decay, r.batch_size) == (0.9, 1e-4, 128)


def test_fit_learns_from_tensors_with_a_batch_augmentation():
    """The generic loop (as the speech models use it): tensors in, a per-batch augmentation, a model out."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(512) / 8000.0
    freqs = torch.where(torch.rand(384, generator=g) < 0.5, 300.0, 1200.0)
    x = torch.sin(2 * torch.pi * freqs[:, None] * t[None, :] + torch.rand(384, 1, generator=g) * 6.28)
    y = (freqs > 500).long()
    calls = []

    def augment(xb: np.ndarray, yb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        calls.append(len(yb))
        return xb + 0.1 * rng.standard_normal(xb.shape).astype(np.float32)

    torch.manual_seed(0)
    model = create_model("resnet_paper", num_classes=2)
    res = fit(
        model,
        (x[:256], y[:256]),
        recipe=Recipe(epochs=4, batch_size=32, lr=0.05),
        val=(x[256:], y[256:]),
        augment=augment,
        progress=False,
    )
    assert sum(calls) == 4 * 256
    assert accuracy(res.model, x[256:].numpy(), y[256:].numpy()) > 0.9
    assert 1 <= res.best_epoch <= 4 and len(res.history) == 4
    # A map-style dataset of (window, label) pairs works the same way.
    ds = torch.utils.data.TensorDataset(x[:64], y[:64])
    res2 = fit(
        create_model("resnet_paper", num_classes=2),
        ds,
        recipe=Recipe(epochs=1, batch_size=32),
        progress=False,
    )
    assert res2.windows_seen == 64


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        parse_config({"name": "x", "model": "drsn_cw_paper", "data": {"labels": ["a"], "colour": 1}})
    with pytest.raises(ConfigError, match="time order"):
        parse_config({"name": "x", "model": "m", "data": {"labels": ["a"], "test_part": [0.5, 1.0]}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("table, key, value, says", [
    ("train", "lr", float("inf"), r"\[train\] lr must be a number over 0 and at most 100, not inf"),
    ("train", "momentum", float("nan"), r"\[train\] momentum must be a number from 0 to 1, not nan"),
    ("train", "weight_decay", -1.0, "weight_decay must be a number from 0 to 1"),
    ("train", "lr_steps", [float("nan")], r"lr_steps\[0\] must be a number from 0 to 1"),
    ("train", "threads", -3, "threads must be a whole number from 0 to 1,024"),
    ("train", "seed", -1, "seed must be a whole number from 0 to 4,294,967,295"),
    ("train", "epochs", 1.5, r"\[train\]: epochs must be an integer, not 1.5"),
    ("data", "window", 2**40, r"\[data\] window must be a whole number from 16 to 1,048,576"),
    ("data", "sample_rate", 0, "sample_rate must be a whole number from 1 to 1,000,000, not 0"),
    ("data", "windows_per_class", 0, "windows_per_class must be a whole number from 1"),
    ("data", "loads", [7], "a load must be a whole number from 0 to 3, not 7"),
    ("data", "loads", [], "loads must name at least one motor load"),
    ("data", "labels", ["normal", "\x1b[2Jball"], "labels must be distinct names of 1-128 printable characters"),
    ("data", "labels", ["normal", "normal"], "labels must be distinct names"),
    ("data", "train_part", [0.0], r"train_part must be a list of 2 numbers, not \[0.0\]"),
    ("eval", "snr_db", [float("nan")], r"\[eval\] snr_db\[0\] must be a number from -100 to 100, not nan"),
    ("eval", "kinds", ["brown"], r"\[eval\] unknown noise kind\(s\) \['brown'\]"),
    ("augment", "clean_fraction", "x", r"\[augment\]: clean_fraction must be a number, not 'x'"),
    ("augment", "snr_range", 5, r"\[augment\]: snr_range must be a list of 2 numbers, not 5"),
    ("augment", "snr_range", [-6.0, 1e9], "an SNR must be a number from -100 to 100, not 1000000000.0"),
])
def test_a_training_value_that_would_fail_or_train_nonsense_is_refused_as_the_config_is_read(table, key, value, says):
    # NaN or Inf learning rates trained to NaN weights without a word; a negative momentum,
    # thread count or seed, a rate of 0, a window of 2^40 or an empty load list stopped the run
    # from inside torch or numpy after the data was read; a label with an escape sequence was
    # refused only at export, after training; an unknown noise kind at evaluation
    d = load_config_dict(ROOT / "configs" / "bearing-cwru.toml")
    d.setdefault(table, {})[key] = value
    with pytest.raises(ConfigError, match=says):
        parse_config(d)


def load_config_dict(path: Path) -> dict:
    from drsn_stream.config import loads_toml

    return loads_toml(path.read_text())


def test_shipped_config_is_the_paper_recipe():
    cfg = load_config(ROOT / "configs" / "bearing-cwru.toml")
    assert cfg.model == "drsn_cw_paper"
    assert cfg.data.labels[0] == "normal" and len(cfg.data.labels) == 10
    assert (cfg.data.window, cfg.data.hop, cfg.data.sample_rate) == (2048, 512, 12000)
    assert (cfg.recipe.batch_size, cfg.recipe.momentum, cfg.recipe.weight_decay) == (128, 0.9, 1e-4)
    assert cfg.data.test_part == (0.75, 1.0)


@needs_cwru
def test_train_end_to_end_writes_a_loadable_artifact_and_export_reproduces_it(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    rc = train_cli(["train", "--config", str(config), "--data", str(CWRU), "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out test part" in printed
    # the confusion table's title on one line (rich wrapped a longer one to the table's width)
    assert "confusion, clean" in [line.strip() for line in printed.splitlines()], printed

    module, meta = load_artifact(out / "tiny.pt")
    assert meta.labels == ["normal", "ball_007", "inner_007", "outer_007"]
    assert (meta.window, meta.hop, meta.sample_rate) == (2048, 2048, 12000)
    assert meta.normalization == {"kind": "zscore"}
    assert meta.training["split"]["test"] == [0.75, 1.0] and meta.training["split"]["train"] == [0.0, 0.6]
    assert meta.training["data"]["files"]["normal"] == ["normal_0_97.mat"]
    assert set(meta.accuracy) >= {"split", "clean", "gaussian@0dB", "laplacian@0dB", "pink@0dB"}
    assert 0.0 <= meta.accuracy["clean"] <= 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["noise"] == "none" and len(report["confusion"]) == 4

    rc = train_cli(["export", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "exported.pt")])
    assert rc == 0
    exported, emeta = load_artifact(tmp_path / "exported.pt")
    assert emeta.labels == meta.labels and emeta.accuracy == meta.accuracy
    x = torch.randn(3, 2048)
    with torch.no_grad():
        assert torch.allclose(exported(x)[0], module(x)[0], atol=1e-5)


def test_train_with_bad_data_folder_fails_with_advice(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    from drsn_stream.train.cli import run_train

    args = Namespace(config=config, data=tmp_path, out=tmp_path / "o", artifact=None, epochs=None, quiet=True)
    assert run_train(args) == 2
    assert "--data" in capsys.readouterr().err


def test_a_training_error_is_one_plain_line_with_its_brackets(tmp_path, capsys):
    # rich took "[train]" for markup and printed "error:  epochs must ...", wrapped at 80 columns
    config = tmp_path / "zero.toml"
    config.write_text(TINY.replace("epochs = 1", "epochs = 0"))
    assert train_cli(["train", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drsn-stream train: error: ") and err.count("\n") == 1
    assert "[train] epochs must be a whole number" in err


def test_the_speech_recipe_given_to_train_config_says_which_tool_trains_it(tmp_path, capsys):
    # it said only "unknown key(s) loso, tts"
    config = tmp_path / "my-digits.toml"
    config.write_text((ROOT / "configs" / "digits-fsdd.toml").read_text())
    assert train_cli(["train", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a speech recipe" in err and f"tools/train_digits.py --config {config}" in err


def test_export_of_an_exported_model_says_it_is_one(tmp_path, capsys):
    # torch.load printed a page about weights_only and TorchScript archives
    artifact = ROOT / "drsn_stream" / "artifacts" / "bearing-cwru.pt"
    assert train_cli(["export", "--checkpoint", str(artifact), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "an exported model (a TorchScript artifact), not a training checkpoint" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.pt").exists()


def test_export_of_other_bytes_or_a_runs_folder_says_what_it_was_given(tmp_path, capsys):
    # random bytes said "not a readable training checkpoint (2429265712)": torch's KeyError on them
    (tmp_path / "copy.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "run").mkdir()
    for given, says in [("copy.pt", "not a training checkpoint (neither a zip archive nor torch's older format"),
                        ("empty.pt", "not a training checkpoint (neither a zip archive nor torch's older format"),
                        ("run", "is a folder; give the best.pt or last.pt in it")]:
        assert train_cli(["export", "--checkpoint", str(tmp_path / given), "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not (tmp_path / "x.pt").exists()


def test_training_stops_at_the_first_loss_that_is_not_a_number(tmp_path):
    # a window of NaN samples made every weight NaN; the run went on, saved the model and exited 0
    x = torch.randn(64, 256)
    x[40, 17] = float("nan")
    y = torch.arange(64) % 2
    model = create_model("resnet_paper", num_classes=2)
    with pytest.raises(DataError, match=r"epoch 1, batch \d+: the loss is nan.*NaN or infinite samples.*lr"):
        fit(model, (x, y), recipe=Recipe(epochs=2, batch_size=16), checkpoint_dir=tmp_path, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # not a step taken on it
    assert not list(tmp_path.glob("*.pt"))


@needs_cwru
def test_a_cwru_recording_with_nan_samples_is_refused_naming_it(tmp_path):
    import scipy.io as sio

    from drsn_stream.train.cwru import load_recording

    mat = sio.loadmat(CWRU / "normal_0_97.mat")
    key = next(k for k in mat if k.endswith("_DE_time"))
    mat[key][1000:1100] = np.nan
    sio.savemat(tmp_path / "normal_0_97.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(DataError, match=r"normal_0_97.mat: 100 of its \d+ samples are NaN or infinite"):
        load_recording(tmp_path / "normal_0_97.mat")
