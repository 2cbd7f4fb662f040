"""Model artifacts: ONE TorchScript file that carries everything needed to run the model.

The metadata (versioned JSON) travels in the TorchScript archive's extra files under
``META_KEY``: model name, labels, sample rate, window and hop, input kind, normalization,
training data and recipe (with the held-out part of each recording), measured accuracy and the
torch version. ``load_artifact`` validates all of it and runs one forward pass, so a truncated,
corrupt or foreign file gives one clear ``ArtifactError`` and nothing half-loads. Reading the
metadata alone needs no torch: ``models.meta``.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from drsn_stream.config import write_atomic
from drsn_stream.errors import ArtifactError
from drsn_stream.models.meta import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    SCORE_KINDS,
    VALIDATION_KEY,
    ArtifactMeta,
    _meta_from_zip,
    _validate,
    builtin_dir,
    damaged_member,
    list_artifacts,
    load_validation,
    read_meta,
    read_meta_dict,
    resolve_artifact,
)
from drsn_stream.models.outputs import Probabilities, is_wrapped
from drsn_stream.models.registry import build_from_config

# The metadata half (``models.meta``, torch-free) is re-exported: one module to import for both.
__all__ = [
    "FORMAT", "FORMAT_VERSION", "META_KEY", "SCORE_KINDS", "VALIDATION_KEY", "ArtifactMeta", "builtin_dir",
    "eager_from_artifact", "list_artifacts", "load_artifact", "load_validation", "quiet_torchscript",
    "read_meta", "read_meta_dict", "resolve_artifact", "save_artifact", "script_model",
]


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Filters TorchScript's own deprecation notice (and nothing else) around our jit calls: a
    DeprecationWarning in torch 2.13, a FutureWarning in later releases."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, message=r".*TorchScript.*|.*torch\.jit.*")
        yield


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` with only TorchScript's own DeprecationWarning filtered."""
    with quiet_torchscript():
        return torch.jit.script(model)


def save_artifact(
    model: nn.Module,
    path: str | Path,
    meta: ArtifactMeta | dict[str, Any],
    *,
    validation: np.ndarray | None = None,
    probs: bool = False,
) -> Path:
    """Scripts ``model`` (in eval mode) and writes it with its metadata to ``path``.

    ``validation``: optional (m, window) normalized windows from the validation split; the GPU
    runner checks fp16 against fp32 on them before it uses half precision. Stored as float16.
    ``probs``: wrap the network (logits or log-probabilities out) in ``Probabilities``, so the
    first output is probabilities. A wrapped model is always saved with ``outputs.scores`` =
    ``probs``, so the file cannot say otherwise.
    Returns the path written. Raises ArtifactError if the metadata is incomplete, WriteError
    (an OSError too) if the file cannot be written.
    """
    if isinstance(meta, ArtifactMeta):
        d = meta.to_dict()
    else:
        d = dict(meta)
    if probs and not is_wrapped(model):
        model = Probabilities(model)
    if is_wrapped(model):
        d["outputs"] = {**(d.get("outputs") or {}), "scores": "probs"}
    d.setdefault("format", FORMAT)
    d.setdefault("format_version", FORMAT_VERSION)
    d["torch_version"] = torch.__version__
    d.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _validate(d, str(path))
    was_training = model.training
    model.eval()
    scripted = script_model(model.cpu())
    model.train(was_training)
    extra = {META_KEY: json.dumps(d, indent=1, sort_keys=True)}
    if validation is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, windows=np.asarray(validation, dtype=np.float16))
        extra[VALIDATION_KEY] = buf.getvalue()
    out = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(scripted, out, _extra_files=extra)
    return write_atomic(path, out.getvalue())


def load_artifact(
    path_or_name: str | Path, *, map_location: str | torch.device = "cpu", check: bool = True
) -> tuple[torch.jit.ScriptModule, ArtifactMeta]:
    """Loads an artifact: ``(module in eval mode, ArtifactMeta)``.

    ``check`` runs one forward pass on a zero window and verifies the output shapes against the
    labels, so a file whose model and metadata disagree is refused here, not in the live monitor.
    """
    path = resolve_artifact(path_or_name)
    meta = _meta_from_zip(path)
    extra = {META_KEY: ""}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    bad = damaged_member(io.BytesIO(data))
    if bad is not None:  # TorchScript would load it and run the changed weights without a word
        raise ArtifactError(f"{path}: damaged: {bad} does not match the checksum it was saved with (a bad copy or "
                            "disk?); re-copy or re-export it")
    try:
        with quiet_torchscript():
            module = torch.jit.load(io.BytesIO(data), map_location=map_location, _extra_files=extra)
    # TorchScript meets damaged bytes with many exceptions: RuntimeError, IndexError ("not in the
    # map"), MemoryError (std::bad_alloc: a length read from the file; a model is megabytes), ...
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: TorchScript could not load the model ({first}); re-export it") from None
    module.eval()
    if check:
        try:
            with torch.no_grad():
                out = module(torch.zeros(2, meta.window, device=map_location))
            logits, noise = out
            ok = tuple(logits.shape) == (2, meta.num_classes) and tuple(noise.shape) == (2,)
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign model is the file's fault
            raise ArtifactError(f"{path}: the model does not run on a window of {meta.window} samples ({exc})") from None
        if not ok:
            raise ArtifactError(
                f"{path}: the model returns shapes {tuple(logits.shape)}, {tuple(noise.shape)} but the metadata "
                f"names {meta.num_classes} labels; re-export it"
            )
        if meta.features:
            try:
                with torch.no_grad():
                    feats = module.forward_features(torch.zeros(2, meta.window, device=map_location))[2]
                ok = tuple(feats.shape) == (2, meta.features)
            except Exception:  # noqa: BLE001 - no such method, or it fails: the file's fault
                ok = False
            if not ok:
                raise ArtifactError(f"{path}: the metadata promises {meta.features} pooled features but the module's "
                                    "forward_features does not give them; re-run tools/fit_unknown.py on it")
    return module, meta


def eager_from_artifact(module: torch.jit.ScriptModule, meta: ArtifactMeta) -> nn.Module:
    """Rebuilds the eager PyTorch model of an artifact: its network, inside the ``Probabilities``
    wrapper when the artifact has one, so the eager model returns what the artifact returns."""
    if not meta.model_config:
        raise ValueError(f"{meta.name}: artifact carries no model_config; cannot rebuild the eager model")
    eager = build_from_config(meta.model_config)
    if is_wrapped(module):
        eager = Probabilities(eager)
    eager.load_state_dict(module.state_dict())
    return eager.eval()
