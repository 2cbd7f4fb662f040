"""Sources: where Frames come from (simulator, files, ZeroMQ sensors, sound cards).

``make_source("sim:bearing?machines=8&noise=pink&snr=0")`` builds one from a spec string
``KIND[:TARGET][?key=value&...]``; keyword options override the spec's. Registering a new kind is
one entry in ``SOURCE_KINDS`` (or, for a new simulator scenario, ``SIM_SCENARIOS``): a
``"module:Class"`` string imported only when used, so optional dependencies stay optional.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from drsn_stream.audiofile import SUFFIXES as SOUND_SUFFIXES
from drsn_stream.errors import ConfigError
from drsn_stream.sources.base import Source, SourceSpec, SourceStats, parse_spec

SOURCE_KINDS: dict[str, str] = {
    "sim": "drsn_stream.sources.sim:make_sim",
    "file": "drsn_stream.sources.file:FileSource",
    "zmq": "drsn_stream.sources.zmq_source:ZmqSubSource",
    "zmq+bind": "drsn_stream.sources.zmq_source:ZmqSubBindSource",
    "zmq+pull": "drsn_stream.sources.zmq_source:ZmqPullSource",
    "zmq+pull+bind": "drsn_stream.sources.zmq_source:ZmqPullBindSource",
    "mic": "drsn_stream.sources.mic:MicSource",
    "zmq+shard": "drsn_stream.cluster.shard_source:ShardSource",  # a cluster host's share of the streams
}

# sim:<scenario>; each class takes (target, **options) like any Source.
SIM_SCENARIOS: dict[str, str] = {
    "bearing": "drsn_stream.sources.sim:BearingSim",
    "speech": "drsn_stream.sources.sim_speech:SpeechSim",
}

_FILE_SUFFIXES = (".wav", ".npy", ".csv", ".mat", ".tdms", *SOUND_SUFFIXES)


def load_entry(entry: str, what: str) -> Any:
    module, _, name = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} is registered as {entry} but cannot be loaded ({exc}); "
                          "this build of drsn-stream lacks it") from exc


def make_source(spec: str, **opts: Any) -> Source:
    """Build (not open) a source from ``KIND[:TARGET][?key=value&...]``.

    Kinds: ``sim`` / ``sim:bearing`` / ``sim:speech``, ``file:PATH`` (a bare path to a .wav, .npy,
    .csv, .mat, .tdms, .flac, .ogg, .mp3 ... file works too), ``zmq://HOST:PORT``, ``zmq+bind://HOST:PORT``,
    ``zmq+pull://HOST:PORT``, ``zmq+pull+bind://HOST:PORT`` (a ZeroMQ target may list several
    comma-separated addresses: one socket for all), ``mic`` / ``mic:DEVICE``. Unknown kinds and
    options raise ConfigError listing the valid ones.
    """
    parsed = parse_spec(spec)
    kind, target = parsed.kind, parsed.target
    if kind not in SOURCE_KINDS and Path(spec.partition("?")[0]).suffix.lower() in _FILE_SUFFIXES:
        kind, target = "file", spec.partition("?")[0]
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source kind {parsed.kind!r} in {spec!r}; valid kinds: "
                          f"{', '.join(SOURCE_KINDS)} (e.g. sim:bearing, file:rec.wav, zmq://127.0.0.1:5555)")
    options: dict[str, Any] = dict(parsed.options)
    options.update({k: v for k, v in opts.items() if v is not None})
    factory = load_entry(SOURCE_KINDS[kind], f"source kind {kind!r}")
    if "fast" in opts and "fast" not in getattr(factory, "OPTIONS", {"fast": None}):
        # Live kinds (zmq, mic) always deliver as fast as data arrives, so a run-wide fast=True
        # passed to every source means nothing to them; in the spec itself it is still an error.
        if "fast" not in parsed.options:
            options.pop("fast")
    return factory(target, **options)


__all__ = [
    "SIM_SCENARIOS",
    "SOURCE_KINDS",
    "Source",
    "SourceSpec",
    "SourceStats",
    "make_source",
    "parse_spec",
]
