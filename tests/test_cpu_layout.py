"""The CPU engine's channels-last form: the same network, laid out for the CPU, used only when verified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drsn_stream import jit
from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine import cpu_layout, small_jit
from drsn_stream.engine.runner import Runner
from drsn_stream.models import create_model
from drsn_stream.models.artifact import load_artifact, load_validation, quiet_torchscript, script_model
from drsn_stream.models.outputs import is_wrapped
from drsn_stream.models.registry import build_from_config, list_models, model_config
from drsn_stream.sources.sim import load_excerpts


def _frozen(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.freeze(script_model(module.eval()), preserved_attrs=["forward_features"])


def _real_windows(n: int = 256) -> np.ndarray:
    """Real CWRU windows, normalized: the shipped excerpts (held-out part of each recording), an
    equal share of every class."""
    excerpts = list(load_excerpts(12000).values())
    per = -(-n // len(excerpts))
    wins = [x[s : s + 2048] for x in excerpts for s in np.linspace(0, len(x) - 2048, per).astype(int)]
    return np.ascontiguousarray(normalize(np.stack(wins[:n]).astype(np.float32), {"kind": "zscore"}))


def _trained_like(name: str, seed: int = 0) -> torch.nn.Module:
    """A registry network with non-trivial batch-norm statistics, so that every fold matters."""
    torch.manual_seed(seed)
    net = create_model(name, num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def test_the_shipped_bearing_model_gives_the_same_labels_probabilities_and_noise_index() -> None:
    module, meta = load_artifact("bearing-cwru")
    x = _real_windows(512)
    fast, why = cpu_layout.convert(module, meta.model_config)
    assert fast is not None, why
    assert meta.scores == "probs" and is_wrapped(fast)  # the form returns what the artifact returns
    with torch.inference_mode():
        probs, noise = module(torch.from_numpy(x))
    for form in FORMS.values():
        with torch.inference_mode():
            f_probs, f_noise = form(fast)(torch.from_numpy(x))
        assert torch.equal(probs.argmax(1), f_probs.argmax(1))
        torch.testing.assert_close(f_probs, probs, rtol=0, atol=1e-4)
        # the noise index counts exact zeros: a value rounded across its threshold moves it by 1/(L*C)
        torch.testing.assert_close(f_noise, noise, rtol=0, atol=1e-3)
    assert float(noise.mean()) > 0.05  # the units do zero a share of their activations


def _compiled(fast: torch.nn.Module) -> torch.nn.Module:
    if not jit.available():
        pytest.skip("numba is not installed (or DRSN_STREAM_JIT=0)")
    tails, why = cpu_layout.compiled(fast)
    assert tails is not None, why
    return tails


def _whole(fast: torch.nn.Module) -> torch.nn.Module:
    """The whole pass compiled (what the runner uses for small batches), whatever the batch."""
    small = cpu_layout.small_batches(_compiled(fast))
    assert small is not None, small_jit.why_not()
    return small


FORMS = {"frozen": _frozen, "compiled tails": _compiled, "compiled whole": _whole}


@pytest.mark.parametrize("name", [n for n in list_models() if model_config(n, 10).dims == 1])
# 2000: odd lengths deep in the net, 4-wide rows; 2002: lengths the position blocks do not divide
@pytest.mark.parametrize("length", [2048, 2000, 2002])
@pytest.mark.parametrize("form", list(FORMS))
def test_every_1d_network_converts_to_the_same_function(name: str, length: int, form: str) -> None:
    net = _trained_like(name)
    fast, why = cpu_layout.convert(net, model_config(name, 10).to_dict())
    assert fast is not None, why
    fast = FORMS[form](fast)
    x = torch.from_numpy(np.ascontiguousarray(_real_windows(64)[:, :length]))
    with torch.inference_mode():
        logits, noise = net(x)
        f_logits, f_noise = fast(x)
        _, _, features = net.forward_features(x)
        _, _, f_features = fast.forward_features(x)
    assert f_logits.shape == logits.shape and f_noise.shape == noise.shape
    torch.testing.assert_close(f_logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f_noise, noise, rtol=0, atol=1e-3)
    torch.testing.assert_close(f_features, features, rtol=1e-4, atol=1e-4)  # what the baselines learn from


def _built(cfg: dict, seed: int) -> torch.nn.Module:
    """A network of ``cfg`` with batch-norm variances and shifts that make every fold matter."""
    torch.manual_seed(seed)
    net = build_from_config(cfg).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_var.uniform_(0.3, 3.0)
            m.bias.data.uniform_(-0.3, 0.3)
    return net


@pytest.mark.parametrize("stages", [((12, 2), (24, 2)), ((8, 1), (96, 2))])
def test_channel_counts_a_row_of_64_does_not_hold_give_the_same_function(stages) -> None:
    """12 and 24 channels do not divide a row of 64 values, 96 exceed it: the compiled tails'
    per-channel loops, not their row loops."""
    cfg = {**model_config("drsn_cw_paper", 10).to_dict(), "stages": [list(s) for s in stages],
           "stem_channels": stages[0][0]}
    net = _built(cfg, seed=1)
    fast, why = cpu_layout.convert(net, cfg)
    assert fast is not None, why
    x = torch.from_numpy(np.ascontiguousarray(_real_windows(16)))
    with torch.inference_mode():
        logits, noise = net(x)
        for form in (_compiled(fast), _whole(fast)):
            t_logits, t_noise = form(x)
            torch.testing.assert_close(t_logits, logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(t_noise, noise, rtol=0, atol=1e-3)


@pytest.mark.parametrize("shrink", ["cs", "none"])
@pytest.mark.parametrize("length", [2048, 37])
def test_other_kernels_and_rows_shorter_than_a_kernel_give_the_same_function(shrink: str, length: int) -> None:
    """Kernels of 5 and a stem of 7 (the compiled pass's general convolution), a ConvNet without
    shortcuts, and windows so short that the last units see rows of one or two positions."""
    cfg = {**model_config("drsn_cw_paper", 10).to_dict(), "kernel_size": 5, "stem_kernel": 7,
           "shrink": shrink, "shortcut": shrink == "cs", "stages": [[4, 2], [8, 2], [16, 2]]}
    net = _built(cfg, seed=2)
    fast, why = cpu_layout.convert(net, cfg)
    assert fast is not None, why
    x = torch.from_numpy(np.ascontiguousarray(_real_windows(8)[:, :length]))
    with torch.inference_mode():
        logits, noise = net(x)
        for name in ("compiled tails", "compiled whole"):
            f_logits, f_noise = FORMS[name](fast)(x)
            torch.testing.assert_close(f_logits, logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(f_noise, noise, rtol=0, atol=1e-3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("po", [1, 2, 4])
def test_a_convolution_over_blocks_of_positions_is_the_convolution(stride: int, kernel: int, po: int) -> None:
    torch.manual_seed(kernel * 10 + po)
    cin, cout, n = 3, 4, 96
    w, bias = torch.randn(cout, cin, kernel), torch.randn(cout)
    x = torch.randn(5, n, cin)  # (batch, positions, channels), as the form holds activations
    want = torch.nn.functional.conv1d(x.permute(0, 2, 1), w, bias, stride=stride, padding=kernel // 2)
    wb, d = cpu_layout._blocked(w, stride, kernel // 2, po)
    pi = stride * po
    got = torch.nn.functional.conv2d(x.reshape(5, 1, n // pi, pi * cin).permute(0, 3, 1, 2), wb, bias.repeat(po),
                                     padding=(0, d))
    got = got.permute(0, 2, 3, 1).reshape(5, -1, cout).permute(0, 2, 1)  # back to (batch, channels, positions)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_two_dimensional_and_unconvertible_networks_are_left_alone() -> None:
    mel = next(n for n in list_models() if model_config(n, 10).dims == 2)
    fast, why = cpu_layout.convert(create_model(mel, num_classes=10), model_config(mel, 10).to_dict())
    assert fast is None and "1-D" in why
    fast, why = cpu_layout.convert(create_model("drsn_cw_paper", num_classes=10), None)
    assert fast is None and "model_config" in why
    # weights of another shape than the config says
    fast, why = cpu_layout.convert(create_model("drsn_cw_wide", num_classes=10), model_config("drsn_cw_paper", 10).to_dict())
    assert fast is None and "do not match" in why


def test_the_runner_uses_the_form_only_when_it_agrees_and_says_so(monkeypatch) -> None:
    module, meta = load_artifact("bearing-cwru")
    val = load_validation("bearing-cwru")
    x = _real_windows(100)
    plain = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1)
    fast = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                  net_config=meta.model_config, validation=val)
    assert not plain.channels_last and fast.channels_last
    assert "channels-last" in fast.device_name and "channels-last" not in plain.device_name
    agree, dp, _ = fast.layout_check
    assert agree == 1.0 and dp < 1e-4
    p0, n0 = plain.infer(x)
    p1, n1 = fast.infer(x)
    assert (p0.argmax(1) == p1.argmax(1)).all()
    np.testing.assert_allclose(p1, p0, rtol=0, atol=1e-4)

    # one torch thread (the engine process's default on 2 cores): the units' tails compiled; on
    # more threads the form frozen in TorchScript, whose elementwise kernels use them all
    assert fast.compiled_tails == jit.available()
    assert ("compiled tails" in fast.device_name) == jit.available()
    two = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=2,
                 net_config=meta.model_config, validation=val, features=meta.features)
    with monkeypatch.context() as m:
        # the start-up timing of the two compiled forms, made deterministic here (the real timings
        # are the benchmarks' business): the whole pass costs 100 per window, the tails 600 per
        # batch plus 80 per window, so the tails catch up from batch 30 on, first at size 32
        m.setattr(cpu_layout, "_best_time",
                  lambda fn, x: (600 + 80 * x.shape[0]) if fn.__name__ == "tails" else 100 * x.shape[0])
        one = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                     net_config=meta.model_config, validation=val, features=meta.features)
    script = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                    net_config=meta.model_config, validation=val, cpu_layout="script")
    assert two.channels_last and not two.compiled_tails
    assert script.channels_last and not script.compiled_tails and "compiled" not in script.device_name
    # small batches: the whole pass compiled, used below the first size where the tails were as
    # fast; those batches go through it (its very numbers), the same labels as the module's
    assert one.small_below == (32 if jit.available() else 0) and not two.small_below and not script.small_below
    assert ("compiled whole below batch 32" in one.device_name) == jit.available()
    for b in (1, 5):
        pp, nn_ = plain.infer(x[:b])
        po, no = one.infer(x[:b])
        assert (pp.argmax(1) == po.argmax(1)).all()
        np.testing.assert_allclose(po, pp, rtol=0, atol=1e-4)
        np.testing.assert_allclose(no, nn_, rtol=0, atol=1e-3)
        if jit.available():
            with torch.inference_mode():
                pw, nw = cpu_layout.small_batches(one.module)(torch.from_numpy(np.ascontiguousarray(x[:b])))
            np.testing.assert_array_equal(po, pw.numpy())
            np.testing.assert_array_equal(no, nw.numpy())
    a, b = two.submit(x), one.submit(x)
    (pa, na), (pb, nb) = two.collect(a), one.collect(b)
    np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-5)
    np.testing.assert_allclose(nb, na, rtol=0, atol=1e-3)
    assert a.features is not None and a.features.shape == (len(x), meta.features)
    np.testing.assert_allclose(b.features, a.features, rtol=1e-4, atol=1e-4)

    off = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                 net_config=meta.model_config, validation=val, cpu_layout="off")
    assert not off.channels_last and off.layout_check is None

    # a whole compiled pass that fails its check is refused, with a note; the tails stay
    if jit.available():
        with monkeypatch.context() as m:
            m.setattr(cpu_layout.SmallBatches, "forward_features",
                      lambda self, x: (torch.zeros(x.shape[0], 10), torch.zeros(x.shape[0]), torch.zeros(x.shape[0], 16)))
            no_small = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                              net_config=meta.model_config, validation=val)
        assert no_small.compiled_tails and not no_small.small_below
        assert any("channels-last form for small batches refused" in n for n in no_small.notes)
        np.testing.assert_allclose(no_small.infer(x[:3])[0], p0[:3], rtol=0, atol=1e-4)

    # a form that fails the check is refused, with the figures in a note, and the module stays
    monkeypatch.setattr(cpu_layout, "MAX_PROB_DIFF", -1.0)
    refused = Runner(module, window=meta.window, device="cpu", max_batch=64, threads=1,
                     net_config=meta.model_config, validation=val)
    assert not refused.channels_last
    assert any("channels-last form refused" in n and "label agreement" in n for n in refused.notes)
    np.testing.assert_array_equal(refused.infer(x)[0], p0)
