"""A run's configuration: one frozen ``RunConfig`` whose sections are the stages' own typed configs.

A TOML run config is a document of tables: ``[run]`` (RunConfig's own fields) and one table per
section (``SECTIONS``: ``[decision]``, ``[health]``, ``[detector]``, ``[capture]``, ``[machine]``,
``[envelope]``, ``[sinks]``). ``from_doc`` turns such a document into a RunConfig through
``config.from_table``; the command line writes its flags into the same document first
(``app.cli.FLAGS`` says which flag is which key), so a file and the equivalent flags give equal
configs and are checked by the same code. ``to_doc`` is the way back (``--print-config``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from drsn_stream.config import check_sections, from_table, parse_duration, typed_values
from drsn_stream.dsp.envelope import EnvelopeSettings
from drsn_stream.engine.contract import BATCH_LIMIT, THREADS_LIMIT
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.decision import DecisionTable
from drsn_stream.monitor.envelope import MachineTable
from drsn_stream.monitor.health import HealthConfig
from drsn_stream.sinks import SinksConfig
from drsn_stream.sinks.capture import CaptureTable
from drsn_stream.sources.base import DEFAULT_MAX_STREAMS, DEFAULT_RECLAIM_AFTER_S
from drsn_stream.speech.detector import DetectorConfig

# section name -> its typed config (a RunConfig field of that name)
SECTIONS: dict[str, type] = {
    "decision": DecisionTable,  # resolved per the model's labels by the app (DecisionTable.resolve)
    "health": HealthConfig,
    "detector": DetectorConfig,
    "capture": CaptureTable,
    "machine": MachineTable,
    "envelope": EnvelopeSettings,
    "sinks": SinksConfig,
}
MAX_HOP = 1 << 24  # samples (the wire format's most per message and channel)
TABLES = ("run", *SECTIONS)  # every table a run config file may have


@dataclass(frozen=True)
class RunConfig:
    """Everything one run of the monitor needs (CLI flags and TOML files fill it).

    The sections are typed and frozen; a plain dict given for one (from Python) is read as that
    section's TOML table, with the same checks.
    """

    sources: tuple[str, ...] = ("sim",)
    model: str | None = None
    device: str = "auto"
    # the largest micro-batch (None: CPU_LIVE_MAX_BATCH = 64 on the CPU with live sources, MAX_BATCH
    # = 256 on CUDA and with --fast; a backlog's batches may then be larger: app/defaults.py)
    max_batch: int | None = None
    max_wait_ms: float = 20.0
    idle_flush: bool = True  # a batch leaves as soon as the sources have nothing more ready (max_wait_ms: the bound)
    # while the engine is idle a batch leaves as soon as this many windows wait (0: off; None:
    # CPU_EAGER_BATCH on the CPU, off on CUDA and with --fast)
    eager_batch: int | None = None
    stale_ms: float = 2000.0
    queue_capacity: int = 8192
    max_streams: int = DEFAULT_MAX_STREAMS  # stream ids in all (and per source); new ones beyond are refused, counted
    # once max_streams are taken, a stream silent this long gives its place to a new id (0: never)
    reclaim_after_s: float = DEFAULT_RECLAIM_AFTER_S
    hop: int | None = None
    # spread the streams' windows over this many phases of the hop (dsp/window.py window_start):
    # streams whose frames arrive in step then complete their windows in turn, not all at once
    phases: int = 1
    fast: bool = False
    duration: float | None = None
    fp16: str = "auto"
    cuda_graphs: bool = True
    threads: int | None = None
    cpu_layout: str = "auto"  # CPU: 1-D networks in their verified channels-last form ("script": without numba; "off": as stored)
    engine_process: bool | None = None  # None: on for the CPU with 2 or more cores
    # processes that read each zmq:// source, sharded by stream id (app/shards.py); other sources
    # keep their ingest thread (None: 1 below 8 cores, half the cores, at most 8, from there on)
    ingest_procs: int | None = None
    # with the engine process: give it a core of its own, keep ingest on the rest
    # (None: on when it runs one torch thread, the default)
    pin_cpus: bool | None = None
    stats_every_s: float = 5.0
    baseline: str | None = None  # a baseline profile (monitor/baseline.py): each prediction gains `anomaly`
    learn_s: float | None = None  # learn each stream without a baseline for this long, then monitor it
    # a machine at rest (under a tenth of its learned level) that runs again is judged against its
    # baseline only this many seconds later (a run-up is unlike its normal); 0: at once
    startup_s: float = 10.0
    unknown: bool = True  # refuse labels the model cannot back, where the artifact carries the statistics
    decision: DecisionTable = field(default_factory=DecisionTable)
    health: HealthConfig = field(default_factory=HealthConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    capture: CaptureTable = field(default_factory=CaptureTable)  # capture.dir None: no event capture
    machine: MachineTable = field(default_factory=MachineTable)  # bearing geometry and shaft speed per stream
    envelope: EnvelopeSettings = field(default_factory=EnvelopeSettings)
    sinks: SinksConfig = field(default_factory=SinksConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            object.__setattr__(self, name, from_table(cls, getattr(self, name), f"[{name}]"))
        problems = []
        for name, least in (("queue_capacity", 1), ("max_wait_ms", 0), ("stale_ms", 0), ("max_streams", 1),
                            ("phases", 1)):
            if not getattr(self, name) >= least:
                problems.append(f"{name} must be >= {least}, not {getattr(self, name)!r}")
        # the upper bounds: buffers are sized from max_batch and the hop, threads and processes
        # started from the counts (2^63 of any was a traceback or an error blaming something else)
        for name, least, most in (("max_batch", 1, BATCH_LIMIT), ("eager_batch", 0, BATCH_LIMIT),
                                  ("hop", 1, MAX_HOP), ("threads", 1, THREADS_LIMIT), ("ingest_procs", 1, 256)):
            value = getattr(self, name)
            if value is not None and not least <= value <= most:
                problems.append(f"{name} must be from {least} to {most:,} (or left unset), not {value!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        for name, allowed in (("fp16", ("auto", "on", "off")), ("cpu_layout", ("auto", "script", "off"))):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not 0 <= self.reclaim_after_s < math.inf:
            problems.append(f"reclaim_after_s must be >= 0 seconds (0: never), not {self.reclaim_after_s!r}")
        if not 0 <= self.startup_s <= 86400:
            problems.append(f"startup_s must be from 0 to 86400 seconds, not {self.startup_s!r}")
        if self.learn_s is not None and not self.learn_s > 0:
            problems.append(f"learn_s must be > 0 seconds, not {self.learn_s!r}")
        if self.duration is not None and not self.duration > 0:
            problems.append(f"duration must be > 0 seconds, not {self.duration!r}")
        if problems:
            raise ConfigError("[run]: " + "; ".join(problems))


RUN_KEYS = tuple(f.name for f in fields(RunConfig) if f.name not in SECTIONS)  # the keys of [run]
# keys that take seconds, or a text as --duration, --learn and --every take it ("10m"), by table
DURATION_KEYS: dict[str, tuple[str, ...]] = {"run": ("duration", "learn_s"), "sinks": ("every", "webhook_digest")}


def _durations(table: Any, name: str, where: str) -> Any:
    """``table`` with its duration keys read as seconds (``duration = "1h30m"``), else as given."""
    keys = DURATION_KEYS.get(name, ())
    if not isinstance(table, Mapping) or not any(isinstance(table.get(k), str) for k in keys):
        return table
    table = dict(table)
    for key in keys:
        if isinstance(table.get(key), str):
            try:
                table[key] = parse_duration(table[key])
            except ConfigError as exc:
                raise ConfigError(f"{where} [{name}] {key}: {exc}") from None
    return table


def from_doc(doc: Mapping[str, Any], where: str = "run config") -> RunConfig:
    """The RunConfig of a TOML document ``{table: {key: value}}``; an unknown table, an unknown
    key, a value of the wrong type or out of range is one ConfigError naming the table and key."""
    check_sections(doc, TABLES, where)
    run = _durations(doc.get("run", {}), "run", where)
    kwargs = typed_values(RunConfig, run, f"{where} [run]", keys=RUN_KEYS)
    for name, cls in SECTIONS.items():
        if name in doc:
            kwargs[name] = from_table(cls, _durations(doc[name], name, where), f"{where} [{name}]")
    try:
        return RunConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}") from None


def to_doc(config: RunConfig, labels: Sequence[str] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The document ``from_doc`` reads back to ``config`` (every field, defaults included), and a
    note per table. With the model's ``labels`` the ``[decision]`` table is the resolved one."""
    doc: dict[str, dict[str, Any]] = {"run": {k: getattr(config, k) for k in RUN_KEYS}}
    notes: dict[str, str] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        if isinstance(section, DecisionTable):
            if labels is not None:
                doc[name] = _fields(section.resolve(labels))
                notes[name] = "resolved for the model's labels"
            else:
                doc[name] = section.table()
                if section.from_labels:
                    notes[name] = f"{', '.join(section.from_labels)}: from the model's labels; the rest as listed"
        elif isinstance(section, MachineTable):
            doc[name] = {**{k: v for k, v in _fields(section).items() if k != "streams"},
                         "streams": section.table().get("streams", [])}
        else:
            doc[name] = _fields(section)
    return doc, notes


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


__all__ = ["RUN_KEYS", "SECTIONS", "TABLES", "RunConfig", "from_doc", "to_doc"]
