"""``zmq+shard://HOST:PORT[?streams=ID,ID]``: a SUB source that receives only the streams this host owns.

The cluster coordinator hands each host its stream ids; the source subscribes to exactly those
topics (the publisher filters, so a host's network carries only its own streams) and drops the
rest of what a topic prefix lets through (``m1`` also matches ``m10``). The set changes while the
source runs: ``set_streams`` may be called from any thread; the socket is changed by the thread
that reads it (ZeroMQ sockets belong to one thread), at the next frame or idle moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import zmq

from drsn_stream.sources.zmq_source import ZmqSubSource
from drsn_stream.types import Frame


def shard_spec(gateway: str, options: Mapping[str, str]) -> str:
    """``zmq+shard://GATEWAY?K=V&...``: the options quoted (a key file's path may hold ``&``)."""
    query = urlencode(dict(options))
    return f"{ShardSource.kind}://{gateway}" + (f"?{query}" if query else "")


class ShardSource(ZmqSubSource):
    """SUB socket connecting to a gateway's PUB, subscribed to the owned streams only.

    ``on_first_frame(stream_id, frame)``, when set, is called (on the reading thread) for the
    first frame of each stream after it was added.
    """

    kind = "zmq+shard"
    OPTIONS = {
        **{k: v for k, v in ZmqSubSource.OPTIONS.items() if k != "topic"},
        "streams": (str, "", "comma-separated stream ids received from the start (a cluster host is given its "
                             "own by the coordinator)"),
    }

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {**super().parse_options(raw), "topic": ""}  # the topics are the owned streams

    def __init__(self, target: str = "", **options: Any) -> None:
        super().__init__(target, **options)
        self._lock = threading.Lock()
        self._owned: frozenset[str] = frozenset()
        self._subscribed: set[str] = set()
        self._fresh: set[str] = set()  # added, no frame yet
        self.on_first_frame: Callable[[str, Frame], None] | None = None
        self.foreign = 0  # frames of streams not owned (prefix matches, in-flight after a release)
        self.set_streams(s.strip() for s in self.options["streams"].split(",") if s.strip())

    def set_streams(self, streams: Iterable[str]) -> None:
        """Own exactly these streams from now on (frames of others are dropped at once)."""
        new = frozenset(streams)
        with self._lock:
            self._fresh |= new - self._owned
            self._fresh &= new
            self._owned = new

    @property
    def owned(self) -> frozenset[str]:
        return self._owned

    @property
    def subscribed(self) -> frozenset[str]:
        """Topics the socket is subscribed to now (applied, not only asked for)."""
        with self._lock:
            return frozenset(self._subscribed)

    def _open(self) -> None:
        super()._open()
        assert self._sock is not None
        self._sock.setsockopt(zmq.UNSUBSCRIBE, b"")  # the base class subscribed to everything
        self._subscribed = set()
        self._apply()

    def _apply(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with self._lock:
            owned = self._owned
            if owned == self._subscribed:
                return
            add, drop = owned - self._subscribed, self._subscribed - owned
            for sid in drop:
                sock.setsockopt(zmq.UNSUBSCRIBE, sid.encode("utf-8"))
            for sid in add:
                sock.setsockopt(zmq.SUBSCRIBE, sid.encode("utf-8"))
            self._subscribed = set(owned)

    def _idle(self) -> None:
        self._apply()
        super()._idle()

    def _known(self, stream: str) -> bool:
        # a topic subscription is a prefix: sim/m1's brings sim/m10 ... too. Such a stream is
        # another host's: it takes no place in this one's --max-streams table (before, it did,
        # for good, and the streams later given to this host were refused)
        if stream not in self._owned:
            self.foreign += 1
            return False
        return super()._known(stream)

    def _batches(self) -> Iterator[list[Frame]]:
        # the base class's iteration reads these lists too: one filter for both
        for batch in super()._batches():
            self._apply()
            kept = []
            for frame in batch:
                if frame.stream_id not in self._owned:
                    self.foreign += 1
                    continue
                if frame.stream_id in self._fresh:
                    with self._lock:
                        self._fresh.discard(frame.stream_id)
                    if self.on_first_frame is not None:
                        self.on_first_frame(frame.stream_id, frame)
                kept.append(frame)
            if kept:
                yield kept


__all__ = ["ShardSource", "shard_spec"]
