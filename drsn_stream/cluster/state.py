"""Per-stream checkpoints in a directory every host can read (NFS, a shared volume; one disk here).

A checkpoint is what a host needs to carry a stream on where another left it: the decision state
(level, latch, acknowledgement, debounce in progress, smoothing history), the sensor-health state
(reasons and their clean-signal countdowns, flat-line and clipping statistics), the alarm and
health event counters that make event ids stable, and the stream's recent events (so events a
dying host had not yet delivered are sent again; sinks drop the copies by id). One file per
stream, written whole and renamed into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from drsn_stream.config import write_atomic
from drsn_stream.errors import ConfigError

RECENT_EVENTS = 32  # events per stream kept in its checkpoint for re-delivery
_SUFFIX = ".ckpt"
_LEARNING_SUFFIX = ".learning.npz"
# What a checkpoint may name when it is read back: our state records and the plain containers and
# numpy arrays inside them. Anything else (os.system, a class with a hostile __reduce__) is
# refused, so a file planted in the shared directory cannot run code on a host.
_ALLOWED = {
    "drsn_stream.cluster.state": {"StreamCheckpoint"},
    "drsn_stream.monitor.decision": {"_Stream", "Level"},
    "drsn_stream.monitor.health": {"_Stream"},
    "collections": {"deque", "OrderedDict", "Counter"},
    "builtins": {"set", "frozenset", "complex", "slice", "range"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a checkpoint may not name {module}.{name}")


@dataclass
class StreamCheckpoint:
    """One stream's state as its host last saved it.

    Attributes:
        stream_id: the stream.
        host: the host that saved it; saved_at: wall clock (s).
        last_time: capture time (s) of the last window classified (the gap after a failover starts here).
        decision / health: ``DecisionEngine.export_state`` / ``HealthMonitor.export_state`` (None: not seen).
        baseline: the stream's baseline learned live (``BaselineStage.export``, plain JSON types), so
            the next host monitors it at once rather than learning it again; in a release's last
            checkpoint, while still being learned, that learning so far (its windows as arrays); None: none.
        channels: for a stream of multi-channel frames, whose channels are streams of their own
            (``types.channel_ids``): ``{channel id: {"decision": ..., "health": ..., "baseline": ...}}``
            as above for each; ``decision``/``health``/``baseline`` above are then None.
        counters: per event kind, how many events the stream has had (the next event's id).
        events: the most recent events (JSON objects with ``id``), oldest first.
    """

    stream_id: str
    host: str
    saved_at: float
    last_time: float | None = None
    decision: Any = None
    health: Any = None
    counters: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)


class CheckpointStore:
    """Reads and writes stream checkpoints under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use checkpoint directory {self.root}: {exc.strerror}; "
                              "give a directory every host can write (--checkpoint-dir)") from exc

    def _path(self, stream: str) -> Path:
        return self.root / (quote(stream, safe="") + _SUFFIX)

    def learning_path(self, host: str) -> Path:
        """The file a host keeps its streams' baseline learnings in progress in
        (``BaselineStage.save_learning``, every minute or so): the host a stream goes to when that
        host is lost learns on from there (its checkpoints, written every few seconds, carry a
        learning only when it hands a stream over)."""
        return self.root / (quote(host, safe="") + _LEARNING_SUFFIX)

    def save(self, ckpt: StreamCheckpoint) -> None:
        ckpt.saved_at = time.time()
        # hosts share the folder: each write has a temporary file of its own; a folder that went
        # away (an unmounted share) is an error to count, not a new local folder
        write_atomic(self._path(ckpt.stream_id), pickle.dumps(ckpt, protocol=pickle.HIGHEST_PROTOCOL),
                     make_folder=False)

    def load(self, stream: str) -> StreamCheckpoint | None:
        """The stream's latest checkpoint, or None (never saved, or unreadable: start afresh)."""
        try:
            with self._path(stream).open("rb") as f:
                obj = _StateUnpickler(f).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError):
            return None
        return obj if isinstance(obj, StreamCheckpoint) else None

    def delete(self, stream: str) -> None:
        """Drop the stream's checkpoint (the stream was retired for good); none there is fine."""
        try:
            self._path(stream).unlink()
        except FileNotFoundError:
            pass

    def streams(self) -> list[str]:
        return sorted(unquote(p.name[: -len(_SUFFIX)]) for p in self.root.glob("*" + _SUFFIX))


def event_id(stream: str, kind: str, n: int, data: dict[str, Any]) -> str:
    """A stable id: the stream, the kind, its running number and the change itself, so that the
    same change re-derived after a failover gets the same id and a different one never does."""
    change = f"{data.get('from', '')}>{data.get('to', '')}" + ("+ack" if data.get("acknowledged") else "")
    return f"{stream}|{kind}|{n}|{change}"


__all__ = ["CheckpointStore", "RECENT_EVENTS", "StreamCheckpoint", "event_id"]
