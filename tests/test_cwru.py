"""The CWRU loader, the time split and the noise augmentation, on the real CWRU files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import CWRU, needs_cwru

from drsn_stream.dsp.noise import snr_db
from drsn_stream.errors import ConfigError, DataError
from drsn_stream.train.augment import NoiseAugment, parse_snr_list
from drsn_stream.train.cwru import (
    DEFAULT_SPLIT,
    LABELS_4,
    LABELS_10,
    RandomWindows,
    load_recording,
    load_set,
    parse_name,
    part_slice,
    scan,
    select_files,
)
from drsn_stream.train.evaluate import part_windows

ROOT = Path(__file__).resolve().parents[1]


def test_file_names_give_class_size_and_load():
    info = parse_name("12k_Drive_End_OR014@6_2_199.mat")
    assert (info.kind, info.size, info.load, info.file_no, info.sample_rate) == ("outer", 14, 2, 199, 12000)
    assert info.label_with_size == "outer_014"
    normal = parse_name("normal_0_97.mat")
    assert (normal.kind, normal.load, normal.sample_rate, normal.label_with_size) == (
        "normal",
        0,
        48000,
        "normal",
    )
    with pytest.raises(DataError, match="not a CWRU file name"):
        parse_name("holiday_photo.mat")


@needs_cwru
def test_scan_finds_every_class_at_every_load():
    infos = scan(CWRU)
    assert len(infos) == 37
    labels = {i.label_with_size for i in infos}
    assert labels == set(LABELS_10)
    assert sorted({i.load for i in infos if i.kind != "normal"}) == [0, 1, 2, 3]
    # The manifest agrees with the file names about the one 48 kHz file.
    assert [i.name for i in infos if i.sample_rate == 48000] == ["normal_0_97.mat"]


@needs_cwru
def test_healthy_baseline_is_resampled_from_48k_to_12k():
    rec = load_recording(CWRU / "normal_0_97.mat", channel="DE", sample_rate=12000)
    assert rec.source_rate == 48000
    assert rec.signal.size == 60985  # 243,938 samples at 48 kHz / 4
    assert rec.rpm == pytest.approx(1796)
    fault = load_recording(CWRU / "12k_Drive_End_IR007_0_105.mat")
    assert fault.source_rate == 12000 and 120_000 < fault.signal.size < 123_000
    assert fault.label == "inner_007"


@needs_cwru
def test_inner_race_fault_shows_its_ball_pass_frequency():
    """The envelope spectrum of IR007 at 12 kHz peaks at the inner-race ball-pass frequency (~162 Hz)."""
    from scipy.signal import hilbert

    rec = load_recording(CWRU / "12k_Drive_End_IR007_0_105.mat")
    env = np.abs(hilbert(rec.signal.astype(np.float64)))
    spec = np.abs(np.fft.rfft(env - env.mean()))
    f = np.fft.rfftfreq(env.size, 1.0 / rec.sample_rate)
    band = (f > 50) & (f < 300)
    assert f[band][np.argmax(spec[band])] == pytest.approx(161.7, abs=1.5)


@needs_cwru
def test_channel_choice_reads_another_sensor_and_missing_channel_says_so():
    de = load_recording(CWRU / "12k_Drive_End_B007_0_118.mat", channel="DE")
    fe = load_recording(CWRU / "12k_Drive_End_B007_0_118.mat", channel="FE")
    assert de.signal.size == fe.signal.size
    assert not np.allclose(de.signal, fe.signal)
    with pytest.raises(DataError, match="no BA channel"):
        load_recording(CWRU / "normal_0_97.mat", channel="BA")
    with pytest.raises(ConfigError, match="DE, FE, BA"):
        load_recording(CWRU / "normal_0_97.mat", channel="XX")


def test_missing_data_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="--data"):
        load_set(tmp_path, LABELS_10)


@needs_cwru
def test_cross_load_selection_keeps_the_only_healthy_file():
    chosen = select_files(scan(CWRU), LABELS_4, loads=[3], label_by="kind")
    assert [i.name for i in chosen["normal"]] == ["normal_0_97.mat"]
    assert {i.load for i in chosen["ball"]} == {3} and len(chosen["ball"]) == 3


def _positions(signal: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Start index of every window inside ``signal`` (each window found by exact match)."""
    starts = []
    for w in windows:
        cands = np.flatnonzero(signal == w[0])
        hit = [c for c in cands if np.array_equal(signal[c : c + w.size], w)]
        assert hit, "window not found in its recording"
        starts.append(hit[0])
    return np.asarray(starts)


@needs_cwru
def test_no_test_window_overlaps_a_training_or_validation_window():
    recs = load_set(CWRU, ["normal", "outer_021"])
    train = RandomWindows(recs, ["normal", "outer_021"], DEFAULT_SPLIT["train"], window=2048, per_class=64)
    rng = np.random.default_rng(0)
    for rec in recs:
        n = rec.signal.size
        y = ["normal", "outer_021"].index(rec.label)
        epochs = [train.epoch(e, rng) for e in range(2)]
        drawn = np.concatenate([ep.x[ep.y == y] for ep in epochs])
        train_starts = _positions(rec.signal, drawn)
        test_x, _ = part_windows([rec], [rec.label], DEFAULT_SPLIT["test"], window=2048, hop=512)
        val_x, _ = part_windows([rec], [rec.label], DEFAULT_SPLIT["val"], window=2048, hop=512)
        test_starts = _positions(rec.signal, test_x)
        val_starts = _positions(rec.signal, val_x)
        assert train_starts.max() + 2048 <= val_starts.min()
        assert val_starts.max() + 2048 <= test_starts.min()
        assert test_starts.min() >= int(np.ceil(0.75 * n))
        assert test_starts.max() + 2048 <= n


def test_simulator_excerpts_come_from_the_held_out_part():
    """The built-in simulator replays only the test part, so the shipped model never saw it."""
    z = np.load(ROOT / "drsn_stream" / "data" / "cwru_excerpts.npz")
    meta = json.loads(str(z["meta"]))
    for label, src in meta["source"].items():
        test = part_slice(src["recording_n"], DEFAULT_SPLIT["test"])
        assert src["start"] >= test.start, label


@pytest.mark.parametrize("kind", ["gaussian", "laplacian", "pink"])
def test_noise_augmentation_hits_the_drawn_snr(kind):
    rng = np.random.default_rng(1)
    t = np.arange(2048) / 12000.0
    clean = (np.sin(2 * np.pi * 161.7 * t)[None, :] * rng.uniform(0.1, 2.0, (64, 1))).astype(np.float32)
    for target in (-5.0, 0.0, 5.0):
        aug = NoiseAugment(kinds=(kind,), snr_range=None, snr_set=(target,), clean_fraction=0.0)
        noisy = aug(clean, np.zeros(64, np.int64), rng)
        measured = [snr_db(c, x) for c, x in zip(clean, noisy)]
        assert np.allclose(measured, target, atol=0.05)


def test_noise_augmentation_range_and_clean_share():
    rng = np.random.default_rng(2)
    clean = rng.standard_normal((2000, 256)).astype(np.float32)
    aug = NoiseAugment(snr_range=(-6.0, 10.0), clean_fraction=0.25)
    noisy = aug(clean, np.zeros(2000, np.int64), rng)
    untouched = np.all(noisy == clean, axis=1)
    assert 0.2 < untouched.mean() < 0.3
    measured = np.array([snr_db(c, x) for c, x in zip(clean[~untouched], noisy[~untouched])])
    assert measured.min() >= -6.1 and measured.max() <= 10.1
    assert np.std(measured) > 3  # spread over the range, not one value


def test_bad_augment_and_snr_lists_are_refused():
    with pytest.raises(ConfigError, match="unknown noise kind"):
        NoiseAugment(kinds=("purple",))
    with pytest.raises(ConfigError, match="exactly one"):
        NoiseAugment(snr_range=(0.0, 1.0), snr_set=(0.0,))
    assert parse_snr_list("-5:5") == [float(v) for v in range(-5, 6)]
    assert parse_snr_list("-5,0,5") == [-5.0, 0.0, 5.0]
    with pytest.raises(ConfigError, match="-5:5"):
        parse_snr_list("5:-5")
