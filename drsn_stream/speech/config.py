"""The spoken-digit training recipe (``configs/digits-fsdd.toml``), read and checked in one place.

[model]     name = a registered model; its other keys override the network (``logmel = {...}``,
            ``dropout``, ``stages``, ...)
[train]     the optimizer recipe (``train.TrainConfig``) and ``ensemble``: networks per model
[augment]   ranges of the random perturbations (``augment.AugmentConfig``; omit for its defaults)
[tts]       synthetic voices: ``train_voices`` (trained on), ``heldout_voices`` (tested only)
[loso]      ``epochs`` of each leave-one-speaker-out network (omit for 12)

``load_config`` reads the file before any data or TTS is loaded: an unknown table or key, a value
of the wrong type or out of range is one ConfigError naming the file, the table and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from drsn_stream.config import check_sections, find_config, out_of_range, toml_file, typed_values
from drsn_stream.errors import ConfigError
from drsn_stream.speech import LABELS, SAMPLE_RATE, WINDOW
from drsn_stream.speech.augment import AugmentConfig
from drsn_stream.speech.train import MAX_EPOCHS, TrainConfig, below_one

SECTIONS = ("model", "train", "augment", "tts", "loso")
REQUIRED = ("model", "train", "tts")
RECIPE_KEYS = ("epochs", "batch", "lr", "weight_decay", "label_smoothing", "seed", "threads")
MAX_ENSEMBLE = 64
# network keys a config may override; num_classes is the label set's, dims the variant's own
_NET_KEYS = ("stem_channels", "stem_kernel", "stem_stride", "stages", "kernel_size", "shrink", "shortcut",
             "logmel", "dropout")
_SHRINKS = ("cw", "cs", "none")


@dataclass(frozen=True)
class LogMelOptions:
    """The ``[model] logmel`` keys, typed; the defaults are ``models.frontend.LogMel``'s own (the
    registry's variant sets sample_rate, n_fft, hop_length, n_mels, fmin and fmax)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 256
    hop_length: int = 80
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float | None = None
    cmn: bool = False
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0
    warp: float = 0.0

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"[model] logmel.sample_rate must be {SAMPLE_RATE}, the rate every recording is "
                              f"resampled to and the live stream feeds, not {self.sample_rate!r}")
        problems = [out_of_range("logmel.n_fft", self.n_fft, 16, WINDOW, whole=True),
                    out_of_range("logmel.hop_length", self.hop_length, 1, WINDOW, whole=True)]
        problems = [p for p in problems if p]
        if problems:  # the bounds below depend on them
            raise ConfigError("[model] " + "; ".join(problems))
        frames = 1 + (WINDOW - self.n_fft) // self.hop_length
        nyquist = SAMPLE_RATE / 2.0
        mels = out_of_range("logmel.n_mels", self.n_mels, 1, self.n_fft // 2 + 1, whole=True)
        problems = [
            mels,
            out_of_range("logmel.fmin", self.fmin, 0.0, nyquist),
            None if self.fmax is None else out_of_range("logmel.fmax", self.fmax, 0.0, nyquist, above=True),
            out_of_range("logmel.freq_masks", self.freq_masks, 0, 16, whole=True),
            out_of_range("logmel.time_masks", self.time_masks, 0, 16, whole=True),
            # a mask wider than the bands or frames there are masks the whole spectrogram
            None if mels else out_of_range("logmel.freq_mask_width", self.freq_mask_width, 0, self.n_mels, whole=True),
            out_of_range("logmel.time_mask_width", self.time_mask_width, 0, frames, whole=True),
        ]
        if not 0.0 <= self.warp < 0.5:  # NaN fails too
            problems.append(f"logmel.warp must be a number from 0 up to (not including) 0.5, not {self.warp!r}")
        problems = [p for p in problems if p]
        if not problems and self.fmin >= (nyquist if self.fmax is None else self.fmax):
            problems.append(f"logmel.fmin ({self.fmin:g} Hz) must be below fmax ({self.fmax or nyquist:g} Hz)")
        if problems:
            raise ConfigError("[model] " + "; ".join(problems))


@dataclass(frozen=True)
class NetOverrides:
    """The ``[model]`` keys besides ``name``, typed (``models.networks.NetConfig``'s fields)."""

    stem_channels: int = 16
    stem_kernel: int = 3
    stem_stride: int = 1
    stages: tuple[tuple[int, int], ...] = ((16, 2),)
    kernel_size: int = 3
    shrink: str = "cw"
    shortcut: bool = True
    logmel: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        problems = [
            out_of_range("stem_channels", self.stem_channels, 1, 1024, whole=True),
            out_of_range("stem_kernel", self.stem_kernel, 1, 63, whole=True),
            out_of_range("stem_stride", self.stem_stride, 1, 16, whole=True),
            out_of_range("kernel_size", self.kernel_size, 1, 63, whole=True),
            None if self.shrink in _SHRINKS else f"shrink must be one of {', '.join(_SHRINKS)}, not {self.shrink!r}",
            below_one("dropout", self.dropout),
            None if self.stages else "stages must list at least one [channels, units]",
        ]
        for i, (channels, units) in enumerate(self.stages):
            problems += [out_of_range(f"stages[{i}] channels", channels, 1, 1024, whole=True),
                         out_of_range(f"stages[{i}] units", units, 1, 32, whole=True)]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("[model] " + "; ".join(problems))


@dataclass(frozen=True)
class TtsConfig:
    """Synthetic voices drawn by ``tts.voices``: trained on, and held out for a test."""

    train_voices: int = 100
    heldout_voices: int = 20

    def __post_init__(self) -> None:
        from drsn_stream.speech.tts import pool_size  # the engines' voices, not run here

        most = pool_size()
        problems = [out_of_range("train_voices", self.train_voices, 1, most, whole=True),
                    out_of_range("heldout_voices", self.heldout_voices, 0, most, whole=True)]
        problems = [p for p in problems if p]
        if not problems and self.train_voices + self.heldout_voices > most:
            problems.append(f"train_voices + heldout_voices must be at most {most} (the distinct synthetic "
                            f"speakers there are), not {self.train_voices + self.heldout_voices}")
        if problems:
            raise ConfigError("[tts] " + "; ".join(problems))


@dataclass(frozen=True)
class LosoConfig:
    """Leave-one-speaker-out: each fold's networks train for ``epochs`` (fewer than the recipe)."""

    epochs: int = 12

    def __post_init__(self) -> None:
        problem = out_of_range("epochs", self.epochs, 1, MAX_EPOCHS, whole=True)
        if problem:
            raise ConfigError(f"[loso] {problem}")


@dataclass(frozen=True)
class DigitsConfig:
    """The whole recipe: ``train`` is one network's (its seed the first of the ensemble's)."""

    train: TrainConfig
    ensemble: int = 1
    tts: TtsConfig = field(default_factory=TtsConfig)
    loso: LosoConfig = field(default_factory=LosoConfig)

    def __post_init__(self) -> None:
        problem = out_of_range("ensemble", self.ensemble, 1, MAX_ENSEMBLE, whole=True)
        if problem:
            raise ConfigError(f"[train] {problem}")

    def train_config(self, **changes: Any) -> TrainConfig:
        """A fresh TrainConfig of this recipe with ``changes`` (e.g. ``epochs=12, seed=3``), checked."""
        changes.setdefault("overrides", dict(self.train.overrides))
        return replace(self.train, **changes)


def parse_config(doc: Mapping[str, Any], *, where: str = "config") -> DigitsConfig:
    """A DigitsConfig from the TOML document; ConfigError names ``where``, the table and the key."""
    check_sections(doc, SECTIONS, where)
    missing = [s for s in REQUIRED if s not in doc]
    if missing:
        raise ConfigError(f"{where}: missing table(s) {', '.join(f'[{s}]' for s in missing)}; "
                          f"a digits recipe has {', '.join(f'[{s}]' for s in REQUIRED)} "
                          "(and optionally [augment], [loso]); see configs/digits-fsdd.toml")
    for section in SECTIONS:
        if section in doc and not isinstance(doc[section], Mapping):
            raise ConfigError(f"{where}: [{section}] must be a table of key = value, not {doc[section]!r}")
    try:
        name, overrides = _model(doc["model"])
        recipe = typed_values(TrainConfig, doc["train"], "[train]", keys=(*RECIPE_KEYS, "ensemble"))
        ensemble = recipe.pop("ensemble", 1)
        augment = (AugmentConfig(**typed_values(AugmentConfig, doc["augment"], "[augment]"))
                   if "augment" in doc else AugmentConfig())
        train = TrainConfig(model=name, overrides=overrides, augment=augment, **recipe)
        tts = TtsConfig(**typed_values(TtsConfig, doc["tts"], "[tts]"))
        loso = LosoConfig(**typed_values(LosoConfig, doc.get("loso", {}), "[loso]"))
        return DigitsConfig(train=train, ensemble=ensemble, tts=tts, loso=loso)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _model(table: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(registered model name, NetConfig overrides) from the ``[model]`` table."""
    from drsn_stream.models import list_models, model_config

    if "name" not in table:
        raise ConfigError(f"[model] name is missing; name one of: {', '.join(list_models())}")
    name = table["name"]
    if not isinstance(name, str) or name not in list_models():
        raise ConfigError(f"[model] name {name!r} is not a registered model; choose one of: {', '.join(list_models())}")
    overrides = {k: v for k, v in table.items() if k != "name"}
    typed = typed_values(NetOverrides, overrides, "[model]", keys=("name", *_NET_KEYS))
    typed.pop("name", None)
    base = model_config(name, len(LABELS))
    if "logmel" in typed:
        logmel = typed["logmel"]
        if not isinstance(logmel, Mapping):
            raise ConfigError(f"[model] logmel must be a table {{ n_fft = 256, ... }}, not {logmel!r}")
        if base.dims != 2:
            raise ConfigError(f"[model] logmel: model {name!r} takes raw samples (no log-mel front end); "
                              "remove logmel or choose a *_mel model")
        given = typed_values(LogMelOptions, logmel, "[model] logmel")
        LogMelOptions(**{**base.logmel, **given})
        typed["logmel"] = dict(logmel)
    elif base.dims == 2:
        LogMelOptions(**base.logmel)
    current = {f.name: getattr(base, f.name) for f in fields(NetOverrides) if f.name != "logmel"}
    NetOverrides(**{**current, **{k: v for k, v in typed.items() if k != "logmel"}})
    return name, typed


def load_config(path: str | Path) -> DigitsConfig:
    """Reads a digits recipe (a path, or a shipped config's name). Raises ConfigError for a
    missing file, text that is not TOML, or any table or key that is wrong (see the module doc)."""
    p = find_config(path)
    return parse_config(toml_file(p), where=str(p))
