"""Model artifacts: ONE TorchScript file that carries everything needed to run the model.

The metadata (versioned JSON) travels in the TorchScript archive's extra files under
``META_KEY``: model name, labels, sample rate, window and hop, input kind, normalization,
training data and recipe (with the held-out part of each recording), measured accuracy and the
torch version. ``load_artifact`` validates all of it and runs one forward pass, so a truncated,
corrupt or foreign file gives one clear ``ArtifactError`` and nothing half-loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from drsn_stream.errors import ArtifactError
from drsn_stream.models.outputs import Probabilities, is_wrapped
from drsn_stream.models.registry import build_from_config

META_KEY = "drsn_stream/metadata.json"
VALIDATION_KEY = "drsn_stream/validation.npz"
FORMAT = "drsn-stream-artifact"
FORMAT_VERSION = 1
_BUILTIN_PACKAGE = "drsn_stream.artifacts"
_REQUIRED = ("name", "model", "labels", "sample_rate", "window", "hop", "input", "normalization")
# What the first output of forward() holds (metadata "outputs": {"scores": ...}); docs/artifact-format.md
SCORE_KINDS = ("logits", "log_probs", "probs")


@dataclass
class ArtifactMeta:
    """What an artifact says about itself. See the module docstring."""

    name: str
    model: str
    labels: list[str]
    sample_rate: int
    window: int
    hop: int
    input: dict[str, Any] = field(default_factory=lambda: {"kind": "raw"})
    normalization: dict[str, Any] = field(default_factory=lambda: {"kind": "zscore"})
    model_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    torch_version: str = ""
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    # optional: {"scores": one of SCORE_KINDS, "features": F when the module has forward_features}
    outputs: dict[str, Any] = field(default_factory=dict)
    unknown: dict[str, Any] = field(default_factory=dict)  # optional: models/ood.py's UnknownDetector
    source: str = ""  # where it was loaded from (not stored)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        if not d["outputs"]:
            d.pop("outputs")  # absent: the first output's meaning follows from the model (``scores``)
        if not d["unknown"]:
            d.pop("unknown")
        return d

    @property
    def features(self) -> int:
        """Width of the pooled features ``forward_features`` returns; 0: the module has none."""
        return int((self.outputs or {}).get("features", 0) or 0)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def window_seconds(self) -> float:
        return self.window / float(self.sample_rate)

    @property
    def scores(self) -> str:
        """What the first output holds: ``outputs["scores"]`` when the metadata says, else what the
        artifacts of format 1 return: log-probabilities from an ensemble, logits from one network."""
        kind = (self.outputs or {}).get("scores")
        if kind is not None:
            return str(kind)
        return "log_probs" if int(self.model_config.get("ensemble", 1) or 1) > 1 else "logits"


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
    Returns the path written. Raises ArtifactError if the metadata is incomplete.
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    extra = {META_KEY: json.dumps(d, indent=1, sort_keys=True)}
    if validation is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, windows=np.asarray(validation, dtype=np.float16))
        extra[VALIDATION_KEY] = buf.getvalue()
    with quiet_torchscript():
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    tmp.replace(path)
    return path


def _validate(d: dict[str, Any], where: str) -> None:
    if d.get("format") != FORMAT:
        raise ArtifactError(f"{where}: not a drsn-stream artifact (format {d.get('format')!r})")
    version = d.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: artifact format version {version!r} is newer than this drsn-stream understands "
            f"({FORMAT_VERSION}); upgrade drsn-stream"
        )
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ArtifactError(f"{where}: metadata lacks {', '.join(missing)}; re-export the model")
    if not isinstance(d["labels"], list) or not d["labels"] or not all(isinstance(x, str) for x in d["labels"]):
        raise ArtifactError(f"{where}: metadata 'labels' must be a non-empty list of strings")
    for k in ("sample_rate", "window", "hop"):
        if not isinstance(d[k], int) or d[k] <= 0:
            raise ArtifactError(f"{where}: metadata {k!r} must be a positive integer, not {d[k]!r}")
    outputs = d.get("outputs", {})
    features = outputs.get("features", 0) if isinstance(outputs, dict) else 0
    if not isinstance(features, int) or features < 0:
        raise ArtifactError(f"{where}: metadata outputs.features must be a count of features, not {features!r}")
    if not isinstance(outputs, dict) or outputs.get("scores", "logits") not in SCORE_KINDS:
        raise ArtifactError(
            f"{where}: metadata 'outputs' must be an object whose 'scores' is one of {', '.join(SCORE_KINDS)}, "
            f"not {outputs!r}; re-export the model"
        )


def builtin_dir() -> Path:
    """Folder of the built-in artifacts inside the installed package (read-only)."""
    return Path(str(resources.files(_BUILTIN_PACKAGE)))


def list_artifacts() -> list[str]:
    """Names of the built-in artifacts."""
    try:
        root = resources.files(_BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        return []
    return sorted(p.name[: -len(".pt")] for p in root.iterdir() if p.name.endswith(".pt"))


def resolve_artifact(path_or_name: str | Path) -> Path:
    """A built-in name (``bearing-cwru``) or a path -> the file's path; clear error if neither."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    name = str(path_or_name)
    if "/" not in name and not name.endswith(".pt"):
        candidate = builtin_dir() / f"{name}.pt"
        if candidate.is_file():
            return candidate
        raise ArtifactError(
            f"no built-in model named {name!r}; built-ins: {', '.join(list_artifacts()) or 'none'}"
            " (or give the path of a .pt artifact)"
        )
    raise ArtifactError(f"model file {name} does not exist; give a built-in name or the path of an exported .pt")


def read_meta(path_or_name: str | Path) -> ArtifactMeta:
    """Reads and validates only the metadata of an artifact (no model is built)."""
    path = resolve_artifact(path_or_name)
    return _meta_from_zip(path)


def read_meta_dict(path_or_name: str | Path) -> dict[str, Any]:
    """The metadata JSON as stored, validated, with every member (also ones ``ArtifactMeta`` does
    not know): for code that rewrites an artifact and must keep what newer writers added."""
    path = resolve_artifact(path_or_name)
    d = json.loads(_raw_meta(path))
    _validate(d, str(path))
    return d


def _meta_from_zip(path: Path) -> ArtifactMeta:
    return _meta_from_json(_raw_meta(path), path)


def _raw_meta(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + META_KEY)]
            if not names:
                raise ArtifactError(
                    f"{path}: a TorchScript/zip file without drsn-stream metadata; export it with `drsn-stream export`"
                )
            raw = zf.read(names[0])
    except zipfile.BadZipFile:
        raise ArtifactError(
            f"{path}: not a TorchScript archive (truncated or corrupt file?); re-export or re-copy it"
        ) from None
    except (OSError, zipfile.LargeZipFile, RuntimeError) as exc:
        raise ArtifactError(f"{path}: cannot read the archive ({exc}); re-export or re-copy it") from None
    return raw


def _meta_from_json(raw: bytes | str, path: Path) -> ArtifactMeta:
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: metadata is not valid JSON ({exc}); re-export the model") from None
    if not isinstance(d, dict):
        raise ArtifactError(f"{path}: metadata must be a JSON object")
    _validate(d, str(path))
    known = {f for f in ArtifactMeta.__dataclass_fields__}
    meta = ArtifactMeta(**{k: v for k, v in d.items() if k in known})
    meta.source = str(path)
    return meta


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
        with quiet_torchscript():
            module = torch.jit.load(io.BytesIO(data), map_location=map_location, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
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


def load_validation(path_or_name: str | Path) -> np.ndarray | None:
    """The artifact's validation windows (m, window) float32, or None when it carries none."""
    path = resolve_artifact(path_or_name)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + VALIDATION_KEY)]
            if not names:
                return None
            with np.load(io.BytesIO(zf.read(names[0])), allow_pickle=False) as z:
                return z["windows"].astype(np.float32)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ArtifactError(f"{path}: refused: its validation windows ({VALIDATION_KEY}) hold pickled Python "
                                "objects; drsn-stream never unpickles a file; re-export the model") from None
        return None
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
