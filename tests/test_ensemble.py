"""Ensembles: several networks answering as one, through TorchScript and the artifact format."""

from __future__ import annotations

import numpy as np
import torch

from drsn_stream.engine import cpu_layout
from drsn_stream.models import build_from_config, create_model, model_config
from drsn_stream.models.artifact import load_artifact, load_validation, save_artifact, script_model
from drsn_stream.models.ensemble import Ensemble


def _members(k: int = 2) -> list[torch.nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(create_model("drsn_cw_paper", num_classes=10).eval())
    return out


def test_an_ensemble_averages_its_members_probabilities_and_noise_index() -> None:
    members = _members(3)
    ens = Ensemble(members).eval()
    x = torch.from_numpy(np.ascontiguousarray(load_validation("bearing-cwru")[:32], dtype=np.float32))
    with torch.inference_mode():
        outs = [m(x) for m in members]
        logits, noise = script_model(ens)(x)
    mean_p = torch.stack([torch.softmax(lg, 1) for lg, _ in outs]).mean(0)
    torch.testing.assert_close(torch.softmax(logits, 1), mean_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(noise, torch.stack([n for _, n in outs]).mean(0), rtol=0, atol=1e-6)
    # the members disagree somewhere, so the ensemble is not just one of them
    assert not torch.allclose(torch.softmax(outs[0][0], 1), torch.softmax(outs[1][0], 1), atol=1e-3)


def test_an_ensemble_artifact_round_trips_and_rebuilds_from_its_metadata(tmp_path) -> None:
    ens = Ensemble(_members(2)).eval()
    cfg = {**model_config("drsn_cw_paper", 10).to_dict(), "ensemble": 2}
    meta = {"name": "ens", "model": "drsn_cw_paper", "labels": [f"c{i}" for i in range(10)], "sample_rate": 12000,
            "window": 2048, "hop": 512, "input": {"kind": "raw"}, "normalization": {"kind": "zscore"},
            "model_config": cfg}
    path = save_artifact(ens, tmp_path / "ens.pt", meta)
    module, loaded = load_artifact(path)
    assert loaded.model_config["ensemble"] == 2
    rebuilt = build_from_config(loaded.model_config)
    assert isinstance(rebuilt, Ensemble) and rebuilt.n_members == 2
    rebuilt.load_state_dict(module.state_dict())  # every key and shape matches
    x = torch.from_numpy(np.ascontiguousarray(load_validation("bearing-cwru")[:16], dtype=np.float32))
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval()(x)[0], module(x)[0], rtol=0, atol=1e-5)
    # the CPU engine's channels-last form converts single networks only
    fast, why = cpu_layout.convert(module, loaded.model_config)
    assert fast is None and "ensemble" in why
