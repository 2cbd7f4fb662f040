"""Sensor health on crafted signals: flat, clipped, NaN, gaps, overflow, no data; no flapping."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_stream.errors import ConfigError
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.monitor.health import (
    CHECK_SENSOR,
    CLIPPING,
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
