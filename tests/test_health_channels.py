"""Sensor health of multi-channel frames on the array path: every channel its own stream, judged
as if its frames came alone, one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_stream.monitor.health import FLAT, GAP, NON_FINITE, OK, HealthConfig, HealthMonitor
from drsn_stream.types import Frame, channel_ids, split_channels

RATE = 1000.0
CHUNK = 100  # 0.1 s frames


def noise(n: int, channels: int, seed: int, dtype=np.float32) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, channels))).astype(dtype)


@pytest.mark.parametrize("compiled", [None, False], ids=["default", "numpy"])
def test_a_reason_in_one_channel_marks_only_that_channels_stream(compiled: bool | None) -> None:
    health = HealthMonitor(compiled=compiled)
    ids = channel_ids("gw", 16)
    events: list = []
    t = 1000.0
    for seq in range(80):
        x = noise(CHUNK, 16, seq)
        if 30 <= seq < 45:
            x[:, 5] = 0.25  # channel 5 goes flat
        if seq == 50:
            x[10:20, 9] = np.nan  # channel 9 sends NaN
        skip = 5 if seq >= 60 else 0  # then the gateway loses five frames
        t += 0.1
        events += health.push_channels([Frame("gw", seq + skip, t, RATE, x)], now=t)
        events += health.flush_many(ids, now=t)
        if seq == 44:
            assert health.unhealthy(ids) == {"gw/ch5"}
            assert health.state("gw/ch5").reasons == (FLAT,) and health.healthy("gw/ch4")
        if seq == 60:
            assert all(GAP in health.state(sid).reasons for sid in ids) and not health.healthy("gw/ch0")
    flat = [e for e in events if FLAT in e.data["reasons"]]
    assert {e.stream_id for e in flat} == {"gw/ch5"}
    assert {e.stream_id for e in events if NON_FINITE in e.data["reasons"]} == {"gw/ch9"}
    assert health.state("gw/ch9").non_finite == 10 and health.state("gw/ch8").non_finite == 0
    # the streams that were OK say so at once; those still recovering from their own reason had no change
    assert {e.stream_id for e in events if GAP in e.data["reasons"]} == set(ids) - {"gw/ch5", "gw/ch9"}
    assert all(health.state(sid).gaps == 5 and health.state(sid).frames == 80 for sid in ids)


def _polls() -> list[list[Frame]]:
    """Polls of a 16-channel gateway, float32 and float64 single-channel streams, a stream that
    starts late, one that restarts, one that changes rate, gaps, an overflow, a flat channel and
    NaN; some polls hold two frames of a stream."""
    polls: list[list[Frame]] = []
    seq = {"gw": 0, "a": 0, "b": 0, "c": 0, "named": 0}
    for k in range(60):
        poll = []
        for _ in range(2 if k % 7 == 3 else 1):
            x = noise(CHUNK, 16, k)
            if 20 <= k < 30:
                x[:, 3] = 0.0
            if k == 33:
                x[5, 11] = np.inf
            gw_rate = RATE if k < 40 else 2 * RATE
            poll.append(Frame("gw", seq["gw"], k, gw_rate, x, overflow=2 if k == 15 else 0))
            seq["gw"] += 2 if k == 25 else 1  # one frame lost
            a = noise(CHUNK, 1, 1000 + k)
            if k == 35:
                seq["a"] = 0  # a restart
            poll.append(Frame("a", seq["a"], k, RATE, a if k % 11 else a[:, 0]))
            seq["a"] += 1
            poll.append(Frame("b", seq["b"], k, RATE, noise(CHUNK, 1, 2000 + k, np.float64)))
            seq["b"] += 1 if k != 12 else 4
            if k >= 10:
                poll.append(Frame("c", seq["c"], k, RATE, noise(CHUNK // 2, 1, 3000 + k)))
                seq["c"] += 1
            poll.append(Frame("named", seq["named"], k, RATE, noise(CHUNK, 2, 4000 + k), names=("x", "y")))
            seq["named"] += 1
        polls.append(poll)
    return polls


def _same(a, b) -> bool:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "chunks":
            if len(x) != len(y) or any(p[0] != q[0] or not np.allclose(p[1:], q[1:], rtol=1e-12) for p, q in zip(x, y)):
                return False
        elif name == "pending":
            if not np.array_equal(np.concatenate(x) if x else np.zeros((0, 1)), np.concatenate(y) if y else np.zeros((0, 1))):
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not np.allclose(x, y, rtol=1e-12):
                return False
        elif x != y:
            return False
    return True


class _FrameByFrame(HealthMonitor):
    """The monitor with its array path off: every frame through the per-frame Python checks."""

    def _group(self, *args):  # noqa: ANN002, ANN202 - no frame finds its streams' group
        return None


def test_a_poll_mixing_new_restarting_and_old_streams_gives_the_events_of_one_at_a_time() -> None:
    cfg = HealthConfig(recovery_s=0.3)  # reasons clear within a few frames: each one is a change
    alone, together = _FrameByFrame(cfg), HealthMonitor(cfg)
    ev_alone: list = []
    ev_together: list = []
    for k, poll in enumerate(_polls()):
        now = 5000.0 + 0.1 * k
        parts = [p for f in poll for p in (split_channels(f) if f.names or f.samples.ndim == 2 and f.samples.shape[1] > 1
                                           else (f,))]
        for part in parts:
            ev_alone += alone.push(part, now=now)
        ev_together += together.push_channels(poll, now=now)
        if k % 2:  # windows were made: everything gathered is judged
            ids = list(dict.fromkeys(p.stream_id for p in parts))
            for sid in ids:
                ev_alone += alone.flush(sid, now=now)
            ev_together += together.flush_many(ids, now=now)
            assert together.unhealthy(ids) == alone.unhealthy(ids)
    key = lambda e: e.stream_id  # noqa: E731 - streams are independent; each one's events in order
    got = [(e.stream_id, e.time, e.data) for e in sorted(ev_together, key=key)]
    assert got == [(e.stream_id, e.time, e.data) for e in sorted(ev_alone, key=key)]
    reasons = {r for e in ev_together for r in e.data["reasons"]}
    assert {"flat line", "sequence gap", "input overflow", "rate change", "NaN/Inf samples"} <= reasons
    assert together.states() == alone.states()
    assert set(together.streams) == {*channel_ids("gw", 16), "a", "b", "c", "named/x", "named/y"}
    for sid in together.streams:
        assert _same(together.export_state(sid), alone.export_state(sid)), sid


def test_a_restored_stream_goes_on_as_the_one_it_was_saved_from() -> None:
    """What shards and the cluster do when a stream moves: its health state, samples gathered
    for the level tests included, continues on another monitor."""
    src, polls = HealthMonitor(), _polls()
    for k, poll in enumerate(polls[:25]):
        src.push_channels(poll, now=6000.0 + 0.1 * k)
    moved = [*channel_ids("gw", 16), "a", "b"]
    dst = HealthMonitor()
    for sid in moved:
        dst.restore_state(sid, src.export_state(sid), now=6002.5)
        assert src.state(sid).state == dst.state(sid).state and src.state(sid).frames == dst.state(sid).frames
    ev_src: list = []
    ev_dst: list = []
    for k, poll in enumerate(polls[25:]):
        now = 6002.5 + 0.1 * k
        mine = [f for f in poll if f.stream_id in ("gw", "a", "b")]
        ev_src += [e for e in src.push_channels(mine, now=now) + src.flush_many(moved, now=now)]
        ev_dst += dst.push_channels(mine, now=now) + dst.flush_many(moved, now=now)
    # after the move the first frames start the sequence check afresh on the new monitor: the
    # events after that are the same
    assert [(e.stream_id, e.data) for e in ev_dst if e.time > 6003.0] == \
        [(e.stream_id, e.data) for e in ev_src if e.time > 6003.0]
    assert any(e.data["to"] == OK for e in ev_dst)


def test_sequence_numbers_beyond_64_bits_are_judged_as_the_numbers_they_are() -> None:
    health = HealthMonitor()
    seqs = [1, 2, 2**70, 2**70 + 1, 2**70 + 3, 5, 6, -(2**80), 8]
    for k, seq in enumerate(seqs):
        health.push(Frame("s", seq, k, RATE, noise(CHUNK, 1, k)), now=7000.0 + k)
    # gaps: 2 -> 2**70 (2**70 - 3 lost), 2**70 + 1 -> + 3 (one), -(2**80) -> 8 (2**80 + 7)
    assert health.state("s").gaps == (2**70 - 3) + 1 + (2**80 + 7)
    assert health.state("s").frames == len(seqs)


def test_a_frame_is_said_finite_only_where_every_sample_was_read_and_found_so() -> None:
    """``push_channels(finite=...)``: the frames of known streams whose samples the gather read
    are marked finite unless one sample is NaN or Inf; a frame judged the long way (a stream's
    first frame) is left unmarked, so its DSP checks it itself."""
    health = HealthMonitor()
    gateways = [f"gw{k}" for k in range(3)]
    first = [Frame(g, 0, 1000.0, RATE, noise(CHUNK, 16, k)) for k, g in enumerate(gateways)]
    finite = [False] * 3
    health.push_channels(first, now=1000.0, finite=finite)
    assert finite == [False] * 3  # new streams: judged one by one
    frames = [Frame(g, 1, 1000.1, RATE, noise(CHUNK, 16, 10 + k)) for k, g in enumerate(gateways)]
    frames[1].samples[CHUNK - 1, 15] = np.inf
    frames.append(Frame("new", 0, 1000.1, RATE, noise(CHUNK, 16, 20)))
    finite = [False] * 4
    health.push_channels(frames, now=1000.1, finite=finite)
    if health.compiled:
        assert finite == [True, False, True, False]
    else:  # the numpy gather does not look: nothing is said
        assert finite == [False] * 4
    assert NON_FINITE in health.state("gw1/ch15").reasons
