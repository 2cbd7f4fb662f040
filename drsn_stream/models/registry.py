"""Model registry: each variant is a small function registered by name; one factory builds any."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from drsn_stream.errors import ConfigError
from drsn_stream.models.ensemble import Ensemble
from drsn_stream.models.networks import DRSN, NetConfig

_REGISTRY: dict[str, Callable[[], NetConfig]] = {}
_PAPER_STAGES = ((4, 4), (8, 4), (16, 4))
_WIDE_STAGES = ((16, 4), (32, 4), (64, 4))
_DEEP_STAGES = ((8, 4), (16, 4), (32, 4), (64, 4))
_MEL_DEFAULTS = {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 40, "fmin": 20.0, "fmax": 4000.0}
_MEL_STAGES = ((16, 2), (32, 2), (64, 2))


def register(name: str) -> Callable[[Callable[[], NetConfig]], Callable[[], NetConfig]]:
    def deco(fn: Callable[[], NetConfig]) -> Callable[[], NetConfig]:
        _REGISTRY[name] = fn
        return fn

    return deco


@register("drsn_cw_paper")
def _drsn_cw_paper() -> NetConfig:
    """Table II of Zhao et al. 2020 with RSBU-CW: about 11.6 k parameters for 10 classes."""
    return NetConfig(stages=_PAPER_STAGES, shrink="cw")


@register("drsn_cs_paper")
def _drsn_cs_paper() -> NetConfig:
    """Table II with RSBU-CS (one threshold per sample)."""
    return NetConfig(stages=_PAPER_STAGES, shrink="cs")


@register("resnet_paper")
def _resnet_paper() -> NetConfig:
    """The paper's ResNet baseline: the same skeleton without shrinkage."""
    return NetConfig(stages=_PAPER_STAGES, shrink="none")


@register("convnet_paper")
def _convnet_paper() -> NetConfig:
    """The paper's ConvNet baseline: no shrinkage and no shortcuts."""
    return NetConfig(stages=_PAPER_STAGES, shrink="none", shortcut=False)


@register("drsn_cw_wide")
def _drsn_cw_wide() -> NetConfig:
    """Four times wider than the paper's network."""
    return NetConfig(stem_channels=16, stages=_WIDE_STAGES, shrink="cw")


@register("drsn_cw_deep")
def _drsn_cw_deep() -> NetConfig:
    """One more stage, twice as wide."""
    return NetConfig(stem_channels=8, stages=_DEEP_STAGES, shrink="cw")


@register("drsn_cs_wide")
def _drsn_cs_wide() -> NetConfig:
    return NetConfig(stem_channels=16, stages=_WIDE_STAGES, shrink="cs")


@register("resnet_wide")
def _resnet_wide() -> NetConfig:
    return NetConfig(stem_channels=16, stages=_WIDE_STAGES, shrink="none")


@register("drsn_cw_mel")
def _drsn_cw_mel() -> NetConfig:
    """2-D DRSN-CW on a log-mel spectrogram computed inside the model (speech, 8 kHz by default)."""
    return NetConfig(dims=2, stem_channels=16, stem_stride=1, stages=_MEL_STAGES, shrink="cw", logmel=dict(_MEL_DEFAULTS))


@register("drsn_cs_mel")
def _drsn_cs_mel() -> NetConfig:
    return NetConfig(dims=2, stem_channels=16, stem_stride=1, stages=_MEL_STAGES, shrink="cs", logmel=dict(_MEL_DEFAULTS))


@register("resnet_mel")
def _resnet_mel() -> NetConfig:
    return NetConfig(dims=2, stem_channels=16, stem_stride=1, stages=_MEL_STAGES, shrink="none", logmel=dict(_MEL_DEFAULTS))


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, num_classes: int = 10, **overrides: Any) -> NetConfig:
    """The NetConfig a name stands for, with overrides (e.g. ``logmel={...}``, ``dropout=0.1``)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    cfg = _REGISTRY[name]()
    if "logmel" in overrides and cfg.dims == 2:
        merged = dict(cfg.logmel)
        merged.update(overrides.pop("logmel"))
        overrides["logmel"] = merged
    if "stages" in overrides:
        overrides["stages"] = tuple(tuple(s) for s in overrides["stages"])
    try:
        return replace(cfg, num_classes=num_classes, **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad override for model {name!r}: {exc}") from None


def create_model(name: str, num_classes: int = 10, **overrides: Any) -> DRSN:
    """Builds a registered network: ``create_model("drsn_cw_paper", num_classes=10)``."""
    return DRSN(model_config(name, num_classes, **overrides))


def build_from_config(cfg: NetConfig | dict[str, Any]) -> DRSN | Ensemble:
    """Builds a network from a NetConfig (or its dict form, as stored in artifacts). A dict with
    ``"ensemble": K`` gives an ``Ensemble`` of K such networks (untrained, to load weights into)."""
    if isinstance(cfg, dict):
        members = int(cfg.get("ensemble", 1) or 1)
        cfg = NetConfig.from_dict({k: v for k, v in cfg.items() if k != "ensemble"})
        if members > 1:
            return Ensemble([DRSN(cfg) for _ in range(members)])
    return DRSN(cfg)
