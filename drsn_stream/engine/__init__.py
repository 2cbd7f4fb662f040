"""Micro-batching inference engine: batcher (across streams), runner (model + device), statistics.

``Runner`` and ``pick_device`` are imported on first use (PEP 562): they need torch, and the
monitor's process, whose engine runs in a child process, never does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.stats import EngineStats

if TYPE_CHECKING:
    from drsn_stream.engine.runner import Runner, pick_device

_WHERE = {"Runner": "runner", "pick_device": "runner"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


__all__ = ["EngineStats", "MicroBatcher", "Runner", "pick_device"]
