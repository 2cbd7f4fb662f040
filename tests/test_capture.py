"""Event capture: raw samples around an alarm saved as WAV + JSON, replayable as a file source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io.wavfile

from drsn_stream.errors import ConfigError
from drsn_stream.sinks.capture import CaptureConfig, EventCapture
from drsn_stream.types import Event, Frame

RATE = 1000.0
T0 = 1_700_000_000.0  # capture clock of sample 0


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Sample k of channel c holds (k + c/2) / 1e5, so every saved sample says where it came from."""
    k = np.arange(start, start + n, dtype=np.float64)[:, None] + np.arange(channels)[None, :] * 0.5
    return (k / 1e5).astype(np.float32)


def push_until(
    capture: EventCapture,
    upto: int,
    *,
    chunk: int = 128,
    stream: str = "sim/m0",
    channels: int = 1,
    start: int = 0,
) -> list:
    done = []
    for seq, a in enumerate(range(start, upto, chunk)):
        n = min(chunk, upto - a)
        done += capture.push(Frame(stream, seq, T0 + a / RATE, RATE, ramp(a, n, channels)))
    return done


def alarm(t: float, stream: str = "sim/m0", to: str = "ALERT") -> Event:
    return Event("alarm", stream, t, {"from": "NORMAL", "to": to, "label": "inner_007", "confidence": 0.93})


def test_capture_spans_pre_and_post_and_waits_for_the_post_samples(tmp_path):
    capture = EventCapture(tmp_path, CaptureConfig(pre_s=2.0, post_s=1.0))
    push_until(capture, 5000)  # 5 s of signal
    assert capture.on_event(alarm(T0 + 4.0))  # event at sample 4000
    assert capture.pending == 1 and list(tmp_path.iterdir()) == []
    assert push_until(capture, 4900, start=5000) == []  # nothing new until sample 5000 exists
    done = push_until(capture, 5200, start=5000)
    assert len(done) == 1 and capture.pending == 0
    cap = done[0]
    assert not cap.truncated and cap.samples == 3000 and cap.start == pytest.approx(T0 + 2.0)

    rate, data = scipy.io.wavfile.read(cap.wav)
    assert rate == 1000 and data.dtype == np.float32 and data.shape == (3000,)
    np.testing.assert_array_equal(data, ramp(2000, 3000)[:, 0])  # samples 2000..4999, exactly

    meta = json.loads(cap.meta.read_text())
    assert meta["event"]["type"] == "alarm" and meta["event"]["to"] == "ALERT"
    assert meta["event"]["label"] == "inner_007" and meta["stream"] == "sim/m0"
    assert meta["pre_s"] == pytest.approx(2.0) and meta["post_s"] == pytest.approx(1.0)
    assert meta["wav"] == cap.wav.name and meta["sample_rate"] == 1000 and not meta["truncated"]
    assert "sim-m0" in cap.wav.name and "NORMAL-ALERT" in cap.wav.name


def test_captured_wav_replays_through_the_file_source(tmp_path):
    from drsn_stream.sources import make_source

    capture = EventCapture(tmp_path, CaptureConfig(pre_s=1.0, post_s=1.0))
    push_until(capture, 3000, channels=2)
    capture.on_event(alarm(T0 + 1.5, to="DANGER"))
    (cap,) = capture.poll()  # the post-trigger samples are already here
    with make_source(f"file:{cap.wav}?fast=1&chunk=500") as source:
        frames = list(source)
    replay = np.concatenate([f.samples for f in frames])
    assert frames[0].sample_rate == 1000.0 and replay.shape == (2000, 2)
    np.testing.assert_array_equal(replay, ramp(500, 2000, channels=2))


def test_early_events_and_shutdown_give_truncated_captures(tmp_path):
    capture = EventCapture(tmp_path, CaptureConfig(pre_s=3.0, post_s=3.0))
    push_until(capture, 1000)
    capture.on_event(alarm(T0 + 0.5))  # only 0.5 s exist before it
    push_until(capture, 2000, start=1000)
    (cap,) = capture.close()  # the monitor stops before the post-trigger part is complete
    meta = json.loads(cap.meta.read_text())
    assert cap.truncated and meta["truncated"] and cap.samples == 2000
    assert meta["pre_s"] == pytest.approx(0.5) and meta["post_s"] == pytest.approx(1.5)
    assert meta["requested_pre_s"] == 3.0


def test_ring_is_bounded_and_old_samples_are_gone(tmp_path):
    capture = EventCapture(tmp_path, CaptureConfig(pre_s=1.0, post_s=1.0, margin_s=0.5))
    push_until(capture, 20_000, chunk=700)  # 20 s through a 2.5 s ring
    capture.on_event(alarm(T0 + 19.5))
    (cap,) = push_until(capture, 21_000, start=20_000, chunk=700)
    _, data = scipy.io.wavfile.read(cap.wav)
    np.testing.assert_array_equal(data, ramp(18_500, 2000)[:, 0])


def test_only_configured_triggers_capture(tmp_path):
    # As a [capture] table of a TOML file gives it.
    capture = EventCapture(
        tmp_path, CaptureConfig.from_dict({"pre_s": 0.1, "post_s": 0.1, "levels": ["DANGER"]})
    )
    push_until(capture, 1000)
    assert not capture.on_event(alarm(T0 + 0.5, to="ALERT"))
    assert not capture.on_event(Event("health", "sim/m0", T0 + 0.5, {"from": "OK", "to": "CHECK_SENSOR"}))
    assert not capture.on_event(alarm(T0 + 0.5, stream="never-seen", to="DANGER"))
    assert capture.on_event(alarm(T0 + 0.5, to="DANGER"))


def test_bad_capture_config_says_what_to_fix():
    with pytest.raises(ConfigError, match=r"\[capture\]: unknown key.*pre.*valid keys: .*pre_s"):
        CaptureConfig.from_dict({"pre": 2.0})
    with pytest.raises(ConfigError, match="must be from 0 to 86400 seconds"):
        CaptureConfig(pre_s=-1.0)


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"capture folder \S+ \(Not a directory\); choose a writable folder"):
        EventCapture(blocker / "captures")
