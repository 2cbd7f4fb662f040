"""The model library: registry-wide scripting/export, and the paper's invariants on real tensors."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import cwru_windows

from drsn_stream.errors import ConfigError
from drsn_stream.models import RSBU, create_model, list_models, soft_threshold
from drsn_stream.models.artifact import script_model


def _input_for(model: torch.nn.Module, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    samples = 8000 if model.use_logmel else 2048
    return torch.randn(batch, samples, generator=gen)


@pytest.mark.parametrize("name", list_models())
def test_every_model_scripts_exports_and_agrees(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    x = _input_for(model)
    with torch.no_grad():
        logits, noise = model(x)
        scripted = script_model(model)
        s_logits, s_noise = scripted(x)
    assert logits.shape == (4, 7) and noise.shape == (4,)
    assert torch.isfinite(logits).all() and torch.isfinite(noise).all()
    torch.testing.assert_close(s_logits, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s_noise, noise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (x,))
    e_logits, e_noise = exported.module()(x)
    torch.testing.assert_close(e_logits, logits, rtol=1e-4, atol=1e-5)
    if model.has_shrink:
        assert ((noise > 0) & (noise < 1)).all()
    else:
        assert (noise == 0).all()


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="drsn_cw_paper"):
        create_model("drsn_cw_papr")


def test_parameter_counts_match_the_paper() -> None:
    n_cw = sum(p.numel() for p in create_model("drsn_cw_paper", num_classes=10).parameters())
    n_cs = sum(p.numel() for p in create_model("drsn_cs_paper", num_classes=10).parameters())
    assert abs(n_cw - 11_600) < 150, n_cw  # "about 11.6 k"
    assert abs(n_cs - 10_200) < 150, n_cs  # "about 10.2 k"
    assert n_cs < n_cw


def test_soft_threshold_values_and_gradient() -> None:
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], requires_grad=True)
    tau = torch.tensor(1.0)
    y = soft_threshold(x, tau)
    assert y.tolist() == [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    y.sum().backward()
    # 1 outside [-tau, tau], 0 inside
    assert x.grad.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("name", ["drsn_cw_paper", "drsn_cs_paper"])
def test_thresholds_positive_and_below_mean_abs_on_real_windows(name: str) -> None:
    x = cwru_windows(16)
    torch.manual_seed(1)
    model = create_model(name).train()
    for _ in range(3):  # a few steps so BN statistics and weights are not at init
        logits, _ = model(x)
        logits.sum().backward()
    model.eval()
    h = model.stem(model.features_in(x))
    with torch.no_grad():
        for unit in model.units:
            r = unit.residual(h)
            tau = unit.threshold(r)
            mean_abs_channel = r.abs().flatten(2).mean(2)  # (batch, C)
            if name == "drsn_cw_paper":
                assert tau.shape == (x.shape[0], r.shape[1], 1)
                assert (tau.squeeze(-1) > 0).all() and (tau.squeeze(-1) < mean_abs_channel).all()
                # channel-wise thresholds differ across channels
                assert (tau.squeeze(-1).std(dim=1) > 0).all()
            else:
                assert tau.shape == (x.shape[0], 1, 1)
                assert (tau.flatten() > 0).all() and (tau.flatten() < mean_abs_channel.mean(1)).all()
            # thresholds differ per sample
            assert tau.flatten(1)[:, 0].std() > 0
            h = unit(h)


def test_rsbu_structure_follows_the_paper() -> None:
    unit = RSBU(4, 8, stride=2, shrink="cw")
    x = torch.randn(2, 4, 64).abs() + 5.0  # large positive input: a ReLU after the addition would not show
    out = unit.eval()(x)
    assert out.shape == (2, 8, 32)
    # the shortcut decimates and zero-pads: the new channels carry only the shrunk residual
    shortcut = unit.shortcut(x)
    assert torch.equal(shortcut[:, :4], x[:, :, ::2]) and torch.equal(shortcut[:, 4:], torch.zeros(2, 4, 32))
    # no ReLU after the addition: outputs can be negative
    unit2 = RSBU(4, 4, shrink="cw").eval()
    out2 = unit2(-x)
    assert (out2 < 0).any()
    # no BN after the second convolution, and no 1x1 convolution in the shortcut
    convs = [m for m in unit.modules() if isinstance(m, torch.nn.Conv1d)]
    assert len(convs) == 2 and all(c.kernel_size == (3,) for c in convs)


def test_noise_index_grows_with_noise_on_a_trained_threshold() -> None:
    # The share of zeroed activations is a real quantity, not a constant: it changes with the input.
    torch.manual_seed(0)
    model = create_model("drsn_cw_paper").eval()
    x = cwru_windows(8)
    with torch.no_grad():
        _, n_clean = model(x)
        _, n_zero = model(torch.zeros_like(x))
    assert not torch.allclose(n_clean, n_zero)


def test_inference_soft_threshold_and_noise_index_equal_the_definitions() -> None:
    # without autograd soft_threshold takes a faster path; it must give the same numbers, and the
    # noise index counted from its zeros must be the share of |r| <= tau
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 300, generator=g)
    tau = torch.rand(8, 4, 1, generator=g)
    ref = torch.sign(x) * torch.clamp(x.abs() - tau, min=0)
    with torch.no_grad():
        fast = soft_threshold(x, tau)
    torch.testing.assert_close(fast, ref, rtol=0, atol=0)
    unit = RSBU(4, 4, dims=1, shrink="cw").eval()
    with torch.no_grad():
        out, tau_u, zeroed = unit.forward_with_stats(x)
        r = unit.residual(x)
        share = (r.abs() <= tau_u).flatten(1).float().mean(1)
    torch.testing.assert_close(zeroed, share)
    assert 0 < float(zeroed.mean()) < 1


def test_every_public_name_of_the_models_package_resolves():
    import drsn_stream.models as models

    assert sorted(models.__all__) == sorted(models._WHERE)
    for name in models.__all__:
        assert getattr(models, name).__name__ == name
