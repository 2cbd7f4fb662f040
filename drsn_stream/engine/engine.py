"""The inference loop: batcher -> runner -> Predictions, on its own thread."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from drsn_stream.clock import STEP_GRACE_S, WallSteps, across_step
from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.contract import Pending, RunnerLike
from drsn_stream.engine.procrunner import EngineRestarted
from drsn_stream.engine.stats import EngineStats
from drsn_stream.errors import ConfigError
from drsn_stream.types import Prediction, Predictions, Window

POLL_S = 0.002  # how often the loop looks for a finished batch while another one may fall due
# A window formed further than this from the capture time of its last sample (either way) comes
# from a sender whose clock is off this host's (or through a link that held it): said once per stream.
OFF_CLOCK_S = 2.0
OFF_CLOCK_NAMED = 5  # streams said by name; the rest in one line

# A batch's windows -> (the model's input (b, n) float32, each window's level (b,)): the DSP's
# normalization step (dsp.normalize.BatchNormalizer), injected by the app.
Prepare = Callable[[Sequence[Window]], tuple[np.ndarray, np.ndarray]]


def as_normalized(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
    """The ``Prepare`` for windows the DSP already normalized: their data and levels as they are.

    A raw window is refused: without a normalization step the model would see unscaled samples.
    """
    if not all(w.normalized for w in windows):
        raise ConfigError("raw windows reached the inference loop without a normalization step; pass "
                          "prepare=BatchNormalizer(meta.normalization) (drsn_stream.dsp.normalize)")
    # np.array of equal-shaped rows: np.stack's array, without its per-row steps
    return np.array([w.data for w in windows]), np.array([w.level for w in windows], dtype=np.float64)


def predictions_from(
    windows: Sequence[Window],
    probs: np.ndarray,
    noise: np.ndarray,
    labels: list[str],
    *,
    levels: np.ndarray,
    latency_ms: np.ndarray,
    t_batched: float,
    t_done: float,
    features: np.ndarray | None = None,
) -> Predictions:
    """Turns a batch's outputs into Predictions (argmax label), with the batch's columns.

    Args:
        levels: (b,) each window's level (RMS about its mean) before normalization, as the
            normalization step returned it.
        latency_ms: (b,) each window's latency, as the loop measured it.
        features: (b, features) pooled features, when the runner returns them.
    """
    b = len(windows)
    top = probs.argmax(axis=1)
    # the batch's numbers as Python objects in one call each, not one numpy scalar per window
    confidence = probs[np.arange(b), top].tolist()
    rows = list(probs)  # (classes,) views
    feats = [None] * b if features is None else list(features)
    noise = np.ascontiguousarray(noise, dtype=np.float64).reshape(b)  # the runner's may be a column of its output
    t_last = [w.t_last for w in windows]
    preds = [
        Prediction(w.stream_id, w.index, t, p, labels[k], c, ni, lat, t_batched, t_done, b, level,
                   "OK" if w.healthy else "CHECK_SENSOR", f)
        for w, t, p, k, c, ni, lat, level, f in zip(windows, t_last, rows, top.tolist(), confidence, noise.tolist(),
                                                    latency_ms.tolist(), levels.tolist(), feats)
    ]
    return Predictions(preds, probs, features, np.array(t_last, dtype=np.float64),
                       np.ascontiguousarray(levels, dtype=np.float64).reshape(b), noise)


class InferenceLoop(threading.Thread):
    """Pulls batches from the batcher, runs them, hands Predictions to ``on_predictions``.

    Ends when the batcher is closed and drained, or when ``stop()`` is called.
    """

    def __init__(
        self,
        batcher: MicroBatcher,
        runner: RunnerLike,
        labels: list[str],
        on_predictions: Callable[[list[Prediction]], None],
        *,
        stats: EngineStats | None = None,
        latency_from_ready: bool = False,
        prepare: Prepare = as_normalized,
    ) -> None:
        """
        Args:
            stats: where every window's latency is kept (the one record the dashboard, the
                metrics endpoint, the stats lines and the benchmarks read).
            prepare: a batch's windows -> (model input, levels): the DSP's normalization step
                (``dsp.normalize.BatchNormalizer``) for raw windows; by default the windows must
                be normalized already.
            latency_from_ready: measure latency from when a window was formed instead of from the
                capture of its last sample (file replays faster than real time have capture times
                on the recording's own clock, ahead of the wall clock).
        """
        super().__init__(name="drsn-engine", daemon=True)
        self.latency_from_ready = latency_from_ready
        self.prepare = prepare
        self.batcher = batcher
        self.runner = runner
        self.labels = list(labels)
        self.on_predictions = on_predictions
        self.stats = stats or EngineStats()
        self._halt = threading.Event()
        self.error: BaseException | None = None
        self.lost = 0  # windows lost when an engine process died with them in flight
        self.notes: list[str] = []
        self.off_clock: set[str] = set()  # streams said to arrive far from their capture time
        self._steps = WallSteps()
        self.stream_notes: list[tuple[str, str]] = []  # (stream, line) for ``note`` events
        self.beat = time.monotonic()  # when the loop last turned (at least every 0.1 s unless stuck)

    def stop(self) -> None:
        self._halt.set()
        self.batcher.close()

    def run(self) -> None:
        # On CUDA and with the engine process up to runner.lanes batches are in flight: a batch
        # that is due is submitted while the previous one still runs, so copies and compute of
        # the two overlap, and a finished batch is collected within POLL_S, so overlap never holds
        # a result back. If the engine process dies a new one takes over: the batches in flight
        # are counted in ``lost`` and noted.
        pending: deque[tuple[list[Window], np.ndarray, Pending, float]] = deque()
        try:
            while not self._halt.is_set():
                self.beat = time.monotonic()
                batch: list[Window] = []
                try:
                    # The oldest batch in flight is collected when it is done or when every lane
                    # is busy; otherwise the loop keeps watching the batcher (a short poll), so a
                    # batch that falls due while another runs is sent at once and the engine
                    # never idles waiting for this thread.
                    if pending and (len(pending) >= self.runner.lanes or self.runner.done(pending[0][2])):
                        self._finish(*pending.popleft())
                        continue
                    # While a batch runs, a flush does not send the next one early: it would
                    # only queue behind the running one, and smaller batches cost more per window.
                    batch = self.batcher.next_batch(timeout=POLL_S if pending else 0.1, early=not pending)
                    if batch:
                        t_batched = time.time()
                        x, levels = self.prepare(batch)
                        pending.append((batch, levels, self.runner.submit(x), t_batched))
                        batch = []
                        if self.runner.lanes <= 1:
                            self._finish(*pending.popleft())
                    elif not pending and self.batcher.closed and self.batcher.depth() == 0:
                        return
                except EngineRestarted as exc:
                    self.lost += len(batch) + sum(len(p[0]) for p in pending)
                    pending.clear()
                    self.notes.append(str(exc))
            while pending:
                self._finish(*pending.popleft())
        except BaseException as exc:  # surfaced by the pipeline, never silently lost
            self.error = exc

    def process(self, batch: list[Window]) -> list[Prediction]:
        """Runs one batch to completion (no overlap) and hands its Predictions on."""
        t_batched = time.time()
        x, levels = self.prepare(batch)
        return self._finish(batch, levels, self.runner.submit(x), t_batched)

    def _off_clock(self, batch: list[Window], lag: np.ndarray, late: np.ndarray) -> None:
        """Says (once per stream, a few streams by name) that windows were formed far from the
        capture time they carry: a sender's clock off this host's, or a link that held them."""
        for i in np.flatnonzero(late).tolist():
            sid = batch[i].stream_id
            if sid in self.off_clock:
                continue
            self.off_clock.add(sid)
            if len(self.off_clock) > OFF_CLOCK_NAMED:
                if len(self.off_clock) == OFF_CLOCK_NAMED + 1:
                    self.stream_notes.append(("*", "more streams arrive far from the capture time they carry (as above)"))
                continue
            s = float(lag[i])
            when = f"{s:.1f} s after" if s > 0 else f"{-s:.1f} s before"
            cause = ("behind this host's, or the link held them" if s > 0
                     else "ahead of this host's, or it sends faster than real time")
            self.stream_notes.append((sid, f"its samples arrive {when} the capture time they carry (the sender's "
                                           f"clock is {cause}); latency figures include it: synchronise the "
                                           "sender's clock (NTP/PTP)"))

    def _finish(self, batch: list[Window], levels: np.ndarray, handle: Pending, t_batched: float) -> list[Prediction]:
        probs, noise = self.runner.collect(handle)
        t_done = time.time()
        t_last = np.array([w.t_last for w in batch])
        t_ready = np.array([w.t_ready for w in batch])
        since = t_ready if self.latency_from_ready else t_last
        latency_ms = (t_done - since) * 1000.0
        stepped = self._steps.recent(STEP_GRACE_S)
        if stepped is not None:  # latency measured from a stamp taken before a step of the wall clock
            # The stamp latency runs from decides, not when the window was formed: samples
            # captured before a step and formed into a window after it are as late as they were.
            # A sender whose clock did not step reads what this host's would without the step,
            # so its stamps part at the same bound.
            latency_ms[across_step(since, t_done, *stepped)] -= stepped[0] * 1000.0
        preds = predictions_from(batch, probs, noise, self.labels, levels=levels, latency_ms=latency_ms,
                                 t_batched=t_batched, t_done=t_done, features=handle.features)
        self.stats.record_batch([w.stream_id for w in batch], latency_ms, t_done - t_batched)
        if not self.latency_from_ready:
            if self.stats.recording:
                self.stats.record_stages(t_last, t_ready, t_batched, t_done)
            lag = t_ready - t_last
            late = np.abs(lag) > OFF_CLOCK_S
            # windows in flight at a step carry capture times from before it: no clock is off
            if late.any() and stepped is None:
                self._off_clock(batch, lag, late)
        self.on_predictions(preds)
        return preds
