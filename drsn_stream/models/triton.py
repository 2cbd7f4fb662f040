"""Export an artifact as a Triton Inference Server model repository (PyTorch/libtorch backend).

    drsn-stream export --triton DIR --model bearing-cwru [--max-batch-size 256] [--gpu]

writes::

    DIR/NAME/config.pbtxt      the model configuration (platform pytorch_libtorch)
    DIR/NAME/labels.txt        one label a line; OUTPUT__0's label_filename
    DIR/NAME/1/model.pt        TorchScript: raw samples in, probabilities and noise index out

``model.pt`` wraps the artifact's network in ``TritonWrapper``, which applies the artifact's
per-window normalization (the same formulas and epsilons as ``drsn_stream/dsp/normalize.py``)
and turns the first output into probabilities as the metadata's ``outputs.scores`` says, so a
Triton client sends raw samples at the artifact's sample rate and gets probabilities back. It
also carries drsn-stream metadata (normalization ``none``, scores ``probs``), so drsn-stream and
the C++ example read it as an ordinary artifact. docs/artifact-format.md, section Triton.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from drsn_stream.config import write_atomic
from drsn_stream.dsp.normalize import KINDS, RMS_FLOOR, ZSCORE_EPS
from drsn_stream.errors import ArtifactError, ConfigError
from drsn_stream.models.artifact import (
    META_KEY,
    SCORE_KINDS,
    ArtifactMeta,
    load_artifact,
    quiet_torchscript,
    read_meta_dict,
)

VERSION = "1"  # the model version folder Triton serves
LABEL_FILE = "labels.txt"
DEFAULT_MAX_BATCH = 256
DEFAULT_QUEUE_DELAY_US = 100
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class TritonWrapper(nn.Module):
    """Raw windows ``(batch, window)`` -> ``(probabilities (batch, classes), noise index (batch,))``.

    Normalization constants are stored as float32-exact Python floats, so scaling by them is
    scaling by the same float32 values ``normalize`` uses; sums are float64 like there.
    """

    def __init__(self, model: nn.Module, *, window: int, sample_rate: int, normalization: dict[str, Any],
                 scores: str) -> None:
        super().__init__()
        kind = str(normalization.get("kind", "none"))
        if kind not in KINDS:
            raise ArtifactError(f"unknown normalization kind {kind!r} in the artifact; valid: {', '.join(KINDS)}")
        if scores not in SCORE_KINDS:
            raise ArtifactError(f"unknown scores kind {scores!r} in the artifact; valid: {', '.join(SCORE_KINDS)}")
        self.model = model
        self.window = int(window)
        self.sample_rate = int(sample_rate)
        self.kind = kind
        self.scores = scores
        self.shift = 0.0
        self.scale = 1.0
        self.floor = 1.0
        self.eps = float(ZSCORE_EPS)
        if kind == "affine":
            mean, std = float(normalization["mean"]), float(normalization["std"])
            if not std > 0:
                raise ArtifactError(f"affine normalization needs std > 0, got {std}")
            self.shift = float(np.float32(mean))
            self.scale = float(np.float32(1.0 / std))
        elif kind == "rms":
            self.floor = float(normalization.get("floor", RMS_FLOOR))
            if not self.floor > 0:
                raise ArtifactError(f"rms normalization needs floor > 0, got {self.floor}")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or x.size(1) != self.window:
            raise ValueError(
                "expected raw windows of shape (batch, " + str(self.window) + ") at " + str(self.sample_rate)
                + " Hz, got shape " + str(x.shape) + "; cut the signal into windows of " + str(self.window)
                + " samples (resample it to " + str(self.sample_rate) + " Hz first)"
            )
        x = x.to(torch.float32)
        n = x.size(1)
        if self.kind == "zscore":
            mean = x.sum(dim=1, keepdim=True, dtype=torch.float64) / n
            x = x - mean.to(torch.float32)
            var = (x.to(torch.float64) * x.to(torch.float64)).sum(dim=1, keepdim=True) / n
            x = x * (1.0 / (torch.sqrt(var) + self.eps)).to(torch.float32)
        elif self.kind == "rms":
            xd = x.to(torch.float64)
            level = torch.sqrt((xd * xd).sum(dim=1, keepdim=True) / n)
            x = x * (1.0 / torch.clamp(level, min=self.floor)).to(torch.float32)
        elif self.kind == "affine":
            x = (x - self.shift) * self.scale
        out = self.model(x)
        # forward returns (scores, noise index, ...): later outputs (e.g. pooled features) are not ours
        first = out[0].to(torch.float32)
        noise = out[1].to(torch.float32)
        if self.scores == "logits":
            probs = torch.softmax(first, dim=1)
        elif self.scores == "log_probs":
            probs = torch.exp(first)
        else:
            probs = first
        return probs, noise


@dataclass
class TritonExport:
    """What ``export_triton`` wrote."""

    model_dir: Path
    config: Path
    model: Path
    labels: Path
    meta: ArtifactMeta


def check_name(name: str) -> str:
    if not name or not set(name) <= _NAME_OK or name.startswith("."):
        raise ConfigError(
            f"Triton model name {name!r} must be non-empty and use only letters, digits, '-', '_' and '.'; "
            "give another with --triton-name"
        )
    return name


def config_pbtxt(
    name: str,
    meta: ArtifactMeta,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    gpu: bool = False,
    instances: int = 1,
) -> str:
    """The model configuration in protobuf text format (Triton's ModelConfig)."""
    if max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be at least 1, not {max_batch_size}")
    if queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be 0 or more, not {queue_delay_us}")
    if instances < 1:
        raise ConfigError(f"--instances must be at least 1, not {instances}")
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    return f"""\
# Written by `drsn-stream export --triton` from {meta.name} ({meta.model}).
# INPUT__0: raw samples at {meta.sample_rate} Hz, {meta.window} per window (resample first);
# the model normalizes each window ({meta.normalization.get("kind", "none")}) itself.
# OUTPUT__0: class probabilities ({LABEL_FILE}); OUTPUT__1: noise index (0-1), one per window.
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: {int(max_batch_size)}
input [
  {{
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ {int(meta.window)} ]
  }}
]
output [
  {{
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ {len(meta.labels)} ]
    label_filename: "{LABEL_FILE}"
  }},
  {{
    name: "OUTPUT__1"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {int(queue_delay_us)}
}}
instance_group [
  {{
    count: {int(instances)}
    kind: {kind}
  }}
]
"""


def wrap_artifact(model_or_path: str | Path) -> tuple[torch.jit.ScriptModule, ArtifactMeta]:
    """The scripted ``TritonWrapper`` around an artifact, and the artifact's metadata."""
    # check=False: the wrapper is checked below on the outputs it keeps, whatever else forward returns
    module, meta = load_artifact(model_or_path, check=False)
    wrapper = TritonWrapper(module, window=meta.window, sample_rate=meta.sample_rate,
                            normalization=meta.normalization, scores=meta.scores)
    with quiet_torchscript():
        scripted = torch.jit.script(wrapper.eval())
    try:
        with torch.no_grad():
            probs, noise = scripted(torch.zeros(2, meta.window))
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign model is the file's fault
        raise ArtifactError(f"{meta.source}: the model does not run on a window of {meta.window} samples ({exc})") from None
    if tuple(probs.shape) != (2, meta.num_classes) or tuple(noise.shape) != (2,):
        raise ArtifactError(
            f"{meta.source}: the model returns shapes {tuple(probs.shape)}, {tuple(noise.shape)} but the metadata "
            f"names {meta.num_classes} labels; re-export it"
        )
    return scripted, meta


# Metadata members whose statistics are of outputs the wrapper does not return (pooled features).
_OF_DROPPED_OUTPUTS = ("unknown",)


def wrapper_meta(meta: ArtifactMeta, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata model.pt carries: the artifact's (``stored``: as stored, with members this
    drsn-stream does not know), with what the wrapper now does itself. The wrapper returns the
    first two outputs only, so other ``outputs`` members and what depends on them are dropped."""
    d = dict(stored) if stored is not None else meta.to_dict()
    dropped = sorted(k for k in (d.get("outputs") or {}) if k != "scores")
    d["normalization"] = {"kind": "none"}
    d["outputs"] = {"scores": "probs"}
    d["triton"] = {"wraps": meta.name, "normalization_inside": meta.normalization, "scores_inside": meta.scores}
    if dropped:
        d["triton"]["dropped"] = dropped + [k for k in _OF_DROPPED_OUTPUTS if k in d]
        for k in _OF_DROPPED_OUTPUTS:
            d.pop(k, None)
    d["torch_version"] = torch.__version__
    return d


def export_triton(
    repository: str | Path,
    model: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    gpu: bool = False,
    instances: int = 1,
) -> TritonExport:
    """Writes ``repository/NAME/{config.pbtxt, labels.txt, 1/model.pt}``; NAME defaults to the artifact's name.

    Files of an earlier export are replaced; other version folders in ``NAME`` are left alone.
    """
    scripted, meta = wrap_artifact(model)
    name = check_name(name or meta.name)
    bad = [lab for lab in meta.labels if "\n" in lab or "\r" in lab]
    if bad:
        raise ArtifactError(f"{meta.source}: labels {bad!r} contain line breaks and cannot go into {LABEL_FILE}")
    text = config_pbtxt(name, meta, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us,
                        gpu=gpu, instances=instances)
    model_dir = Path(repository) / name
    version_dir = model_dir / VERSION
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with quiet_torchscript():
            torch.jit.save(scripted, buf, _extra_files={META_KEY: json.dumps(wrapper_meta(meta, read_meta_dict(model)), indent=1)})
        pt = write_atomic(version_dir / "model.pt", buf.getvalue())
        labels = write_atomic(model_dir / LABEL_FILE, ("\n".join(meta.labels) + "\n").encode())
        config = write_atomic(model_dir / "config.pbtxt", text.encode())
    except OSError as exc:
        raise ConfigError(f"cannot write the Triton repository under {model_dir} ({exc.strerror or exc}); "
                          "choose a writable folder with --triton") from None
    return TritonExport(model_dir=model_dir, config=config, model=pt, labels=labels, meta=meta)


def window_seconds(meta: ArtifactMeta) -> str:
    return f"{meta.window} samples = {meta.window / meta.sample_rate:.3g} s at {meta.sample_rate} Hz"


__all__ = ["TritonExport", "TritonWrapper", "config_pbtxt", "export_triton", "window_seconds", "wrap_artifact"]
