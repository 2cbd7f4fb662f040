"""Micro-batching inference engine: batcher (across streams), runner (model + device), statistics.

``Runner`` and ``pick_device`` are imported on first use (PEP 562): they need torch, and the
monitor's process, whose engine runs in a child process, never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.stats import EngineStats
from drsn_stream.lazy import lazy_getattr

if TYPE_CHECKING:
    from drsn_stream.engine.runner import Runner, pick_device

_WHERE = {"Runner": "runner", "pick_device": "runner"}


__getattr__ = lazy_getattr(__name__, _WHERE)


__all__ = ["EngineStats", "MicroBatcher", "Runner", "pick_device"]
