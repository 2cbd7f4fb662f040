"""A micro-batcher across all streams.

Windows from every stream go into one bounded queue. A batch leaves when it is full
(``max_batch``) or when its oldest window has waited ``max_wait_ms``, or earlier when a source
says it has nothing more ready (``flush()``, called by a source about to wait for its next input:
waiting on for a fuller batch would only add latency; ``max_wait_ms`` stays the bound), or, while
the engine is idle, as soon as ``eager_batch`` windows are there (a batch that size already runs
at the engine's best speed per window; the rest of a burst gathers while it runs). A batch cut
while more than ``max_batch`` windows wait (the engine fell behind) takes up to
``catch_up_batch``: a bigger batch costs less per window, so the backlog drains sooner. Windows
that have waited here longer than ``stale_ms`` when a batch is cut are dropped and counted per
stream: live data keeps the newest, it never queues the past. Their age is counted on this host's
clock from when they were formed (``t_ready``), not from the capture time they carry: that is the
sender's clock, and a sender whose clock was a few seconds behind (no NTP on a gateway) made every
window look stale, so nothing was labeled; and a step of this host's wall clock moves the
windows formed before it with it (a step forward of an hour made every window queued at that
moment an hour old). When the queue is full the oldest window is dropped (counted).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable

from drsn_stream.clock import STEP_GRACE_S, WallSteps, across_step
from drsn_stream.types import Window


class MicroBatcher:
    def __init__(
        self,
        *,
        max_batch: int = 256,
        max_wait_ms: float = 10.0,
        stale_ms: float = 2000.0,
        capacity: int = 8192,
        block_when_full: bool = False,
        eager_batch: int = 0,
        catch_up_batch: int = 0,
        clock=time.time,
    ) -> None:
        """
        Args:
            max_batch: most windows in one batch.
            max_wait_ms: longest a window waits for its batch to fill, ms.
            stale_ms: windows formed longer ago than this are dropped, ms (0 disables;
                replaying files as fast as possible uses 0).
            capacity: queue bound; overflow drops the oldest window.
            block_when_full: instead of dropping, make ``put`` wait for room (replaying files as
                fast as possible: every window counts, nothing is live).
            eager_batch: with ``early`` (the engine idle), a batch leaves as soon as this many
                windows are queued (0: off).
            catch_up_batch: most windows in a batch cut while more than ``max_batch`` wait
                (0 or less than ``max_batch``: ``max_batch``).
            clock: wall-clock source (seconds), the same clock as Window.t_ready.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if eager_batch < 0:
            raise ValueError("eager_batch must be >= 0 (0: off)")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stale = stale_ms / 1000.0
        self.capacity = capacity
        self.block_when_full = block_when_full
        self.eager_batch = int(eager_batch)
        self.catch_up_batch = max(int(catch_up_batch), max_batch)
        self.catch_ups = 0  # batches cut larger than max_batch, from a backlog
        self._clock = clock
        self._steps = WallSteps() if clock is time.time else None  # an injected clock does not step
        self._q: deque[Window] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_stale: Counter[str] = Counter()
        self.dropped_overflow: Counter[str] = Counter()
        # the two above of streams no longer monitored ({"stale": n, "overflow": n}, ``forget``)
        self.dropped_gone: Counter[str] = Counter()
        self.accepted = 0
        self.flushes = 0  # batches that left early on flush()
        self.eager_sends = 0  # batches that left early at eager_batch windows
        self._due = 0  # windows accepted before this count are due at once (flush())

    def put(self, window: Window) -> None:
        """Adds one window (from any thread); never blocks unless ``block_when_full``."""
        self.put_many((window,))

    def put_many(self, windows: list[Window] | tuple[Window, ...]) -> None:
        """``put`` for each window, in order, in one hold of the queue's lock (one wake-up of the
        consumer at most)."""
        wake = False
        with self._cond:
            before, k = len(self._q), len(windows)
            if before + k <= self.capacity:  # room for all: no window waits or is dropped
                self._q.extend(windows)
                self.accepted += k
                if self._wakes(before, before + k):
                    self._cond.notify()
                return
            for window in windows:
                while self.block_when_full and len(self._q) >= self.capacity and not self._closed:
                    if wake:
                        self._cond.notify()  # the consumer makes the room waited for here
                        wake = False
                    self._cond.wait(0.05)
                if len(self._q) >= self.capacity:
                    old = self._q.popleft()
                    self.dropped_overflow[old.stream_id] += 1
                self._q.append(window)
                self.accepted += 1
                n = len(self._q)
                wake = wake or self._wakes(n - 1, n)
            if wake:
                self._cond.notify()

    def _wakes(self, before: int, after: int) -> bool:
        """Whether the queue growing from ``before`` to ``after`` windows wakes the consumer: it got
        its first window, or reached ``max_batch`` or ``eager_batch``."""
        return after > before and (after >= self.max_batch or before == 0 or before < self.eager_batch <= after)

    def flush(self) -> None:
        """Every window queued now is due at once (from any thread): a source calls this when it
        has handed over all it has and is about to wait for more input, so that a batch does not
        wait ``max_wait_ms`` for windows that are not coming yet."""
        with self._cond:
            self._due = self.accepted
            if self._q:
                self._cond.notify()

    def close(self) -> None:
        """Wakes the consumer; next_batch then drains what is left and returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def depth(self) -> int:
        return len(self._q)

    def dropped_total(self) -> int:
        return sum(self.dropped_stale.values()) + sum(self.dropped_overflow.values()) + sum(self.dropped_gone.values())

    def forget(self, streams: Iterable[str]) -> None:
        """Streams no longer monitored: their drop counts move into ``dropped_gone`` (the totals
        stay whole; the per-stream record stays as large as the streams monitored)."""
        with self._cond:
            for sid in streams:
                self.dropped_gone["stale"] += self.dropped_stale.pop(sid, 0)
                self.dropped_gone["overflow"] += self.dropped_overflow.pop(sid, 0)

    def next_batch(self, timeout: float = 0.5, *, early: bool = True) -> list[Window]:
        """Blocks until a batch is due (full, oldest waited max_wait, flushed, or eager_batch windows
        queued) or ``timeout`` passes.

        Args:
            early: whether a ``flush()`` or ``eager_batch`` may send a batch before it is full or
                has waited ``max_wait_ms``; the inference loop passes False while the engine is busy
                with another batch, so windows gather into a fuller one instead of queueing behind it.

        Returns [] on timeout, or when closed and empty.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._drop_stale()
                n = len(self._q)
                if n >= self.max_batch or (n and self._closed):
                    return self._take()
                if n:
                    waited = self._clock() - self._q[0].t_ready
                    remaining = self.max_wait - waited
                    if remaining <= 0:
                        return self._take()
                    if early and self.accepted - n < self._due:  # the oldest window came before a flush()
                        self.flushes += 1
                        return self._take()
                    if early and self.eager_batch and n >= self.eager_batch:
                        self.eager_sends += 1
                        return self._take()
                    wait = min(remaining, deadline - time.monotonic())
                else:
                    if self._closed:
                        return []
                    wait = deadline - time.monotonic()
                if wait <= 0:
                    return []
                self._cond.wait(wait)

    def _take(self) -> list[Window]:
        n = len(self._q)
        if n > self.max_batch:
            n = min(n, self.catch_up_batch)
            self.catch_ups += n > self.max_batch
        batch = [self._q.popleft() for _ in range(n)]
        if self.block_when_full:
            self._cond.notify_all()
        return batch

    def _drop_stale(self) -> None:
        if self.stale <= 0 or not self._q:
            return
        now = self._clock()
        limit = now - self.stale
        stepped = self._steps.recent(STEP_GRACE_S) if self._steps is not None else None
        while self._q:
            t = self._q[0].t_ready
            if stepped is not None and across_step(t, now, *stepped):  # formed before a step: aged without it
                t += stepped[0]
            if t >= limit:
                break
            old = self._q.popleft()
            self.dropped_stale[old.stream_id] += 1
