"""What a model artifact says about itself, read without torch.

An artifact is a TorchScript archive (a zip); its metadata JSON and validation windows are extra
files in it, so the monitor's own process (which hands the model to an engine process) and tools
that only list or inspect models read them with ``zipfile`` and never import torch. Loading the
model itself is ``models.artifact.load_artifact``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np

from drsn_stream.errors import ArtifactError

META_KEY = "drsn_stream/metadata.json"
VALIDATION_KEY = "drsn_stream/validation.npz"
FORMAT = "drsn-stream-artifact"
FORMAT_VERSION = 1
_BUILTIN_PACKAGE = "drsn_stream.artifacts"
_REQUIRED = ("name", "model", "labels", "sample_rate", "window", "hop", "input", "normalization")
# what a damaged or planted artifact could say: every stream's buffers are sized from the window
# and the hop (2^40 failed as the monitor was built, with a traceback), rates as the wire's
META_MOST = {"sample_rate": 1_000_000, "window": 1 << 20, "hop": 1 << 24}
MAX_LABELS = 4096
MAX_LABEL_CHARS = 128
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
    # labels size every stream's decision tables and are shown on operators' terminals
    if len(d["labels"]) > MAX_LABELS or not all(map(label_ok, d["labels"])):
        raise ArtifactError(f"{where}: metadata 'labels' must be at most {MAX_LABELS:,} names of 1-{MAX_LABEL_CHARS} "
                            "printable characters (no control characters); re-export the model")
    for k in ("sample_rate", "window", "hop"):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or not 0 < d[k] <= META_MOST[k]:
            raise ArtifactError(f"{where}: metadata {k!r} must be a positive integer of at most {META_MOST[k]:,}, "
                                f"not {d[k]!r}; re-export the model")
    outputs = d.get("outputs", {})
    features = outputs.get("features", 0) if isinstance(outputs, dict) else 0
    if not isinstance(features, int) or features < 0:
        raise ArtifactError(f"{where}: metadata outputs.features must be a count of features, not {features!r}")
    if not isinstance(outputs, dict) or outputs.get("scores", "logits") not in SCORE_KINDS:
        raise ArtifactError(
            f"{where}: metadata 'outputs' must be an object whose 'scores' is one of {', '.join(SCORE_KINDS)}, "
            f"not {outputs!r}; re-export the model"
        )


def label_ok(label: str) -> bool:
    """Whether an artifact can carry ``label``: 1-``MAX_LABEL_CHARS`` printable characters (labels
    are shown on operators' terminals)."""
    return 0 < len(label) <= MAX_LABEL_CHARS and label.isprintable()


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
    what = "is a folder, not a model file" if p.is_dir() else "does not exist"
    raise ArtifactError(f"model file {name} {what}; give a built-in name or the path of an exported .pt")


def read_meta(path_or_name: str | Path) -> ArtifactMeta:
    """Reads and validates only the metadata of an artifact (no model is built)."""
    path = resolve_artifact(path_or_name)
    return _meta_from_zip(path)


def read_meta_dict(path_or_name: str | Path) -> dict[str, Any]:
    """The metadata JSON as stored, validated, with every member (also ones ``ArtifactMeta`` does
    not know): for code that rewrites an artifact and must keep what newer writers added."""
    path = resolve_artifact(path_or_name)
    d = _json_object(_raw_meta(path), path)
    _validate(d, str(path))
    return d


def _meta_from_zip(path: Path) -> ArtifactMeta:
    return _meta_from_json(_raw_meta(path), path)


def _raw_meta(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            names = [n for n in members if n.endswith("/extra/" + META_KEY)]
            if not names and not torchscript_members(members):
                # torch.save's archive: the best.pt / last.pt of a training run, weights without code
                raise ArtifactError(
                    f"{path}: a training checkpoint, not an exported model; export it first: "
                    f"drsn-stream export --checkpoint {path} --out model.pt"
                )
            if not names:
                raise ArtifactError(
                    f"{path}: a TorchScript/zip file without drsn-stream metadata; export it with `drsn-stream export`"
                )
            raw = zf.read(names[0])
    except zipfile.BadZipFile:
        raise ArtifactError(
            f"{path}: not a TorchScript archive (truncated or corrupt file?); re-export or re-copy it"
        ) from None
    except ArtifactError:
        raise
    except MemoryError:
        raise
    # zipfile meets damaged bytes with many exceptions: a name that is not UTF-8 (UnicodeDecodeError),
    # an unknown compression method (NotImplementedError), a stream that does not inflate (zlib.error), ...
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"{path}: cannot read the archive ({str(exc)[:200] or type(exc).__name__}); "
                            "re-export or re-copy it") from None
    return raw


def torchscript_members(names: list[str]) -> bool:
    """Whether a zip archive's member names are those ``torch.jit.save`` writes (its code and
    constants), not a ``torch.save`` checkpoint's (weights only)."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def damaged_member(archive: str | Path | IO[bytes]) -> str | None:
    """The first file of a zip archive (a TorchScript artifact, a ``torch.save`` checkpoint) that
    does not match the checksum it was written with, "the archive (why)" where the archive itself
    cannot be read, or None when all is whole. Neither TorchScript nor ``torch.load`` checks: a
    weight a flipped bit on disk or a bad copy changed loads and runs without a word."""
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.testzip()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile meets damaged bytes with many exceptions
        return f"the archive ({str(exc)[:160] or type(exc).__name__})"


def _json_object(raw: bytes | str, path: Path) -> dict[str, Any]:
    try:
        d = json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON, an integer of over 4,300 digits
        raise ArtifactError(f"{path}: metadata is not valid JSON ({str(exc)[:200]}); re-export the model") from None
    if not isinstance(d, dict):
        raise ArtifactError(f"{path}: metadata must be a JSON object")
    return d


def _meta_from_json(raw: bytes | str, path: Path) -> ArtifactMeta:
    d = _json_object(raw, path)
    _validate(d, str(path))
    known = {f for f in ArtifactMeta.__dataclass_fields__}
    meta = ArtifactMeta(**{k: v for k, v in d.items() if k in known})
    meta.source = str(path)
    return meta


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
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged bytes: zipfile and numpy raise many kinds
        if isinstance(exc, ValueError) and "pickle" in str(exc):
            raise ArtifactError(f"{path}: refused: its validation windows ({VALIDATION_KEY}) hold pickled Python "
                                "objects; drsn-stream never unpickles a file; re-export the model") from None
        return None
