"""Log-mel front-end options of the spoken-digit model: CMN, SpecAugment and frequency stretch.

All of them are off by default (old artifacts load and behave as before); the training-only
ones must never touch eval output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_stream.models import (
    ArtifactMeta,
    build_from_config,
    create_model,
    load_artifact,
    model_config,
    save_artifact,
)
from drsn_stream.models.frontend import LogMel
from drsn_stream.models.outputs import network_of

BASE = {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 40}
AUG = {"freq_masks": 2, "freq_mask_width": 6, "time_masks": 2, "time_mask_width": 10, "warp": 0.1}


def _speechy(batch: int = 8, seed: int = 0) -> torch.Tensor:
    """Harmonic bursts over weak noise, so bands and frames differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(8000) / 8000.0
    x = 0.01 * rng.standard_normal((batch, 8000))
    for i in range(batch):
        f0 = rng.uniform(90, 200)
        env = np.exp(-0.5 * ((t - rng.uniform(0.3, 0.7)) / 0.1) ** 2)
        x[i] += env * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    return torch.from_numpy(x.astype(np.float32))


def test_options_default_off() -> None:
    lm = LogMel(**BASE)
    assert not lm.cmn and lm.freq_masks == 0 and lm.time_masks == 0 and lm.warp == 0.0


def test_training_only_options_leave_eval_output_bit_identical() -> None:
    x = _speechy()
    plain = LogMel(**BASE).eval()
    aug = LogMel(**BASE, **AUG).eval()
    assert torch.equal(plain(x), aug(x))
    assert torch.equal(torch.jit.script(plain)(x), torch.jit.script(aug)(x))
    # ... and in training mode they do change the features.
    aug.train()
    torch.manual_seed(0)
    assert not torch.equal(aug(x), plain(x))


def test_training_mode_without_augmentation_equals_eval() -> None:
    x = _speechy()
    lm = LogMel(**BASE, cmn=True)
    a = lm.train()(x)
    b = lm.eval()(x)
    assert torch.equal(a, b)


def test_frequency_masks_blank_whole_bands_with_the_utterance_mean() -> None:
    x = _speechy(32)
    ref = LogMel(**BASE).eval()(x)[:, 0]
    lm = LogMel(**BASE, freq_masks=2, freq_mask_width=6).train()
    torch.manual_seed(1)
    out = lm(x)[:, 0]
    fill = ref.mean(dim=(1, 2))
    masked_total = 0
    for i in range(len(x)):
        changed = (out[i] != ref[i]).any(dim=1)  # per band
        n = int(changed.sum())
        assert n <= 12
        masked_total += n
        if n:
            assert torch.allclose(out[i][changed], fill[i].expand(n, out.shape[2]))
        assert torch.equal(out[i][~changed], ref[i][~changed])
    assert masked_total > 0


def test_time_masks_blank_whole_frames() -> None:
    x = _speechy(32)
    ref = LogMel(**BASE).eval()(x)[:, 0]
    lm = LogMel(**BASE, time_masks=2, time_mask_width=10).train()
    torch.manual_seed(2)
    out = lm(x)[:, 0]
    masked_total = 0
    for i in range(len(x)):
        changed = (out[i] != ref[i]).any(dim=0)  # per frame
        n = int(changed.sum())
        assert n <= 20
        masked_total += n
        if n:
            col = out[i][:, changed]
            assert torch.allclose(col, col[0:1].expand_as(col))  # one fill value
    assert masked_total > 0


def test_warp_moves_a_spectral_line_by_at_most_the_factor() -> None:
    lm = LogMel(**BASE, warp=0.2).train()
    power = torch.zeros(64, lm.n_bins, 3)
    power[:, 40] = 1.0
    torch.manual_seed(3)
    peaks = lm._warp(power).argmax(dim=1)[:, 0].float()
    assert peaks.min() >= 40 * 0.8 - 1 and peaks.max() <= 40 * 1.2 + 1
    assert peaks.max() - peaks.min() >= 8  # the factor really varies per utterance
    assert torch.allclose(lm._warp(power).sum(dim=1)[:, 0], torch.ones(64), atol=0.35)


def test_cmn_removes_band_coloration_but_keeps_the_level() -> None:
    x = _speechy()
    plain = LogMel(**BASE).eval()(x)[:, 0]
    cmn = LogMel(**BASE, cmn=True).eval()(x)[:, 0]
    band_means = cmn.mean(dim=2)  # (batch, bands): all equal to the overall mean
    assert torch.allclose(band_means, plain.mean(dim=(1, 2))[:, None].expand_as(band_means), atol=1e-4)
    # A fixed coloration (a filter on the input) changes the plain features, barely the CMN ones.
    tilted = torch.from_numpy(np.convolve(np.ones(1), [1.0, 0.9])[:2].astype(np.float32))
    xc = torch.nn.functional.conv1d(x.unsqueeze(1), tilted.flip(0).view(1, 1, 2), padding=1)[:, 0, :8000]
    d_plain = (LogMel(**BASE).eval()(xc)[:, 0] - plain)
    d_cmn = (LogMel(**BASE, cmn=True).eval()(xc)[:, 0] - cmn)
    spread = lambda d: float((d - d.mean(dim=(1, 2), keepdim=True)).abs().mean())  # noqa: E731
    assert spread(d_cmn) < 0.3 * spread(d_plain)
    # Level survives: quiet input stays lower than loud input.
    quiet = LogMel(**BASE, cmn=True).eval()(x * 1e-3).mean()
    loud = LogMel(**BASE, cmn=True).eval()(x).mean()
    assert quiet < loud - 5.0
    # Digital silence stays what it was (one constant).
    z = torch.zeros(2, 8000)
    assert torch.allclose(LogMel(**BASE, cmn=True).eval()(z), LogMel(**BASE).eval()(z), atol=1e-5)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        LogMel(**BASE, freq_masks=-1)
    with pytest.raises(ValueError):
        LogMel(**BASE, warp=0.7)


def test_model_with_options_scripts_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    overrides = {"logmel": {**BASE, "cmn": True, **AUG}, "dropout": 0.1}
    model = create_model("drsn_cw_mel", 13, **overrides)
    model.train()
    model(_speechy(4))  # training forward runs (masks, warp) and moves BN statistics
    model.eval()
    meta = ArtifactMeta(name="t", model="drsn_cw_mel", labels=[str(i) for i in range(13)],
                        sample_rate=8000, window=8000, hop=800,
                        model_config=model_config("drsn_cw_mel", 13, **overrides).to_dict())
    path = save_artifact(model, tmp_path / "m.pt", meta)
    module, meta2 = load_artifact(path)
    x = _speechy(4, seed=5)
    with torch.no_grad():
        assert torch.allclose(module(x)[0], model(x)[0], atol=1e-5)
    rebuilt = build_from_config(meta2.model_config)
    rebuilt.load_state_dict(module.state_dict())
    assert rebuilt.frontend.cmn and rebuilt.frontend.freq_masks == 2


def test_shipped_artifact_loads_into_the_new_front_end_unchanged() -> None:
    module, meta = load_artifact("digits-fsdd")
    model = build_from_config(meta.model_config).eval()
    model.load_state_dict(network_of(module).state_dict())  # strict: no new parameters or buffers
    x = _speechy(4, seed=7)
    with torch.no_grad():  # the shipped file returns probabilities of the same network
        assert torch.allclose(module(x)[0], torch.softmax(model(x)[0], dim=1), atol=1e-5)
