"""A plain reference of the decision state machine for the tests: one window at a time, each
stream's state a Python object (the record ``export_state`` gives), the way the rules read
(monitor/decision.py's docstring).
``DecisionEngine`` decides whole batches in numpy steps over rows of arrays; the tests hold it
to this, result for result and bit for bit."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from drsn_stream.models.ood import UNKNOWN as REFUSED
from drsn_stream.monitor.decision import DecisionConfig, Level
from drsn_stream.monitor.decision import _Stream as RefStream  # the per-stream record export_state gives
from drsn_stream.types import Prediction


class ReferenceDecisions:
    def __init__(self, labels: list[str], config: DecisionConfig, level_of) -> None:  # noqa: ANN001
        self.labels, self.config = list(labels), config
        self.label_level = [level_of(lab) for lab in labels]
        self.streams: dict[str, RefStream] = {}

    def update(self, p: Prediction, healthy: bool) -> list[dict]:
        """One window; the alarm events it causes, as JSON."""
        cfg = self.config
        st = self.streams.setdefault(p.stream_id, RefStream(history=deque(maxlen=cfg.window_count)))
        probs = np.array(p.probs, dtype=np.float64)
        t = float(p.t_last)
        st.windows += 1
        st.last_time = t
        st.levels.append(float(p.level))
        if math.isfinite(p.noise_index):
            a = cfg.noise_alpha
            st.noise = float(p.noise_index) if st.windows == 1 else (1 - a) * st.noise + a * float(p.noise_index)
        if st.since is None:
            st.since = t
        st.anomaly = float(p.anomaly) if p.anomaly is not None and math.isfinite(p.anomaly) else None
        env = p.envelope_db if p.envelope_db is not None and not math.isnan(p.envelope_db) else None
        if not (healthy and np.isfinite(probs.sum())):
            self._blank(st, "?")
            st.healthy = False
            return []
        st.healthy = True
        st.refused = p.model_label is not None and p.label == REFUSED
        # no evidence for a label; its anomaly score, where it has one, still is, and its envelope
        # where it supports an alarm
        env_up = self._env_up(st, env)
        if st.refused:
            self._blank(st, REFUSED, debounce=st.anomaly is None and not env_up)
            if st.anomaly is None and not env_up:
                return []
        else:
            self._smooth(st, probs)
        return self._step(p.stream_id, st, t, env if env_up else None)

    def _env_up(self, st: RefStream, env: float | None) -> bool:
        cfg = self.config
        if env is None or cfg.envelope_enter_db is None:
            return False
        return env >= (cfg.envelope_enter_db if st.cond == Level.NORMAL else cfg.envelope_leave_db)

    @staticmethod
    def _blank(st: RefStream, label: str, *, debounce: bool = True) -> None:
        st.history.clear()
        st.psum = st.ema = st.probs = None
        st.label, st.confidence = label, 0.0
        if debounce:
            st.pending_count = 0

    def _smooth(self, st: RefStream, probs: np.ndarray) -> None:
        cfg = self.config
        if cfg.smoothing == "ema":
            st.ema = probs.copy() if st.ema is None else (1 - cfg.ema_alpha) * st.ema + cfg.ema_alpha * probs
            smoothed, best = st.ema, int(st.ema.argmax())
        else:
            vote = int(probs.argmax())
            if not st.history:
                st.votes, st.psum = [0] * len(self.labels), np.zeros(len(self.labels))
            if len(st.history) == st.history.maxlen:
                old, old_vote = st.history[0]
                st.votes[old_vote] -= 1
                st.psum -= old
            st.history.append((probs, vote))
            st.votes[vote] += 1
            if st.windows % 1024 == 0:
                st.psum = np.sum([h[0] for h in st.history], axis=0)
            else:
                st.psum += probs
            smoothed = st.psum / len(st.history)
            top = max(st.votes)
            best = max((i for i, c in enumerate(st.votes) if c == top), key=lambda i: smoothed[i])
        st.probs, st.best = smoothed, best
        st.label, st.confidence = self.labels[best], float(smoothed[best])

    def _supported(self, st: RefStream, t: float, env: float | None) -> Level:
        cfg = self.config
        long_episode = (cfg.danger_after_s is not None and st.episode_since is not None
                        and t - st.episode_since >= cfg.danger_after_s)
        by_label = Level.NORMAL
        level = Level.NORMAL if st.refused else self.label_level[st.best]
        if level > Level.NORMAL and st.confidence >= (cfg.enter_confidence if level > st.cond else cfg.leave_confidence):
            danger = cfg.danger_confidence is not None and st.confidence >= cfg.danger_confidence
            by_label = Level.DANGER if danger or long_episode else level
        by_anomaly = Level.NORMAL
        a = st.anomaly
        if a is not None and a >= (cfg.anomaly_enter if st.cond == Level.NORMAL else cfg.anomaly_leave):
            danger = cfg.anomaly_danger is not None and a >= cfg.anomaly_danger
            by_anomaly = Level.DANGER if danger or long_episode else Level.ALERT
        by_envelope = Level.NORMAL
        if env is not None:  # (given only where it supports an alarm)
            danger = cfg.envelope_danger_db is not None and env >= cfg.envelope_danger_db
            by_envelope = Level.DANGER if danger or long_episode else Level.ALERT
        return max(by_label, by_anomaly, by_envelope)

    def _step(self, sid: str, st: RefStream, t: float, env: float | None) -> list[dict]:
        cfg = self.config
        target = self._supported(st, t, env)
        if target == st.cond:
            st.pending_count = 0
        else:
            rising = target > st.cond
            if st.pending_count and rising == (st.pending > st.cond):
                st.pending = min(st.pending, target) if rising else max(st.pending, target)
                st.pending_count += 1
            else:
                st.pending, st.pending_count = target, 1
            if st.pending_count >= (cfg.set_windows if rising else cfg.clear_windows):
                st.cond, st.pending_count = st.pending, 0
                if st.cond > Level.NORMAL and st.episode_since is None:
                    st.episode_since = t
                elif st.cond == Level.NORMAL:
                    st.episode_since = None
                    if not cfg.latching:
                        st.peak = Level.NORMAL
                st.peak = max(st.peak, st.cond)
        return self._show(sid, st, t)

    def _show(self, sid: str, st: RefStream, t: float, **extra: object) -> list[dict]:
        shown = max(st.cond, st.peak) if self.config.latching else st.cond
        if shown == st.shown:
            return []
        data = {"from": st.shown.name, "to": shown.name, "label": st.label, "confidence": round(st.confidence, 5),
                **({"anomaly": round(st.anomaly, 4)} if st.anomaly is not None else {}), **extra}
        st.shown, st.since = shown, t
        return [{"type": "alarm", "stream": sid, "time": t, **data}]

    def acknowledge(self, sid: str | None, now: float | None) -> list[dict]:
        out = []
        for s in list(self.streams) if sid is None else [sid]:
            st = self.streams.get(s)
            if st is not None:
                st.peak = Level.NORMAL
                out += self._show(s, st, now if now is not None else (st.last_time or 0.0), acknowledged=True)
        return out
