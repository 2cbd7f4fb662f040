"""DRSN models: building blocks, networks, registry and TorchScript artifacts.

The names below are imported on first use (PEP 562): a process that needs only a torch-free
module of this package (``models.ood``, ``models.outputs``: the cluster's aggregator, the metrics
sink) does not pay for importing torch (seconds of CPU in every such process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drsn_stream.lazy import lazy_getattr

_WHERE = {
    "ArtifactMeta": "meta", "list_artifacts": "meta", "load_artifact": "artifact",
    "load_validation": "meta", "read_meta": "meta", "resolve_artifact": "meta",
    "save_artifact": "artifact", "script_model": "artifact",
    "RSBU": "layers", "Shortcut": "layers", "ThresholdNet": "layers", "soft_threshold": "layers",
    "DRSN": "networks", "NetConfig": "networks",
    "build_from_config": "registry", "create_model": "registry", "list_models": "registry",
    "model_config": "registry",
}

if TYPE_CHECKING:
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


__getattr__ = lazy_getattr(__name__, _WHERE)


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
