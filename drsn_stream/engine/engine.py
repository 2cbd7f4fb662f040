"""The inference loop: batcher -> runner -> Predictions, on its own thread."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from drsn_stream.dsp.normalize import normalize_with_level
from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.procrunner import EngineRestarted
from drsn_stream.engine.runner import Pending, RunnerLike
from drsn_stream.engine.stats import EngineStats
from drsn_stream.types import Prediction, Window

POLL_S = 0.002  # how often the loop looks for a finished batch while another one may fall due


def predictions_from(
    windows: list[Window],
    probs: np.ndarray,
    noise: np.ndarray,
    labels: list[str],
    *,
    t_batched: float,
    t_done: float,
    features: np.ndarray | None = None,
) -> list[Prediction]:
    """Turns a batch's outputs into Predictions (argmax label, latency from capture); ``features``
    (b, features), when given, go with them."""
    top = probs.argmax(axis=1)
    out = []
    b = len(windows)
    for i, w in enumerate(windows):
        k = int(top[i])
        out.append(
            Prediction(
                stream_id=w.stream_id,
                index=w.index,
                t_last=w.t_last,
                probs=probs[i],
                label=labels[k],
                confidence=float(probs[i, k]),
                noise_index=float(noise[i]),
                latency_ms=(t_done - w.t_last) * 1000.0,
                t_batched=t_batched,
                t_done=t_done,
                batch_size=b,
                level=w.level,
                health="OK" if w.healthy else "CHECK_SENSOR",
                features=None if features is None else features[i],
            )
        )
    return out


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
        normalization: dict | None = None,
    ) -> None:
        """
        Args:
            normalization: the artifact's normalization spec, applied here to windows that arrive
                raw (``Window.normalized`` False), one vectorized call per batch; their ``level``
                (RMS before normalization) is set here too.
            latency_from_ready: measure latency from when a window was formed instead of from the
                capture of its last sample (file replays faster than real time have capture times
                on the recording's own clock, ahead of the wall clock).
        """
        super().__init__(name="drsn-engine", daemon=True)
        self.latency_from_ready = latency_from_ready
        self.normalization = normalization
        self.batcher = batcher
        self.runner = runner
        self.labels = list(labels)
        self.on_predictions = on_predictions
        self.stats = stats or EngineStats()
        self._halt = threading.Event()
        self.error: BaseException | None = None
        self.lost = 0  # windows lost when an engine process died with them in flight
        self.notes: list[str] = []

    def stop(self) -> None:
        self._halt.set()
        self.batcher.close()

    def run(self) -> None:
        # On CUDA and with the engine process up to runner.lanes batches are in flight: a batch
        # that is due is submitted while the previous one still runs, so copies and compute of
        # the two overlap, and a finished batch is collected within POLL_S, so overlap never holds
        # a result back. If the engine process dies a new one takes over: the batches in flight
        # are counted in ``lost`` and noted.
        pending: deque[tuple[list[Window], Pending, float]] = deque()
        try:
            while not self._halt.is_set():
                batch: list[Window] = []
                try:
                    # The oldest batch in flight is collected when it is done or when every lane
                    # is busy; otherwise the loop keeps watching the batcher (a short poll), so a
                    # batch that falls due while another runs is sent at once and the engine
                    # never idles waiting for this thread.
                    if pending and (len(pending) >= self.runner.lanes or self.runner.done(pending[0][1])):
                        self._finish(*pending.popleft())
                        continue
                    # While a batch runs, a flush does not send the next one early: it would
                    # only queue behind the running one, and smaller batches cost more per window.
                    batch = self.batcher.next_batch(timeout=POLL_S if pending else 0.1, early=not pending)
                    if batch:
                        t_batched = time.time()
                        pending.append((batch, self.runner.submit(self.batch_input(batch)), t_batched))
                        batch = []
                        if self.runner.lanes <= 1:
                            self._finish(*pending.popleft())
                    elif not pending and self.batcher.closed and self.batcher.depth() == 0:
                        return
                except EngineRestarted as exc:
                    self.lost += len(batch) + sum(len(b) for b, _, _ in pending)
                    pending.clear()
                    self.notes.append(str(exc))
            while pending:
                self._finish(*pending.popleft())
        except BaseException as exc:  # surfaced by the pipeline, never silently lost
            self.error = exc

    def process(self, batch: list[Window]) -> list[Prediction]:
        """Runs one batch to completion (no overlap) and hands its Predictions on."""
        t_batched = time.time()
        return self._finish(batch, self.runner.submit(self.batch_input(batch)), t_batched)

    def batch_input(self, batch: list[Window]) -> np.ndarray:
        """The model's input (b, n) float32: raw windows normalized here, all in one call per batch
        (per row in float64, so the same bits as one window at a time)."""
        x = np.stack([w.data for w in batch])
        raw = [i for i, w in enumerate(batch) if not w.normalized]
        if not raw:
            return x
        y, levels = normalize_with_level(x if len(raw) == len(batch) else x[raw], self.normalization)
        for j, i in enumerate(raw):
            batch[i].level = float(levels[j])
        if len(raw) == len(batch):
            return y
        x[raw] = y
        return x

    def _finish(self, batch: list[Window], handle: Pending, t_batched: float) -> list[Prediction]:
        probs, noise = self.runner.collect(handle)
        t_done = time.time()
        preds = predictions_from(batch, probs, noise, self.labels, t_batched=t_batched, t_done=t_done,
                                 features=handle.features)
        if self.latency_from_ready:
            for p, w in zip(preds, batch):
                p.latency_ms = (t_done - w.t_ready) * 1000.0
        lat: dict[str, list[float]] = {}
        for p in preds:
            lat.setdefault(p.stream_id, []).append(p.latency_ms)
        self.stats.record_batch(lat, len(batch), t_done - t_batched)
        if self.stats.recording and not self.latency_from_ready:
            self.stats.record_stages(np.array([w.t_last for w in batch]), np.array([w.t_ready for w in batch]),
                                     t_batched, t_done)
        self.on_predictions(preds)
        return preds
