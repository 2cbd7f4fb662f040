"""Steps of the wall clock.

Capture times, arrival times and the times events carry are wall-clock seconds (``time.time()``),
so that times from other hosts compare; durations are measured on the monotonic clock. The wall
clock can step while the monitor runs: NTP setting the clock after boot (a gateway without a
real-time clock starts at its last shutdown, or in 1970), a laptop waking from suspend (the
monotonic clock stood still meanwhile), ``date -s``. NTP's slewing moves both clocks alike, so
a change of their difference by more than ``STEP_S`` is a step, and whoever keeps wall-clock
stamps to compare with "now" moves the stamps taken before it (``WallSteps``, ``before_step``).
"""

from __future__ import annotations

import math
import time

import numpy as np

STEP_S = 0.5  # wider than the jitter of reading the two clocks one after the other under load
STEP_GRACE_S = 10.0  # for this long after a step, windows in flight carry stamps from before it


class WallSteps:
    """Finds steps of the wall clock against the monotonic clock, one look at a time."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()
        self._last: tuple[float, float, float] = (0.0, 0.0, -math.inf)  # the latest step: (s, bound, monotonic time)

    def check(self) -> tuple[float, float] | None:
        """``(step, bound)`` when the wall clock stepped since the last look, else None.

        ``step``: seconds, > 0 forward. ``bound``: the wall time that parts the stamps taken
        before the step from those taken after it (``before_step``): before a step forward they
        are below it (what the clock would read now without the step), before a step back above
        it (ahead of the clock now: those taken less than the step before it)."""
        wall = time.time()
        offset = wall - time.monotonic()
        step = offset - self._offset
        if abs(step) <= STEP_S:
            return None
        self._offset = offset
        bound = wall - step if step > 0 else wall
        self._last = (step, bound, time.monotonic())
        return step, bound

    def recent(self, within: float) -> tuple[float, float] | None:
        """The latest ``(step, bound)`` ``check`` found (it looks first), if it found it within the
        last ``within`` seconds, the bound as ``before_step`` takes it now: before a step back,
        the wall time now (a stamp taken before a step back is ahead of the clock until it passes
        it again; the bound found at the step would take the stamps taken since, once it has)."""
        self.check()
        step, bound, found = self._last
        if time.monotonic() - found >= within:
            return None
        return (step, bound) if step > 0 else (step, time.time())


def before_step(stamps: np.ndarray | float, step: float, bound: float) -> np.ndarray | bool:
    """Which wall-clock ``stamps`` were taken before a step ``WallSteps.check`` found (NaN: none)."""
    return stamps < bound if step > 0 else stamps > bound


def across_step(stamps: np.ndarray | float, now: float, step: float, bound: float) -> np.ndarray:
    """Which wall-clock ``stamps`` lie across a step from ``now`` (a wall time read before the step
    was looked for): taken before it, where ``now`` was read after it. None of them where ``now``
    was read before the step too: a step that came between reading ``now`` and looking for it (a
    busy host holds a thread there) leaves both on one side, and moving the stamps by it made a
    window an hour late, or stale."""
    if before_step(now, step, bound):
        return np.zeros(np.shape(stamps), dtype=np.bool_)
    return np.asarray(before_step(np.asarray(stamps), step, bound), dtype=np.bool_)
