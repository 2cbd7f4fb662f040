"""Training configurations: a TOML file (``configs/<name>.toml``) read into frozen dataclasses.

name = "bearing-cwru"
model = "drsn_cw_paper"
[data]      CWRU files, labels, channel, rate, window/hop, time split, windows per class
[train]     the recipe (see ``loop.Recipe``)
[augment]   noise kinds, SNR range or set, share of clean windows (omit for none)
[eval]      noise kinds and SNRs measured on the held-out part after training
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drsn_stream.config import find_config, out_of_range, toml_file, typed_values
from drsn_stream.dsp.noise import NOISE_KINDS
from drsn_stream.errors import ConfigError, did_you_mean
from drsn_stream.models.meta import MAX_LABEL_CHARS, META_MOST, label_ok
from drsn_stream.train.augment import NoiseAugment
from drsn_stream.train.cwru import CHANNELS, DEFAULT_SPLIT
from drsn_stream.train.loop import Recipe

NORMALIZATIONS = ("zscore", "none")


@dataclass(frozen=True)
class DataConfig:
    """Which windows: CWRU files chosen by ``labels``/``label_by``/``loads``, split in time."""

    dataset: str = "cwru"
    labels: tuple[str, ...] = ()
    label_by: str = "size"  # "size": ball_007 ...; "kind": ball, inner, outer, normal
    loads: tuple[int, ...] = (0,)
    test_loads: tuple[int, ...] | None = None  # None: the training loads (time split only)
    channel: str = "DE"
    sample_rate: int = 12000
    window: int = 2048
    hop: int = 512
    normalization: str = "zscore"
    train_part: tuple[float, float] = DEFAULT_SPLIT["train"]
    val_part: tuple[float, float] = DEFAULT_SPLIT["val"]
    test_part: tuple[float, float] = DEFAULT_SPLIT["test"]
    windows_per_class: int = 512

    def __post_init__(self) -> None:
        if self.dataset != "cwru":
            raise ConfigError(f'[data] dataset {self.dataset!r} is not supported here; use "cwru"')
        if not self.labels:
            raise ConfigError(
                '[data] labels is empty: list the class names, e.g. ["normal", "ball_007", ...]'
            )
        bad = [lab for lab in self.labels if not label_ok(lab)]
        if bad or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"[data] labels must be distinct names of 1-{MAX_LABEL_CHARS} printable characters "
                              f"(an artifact carries them), not {', '.join(map(repr, bad or self.labels))}")
        if self.channel not in CHANNELS:
            raise ConfigError(f"[data] channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"[data] normalization must be one of {', '.join(NORMALIZATIONS)}")
        # the artifact's bounds (models/meta.py), said before training rather than at export;
        # a window of 2^40 ran out of memory cutting windows, a rate of 0 divided by zero
        problems = [out_of_range("window", self.window, 16, META_MOST["window"], whole=True),
                    out_of_range("hop", self.hop, 1, META_MOST["hop"], whole=True),
                    out_of_range("sample_rate", self.sample_rate, 1, META_MOST["sample_rate"], whole=True),
                    out_of_range("windows_per_class", self.windows_per_class, 1, 1_000_000, whole=True)]
        loads = (*self.loads, *(self.test_loads or ()))
        problems += [out_of_range("a load", v, 0, 3, whole=True) for v in loads]  # CWRU: 0-3 HP
        problems = [p for p in problems if p]
        if not self.loads:
            problems.append("loads must name at least one motor load (0-3 HP), e.g. [0]")
        if problems:
            raise ConfigError("[data] " + "; ".join(problems))
        a, b, c = self.train_part, self.val_part, self.test_part
        if not (0.0 <= a[0] < a[1] <= b[0] < b[1] <= c[0] < c[1] <= 1.0):
            raise ConfigError(
                f"[data] parts must be in time order without overlap: train {list(a)}, val {list(b)}, test {list(c)}"
            )

    @property
    def split(self) -> dict[str, list[float]]:
        return {"train": list(self.train_part), "val": list(self.val_part), "test": list(self.test_part)}


@dataclass(frozen=True)
class EvalConfig:
    """Held-out measurements after training: clean plus every ``kinds`` x ``snr_db``."""

    kinds: tuple[str, ...] = ("gaussian", "laplacian", "pink")
    snr_db: tuple[float, ...] = (0.0,)
    seed: int = 1234

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(NOISE_KINDS))
        problems = [f"unknown noise kind(s) {unknown}; valid kinds: {', '.join(NOISE_KINDS)}"] if unknown else []
        problems += [out_of_range(f"snr_db[{i}]", v, -100, 100) for i, v in enumerate(self.snr_db)]
        problems.append(out_of_range("seed", self.seed, 0, 2**32 - 1, whole=True))
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("[eval] " + "; ".join(problems))


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: str
    data: DataConfig
    recipe: Recipe
    augment: NoiseAugment | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _build(cls: type, d: dict[str, Any], section: str) -> Any:
    """``cls`` from one table: unknown keys and values of the wrong type are refused by name
    (``typed_values``), then the class checks its ranges."""
    values = typed_values(cls, d, f"[{section}]")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from None
    except ConfigError as exc:  # the class's own checks: name the table where they do not
        raise ConfigError(str(exc) if str(exc).startswith("[") else f"[{section}] {exc}") from None


def parse_config(d: dict[str, Any], *, where: str = "config") -> RunConfig:
    """A RunConfig from the TOML document's dict; ConfigError names the bad key."""
    top = {"name", "model", "description", "data", "train", "augment", "eval", "model_overrides"}
    extra = set(d) - top
    if {"tts", "loso"} & extra:  # configs/digits-fsdd.toml and its copies
        raise ConfigError(
            f"{where} is a speech recipe (its [tts]/[loso] tables): train it with "
            f"`python tools/train_digits.py --config {where}` (docs/digits.md); "
            "`drsn-stream train --config` trains the CWRU bearing recipes, `--data` your own recordings"
        )
    if extra:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(extra))}{did_you_mean(sorted(extra), top)}; "
            f"known: {', '.join(sorted(top))}"
        )
    for key in ("name", "model", "data"):
        if key not in d:
            raise ConfigError(f"{where}: missing {key!r}")
    train = dict(d.get("train", {}))
    if "lr_steps" in train:
        train["lr_steps"] = tuple(train["lr_steps"])
    aug = d.get("augment")
    return RunConfig(
        name=str(d["name"]),
        model=str(d["model"]),
        data=_build(DataConfig, d["data"], "data"),
        recipe=_build(Recipe, train, "train"),
        augment=NoiseAugment.from_dict(aug) if aug else None,
        eval=_build(EvalConfig, d.get("eval", {}), "eval"),
        model_overrides=dict(d.get("model_overrides", {})),
        description=str(d.get("description", "")),
    )


def load_config(path: str | Path) -> RunConfig:
    """Reads ``configs/<name>.toml``. Raises ConfigError for a missing file or bad TOML."""
    p = find_config(path)
    return parse_config(toml_file(p), where=str(p))
