"""Micro-batching inference engine: batcher (across streams), runner (model + device), statistics."""

from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.runner import Runner, pick_device
from drsn_stream.engine.stats import EngineStats

__all__ = ["EngineStats", "MicroBatcher", "Runner", "pick_device"]
