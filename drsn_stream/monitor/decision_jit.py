"""``DecisionEngine.update_many``'s rules for a batch compiled (numba): one loop over the batch.

The numpy path decides a batch in rounds of distinct streams, each round in some ninety numpy
steps over its rows (gathers from the state table, ``where``s, scatters back): for a live batch
of about a hundred windows most of the time goes to the steps' fixed cost, and a stream twice in
a batch costs a round more. Here each window is decided in turn, in the batch's order, on its
stream's row of the same table: the same rules, the same float operations in the same order, so
the same labels, levels, events and state, bit for bit (``tests/test_decision.py`` runs the
kernel compiled and as plain Python against the plain reference of the rules).

Used where numba imports (``drsn_stream.jit``; ``DRSN_STREAM_JIT=0`` turns it off); without it
the numpy path runs. ``DecisionEngine`` compiles it (or loads it from numba's cache) when it is
built, before a monitor's results arrive.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# fpar / ipar: the DecisionConfig's numbers (None as NaN: a comparison with NaN is never true,
# which is what "None: never" means in each rule)
(F_NOISE_ALPHA, F_EMA_ALPHA, F_DANGER_AFTER, F_DANGER_CONF, F_ENTER, F_LEAVE, F_AN_ENTER, F_AN_LEAVE, F_AN_DANGER,
 F_ENV_ENTER, F_ENV_LEAVE, F_ENV_DANGER) = range(12)
I_EMA, I_SET, I_CLEAR, I_LATCHING = range(4)
RESUM_EVERY = 1024  # a stream's running vote sum is summed afresh from its ring every this many windows


def params(cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's ``fpar`` and ``ipar`` of a ``DecisionConfig``."""
    nan = math.nan

    def opt(x: float | None) -> float:
        return nan if x is None else float(x)

    fpar = np.array([cfg.noise_alpha, cfg.ema_alpha, opt(cfg.danger_after_s), opt(cfg.danger_confidence),
                     cfg.enter_confidence, cfg.leave_confidence, cfg.anomaly_enter, cfg.anomaly_leave,
                     opt(cfg.anomaly_danger), opt(cfg.envelope_enter_db),
                     nan if cfg.envelope_enter_db is None else cfg.envelope_leave_db, opt(cfg.envelope_danger_db)],
                    dtype=np.float64)
    ipar = np.array([cfg.smoothing == "ema", cfg.set_windows, cfg.clear_windows, cfg.latching], dtype=np.int64)
    return fpar, ipar


def _decide_py(slots, probs, t_in, level_in, noise_in, anomaly_in, env_in, refused_in, evidence_in,  # noqa: C901, PLR0912, PLR0913, PLR0915
               fpar, ipar, level_of,
               hist, hist_vote, hist_len, hist_pos, psum, votes, best_c, ema, has_ema, label, confidence,
               probs_c, has_probs, cond_c, peak_c, shown_c, since, episode_c, pending_c, pending_count, healthy,
               noise, windows_c, last_time, levels, levels_n, levels_pos, anomaly_c, refused_c,
               labels_out, shown_out, conf_out, ev_from):
    """Window ``i`` of the batch (its stream's row ``slots[i]``) decided in turn, the state
    columns (``decision._COLUMNS``, in that order) updated in place. Out: each window's label
    code and shown level right after it, its stream's confidence then, and ``ev_from[i]`` the
    shown level before it where it changed the shown level (an alarm event), else -1.
    (Compiled by numba; as plain Python it runs too, slowly: the tests run it that way.)"""
    b = slots.shape[0]
    c = probs.shape[1]
    k = hist.shape[1]
    keep = levels.shape[1]
    noise_alpha = fpar[F_NOISE_ALPHA]
    ema_alpha = fpar[F_EMA_ALPHA]
    danger_after = fpar[F_DANGER_AFTER]
    danger_conf = fpar[F_DANGER_CONF]
    enter, leave = fpar[F_ENTER], fpar[F_LEAVE]
    an_enter, an_leave, an_danger_at = fpar[F_AN_ENTER], fpar[F_AN_LEAVE], fpar[F_AN_DANGER]
    env_enter, env_leave, env_danger_at = fpar[F_ENV_ENTER], fpar[F_ENV_LEAVE], fpar[F_ENV_DANGER]
    use_ema = ipar[I_EMA] != 0
    set_windows, clear_windows = ipar[I_SET], ipar[I_CLEAR]
    latching = ipar[I_LATCHING] != 0
    sums = np.empty(c, dtype=np.float64)
    for i in range(b):
        s = slots[i]
        t = t_in[i]
        w = windows_c[s] + 1
        windows_c[s] = w
        last_time[s] = t
        pos = levels_pos[s]
        levels[s, pos] = level_in[i]
        levels_pos[s] = (pos + 1) % keep
        levels_n[s] = min(levels_n[s] + 1, keep)
        ni = noise_in[i]
        if math.isfinite(ni):
            noise[s] = ni if w == 1 else (1 - noise_alpha) * noise[s] + noise_alpha * ni
        if math.isnan(since[s]):
            since[s] = t
        an = anomaly_in[i]
        if not math.isfinite(an):
            an = math.nan
        anomaly_c[s] = an
        evidence = evidence_in[i]
        refused = refused_in[i] and evidence
        # no evidence either way (a sick sensor, non-finite scores, a refused label): keep the
        # level, forget the history, restart the debounce; a refused label shows "unknown" (its
        # anomaly score is evidence still: the debounce goes on)
        blank = (not evidence) or refused
        env = env_in[i]
        env_up = env >= (env_enter if cond_c[s] == 0 else env_leave)  # NaN (none, or off): False
        speaks = refused and (not math.isnan(an) or env_up)  # a refused label's envelope speaks only to raise
        healthy[s] = evidence  # a refused label comes from a healthy sensor
        if blank:
            hist_len[s] = 0
            hist_pos[s] = 0
            has_ema[s] = False
            has_probs[s] = False
            label[s] = 1 if refused else 0
            confidence[s] = 0.0
            if not speaks:
                pending_count[s] = 0
        if evidence:
            refused_c[s] = refused
        if not blank:  # the smoothing
            if use_ema:
                if has_ema[s]:
                    for j in range(c):
                        sums[j] = (1 - ema_alpha) * ema[s, j] + ema_alpha * probs[i, j]
                else:
                    for j in range(c):
                        sums[j] = probs[i, j]
                top = 0
                for j in range(c):
                    ema[s, j] = sums[j]
                    if sums[j] > sums[top]:
                        top = j
                has_ema[s] = True
            else:
                count = hist_len[s]
                at = hist_pos[s]
                vote = 0
                for j in range(1, c):
                    if probs[i, j] > probs[i, vote]:
                        vote = j
                if count == 0:
                    for j in range(c):
                        votes[s, j] = 0
                        sums[j] = 0.0
                else:
                    for j in range(c):
                        sums[j] = psum[s, j]
                if count == k:  # the oldest window leaves the ring
                    votes[s, hist_vote[s, at]] -= 1
                    for j in range(c):
                        sums[j] -= hist[s, at, j]
                votes[s, vote] += 1
                for j in range(c):
                    hist[s, at, j] = probs[i, j]
                hist_vote[s, at] = vote
                hist_pos[s] = (at + 1) % k
                count = min(count + 1, k)
                hist_len[s] = count
                for j in range(c):
                    sums[j] += probs[i, j]
                if w % RESUM_EVERY == 0:  # shed rounding drift: the ring summed afresh, oldest first
                    start = (hist_pos[s] - count) % k
                    for j in range(c):
                        sums[j] = hist[s, start, j]
                    for q in range(1, count):
                        for j in range(c):
                            sums[j] += hist[s, (start + q) % k, j]
                most = votes[s, 0]
                for j in range(1, c):
                    most = max(most, votes[s, j])
                # the label most often on top; among labels tied for it the highest smoothed
                # score, the first of equals
                top = 0
                top_score = sums[0] / count if votes[s, 0] == most else -np.inf
                for j in range(c):
                    psum[s, j] = sums[j]
                    sums[j] = sums[j] / count
                    if j > 0 and votes[s, j] == most and sums[j] > top_score:
                        top, top_score = j, sums[j]
            for j in range(c):
                probs_c[s, j] = sums[j]
            has_probs[s] = True
            best_c[s] = top
            label[s] = top + 2
            confidence[s] = sums[top]
        ev_from[i] = -1
        # stepped: every evidence window, a refused label only where an anomaly score speaks or
        # its envelope supports an alarm
        if (not blank) or speaks:
            cond = cond_c[s]
            episode = episode_c[s]
            long_episode = (not math.isnan(episode)) and t - episode >= danger_after
            # the level the window's label supports: its own level, once its smoothed confidence
            # is enough (more to rise than to stay: hysteresis); DANGER by confidence or duration
            conf = confidence[s]
            lab = 0 if refused_c[s] else level_of[best_c[s]]
            lab_up = conf >= (enter if lab > cond else leave) and lab > 0
            danger = long_episode or conf >= danger_conf
            by_label = (2 if danger else lab) if lab_up else 0
            # the level the anomaly score supports, with its own hysteresis (NaN: none)
            an_up = an >= (an_enter if cond == 0 else an_leave)
            an_danger = long_episode or an >= an_danger_at
            target = max(by_label, (2 if an_danger else 1) if an_up else 0)
            # the level the envelope's rise supports, with its own hysteresis
            if env_up:
                target = max(target, 2 if long_episode or env >= env_danger_at else 1)
            peak = peak_c[s]
            if target == cond:
                pending_count[s] = 0
            else:
                # debounce: a rise takes set_windows windows in a row that support it (settling
                # on the lowest level of the streak), a fall clear_windows
                pending, pcount = pending_c[s], pending_count[s]
                rising = target > cond
                if pcount > 0 and rising == (pending > cond):
                    pending = min(pending, target) if rising else max(pending, target)
                    pcount += 1
                else:
                    pending, pcount = target, 1
                if pcount >= (set_windows if rising else clear_windows):
                    cond = pending
                    pcount = 0
                    if cond > 0 and math.isnan(episode):
                        episode = t
                    if cond == 0:
                        episode = math.nan
                        if not latching:
                            peak = 0  # without latching, a cleared alarm needs no acknowledgement
                    peak = max(peak, cond)
                    cond_c[s] = cond
                    episode_c[s] = episode
                    peak_c[s] = peak
                pending_c[s] = pending
                pending_count[s] = pcount
            shown = max(cond, peak) if latching else cond
            if shown != shown_c[s]:
                ev_from[i] = shown_c[s]
                shown_c[s] = shown
                since[s] = t
        labels_out[i] = label[s]
        shown_out[i] = shown_c[s]
        conf_out[i] = confidence[s]
    return b
