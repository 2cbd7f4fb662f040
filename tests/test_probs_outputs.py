"""Both shipped models return probabilities; older files (logits, log-probabilities) still work.

The "old" artifacts here are the shipped networks saved without the ``Probabilities`` wrapper and
without ``outputs`` in their metadata: byte for byte the kind of file drsn-stream shipped before
(and a user may still have). Real windows: the CWRU excerpts the bearing simulator replays and the
FSDD takes the speech simulator replays, both shipped with the package.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.procrunner import ProcessRunner
from drsn_stream.engine.runner import Runner
from drsn_stream.models.artifact import META_KEY, load_artifact, load_validation, read_meta, save_artifact
from drsn_stream.models.outputs import is_wrapped, network_of
from drsn_stream.sources.sim import load_excerpts
from drsn_stream.speech.excerpts import load_excerpts as speech_excerpts

ROOT = Path(__file__).resolve().parents[1]
REEXPORT = ROOT / "tools" / "reexport.py"


def reexport(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``tools/reexport.py ARGS`` run by its ``main`` in this process: (exit code, stdout, stderr).
    Its start as a program is tested with every tool's (test_tools.py)."""
    spec = importlib.util.spec_from_file_location("reexport_tool", REEXPORT)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    capsys.readouterr()
    code = tool.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def real_windows(name: str) -> np.ndarray:
    """Raw real windows for a shipped model: 8 per CWRU fault class, or every FSDD take centred."""
    meta = read_meta(name)
    out = []
    if name == "bearing-cwru":
        for x in load_excerpts(meta.sample_rate).values():
            starts = np.linspace(0, len(x) - meta.window, 8).astype(int)
            out += [x[s : s + meta.window] for s in starts]
    else:
        words, _, _ = speech_excerpts()
        for _, clip in words:
            w = np.zeros(meta.window, np.float32)
            clip = clip[: meta.window]
            start = (meta.window - len(clip)) // 2
            w[start : start + len(clip)] = clip
            out.append(w)
    return np.stack(out).astype(np.float32)


def zip_meta(path: Path) -> tuple[str, dict]:
    with zipfile.ZipFile(path) as zf:
        entry = next(n for n in zf.namelist() if n.endswith("/extra/" + META_KEY))
        return entry, json.loads(zf.read(entry))


def old_form(name: str, dest: Path) -> Path:
    """The shipped network saved as drsn-stream saved it before: no wrapper, no ``outputs``."""
    module, meta = load_artifact(name)
    d = meta.to_dict()
    d.pop("outputs")
    d["site_notes"] = {"kept": "by a re-export"}  # a member this drsn-stream does not know
    from drsn_stream.engine.bench import eager_from_artifact

    net = network_of(eager_from_artifact(module, meta))
    return save_artifact(net, dest, d, validation=load_validation(name))


@pytest.mark.parametrize("name", ["bearing-cwru", "digits-fsdd"])
def test_shipped_models_return_probabilities(name):
    module, meta = load_artifact(name)
    assert meta.scores == "probs" and is_wrapped(module)
    x = normalize(real_windows(name), meta.normalization)
    with torch.no_grad():
        p, noise = module(torch.from_numpy(x))
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(len(x)), atol=1e-5)
    assert ((noise >= 0) & (noise <= 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "old_kind"), [("bearing-cwru", "logits"), ("digits-fsdd", "log_probs")])
def test_old_and_new_artifacts_give_the_same_labels_on_real_windows(name, old_kind, tmp_path):
    old = old_form(name, tmp_path / f"{name}-old.pt")
    omod, ometa = load_artifact(old)
    nmod, nmeta = load_artifact(name)
    assert ometa.scores == old_kind and not is_wrapped(omod)
    x = normalize(real_windows(name), nmeta.normalization)
    runs = {}
    for tag, mod, meta in (("old", omod, ometa), ("new", nmod, nmeta)):
        r = Runner(mod, window=meta.window, device="cpu", threads=1, scores=meta.scores,
                   net_config=meta.model_config, validation=load_validation(meta.source))
        runs[tag] = r.infer(x)
        if name == "bearing-cwru":  # the CPU's channels-last form is verified and used for both
            assert r.channels_last, r.notes
    (po, no), (pn, nn_) = runs["old"], runs["new"]
    labels_old = [ometa.labels[i] for i in po.argmax(1)]
    assert labels_old == [nmeta.labels[i] for i in pn.argmax(1)]
    np.testing.assert_allclose(pn, po, atol=1e-5)
    # each runner timed its two compiled forms at start and may run these 80 windows through the
    # other one: a zero rounded across its threshold moves the noise index by 1/(L*C)
    np.testing.assert_allclose(nn_, no, atol=1e-3)
    if name == "bearing-cwru":  # real fault windows: the model tells the classes apart
        assert len(set(labels_old)) >= 8
    # the engine process reads the meaning from the file itself (the shipped form goes through it
    # in every monitor test that runs one)
    child = ProcessRunner(str(old), window=nmeta.window, classes=len(nmeta.labels), max_batch=64, threads=1)
    try:
        child.warmup()
        got, _ = child.infer(x[:16])
    finally:
        child.close()
    np.testing.assert_allclose(got, po[:16], atol=1e-5)


@pytest.mark.slow
def test_reexport_wraps_once_keeps_metadata_and_shrinks_validation(tmp_path, capsys):
    old = old_form("bearing-cwru", tmp_path / "bearing-cwru.pt")
    x = normalize(real_windows("bearing-cwru"), read_meta(old).normalization)
    before = Runner(load_artifact(old)[0], window=2048, device="cpu", threads=1, scores="logits").infer(x)[0]
    _, d_old = zip_meta(old)
    for _ in range(2):  # the second run finds it wrapped and re-saves it as it is
        code, out, err = reexport(capsys, "--probs", "--max-validation", "32", str(old))
        assert code == 0, err
        assert "labels agree 100.00%" in out
    module, meta = load_artifact(old)
    assert meta.scores == "probs" and is_wrapped(module) and not is_wrapped(module.net)
    with torch.no_grad():
        after = module(torch.from_numpy(x))[0].numpy()
    assert [int(i) for i in after.argmax(1)] == [int(i) for i in before.argmax(1)]
    np.testing.assert_allclose(after, before, atol=1e-5)
    entry, d_new = zip_meta(old)
    assert entry == "archive/extra/drsn_stream/metadata.json"  # written from bytes: torch's own folder name
    assert d_new["site_notes"] == {"kept": "by a re-export"} and d_new["labels"] == d_old["labels"]
    assert d_new["created"] == d_old["created"]
    assert load_validation(old).shape == (32, 2048)
    assert d_new["training"]["validation_windows"]["count"] == 32


@pytest.mark.slow
def test_reexport_refuses_a_module_that_does_not_match_its_config(tmp_path, capsys):
    module, meta = load_artifact("bearing-cwru")
    d = meta.to_dict()
    d["model_config"]["stem_channels"] = 8  # the stored weights no longer fit the recipe
    bad = save_artifact(module, tmp_path / "bad.pt", d)
    code, _, err = reexport(capsys, "--probs", str(bad))
    assert code == 1 and "refused" in err and "model_config" in err
    assert "Traceback" not in err
