"""The engine process and an idle engine process behind one ``RunnerLike``.

On a host of few cores the engine process has a core of its own and the monitor (ingest, the
inference loop, output) the rest, of which it uses only part: at 256 live streams on 2 cores the
monitor's core idles a third of the time while the engine's is 80-90 % busy, and a slow spell of
the host's is enough for the engine to fall behind. A second engine process on the monitor's
cores at idle priority (SCHED_IDLE: it runs only when nothing else there wants the core, so it
takes no time from ingest) runs a batch only when the first has all its lanes in flight: nothing
changes while the engine keeps up, and a backlog drains with the monitor core's spare time too.
Both processes run the same artifact in the same verified form, so a window's result does not
depend on which of them ran it; the inference loop hands results on in the order the batches were
sent (``InferenceLoop``).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drsn_stream.engine.contract import Pending, infer_in_slices
from drsn_stream.engine.procrunner import EngineRestarted, ProcessRunner
from drsn_stream.errors import DrsnStreamError, EngineError

# The most windows in an idle engine's batch. It runs on what the monitor's core leaves, at a
# third of the engine process's speed or less, and the results of later batches wait for its
# batch: a small one holds nothing back for long, and the rest of a due batch stays for the
# engine process.
IDLE_BATCH = 32


@dataclass(eq=False)
class _Slot:
    """A pool's batch: which process (0 the primary, 1 the helper), that process's handle, and
    for a helper's batch the handle of its copy on the primary (``EnginePool.poll``)."""

    k: int
    inner: Pending
    hedge: Pending | None = None


class EnginePool:
    """``RunnerLike`` over a primary ``ProcessRunner`` and an idle helper (``ProcessRunner(idle=True)``).

    The helper is started the first time the primary has all its lanes in flight (a monitor that
    never falls behind, a demo of one microphone, never pays for a second process), by
    ``make_helper``; ``start_helper()`` starts it at once. A batch goes to the primary while it
    has a free lane, else to the helper once it is ready and free, at most ``helper_batch``
    windows. Batches of one process are collected in the order they were sent to it; batches of
    the two finish in any order (``out_of_order``): the caller asks ``done`` of each and ``wait``s
    for either. A helper that fails to start, or dies more often than a primary may, is switched
    off with a line ``poll`` returns; a helper's death loses only its own batch.
    """

    out_of_order = True

    def __init__(self, primary: ProcessRunner, make_helper: Callable[[], ProcessRunner], *,
                 helper_batch: int = IDLE_BATCH) -> None:
        self.primary = primary
        self.runners: list[ProcessRunner] = [primary]  # the helper joins once started
        self.window, self.max_batch, self.features = primary.window, primary.max_batch, primary.features
        self.notes = primary.notes
        self.ready = primary.ready
        self.helper_batch = int(helper_batch)
        self.messages: list[str] = []  # what the caller should say (a helper started, switched off): poll()
        self._make_helper: Callable[[], ProcessRunner] | None = make_helper  # None once used
        self._off = False  # the helper is switched off for good
        self._on_helper: Pending | None = None  # the batch the helper runs for the caller
        # results that lost the race (a helper's batch and its copy on the primary: the first to
        # finish is used), collected and dropped once done, each process's in its order
        self._drop_primary: list[Pending] = []
        self._drop_helper: list[Pending] = []
        self.copies = 0  # helper batches copied to the primary

    @property
    def helper(self) -> ProcessRunner | None:
        """The helper while it runs (started and not switched off)."""
        return self.runners[1] if len(self.runners) > 1 and not self._off else None

    @property
    def device_name(self) -> str:
        return self.primary.device_name + (" + 1 on idle time" if self.helper is not None else "")

    @property
    def lanes(self) -> int:
        """Batches the caller may have in flight now: the primary's lanes and the helper's once it
        is ready (one still loading its model takes none), less the lanes that a copy of the
        helper's batch on the primary and results to throw away hold."""
        held = len(self._drop_primary) + len(self._drop_helper)
        held += self._on_helper is not None and self._on_helper.slot.hedge is not None
        return self.primary.lanes + (self.runners[1].lanes if self._usable() else 0) - held

    @property
    def pid(self) -> int:
        return self.primary.pid

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.runners[: 1 if self._off else 2]]

    @property
    def restarts(self) -> int:
        return sum(r.restarts for r in self.runners)

    @property
    def batch_times(self):  # the primary's (benchmarks read each runner's from ``runners``)
        return self.primary.batch_times

    def warmup(self) -> None:
        """Waits for the primary; a helper joins once it is ready (``lanes`` asks)."""
        self.primary.warmup()

    def start_helper(self) -> None:
        """Starts the helper now (it loads the model meanwhile; ``lanes`` counts it once ready)."""
        make, self._make_helper = self._make_helper, None
        if make is None:
            return
        try:
            self.runners.append(make())
        except OSError as exc:  # no room for its shared memory, no process
            self._off = True
            self.messages.append(f"no idle engine process: it cannot be started here ({exc.strerror or exc})")

    def poll(self) -> list[str]:
        """Looks after the helper without waiting and returns the lines to say since the last call.

        Starts the helper once the primary has every lane busy; asks one that is loading whether
        it is ready (or failed); throws away results nobody waits for any more; and, while the
        helper runs a batch and the primary has none, sends a copy of that batch to the primary
        (a helper's batch waits for the monitor's core to be idle; the primary is idle now): the
        batch's results are whichever come first, so a busy monitor core holds nothing back.
        """
        if self._make_helper is not None and self.primary.in_flight >= self.primary.lanes:
            self.start_helper()
        self._usable()
        self._throw_away(wait=False)
        h = self._on_helper
        if h is not None and h.slot.hedge is None and self.primary.in_flight == 0 and not self._drop_primary:
            helper = self.runners[1]
            if not self._off and not helper.lost(h.slot.inner) and not helper.done(h.slot.inner):
                h.slot.hedge = self.primary.submit(helper.input_of(h.slot.inner))
                self.copies += 1
        lines, self.messages = self.messages, []
        return lines

    def _throw_away(self, *, wait: bool) -> None:
        """Collects and drops the results that lost the race: the primary's (``wait``: until the
        primary's next batch is its oldest) and the helper's that are done."""
        for k, drop, block in ((0, self._drop_primary, wait), (1, self._drop_helper, False)):
            runner = self.runners[k] if k < len(self.runners) else None
            while drop and runner is not None:
                if runner.lost(drop[0]):  # went with a process that died
                    drop.pop(0)
                elif block or runner.done(drop[0]):
                    self._call(k, runner.collect, drop.pop(0))
                else:
                    break

    def _usable(self) -> bool:
        helper = self.helper
        if helper is None:
            return False
        try:
            return helper.poll_ready()
        except DrsnStreamError as exc:
            self._switch_off(f"the idle engine process failed to start ({exc}); the engine process runs alone")
            return False

    def _switch_off(self, line: str) -> None:
        self._off = True
        self.messages.append(line)
        self._drop_helper.clear()
        self.runners[1].close(wait_s=0.0)

    @property
    def batch_limit(self) -> int | None:
        """The most windows the next batch should hold: None while the primary has a lane free,
        ``helper_batch`` when the next one goes to the helper (the rest stays due for the primary)."""
        return None if self.primary.in_flight < self.primary.lanes else self.helper_batch

    def _pick(self) -> int:
        if self.primary.in_flight < self.primary.lanes:
            return 0
        if self._usable() and self.runners[1].in_flight < self.runners[1].lanes:
            return 1
        raise RuntimeError(f"all {self.lanes} lanes are in flight; collect one first")

    def submit(self, x: np.ndarray) -> Pending:
        k = self._pick()
        inner = self._call(k, self.runners[k].submit, x)
        pending = Pending(inner.rows, slot=_Slot(k, inner))
        if k == 1:
            self._on_helper = pending
        return pending

    def _call(self, k: int, fn, *args):
        """``fn(*args)`` of runner ``k``: a helper that gives up (too many deaths) is switched off,
        its batches counted lost as a restart's are."""
        try:
            return fn(*args)
        except EngineRestarted:
            raise
        except EngineError as exc:
            if k == 0:
                raise
            self._switch_off(f"{exc}; the engine process runs alone")
            raise EngineRestarted("the idle engine process was switched off, its batch in flight is lost") from None

    def _hedge(self, slot: _Slot) -> Pending | None:
        """The copy of a helper's batch on the primary, if one runs (None once the primary died)."""
        if slot.hedge is not None and self.primary.lost(slot.hedge):
            slot.hedge = None
        return slot.hedge

    def done(self, pending: Pending) -> bool:
        slot = pending.slot
        if slot.k == 0:
            self._throw_away(wait=False)
            return self.primary.done(slot.inner)
        hedge = self._hedge(slot)
        if not self._off and not self.runners[1].lost(slot.inner) and self.runners[1].done(slot.inner):
            return True
        if hedge is None:
            return False
        self._throw_away(wait=False)
        return self.primary.done(hedge)

    def lost(self, pending: Pending) -> bool:
        """Whether ``pending`` went with a process that died (a helper's batch is not while its copy
        on the primary runs)."""
        slot = pending.slot
        if slot.k == 0:
            return self.primary.lost(slot.inner)
        return (self._off or self.runners[1].lost(slot.inner)) and self._hedge(slot) is None

    def collect(self, pending: Pending) -> tuple[np.ndarray, np.ndarray]:
        slot = pending.slot
        if slot.k == 0:
            self._throw_away(wait=True)
            out = self.primary.collect(slot.inner)
            pending.features = slot.inner.features
            return out
        helper = self.runners[1]
        hedge = self._hedge(slot)
        self._on_helper = None
        helper_gone = self._off or helper.lost(slot.inner)
        if hedge is not None and (helper_gone or not helper.done(slot.inner)):
            # the copy on the primary is waited for: the helper's core may stay busy for long
            if not helper_gone:
                self._drop_helper.append(slot.inner)
            self._throw_away(wait=True)
            out = self.primary.collect(hedge)
            pending.features = hedge.features
            return out
        if hedge is not None:
            self._drop_primary.append(hedge)
        out = self._call(1, helper.collect, slot.inner)
        pending.features = slot.inner.features
        return out

    def wait(self, timeout: float) -> None:
        """Returns when a batch in flight may be done (a reply came from some process), or after
        ``timeout`` seconds."""
        busy = [r for r in self.runners[: 1 if self._off else 2] if r.in_flight]
        if not busy or any(r.has_reply() for r in busy):
            return
        select.select(busy, [], [], timeout)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return infer_in_slices(self, x, self.max_batch)

    def begin_close(self) -> None:
        for r in self.runners:
            r.begin_close()

    def close(self, *, wait_s: float = 5.0) -> None:
        for r in self.runners:
            r.close(wait_s=wait_s)
