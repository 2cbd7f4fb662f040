"""From window scores to one event per spoken word.

A 1 s window slides every 100 ms, so a spoken digit is seen by several windows in a row: its
score rises as the word enters the window, stays high for the (1 s - word length) that the whole
word is inside, and falls as the word leaves. ``WordDetector`` turns that bump into one
``detection`` event:

- hysteresis on the best word label's probability: a bump starts when it reaches ``enter`` and
  ends only when it falls below ``leave`` (``leave < enter``), so a score wobbling around one
  threshold is one word, not several;
- the bump's label must win ``confirm`` windows at or above ``enter`` in a row; then the event is
  emitted at once, with the peak probability seen so far. Waiting for the bump to end would add
  the rest of the window (about 0.6 s) to the latency of every word;
- within one bump, the same label is never emitted twice; a *different* label confirmed inside
  the bump is a new word spoken soon after (the score need not dip between two close words);
- ``refractory_s``: no detection within this time after the previous one on the stream, so a
  word leaving the window (whose tail may look like another digit) is not counted again.

Background labels (names starting with ``_``) never fire. State is kept per stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drsn_stream.errors import ConfigError
from drsn_stream.types import Event


@dataclass
class _State:
    in_bump: bool = False
    emitted: int = -1  # label emitted in the current bump
    cand: int = -1  # label being confirmed
    count: int = 0  # windows in a row the candidate won at >= enter
    peak: float = 0.0
    t_start: float = 0.0
    t_emit: float = float("-inf")


@dataclass(frozen=True)
class DetectorConfig:
    """The ``[detector]`` table: ``WordDetector``'s thresholds (see its docstring)."""

    enter: float = 0.7
    leave: float = 0.4
    refractory_s: float = 0.6
    confirm: int = 2

    def __post_init__(self) -> None:
        # the same rules as WordDetector's, so a table it would refuse is refused when read
        if not 0.0 < self.leave <= self.enter <= 1.0:
            raise ConfigError(f"need 0 < leave <= enter <= 1, got leave={self.leave}, enter={self.enter}")
        if self.confirm < 1 or not 0 <= self.refractory_s < math.inf:  # NaN would turn it off without a word
            raise ConfigError(f"confirm must be >= 1 and refractory_s >= 0 seconds, got confirm={self.confirm}, "
                              f"refractory_s={self.refractory_s}")


class WordDetector:
    """Hysteresis, confirmation and a refractory time over per-window label probabilities."""

    def __init__(
        self,
        labels: list[str] | tuple[str, ...],
        *,
        enter: float = 0.7,
        leave: float = 0.4,
        refractory_s: float = 0.6,
        confirm: int = 2,
    ) -> None:
        """
        Args:
            labels: the artifact's labels; those starting with "_" are background.
            enter: probability of the best word label that starts (and confirms) a word, 0..1.
            leave: probability below which the bump ends (0 < leave <= enter).
            refractory_s: seconds after a detection during which the stream emits no other.
            confirm: windows in a row (at the hop, 100 ms each) the label must win at >= enter.
        """
        if not 0.0 < leave <= enter <= 1.0:
            raise ConfigError(f"detector thresholds need 0 < leave <= enter <= 1, got enter={enter}, leave={leave}")
        if refractory_s < 0 or confirm < 1:
            raise ConfigError("detector needs refractory_s >= 0 seconds and confirm >= 1 window")
        self.labels = list(labels)
        self.word_idx = np.array([i for i, name in enumerate(self.labels) if not name.startswith("_")], dtype=np.int64)
        if self.word_idx.size == 0:
            raise ConfigError("the detector needs at least one word label (labels not starting with '_')")
        self.enter = float(enter)
        self.leave = float(leave)
        self.refractory_s = float(refractory_s)
        self.confirm = int(confirm)
        self._states: dict[str, _State] = {}

    def reset(self, stream_id: str | None = None) -> None:
        """Forget the state of one stream (or of all streams)."""
        if stream_id is None:
            self._states.clear()
        else:
            self._states.pop(stream_id, None)

    def update(self, stream_id: str, t_last: float, probs: np.ndarray) -> list[Event]:
        """Feed one window's scores, in time order; returns the detection it completes, if any.

        Args:
            stream_id: the stream the window came from.
            t_last: capture time of the window's last sample, seconds.
            probs: (classes,) probabilities over ``labels``.
        Returns: ``[Event(type="detection", stream_id, time=t_last,
            data={"label": "7", "confidence": 0.93, "t_start": s})]`` or ``[]``; ``t_start`` is
            the end time of the first window of the bump.
        """
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape[0] != len(self.labels):
            raise ConfigError(f"detector got {p.shape[0]} scores for {len(self.labels)} labels")
        st = self._states.setdefault(stream_id, _State())
        words = p[self.word_idx]
        best = int(np.argmax(words))
        best_p = float(words[best])
        if best_p < self.leave:
            st.in_bump = False
            st.emitted = st.cand = -1
            st.count = 0
            return []
        if best_p < self.enter:
            # Between the thresholds: the bump (if any) goes on, but nothing is confirmed.
            st.count = 0
            return []
        if not st.in_bump:
            st.in_bump = True
            st.t_start = float(t_last)
        if best == st.cand:
            st.count += 1
            st.peak = max(st.peak, best_p)
        else:
            st.cand, st.count, st.peak = best, 1, best_p
        # 0 <= ...: capture times that went back (a clock set back) are past the refractory time,
        # which would otherwise last as long as the step
        if st.count < self.confirm or best == st.emitted or 0.0 <= t_last - st.t_emit < self.refractory_s:
            return []
        st.emitted = best
        st.t_emit = float(t_last)
        return [
            Event(
                type="detection",
                stream_id=stream_id,
                time=float(t_last),
                data={
                    "label": self.labels[int(self.word_idx[best])],
                    "confidence": round(st.peak, 4),
                    "t_start": st.t_start,
                },
            )
        ]
