"""Sensor health on crafted signals: flat, clipped, NaN, gaps, overflow, no data; no flapping."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_stream import jit
from drsn_stream.errors import ConfigError
from drsn_stream.monitor import levels_jit
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.monitor.health import (
    AMP_STEP,
    CHECK_SENSOR,
    CLIPPING,
    DC_JUMP,
    FLAT,
    GAP,
    NO_DATA,
    NON_FINITE,
    OK,
    OVERFLOW,
    HealthConfig,
    HealthMonitor,
)
from drsn_stream.monitor.snapshot import build_rows
from drsn_stream.types import Frame, Prediction

RATE = 1000.0
CHUNK = 100  # 0.1 s frames


def noise(n: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, channels))).astype(np.float32)


class Feed:
    """Pushes 0.1 s frames of one stream with arrival times that follow the samples."""

    def __init__(self, monitor: HealthMonitor, stream: str = "s0") -> None:
        self.monitor, self.stream, self.seq, self.t = monitor, stream, 0, 1000.0
        self.events: list = []

    def push(self, x: np.ndarray, *, overflow: int = 0, skip: int = 0) -> list:
        self.seq += skip
        frame = Frame(self.stream, self.seq, self.t, RATE, x, overflow)
        self.seq += 1
        self.t += x.shape[0] / RATE
        new = self.monitor.push(frame, now=self.t) + self.monitor.tick(self.t)
        self.events += new
        return new

    def run(self, seconds: float, make=None) -> None:
        for i in range(int(round(seconds * RATE / CHUNK))):
            self.push(make(i) if make else noise(CHUNK, seed=self.seq))


def changes(events) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(e.data["from"], e.data["to"], tuple(e.data["reasons"])) for e in events if e.type == "health"]


def test_clean_noise_stays_ok_in_any_chunking():
    for chunk in (1, 37, 100, 1000):
        monitor = HealthMonitor(HealthConfig(recovery_s=1.0))
        x = noise(5000, seed=3)
        events = []
        for i, start in enumerate(range(0, 5000, chunk)):
            events += monitor.push(
                Frame("s", i, start / RATE, RATE, x[start : start + chunk]), now=start / RATE
            )
        assert events == [] and monitor.state("s").state == OK, chunk


def test_flat_line_is_found_and_recovers_after_the_recovery_delay():
    monitor = HealthMonitor(HealthConfig(flat_span_s=0.5, recovery_s=1.0))
    feed = Feed(monitor)
    feed.run(1.0)
    feed.run(1.0, make=lambda i: np.full((CHUNK, 1), 0.2, dtype=np.float32))  # stuck at a DC value
    assert monitor.state("s0").state == CHECK_SENSOR and monitor.state("s0").reasons == (FLAT,)
    assert not monitor.healthy("s0")
    feed.run(0.5)
    assert monitor.state("s0").state == CHECK_SENSOR  # back, but not for long enough yet
    feed.run(1.0)
    assert changes(feed.events) == [(OK, CHECK_SENSOR, (FLAT,)), (CHECK_SENSOR, OK, ())]


def test_one_dead_channel_of_two_is_flat():
    monitor = HealthMonitor(HealthConfig(flat_span_s=0.5))
    feed = Feed(monitor)

    def dead_right(i: int) -> np.ndarray:
        x = noise(CHUNK, seed=i, channels=2)
        x[:, 1] = 0.0
        return x

    feed.run(1.0, make=dead_right)
    assert monitor.state("s0").reasons == (FLAT,)


def test_clipping_at_the_rails_and_at_full_scale():
    monitor = HealthMonitor(HealthConfig(clip_span_s=0.5))
    feed = Feed(monitor)
    t = np.arange(CHUNK) / RATE
    # A sine driven twice past the converter's rails: flat tops at exactly +-0.5.
    feed.run(
        1.0,
        make=lambda i: np.clip(np.sin(2 * np.pi * 7 * (t + i * 0.1)), -0.5, 0.5)[:, None].astype(np.float32),
    )
    assert monitor.state("s0").reasons == (CLIPPING,)

    monitor = HealthMonitor(HealthConfig(clip_span_s=0.5, full_scale=1.0))
    feed = Feed(monitor)

    def spikes(i: int) -> np.ndarray:
        x = noise(CHUNK, seed=i)
        x[::10] = np.where(np.arange(10) % 2, 1.0, -1.3)[:, None]  # 10% of samples at/over full scale
        return x

    feed.run(0.2, make=spikes)
    state = monitor.state("s0")
    assert state.reasons == (CLIPPING,) and state.clipped == 20


def test_an_unclipped_sine_is_not_clipping():
    monitor = HealthMonitor(HealthConfig(clip_span_s=0.5))
    feed = Feed(monitor)
    t = np.arange(CHUNK) / RATE
    feed.run(2.0, make=lambda i: (0.8 * np.sin(2 * np.pi * 13 * (t + i * 0.1)))[:, None].astype(np.float32))
    assert monitor.state("s0").state == OK


def test_nan_and_inf_samples():
    monitor = HealthMonitor(HealthConfig(recovery_s=0.5))
    feed = Feed(monitor)
    feed.run(0.5)
    x = noise(CHUNK)
    x[5], x[50] = np.nan, np.inf
    feed.push(x)
    state = monitor.state("s0")
    assert state.state == CHECK_SENSOR and state.reasons == (NON_FINITE,) and state.non_finite == 2
    feed.run(0.6)
    assert monitor.state("s0").state == OK


def test_sequence_gaps_are_counted_and_flagged():
    monitor = HealthMonitor(HealthConfig(recovery_s=0.5))
    feed = Feed(monitor)
    feed.run(0.3)
    new = feed.push(noise(CHUNK), skip=3)
    assert changes(new) == [(OK, CHECK_SENSOR, (GAP,))]
    assert monitor.state("s0").gaps == 3
    # A lower sequence number is a source restart, not a gap.
    feed.seq = 0
    feed.run(1.0)
    assert monitor.state("s0").state == OK and monitor.state("s0").gaps == 3


def test_input_overflow():
    monitor = HealthMonitor()
    feed = Feed(monitor)
    feed.run(0.2)
    feed.push(noise(CHUNK), overflow=2)
    state = monitor.state("s0")
    assert state.reasons == (OVERFLOW,) and state.overflows == 2


def test_no_data_found_by_tick_and_cleared_once_data_flows_again():
    monitor = HealthMonitor(HealthConfig(timeout_s=2.0, recovery_s=0.5))
    monitor.watch(["silent"], now=0.0)
    feed = Feed(monitor, "s0")
    feed.t = 0.0
    feed.run(1.0)
    assert monitor.tick(1.5) == []
    events = monitor.tick(3.0)
    assert changes(events) == [(OK, CHECK_SENSOR, (NO_DATA,))]
    assert [e.stream_id for e in events] == ["silent"]  # s0 sent until t=1.0, within the timeout
    assert changes(monitor.tick(3.5)) == [(OK, CHECK_SENSOR, (NO_DATA,))]
    assert monitor.state("s0").reasons == (NO_DATA,)
    # a result that comes out now is not blamed on the silence that began after its window
    assert monitor.unhealthy(["s0", "silent"]) == {"s0", "silent"}
    assert monitor.unhealthy(["s0", "silent"], no_data=False) == set()
    feed.t = 3.6
    feed.run(0.6)
    assert monitor.state("s0").state == OK and monitor.state("silent").state == CHECK_SENSOR


def test_recovery_delay_prevents_flapping():
    monitor = HealthMonitor(HealthConfig(recovery_s=1.0))
    feed = Feed(monitor)
    for _ in range(5):  # an intermittent overflow every 0.5 s
        feed.push(noise(CHUNK), overflow=1)
        feed.run(0.4)
    assert changes(feed.events) == [(OK, CHECK_SENSOR, (OVERFLOW,))]


def test_an_unhealthy_stream_is_not_shown_confident_or_alarmed():
    labels = ["normal", "inner_007"]
    health = HealthMonitor()  # defaults: a flat line is found within 0.1 s
    decisions = DecisionEngine(labels, DecisionConfig.for_labels(labels, set_windows=1, window_count=1))
    feed = Feed(health)
    feed.run(0.5)
    events = []
    for i in range(10):
        feed.push(np.zeros((CHUNK, 1), dtype=np.float32))  # the sensor cable is cut
        # ...and the model, fed flat windows, is sure it sees a fault.
        p = Prediction("s0", i, feed.t, np.array([0.01, 0.99], dtype=np.float32), "inner_007", 0.99, 0.1, 5.0)
        events += decisions.update(p, healthy=health.healthy("s0"))
    assert [e for e in events if e.type == "alarm"] == []
    (row,) = build_rows(decisions, health)
    assert row.health == CHECK_SENSOR and row.health_reasons == (FLAT,)
    assert row.label == "?" and row.confidence == 0.0 and row.level == "NORMAL"


def test_health_table_of_the_bearing_config_loads():
    from pathlib import Path

    import tomllib

    doc = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "alarms-bearing.toml").read_text())
    config = HealthConfig.from_dict(doc["health"])
    assert config.timeout_s == 2.0 and config.full_scale is None
    with pytest.raises(ConfigError, match="unknown key.*timeout.*valid keys"):
        HealthConfig.from_dict({"timeout": 3})


def test_bad_config_says_what_to_fix():
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        HealthConfig(timeout_s=0)
    with pytest.raises(ConfigError, match="full_scale must be > 0"):
        HealthConfig(full_scale=-1.0)


def test_dithered_silence_is_not_clipping() -> None:
    # sox-style dither: quiet audio of -1, 0, +1 LSB has many samples at its "extremes"
    rng = np.random.default_rng(0)
    monitor = HealthMonitor()
    lsb = 1 / 32768
    for seq in range(40):
        x = (rng.integers(-1, 2, size=(800, 1)) * lsb).astype(np.float32)
        monitor.push(Frame("quiet", seq, seq * 0.1, 8000.0, x), now=seq * 0.1)
    assert monitor.healthy("quiet"), monitor.state("quiet")
    # ...while a loud signal stuck at its rails still is clipping
    t = np.arange(800) / 8000
    for seq in range(40, 60):
        x = np.clip(np.sin(2 * np.pi * 50 * (t + seq * 0.1)) * 2.0, -0.9, 0.9)[:, None].astype(np.float32)
        monitor.push(Frame("quiet", seq, seq * 0.1, 8000.0, x), now=seq * 0.1)
    assert "clipping" in monitor.state("quiet").reasons


@pytest.mark.parametrize("every", [0.0, 0.1])
def test_short_frames_are_gathered_for_the_level_tests_without_missing_anything(every):
    # 20 ms frames: with check_every_s = 0.1 the NaN/flat/clipping tests run on 5 frames at once,
    # so a fault is reported at most 0.1 s later than with a test on every frame, and never missed
    monitor = HealthMonitor(HealthConfig(recovery_s=0.5, check_every_s=every))
    feed = Feed(monitor)
    for i in range(25):
        feed.push(noise(20, seed=i))
    assert monitor.state("s0").state == OK
    x = noise(20, seed=99)
    x[3] = np.nan
    feed.push(x)
    for i in range(4):
        feed.push(noise(20, seed=100 + i))
    state = monitor.state("s0")
    assert state.state == CHECK_SENSOR and state.reasons == (NON_FINITE,) and state.non_finite == 1
    for i in range(40):
        feed.push(noise(20, seed=200 + i))
    assert monitor.state("s0").state == OK
    for _ in range(15):  # 0.3 s of a dead (constant) sensor
        feed.push(np.full((20, 1), 0.25, np.float32))
    assert FLAT in monitor.state("s0").reasons
    assert monitor.state("s0").frames == 25 + 5 + 40 + 15


def test_check_every_must_fit_the_flat_span():
    with pytest.raises(ConfigError, match="check_every_s"):
        HealthConfig(check_every_s=0.5, flat_span_s=0.1)
    with pytest.raises(ConfigError, match="check_every_s"):  # the span of a sound model's streams too
        HealthConfig(check_every_s=0.5, flat_span_s=1.0, sound_flat_span_s=0.2)
    with pytest.raises(ConfigError, match="sound_flat_span_s must be > 0"):
        HealthConfig(sound_flat_span_s=0)


def _signals(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Frame ``k`` (0.1 s) of streams that go through every level test: noise, a sensor that
    dies, one stuck at its rails, one at full scale, dithered silence, a DC jump, an amplitude
    step, a machine that stops and starts again (its rest level told), one with NaN and Inf,
    frames of another length."""
    t = (np.arange(CHUNK) + k * CHUNK) / RATE
    sine = np.sin(2 * np.pi * 37 * t)
    out = {f"noise{i}": noise(CHUNK, seed=1000 * i + k)[:, 0] for i in range(6)}
    out["dies"] = noise(CHUNK, seed=k)[:, 0] if not 20 <= k < 40 else np.full(CHUNK, 0.25, np.float32)
    out["rails"] = np.clip(2 * sine, -0.9 if 15 <= k < 45 else -5, 0.9 if 15 <= k < 45 else 5).astype(np.float32)
    out["full"] = (sine * (1.2 if 30 <= k < 50 else 0.5)).astype(np.float32)
    out["dither"] = (rng.integers(-1, 2, CHUNK) / 32768).astype(np.float32)
    out["dc"] = (noise(CHUNK, seed=5000 + k)[:, 0] + (3.0 if k >= 45 else 0.0)).astype(np.float32)
    out["amp"] = noise(CHUNK, seed=6000 + k)[:, 0] * (80.0 if 50 <= k < 70 else 1.0)
    out["stops"] = noise(CHUNK, seed=6500 + k)[:, 0] * (0.005 if 40 <= k < 60 else 1.0)
    x = noise(CHUNK, seed=7000 + k)[:, 0]
    if k in (25, 26, 60):
        x[[3, 50]] = [np.nan, np.inf]
    out["nan"] = x
    out["short"] = noise(CHUNK // 2 + (k % 3) * 7, seed=8000 + k)[:, 0]
    out["tiny"] = noise(20, seed=9000 + k)[:, 0]  # merged into the flat test's chunks when tested alone
    # exactly clip_min_samples (8) samples at the top in a clipping block of 3 frames: clipping, just
    x = np.clip(noise(CHUNK, seed=9500 + k)[:, 0], -0.5, 0.5)
    x[10:18] = 0.9 if k % 3 == 0 and 30 <= k < 60 else x[10:18]
    out["edge"] = x
    x = noise(CHUNK, seed=9700 + k)[:, 0]
    x[[5, 60]] = 1.5 if k % 4 == 0 else x[[5, 60]]  # a few samples past full scale: counted, not clipping
    out["spikes"] = x
    return out


@pytest.mark.skipif(not levels_jit.available(), reason="numba is not installed: the compiled level tests are off")
@pytest.mark.parametrize("cfg", [HealthConfig(recovery_s=0.3, learn_s=1.0, step_hold_s=0.5),
                                 HealthConfig(recovery_s=0.3, learn_s=1.0, step_hold_s=0.5, full_scale=1.0,
                                              check_every_s=0.0),
                                 HealthConfig(recovery_s=0.3, step_ratio=0, flat_span_s=0.05, check_every_s=0.05)],
                         ids=["default", "full-scale-every-frame", "no-steps"])
def test_compiled_level_tests_judge_as_numpy_does(cfg) -> None:
    """The compiled level tests (levels_jit) against numpy's (levels_many) on the same rounds:
    the same events, states, counters and learned levels, stream by stream."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    fast, ref = HealthMonitor(cfg, compiled=True), HealthMonitor(cfg, compiled=False)
    for monitor in (fast, ref):
        monitor.set_rest_levels({"stops": 0.01})
    ev_fast: list = []
    ev_ref: list = []
    for k in range(90):
        now = 2000.0 + 0.1 * k
        for monitor, events, rng in ((fast, ev_fast, rng_a), (ref, ev_ref, rng_b)):
            frames = [Frame(sid, k, now, RATE, x[:, None]) for sid, x in _signals(k, rng).items()]
            events += monitor.push_channels(frames, now=now)
            if k % 2:
                events += monitor.flush_many([f.stream_id for f in frames], now=now)
    assert [(e.stream_id, e.data) for e in ev_fast] == [(e.stream_id, e.data) for e in ev_ref]
    found = {r for e in ev_ref for r in e.data["reasons"]}
    # every test had something to find (at full scale 1.0 the stepped streams clip instead)
    expected = {FLAT, CLIPPING, NON_FINITE} | ({DC_JUMP, AMP_STEP} if cfg.step_ratio and cfg.full_scale is None else set())
    assert expected <= found, found
    assert cfg.full_scale is None or ref.state("full").clipped > 0
    assert "stops" not in {e.stream_id for e in ev_ref}
    assert fast.states() == ref.states()
    for sid in ref.streams:
        a, b = fast.export_state(sid), ref.export_state(sid)
        for name in ("chunk_n", "blk_n", "learned", "step_n", "clipped", "steps", "non_finite", "frames", "samples"):
            assert getattr(a, name) == getattr(b, name), (sid, name)
        assert [c[0] for c in a.chunks] == [c[0] for c in b.chunks], sid
        for ca, cb in zip(a.chunks, b.chunks):
            assert np.allclose(ca[1:], cb[1:], rtol=1e-9, atol=1e-15), sid
        for name in ("blk_max", "blk_min", "blk_at_max", "blk_at_min", "blk_full", "base_mean", "base_logsd"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None) and (x is None or np.allclose(x, y, rtol=1e-9)), (sid, name)


def test_the_level_kernel_as_plain_python_agrees_with_numpy() -> None:
    """levels_jit's kernel run uncompiled (where numba is missing, this is what guards its logic)
    against levels_many on the same bank rows."""
    from drsn_stream.monitor.health_levels import LevelBank, levels_many

    cfg = HealthConfig(full_scale=1.0, learn_s=0.5, step_hold_s=0.2)
    banks = [LevelBank(rows=8), LevelBank(rows=8)]
    for bank in banks:
        bank.pend_room(CHUNK)
    slots = np.array([banks[0].take() for _ in range(8)])
    assert list(slots) == [banks[1].take() for _ in range(8)]
    for bank in banks:
        bank.rest_logsd[slots[5]] = np.log(0.005)
    rng = np.random.default_rng(5)
    for k in range(40):
        x = (0.1 * rng.standard_normal((8, CHUNK))).astype(np.float32)
        x[1] = 0.5 if 10 <= k < 20 else x[1]  # flat
        x[2] = np.clip(x[2] * 30, -0.3, 0.3) if k >= 5 else x[2]  # rails
        x[3] *= 20.0 if k >= 10 else 1.0  # full scale, then an amplitude step
        x[4] += 2.0 if k >= 12 else 0.0  # DC jump
        x[5] *= 0.002 if 12 <= k < 25 else 1.0  # a machine that stops and starts again
        sts = [type("St", (), {"clipped": 0, "steps": 0})() for _ in range(8)]
        flat, clip, step = levels_many(cfg, banks[1], sts, x, x.sum(axis=1, dtype=np.float64), slots=slots,
                                       rate=RATE)
        banks[0].pend[slots, :CHUNK] = x
        codes, clipped, steps = levels_jit.levels_rows(cfg, banks[0], slots, np.full(8, CHUNK), np.full(8, RATE),
                                                       kernel=levels_jit._levels_py)
        assert list(codes) == list(flat.astype(int) | clip.astype(int) << 1 | step.astype(int) << 2), k
        assert list(clipped) == [s.clipped for s in sts] and list(steps) == [s.steps for s in sts]
        assert not step[5] and (not step[3] or k == 12), k  # the stop and start never; x3's step once
    for name in ("ccount", "chead", "chunk_n", "cn", "blk_n", "blk_at_max", "blk_at_min", "blk_full", "learned",
                 "step_n", "has_base"):
        assert np.array_equal(getattr(banks[0], name), getattr(banks[1], name)), name
    for name in ("cmean", "cm2", "blk_max", "blk_min", "base_mean", "base_logsd"):
        assert np.allclose(getattr(banks[0], name), getattr(banks[1], name), rtol=1e-9), name


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    not levels_jit.available(), reason="numba is not installed"))], ids=["python", "compiled"])
def test_the_level_kernel_finds_a_rows_extremes_wherever_they_are(compiled) -> None:
    """The kernel reads a row's extremes as integers ordered as the floats are (vectorized by
    the compiler): a peak or a trough at any place in a row of any length, of either sign, is
    the one the clipping test keeps, and samples at it are counted."""
    from drsn_stream.monitor.health_levels import LevelBank

    cfg = HealthConfig()
    rng = np.random.default_rng(11)
    for n in range(1, 11):
        for at in range(n):
            bank = LevelBank(rows=4)
            bank.pend_room(n)
            slots = np.array([bank.take() for _ in range(4)])
            x = rng.uniform(-0.5, 0.5, (4, n)).astype(np.float32)
            x[0, at], x[1, at] = 0.9, -0.9
            x[2] = -np.abs(x[2]) - 0.1  # all below zero: the peak is negative
            x[2, at] = -0.05
            x[3] = np.abs(x[3]) + 0.1  # all above zero: the trough is positive
            x[3, at] = 0.05
            bank.pend[slots, :n] = x
            levels_jit.levels_rows(cfg, bank, slots, np.full(4, n), np.full(4, RATE),
                                   kernel=None if compiled else levels_jit._levels_py)
            assert list(bank.blk_max[slots]) == [np.float32(0.9), x[1].max(), np.float32(-0.05), x[3].max()], (n, at)
            assert list(bank.blk_min[slots]) == [x[0].min(), np.float32(-0.9), x[2].min(), np.float32(0.05)], (n, at)
            assert list(bank.blk_at_max[slots]) == [np.count_nonzero(r == r.max()) for r in x], (n, at)
            assert list(bank.blk_at_min[slots]) == [np.count_nonzero(r == r.min()) for r in x], (n, at)
    # signed zeros compare equal: a row of +0.0 and -0.0 has every sample at both extremes
    bank = LevelBank(rows=1)
    bank.pend_room(6)
    slot = np.array([bank.take()])
    bank.pend[slot, :6] = np.array([0.0, -0.0, -0.0, 0.0, -0.0, 0.0], dtype=np.float32)
    levels_jit.levels_rows(cfg, bank, slot, np.full(1, 6), np.full(1, RATE),
                           kernel=None if compiled else levels_jit._levels_py)
    assert bank.blk_max[slot][0] == 0.0 and bank.blk_min[slot][0] == 0.0
    assert bank.blk_at_max[slot][0] == 6 and bank.blk_at_min[slot][0] == 6


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    not levels_jit.available(), reason="numba is not installed"))], ids=["python", "compiled"])
def test_the_level_tests_refuse_rows_past_their_arrays_and_widen_full_rings_first(compiled) -> None:
    """The level tests' kernel reads and writes without bounds checks: a row of samples, a length
    or a stream's slot past its array is refused before anything changes (not read past it); a
    stream whose chunk ring is full gets a wider ring first, and its tests go on."""
    from drsn_stream.monitor.health_levels import LevelBank

    # a flat-line span of 480 samples: each 64-sample block is a chunk of its own, about 8 kept
    cfg = HealthConfig(flat_span_s=480 / RATE, check_every_s=0.005)
    kernel = None if compiled else levels_jit._levels_py
    bank = LevelBank(rows=4, chunks=2)
    slots = np.array([bank.take() for _ in range(3)])
    x = (np.random.default_rng(3).standard_normal((3, 64)) * 0.1).astype(np.float32)
    before = {name: getattr(bank, name).copy() for name in ("cn", "ccount", "blk_n", "learned")}
    for rows, lengths, sl in (([0, 1, 3], [64] * 3, slots), ([0, 1, -1], [64] * 3, slots),
                              ([0, 1, 2], [64, 65, 64], slots), ([0, 1, 2], [64] * 3, np.array([0, 1, 9]))):
        with pytest.raises(ValueError, match="past"):
            levels_jit.levels_rows(cfg, bank, sl, np.array(lengths), np.full(3, RATE), src=x,
                                   src_rows=np.array(rows), kernel=kernel)
        assert all(np.array_equal(getattr(bank, name), a) for name, a in before.items())
    for _ in range(12):  # one chunk more per call: the 2-chunk rings fill, and are widened
        levels_jit.levels_rows(cfg, bank, slots, np.full(3, 64), np.full(3, RATE), src=x, src_rows=np.arange(3),
                               kernel=kernel)
    assert bank._k >= 8 and (bank.ccount[slots] > 2).all() and (bank.ccount[slots] <= bank._k).all()
    assert (bank.cn[slots, : bank.ccount[slots][0]] == 64).all()
    # the block push (no bounds checks either): a stream twice in one block is refused before its
    # second frame would be gathered past its row
    bank.pend_room(96)
    pend = bank.pend
    with pytest.raises(ValueError, match="-4"):
        levels_jit.push_rows(bank, np.array([slots[0], slots[0]]), x[:2], np.arange(2), 1 << 62, 0.0, 1000,
                             np.zeros(2, dtype=np.uint8), kernel=None if compiled else levels_jit._push_rows_py)
    assert bank.pend is pend and bank.pend_n[slots[0]] == 64


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    not levels_jit.available(), reason="numba is not installed"))], ids=["python", "compiled"])
def test_frames_are_gathered_into_their_rows_from_where_they_lie(compiled) -> None:
    """The gather of frames of channels for the level tests reads each frame where it lies: frames
    of other lengths and channel counts, one a strided view, go to their rows (anywhere in the
    bank, each after what it holds) and nowhere else."""
    rng = np.random.default_rng(5)
    frames = [rng.standard_normal((n, c)).astype(np.float32) for n, c in ((7, 3), (1, 1), (12, 2), (0, 2))]
    frames.append(rng.standard_normal((9, 8)).astype(np.float32)[:, ::4])  # not C-ordered: (9, 2)
    rows = sum(x.shape[1] for x in frames)
    slots = rng.permutation(rows + 4)[:rows]
    pn = rng.integers(0, 6, rows)
    pend = np.full((rows + 4, 30), np.float32(-7.0))
    want = pend.copy()
    r = 0
    for x in frames:
        for k in range(x.shape[1]):
            want[slots[r], pn[r] : pn[r] + x.shape[0]] = x[:, k]
            r += 1
    levels_jit.warm()
    kernel = None if compiled else levels_jit._gather_py
    assert levels_jit.gather_frames(pend, slots, pn, frames, kernel=kernel).tolist() == [True] * len(frames)
    assert np.array_equal(pend, want)
    # each frame says whether all of its samples are finite: NaN, +Inf or -Inf anywhere, in a
    # strided view too, and not the largest finite float (its exponent bits are not all set)
    odd = [x.copy() for x in frames]
    odd[0][6, 2], odd[2][0, 1] = np.nan, np.inf
    odd[1][0, 0] = np.finfo(np.float32).max
    odd[4] = frames[4].copy()
    odd.append(rng.standard_normal((5, 6)).astype(np.float32)[:, ::3])  # not C-ordered
    odd[-1][3, 1] = -np.inf
    more = sum(x.shape[1] for x in odd) - rows
    pend2 = np.zeros((rows + more, 30), np.float32)
    got = levels_jit.gather_frames(pend2, np.arange(rows + more), np.zeros(rows + more, np.int64), odd, kernel=kernel)
    assert got.tolist() == [False, True, False, True, True, False]
    # a frame past its rows' room is refused before anything is written, not copied past them
    with pytest.raises(ValueError, match="pend_room"):
        levels_jit.gather_frames(pend, slots, pn + 20, frames, kernel=kernel)
    with pytest.raises(ValueError, match="pend_room"):  # fewer rows named than the frames have channels
        levels_jit.gather_frames(pend, slots[:-1], pn[:-1], frames, kernel=kernel)
    assert np.array_equal(pend, want)


@pytest.mark.skipif(not levels_jit.available(), reason="numba is not installed")
def test_the_level_tests_compile_where_numba_has_no_folder_to_cache_in(monkeypatch) -> None:
    """A package installed where its folder is read-only (and no user cache): numba refuses
    to cache; the tests are compiled for this process instead of falling back to numpy."""
    real = jit.numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function '_levels_py': no locator available")
        return real(*args, cache=False, **kwargs)

    monkeypatch.setattr(jit.numba, "njit", njit)
    monkeypatch.setattr(levels_jit, "_compiled", jit.Kernels(levels_jit._build))  # not tried yet
    assert levels_jit.warm() and levels_jit.available()
    assert HealthMonitor().compiled


def test_without_the_compiled_tests_health_uses_numpy(monkeypatch) -> None:
    monkeypatch.setattr(jit, "numba", None)
    assert not levels_jit.available() and not HealthMonitor().compiled
    with pytest.raises(RuntimeError, match="numba is not installed"):
        HealthMonitor(compiled=True)


def test_a_kernel_numba_cannot_compile_leaves_health_on_numpy(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("LLVM says no")

    monkeypatch.setattr(jit, "compile_kernel", refuse)
    monkeypatch.setattr(levels_jit, "_compiled", jit.Kernels(levels_jit._build))  # not tried yet
    health = HealthMonitor()
    assert not health.compiled and "LLVM says no" in levels_jit.why_not()
    frames = [Frame(f"s{i}", 0, 1000.0, RATE, np.full((CHUNK, 1), 0.5, np.float32)) for i in range(8)]
    health.push_channels(frames, now=1000.0)  # the numpy path judges them
    assert health.state("s0").frames == 1


@pytest.mark.parametrize("channels", [1, 2], ids=["one-channel", "two-channels"])
def test_a_machine_stopping_and_starting_is_not_an_amplitude_step_once_its_rest_level_is_known(channels) -> None:
    """A vibration sensor on a machine that stops falls to its own noise (x100 down) and rises
    again as the machine starts: both were "amplitude step", CHECK_SENSOR at every stop and start.
    Told the level the machine rests under (the monitor tells it from the stream's baseline), the
    stop and the start are taken as the machine's; a step from a running level (a sensor come
    loose: x50 up) is still the sensor's."""

    def run(rest: float | None) -> list:
        monitor = HealthMonitor(HealthConfig(learn_s=1.0, step_hold_s=0.5, recovery_s=0.3))
        if rest is not None:
            monitor.set_rest_levels({"s0": rest})
        feed = Feed(monitor)
        gain = iter([1.0] * 30 + [0.01] * 30 + [1.0] * 30 + [50.0] * 20)  # running, stopped, running, loose
        feed.run(11.0, lambda i: noise(CHUNK, seed=i, channels=channels) * next(gain))
        return changes(feed.events)

    assert run(None) == [("OK", "CHECK_SENSOR", (AMP_STEP,)), ("CHECK_SENSOR", "OK", ())] * 3
    assert run(0.01) == [("OK", "CHECK_SENSOR", (AMP_STEP,)), ("CHECK_SENSOR", "OK", ())]  # the loose sensor alone


def test_a_damaged_saved_state_is_refused_and_leaves_the_stream_as_it_was() -> None:
    # a cluster checkpoint comes from a shared directory: a damaged health state is one clear
    # error, and the stream it was meant for (here already judged on this host) goes on unchanged
    import collections
    import dataclasses

    rng = np.random.default_rng(1)

    def frame(i: int, sid: str) -> Frame:
        return Frame(sid, i, 100.0 + i * 512 / 12000, 12000.0, rng.normal(size=(512, 1)).astype(np.float32))

    health = HealthMonitor()
    for i in range(8):
        health.push(frame(i, "m1"), now=100.0 + i * 0.05)
        health.push(frame(i, "m2"), now=100.0 + i * 0.05)
    before = health.export_state("m1")
    damaged = dataclasses.replace(health.export_state("m2"), chunks=collections.deque([("x",)]))
    with pytest.raises(ConfigError, match="cannot restore the health of m1: the saved state is damaged"):
        health.restore_state("m1", damaged)
    after = health.export_state("m1")
    assert after.chunk_n == before.chunk_n and len(after.chunks) == len(before.chunks) and after.frames == before.frames
    for i in range(8, 40):  # still judged: a flat line on it is found as before
        health.push(Frame("m1", i, 100.0 + i * 512 / 12000, 12000.0, np.zeros((512, 1), np.float32)), now=100.0 + i * 0.05)
    assert not health.healthy("m1") and health.healthy("m2")
