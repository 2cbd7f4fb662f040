"""Consistent hashing: which host owns which stream.

Each host is placed on a 64-bit ring at ``VNODES`` points (hash of ``host#i``); a stream belongs
to the first host point at or after the stream's hash. When a host joins or leaves, only the
streams between its points and their predecessors move: about 1/N of them, the rest stay put.
The hash is blake2b, so every process (and every Python, whatever its hash seed) agrees.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping

VNODES = 128  # points per host: with 3 hosts the largest share is within ~15 % of 1/3


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _first_at(points: list[tuple[int, str]], h: int) -> str:
    """The host of the first of ``points`` (sorted) at or after hash ``h``, round the ring."""
    return points[bisect.bisect_left(points, (h, "")) % len(points)][1]


class HashRing:
    """Hosts on a ring; ``owner(stream)`` is stable while the host set is.

    Args:
        hosts: host names (any order; the result does not depend on it).
        vnodes: points per host.
    """

    def __init__(self, hosts: Iterable[str] = (), *, vnodes: int = VNODES) -> None:
        self.vnodes = vnodes
        self._points: list[tuple[int, str]] = []
        self._hosts: set[str] = set()
        for h in hosts:
            self.add(h)

    @property
    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    def add(self, host: str) -> None:
        if host in self._hosts:
            return
        self._hosts.add(host)
        for i in range(self.vnodes):
            bisect.insort(self._points, (_hash(f"{host}#{i}"), host))

    def remove(self, host: str) -> None:
        if host not in self._hosts:
            return
        self._hosts.discard(host)
        self._points = [p for p in self._points if p[1] != host]

    def owner(self, stream: str) -> str | None:
        """The host that owns ``stream``; None while the ring is empty."""
        if not self._points:
            return None
        return _first_at(self._points, _hash(stream))

    def place(self, streams: Iterable[str], cap: int | None = None,
              keep: Mapping[str, str] | None = None) -> dict[str, str]:
        """stream -> host, with at most ``cap`` streams per host (consistent hashing with bounded
        loads): each stream goes to its ring owner (``owner``) unless that host already holds
        ``cap``, then to the next host clockwise on the ring with room. A host holds ``cap`` or
        fewer streams whatever the spread of the hashes (a host takes no more than its
        ``--max-streams``: without the cap, the streams beyond it were refused there while another
        host had room). Streams stay where ``keep`` (stream -> its host now) has them where they
        can: a host keeps the streams it holds before it takes others, and a stream beyond its
        owner's cap stays on the host it is on while that host has room; so a new stream moves no
        other. Where every host is full, the ring owner (which refuses the stream, as without a
        cap). ``cap`` None: ``owner`` for each. Deterministic: the same streams, hosts and ``keep``
        give the same placement in every process."""
        ids = sorted(set(streams))
        if not self._points:
            return {}
        if cap is None:
            return {sid: self.owner(sid) for sid in ids}  # type: ignore[misc]
        keep = keep or {}
        hashes = {sid: _hash(sid) for sid in ids}
        points = self._points
        by_host: dict[str, list[str]] = {}
        for sid in ids:
            by_host.setdefault(_first_at(points, hashes[sid]), []).append(sid)
        out: dict[str, str] = {}
        load = dict.fromkeys(self._hosts, 0)
        over: list[str] = []
        for host, owned in by_host.items():
            owned.sort(key=lambda sid: (keep.get(sid) != host, hashes[sid], sid))
            for sid in owned[:cap]:
                out[sid] = host
            load[host] = min(len(owned), cap)
            over += owned[cap:]
        # the points of the hosts with room, in ring order: rebuilt when a host fills up (at most
        # once per host), so that finding the next host with room is one bisection, not a walk
        # round a ring of mostly full hosts
        open_points = [p for p in points if load[p[1]] < cap] if over else []
        for sid in sorted(over, key=lambda sid: (hashes[sid], sid)):
            host = keep.get(sid)
            if host not in load or load[host] >= cap:
                host = _first_at(open_points or points, hashes[sid])
            out[sid] = host
            load[host] += 1
            if load[host] == cap and open_points:
                open_points = [p for p in open_points if p[1] != host]
        return out

    def assign(self, streams: Iterable[str]) -> dict[str, list[str]]:
        """host -> its streams (sorted), every host present even with none."""
        out: dict[str, list[str]] = {h: [] for h in self.hosts}
        for sid in sorted(set(streams)):
            host = self.owner(sid)
            if host is not None:
                out[host].append(sid)
        return out


__all__ = ["HashRing", "VNODES"]
