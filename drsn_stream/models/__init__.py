"""DRSN models: building blocks, networks, registry and TorchScript artifacts."""

from drsn_stream.models.artifact import (
    ArtifactMeta,
    list_artifacts,
    load_artifact,
    load_validation,
    read_meta,
    resolve_artifact,
    save_artifact,
    script_model,
)
from drsn_stream.models.layers import RSBU, Shortcut, ThresholdNet, soft_threshold
from drsn_stream.models.networks import DRSN, NetConfig
from drsn_stream.models.registry import build_from_config, create_model, list_models, model_config

__all__ = [
    "DRSN",
    "RSBU",
    "ArtifactMeta",
    "NetConfig",
    "Shortcut",
    "ThresholdNet",
    "build_from_config",
    "create_model",
    "list_artifacts",
    "list_models",
    "load_artifact",
    "load_validation",
    "model_config",
    "read_meta",
    "resolve_artifact",
    "save_artifact",
    "script_model",
    "soft_threshold",
]
