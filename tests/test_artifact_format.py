"""docs/artifact-format.md holds: shipped metadata validates against the JSON Schema, the first
output means what the metadata says, and the runner honours ``outputs.scores``."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from drsn_stream.engine.procrunner import ProcessRunner
from drsn_stream.engine.runner import Runner
from drsn_stream.errors import ArtifactError
from drsn_stream.models.artifact import (
    META_KEY,
    VALIDATION_KEY,
    ArtifactMeta,
    builtin_dir,
    list_artifacts,
    load_artifact,
    load_validation,
    read_meta,
    save_artifact,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "artifact-meta.schema.json").read_text())
ANNOTATIONS = {"$schema", "$id", "title", "description"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(x: Any, schema: dict, at: str = "$") -> list[str]:
    """Errors of ``x`` against the subset of JSON Schema 2020-12 the metadata schema uses.

    A keyword outside that subset raises, so the schema cannot grow a rule this check ignores.
    """
    errs: list[str] = []
    for key, rule in schema.items():
        if key in ANNOTATIONS:
            continue
        if key == "type":
            if rule == "integer":
                ok = isinstance(x, int) and not isinstance(x, bool)
            elif rule == "number":
                ok = isinstance(x, (int, float)) and not isinstance(x, bool)
            else:
                ok = isinstance(x, TYPES[rule])
            if not ok:
                return [f"{at}: expected {rule}, got {type(x).__name__}"]
        elif key == "const":
            if x != rule or type(x) is not type(rule):
                errs.append(f"{at}: must be {rule!r}")
        elif key == "enum":
            if not any(x == v and type(x) is type(v) for v in rule):
                errs.append(f"{at}: {x!r} not one of {rule}")
        elif key == "required":
            errs += [f"{at}: lacks {k!r}" for k in rule if isinstance(x, dict) and k not in x]
        elif key == "properties":
            if isinstance(x, dict):
                for k, sub in rule.items():
                    if k in x:
                        errs += validate(x[k], sub, f"{at}.{k}")
        elif key == "items":
            if isinstance(x, list):
                for i, v in enumerate(x):
                    errs += validate(v, rule, f"{at}[{i}]")
        elif key == "minItems":
            if isinstance(x, list) and len(x) < rule:
                errs.append(f"{at}: fewer than {rule} items")
        elif key == "uniqueItems":
            if rule and isinstance(x, list) and len({json.dumps(v, sort_keys=True) for v in x}) != len(x):
                errs.append(f"{at}: items repeat")
        elif key == "minLength":
            if isinstance(x, str) and len(x) < rule:
                errs.append(f"{at}: shorter than {rule}")
        elif key == "maxLength":
            if isinstance(x, str) and len(x) > rule:
                errs.append(f"{at}: longer than {rule}")
        elif key == "maxItems":
            if isinstance(x, list) and len(x) > rule:
                errs.append(f"{at}: more than {rule} items")
        elif key == "pattern":
            if isinstance(x, str) and not re.search(rule, x):
                errs.append(f"{at}: {x!r} does not match {rule}")
        elif key == "minimum":
            if isinstance(x, (int, float)) and x < rule:
                errs.append(f"{at}: below {rule}")
        elif key == "exclusiveMinimum":
            if isinstance(x, (int, float)) and x <= rule:
                errs.append(f"{at}: not above {rule}")
        elif key == "maximum":
            if isinstance(x, (int, float)) and x > rule:
                errs.append(f"{at}: above {rule}")
        elif key == "oneOf":
            matches = sum(1 for sub in rule if not validate(x, sub, at))
            if matches != 1:
                errs.append(f"{at}: matches {matches} of the oneOf alternatives, not exactly 1")
        else:
            raise AssertionError(f"schema keyword {key!r} at {at} is not checked by this validator")
    return errs


def shipped_meta(name: str) -> dict:
    """The metadata JSON of a shipped artifact, read from the zip as a non-Python reader would."""
    with zipfile.ZipFile(builtin_dir() / f"{name}.pt") as zf:
        entries = [n for n in zf.namelist() if n.endswith("/extra/" + META_KEY)]
        assert len(entries) == 1 and entries[0].count("/") == 3  # ARCHIVE/extra/drsn_stream/metadata.json
        return json.loads(zf.read(entries[0]))


SHIPPED = list_artifacts()


def test_both_models_ship():
    assert {"bearing-cwru", "digits-fsdd"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_metadata_validates_against_the_schema(name):
    meta = shipped_meta(name)
    assert validate(meta, SCHEMA) == []
    assert meta["name"] == name
    if "num_classes" in meta.get("model_config", {}):
        assert meta["model_config"]["num_classes"] == len(meta["labels"])
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(meta, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda m: m.pop("labels"), "lacks 'labels'"),
        (lambda m: m.update(labels=[]), "fewer than 1"),
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m.update(normalization={"kind": "minmax"}), "oneOf"),
        (lambda m: m.update(normalization={"kind": "rms"}), "oneOf"),
        (lambda m: m.update(outputs={"scores": "softmax"}), "scores"),
        (lambda m: m.update(window=0), "window"),
        (lambda m: m.update(sample_rate="12k"), "sample_rate"),
        (lambda m: m.update(window=2**40), "window"),
    ],
)
def test_schema_rejects_broken_metadata(change, where):
    meta = shipped_meta("bearing-cwru")
    change(meta)
    errors = validate(meta, SCHEMA)
    assert errors and any(where in e for e in errors), errors


@pytest.mark.parametrize("name", SHIPPED)
def test_first_output_means_what_the_metadata_says(name):
    module, meta = load_artifact(name)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, meta.window)).astype(np.float32))
    with torch.no_grad():
        first = module(x)[0].double()
    lse = torch.logsumexp(first, dim=1)
    if meta.scores == "log_probs":
        assert torch.allclose(lse, torch.zeros_like(lse), atol=1e-5)
    elif meta.scores == "probs":
        assert (first >= 0).all() and torch.allclose(first.sum(1), torch.ones(4, dtype=torch.float64), atol=1e-5)
    else:  # raw logits: neither normalized form, or the metadata should say so
        assert not torch.allclose(lse, torch.zeros_like(lse), atol=1e-3)
        assert not torch.allclose(first.sum(1), torch.ones(4, dtype=torch.float64), atol=1e-3)


def test_shipped_models_say_probabilities_and_older_files_keep_their_meaning():
    # docs/artifact-format.md: every shipped model's first output is probabilities ...
    for name in ("bearing-cwru", "digits-fsdd"):
        assert shipped_meta(name)["outputs"]["scores"] == "probs"
    # ... and a format-1 file without "outputs" means what it meant before
    bare = {k: v for k, v in shipped_meta("digits-fsdd").items() if k != "outputs"}
    assert ArtifactMeta(**{k: v for k, v in bare.items() if k in ArtifactMeta.__dataclass_fields__}).scores == "log_probs"
    bare = {k: v for k, v in shipped_meta("bearing-cwru").items() if k != "outputs"}
    assert ArtifactMeta(**{k: v for k, v in bare.items() if k in ArtifactMeta.__dataclass_fields__}).scores == "logits"


@pytest.mark.parametrize("name", SHIPPED)
def test_validation_windows_are_where_the_format_says(name):
    meta = shipped_meta(name)
    with zipfile.ZipFile(builtin_dir() / f"{name}.pt") as zf:
        entries = [n for n in zf.namelist() if n.endswith("/extra/" + VALIDATION_KEY)]
        if entries:
            with zf.open(entries[0]) as f, np.load(f, allow_pickle=False) as z:
                assert z["windows"].dtype == np.float16 and z["windows"].shape[1] == meta["window"]
                count = z["windows"].shape[0]
            described = meta.get("training", {}).get("validation_windows", {}).get("count")
            assert described in (None, count)
            assert load_validation(name).shape == (count, meta["window"])
        else:
            assert load_validation(name) is None


class _ProbsNet(nn.Module):
    """A model whose first output is already probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.softmax(self.fc(x) * 4.0, dim=1), x.abs().mean(dim=1)


def _probs_artifact(tmp_path: Path, outputs: dict | None) -> Path:
    torch.manual_seed(0)
    meta = {"name": "probs-test", "model": "linear", "labels": ["a", "b", "c"], "sample_rate": 1000,
            "window": 16, "hop": 8, "input": {"kind": "raw"}, "normalization": {"kind": "zscore"}}
    if outputs is not None:
        meta["outputs"] = outputs
    return save_artifact(_ProbsNet(), tmp_path / "probs.pt", meta)


def test_runner_uses_probabilities_as_they_are_when_the_metadata_says_so(tmp_path):
    path = _probs_artifact(tmp_path, {"scores": "probs"})
    module, meta = load_artifact(path)
    assert meta.scores == "probs"
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    probs, _ = Runner(module, window=16, device="cpu", threads=1, scores=meta.scores).infer(x)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    # without the field the runner would take them for logits and flatten them
    flat, _ = Runner(module, window=16, device="cpu", threads=1).infer(x)
    assert np.abs(flat - want).max() > 0.05
    child = ProcessRunner(str(path), window=16, classes=3, max_batch=8, threads=1)
    try:
        child.warmup()
        got, _ = child.infer(x)
    finally:
        child.close()
    np.testing.assert_allclose(got, want, atol=1e-6)  # the engine process reads the field too


def test_outputs_field_is_checked(tmp_path):
    with pytest.raises(ArtifactError, match="outputs"):
        _probs_artifact(tmp_path, {"scores": "softmax"})
    with zipfile.ZipFile(_probs_artifact(tmp_path, None)) as zf:
        raw = zf.read(next(n for n in zf.namelist() if n.endswith("/extra/" + META_KEY)))
    assert "outputs" not in json.loads(raw)  # absent unless given: the meaning then follows from the model


def test_monitor_passes_the_meaning_to_its_runner(tmp_path):
    from drsn_stream.app.pipeline import Pipeline, RunConfig

    path = _probs_artifact(tmp_path, {"scores": "probs"})
    pipe = Pipeline(RunConfig(sources=("sim",), model=str(path), device="cpu", engine_process=False, threads=1))
    assert pipe.runner.scores == "probs"


@pytest.mark.parametrize("key, value", [("window", 2**40), ("hop", 2**40), ("sample_rate", 2**40), ("window", True),
                                        ("labels", ["normal", "\x1b[2Jfault"]), ("labels", [f"c{i}" for i in range(5000)])])
def test_a_damaged_artifacts_sizes_are_refused_before_anything_is_built(tmp_path, key, value):
    """Every stream's buffers are sized from the window and the hop: an artifact saying 2^40
    stopped the monitor with a traceback as it was built (a window) or blamed its source (a hop).
    Now reading the metadata refuses it, naming the key and its bound."""
    src = builtin_dir() / "bearing-cwru.pt"
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/extra/" + META_KEY):
                data = json.dumps({**json.loads(data), key: value}).encode()
            zout.writestr(item, data)
    says = "must be at most 4,096 names of 1-128 printable" if key == "labels" else "must be a positive integer of at most"
    with pytest.raises(ArtifactError, match=f"metadata '{key}' {says}"):
        read_meta(bad)


def _rewritten(tmp_path: Path, change) -> Path:
    """A copy of the shipped bearing model whose metadata JSON text is ``change(text)``."""
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(builtin_dir() / "bearing-cwru.pt") as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/extra/" + META_KEY):
                data = change(data.decode()).encode()
            zout.writestr(item, data)
    return bad


def test_metadata_with_an_integer_python_will_not_parse_is_refused_in_one_line(tmp_path):
    # json.loads raises a bare ValueError (not JSONDecodeError) for an integer of over 4,300
    # digits: the monitor printed a traceback as it read the model
    from drsn_stream.models.meta import read_meta_dict

    bad = _rewritten(tmp_path, lambda text: text.replace('"window": 2048', '"window": ' + "9" * 5000))
    for read in (read_meta, read_meta_dict):
        with pytest.raises(ArtifactError, match="metadata is not valid JSON .*4300 digits.*re-export"):
            read(bad)


@pytest.mark.parametrize("change, says", [
    (lambda u: u["means"][3].__setitem__(0, float("nan")), "NaN or infinite"),
    (lambda u: u["whiteners"][0][0].__setitem__(0, 0.0), "not a Cholesky factor"),
    (lambda u: u.update(means=[m[:8] for m in u["means"]],
                        whiteners=[[r[:8] for r in w[:8]] for w in u["whiteners"]]), "10 classes of 8 features, the model has 10 of 16"),
])
def test_damaged_unknown_statistics_are_refused_when_the_monitor_is_built(tmp_path, change, says):
    # A NaN in a class's mean made that class's distances NaN; a singular whitener made them 0
    # (never "unknown"); 8 features against the model's 16 failed every batch in the output
    # thread. The monitor refuses the artifact as it starts instead.
    from drsn_stream.app.pipeline import Pipeline, RunConfig

    def damage(text):
        meta = json.loads(text)
        change(meta["unknown"])
        return json.dumps(meta)

    bad = _rewritten(tmp_path, damage)
    with pytest.raises(ArtifactError, match=f"metadata 'unknown' is malformed .*{says}"):
        Pipeline(RunConfig(sources=("sim",), model=str(bad), device="cpu", engine_process=False, threads=1))
