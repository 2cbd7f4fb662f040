"""The word detector turns per-window scores into one detection per spoken word."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_stream.errors import ConfigError
from drsn_stream.speech import LABELS
from drsn_stream.speech.detector import WordDetector

HOP_S = 0.1
SIL = LABELS.index("_silence_")
NOISE = LABELS.index("_noise_")


def scores(label: str | int, p: float, rest: int = NOISE) -> np.ndarray:
    """One window's probabilities: ``p`` on ``label``, the remainder on a background label."""
    out = np.zeros(len(LABELS))
    idx = LABELS.index(label) if isinstance(label, str) else label
    out[idx] = p
    out[rest if rest != idx else SIL] += 1.0 - p
    return out


def run(det: WordDetector, seq: list[np.ndarray], stream: str = "s", t0: float = 100.0) -> list:
    events = []
    for i, p in enumerate(seq):
        events += det.update(stream, t0 + i * HOP_S, p)
    return events


def bump(label: str, peak: float = 0.97) -> list[np.ndarray]:
    """How a word looks through a sliding 1 s window: rise, plateau, fall."""
    ramp = [0.1, 0.3, 0.55, 0.8, peak, peak, 0.95, 0.9, 0.75, 0.5, 0.3, 0.1]
    return [scores(label, min(p, peak)) for p in ramp]


def background(n: int, kind: int = SIL) -> list[np.ndarray]:
    return [scores(kind, 0.98) for _ in range(n)]


def test_one_word_gives_one_detection_with_its_label_and_peak() -> None:
    det = WordDetector(LABELS)
    events = run(det, background(5) + bump("7", peak=0.93) + background(5))
    assert len(events) == 1
    ev = events[0]
    assert ev.type == "detection" and ev.stream_id == "s"
    assert ev.data["label"] == "7"
    assert ev.data["confidence"] == pytest.approx(0.93)
    # Emitted early in the bump (second window at >= enter), not after the word has left.
    assert ev.time == pytest.approx(100.0 + (5 + 4) * HOP_S)
    assert ev.to_json()["label"] == "7"


def test_silence_and_noise_give_no_detection() -> None:
    det = WordDetector(LABELS)
    rng = np.random.default_rng(0)
    seq = background(30) + background(30, NOISE)
    # Noisy background where a digit gets some probability, but never a confident one.
    for _ in range(100):
        p = rng.dirichlet(np.ones(len(LABELS))) * 0.3
        p[int(rng.integers(10))] = rng.uniform(0.3, 0.65)
        p[NOISE] += 1.0 - p.sum()
        seq.append(p)
    assert run(det, seq) == []


def test_a_score_wobbling_around_enter_counts_once() -> None:
    det = WordDetector(LABELS, enter=0.7, leave=0.4)
    wobble = [0.75, 0.78, 0.65, 0.72, 0.76, 0.6, 0.74, 0.8, 0.69, 0.71, 0.75, 0.5, 0.45]
    events = run(det, background(3) + [scores("4", p) for p in wobble] + background(3))
    assert [e.data["label"] for e in events] == ["4"]


def test_a_single_confident_window_is_not_a_word() -> None:
    det = WordDetector(LABELS, confirm=2)
    assert run(det, background(5) + [scores("2", 0.99)] + background(5)) == []


def test_a_sequence_of_words_gives_the_sequence_back() -> None:
    det = WordDetector(LABELS)
    spoken = ["3", "1", "4", "1", "5", "9", "2", "6", "5", "3"]
    seq = background(4)
    for d in spoken:
        seq += bump(d) + background(6)
    assert [e.data["label"] for e in run(det, seq)] == spoken


def test_two_different_words_without_a_dip_are_two_detections() -> None:
    det = WordDetector(LABELS, refractory_s=0.3)
    seq = background(3) + [scores("3", 0.95)] * 5 + [scores("8", 0.95)] * 5 + background(3)
    assert [e.data["label"] for e in run(det, seq)] == ["3", "8"]


def test_refractory_time_swallows_a_second_label_right_after_a_word() -> None:
    det = WordDetector(LABELS, refractory_s=1.0)
    # The tail of a leaving word briefly looks like another digit: 0.4 s after the detection.
    seq = background(3) + [scores("6", 0.95)] * 4 + [scores("1", 0.9)] * 3 + background(3)
    assert [e.data["label"] for e in run(det, seq)] == ["6"]


def test_a_clock_set_back_does_not_stretch_the_refractory_time() -> None:
    """The capture times going back an hour (a sound card's stream is stamped by this host's
    clock, which NTP set back): the next word is heard. Before, none was for the hour."""
    det = WordDetector(LABELS, refractory_s=0.6)
    first = run(det, background(3) + bump("4") + background(8))
    later = run(det, background(8) + bump("9") + background(3), t0=100.0 + 2.0 - 3600.0)
    assert [e.data["label"] for e in first + later] == ["4", "9"]


def test_same_digit_twice_needs_the_score_to_drop_in_between() -> None:
    det = WordDetector(LABELS)
    continuous = background(3) + [scores("0", 0.95)] * 15 + background(3)
    assert len(run(det, continuous)) == 1
    det.reset()
    twice = background(3) + bump("0") + background(8) + bump("0") + background(3)
    assert [e.data["label"] for e in run(det, twice)] == ["0", "0"]


def test_streams_are_independent() -> None:
    det = WordDetector(LABELS)
    a = background(2) + bump("5") + background(2)
    b = background(2) + background(len(a) - 4, NOISE) + background(2)
    events = []
    for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
        events += det.update("mic", 10.0 + i * HOP_S, pa)
        events += det.update("zmq/x", 10.0 + i * HOP_S, pb)
    assert [(e.stream_id, e.data["label"]) for e in events] == [("mic", "5")]


def test_bad_settings_and_scores_are_refused_with_clear_errors() -> None:
    with pytest.raises(ConfigError, match="leave <= enter"):
        WordDetector(LABELS, enter=0.3, leave=0.6)
    with pytest.raises(ConfigError, match="word label"):
        WordDetector(["_silence_", "_noise_"])
    det = WordDetector(LABELS)
    with pytest.raises(ConfigError, match="13 labels"):
        det.update("s", 0.0, np.ones(5) / 5)
