"""Training on your own recordings: the dataset reader (a folder per label, CSV/TOML manifests), bad
files, honest splits, and the whole path a plant engineer takes (CWRU recordings converted to WAV and
CSV at 16 kHz -> `drsn-stream train --from bearing-cwru` -> `drsn-stream --model my.pt --source file:`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import cwru_signal, require_cwru
from scipy.io import savemat, wavfile
from scipy.signal import resample_poly

from drsn_stream.errors import DataError
from drsn_stream.train.cli import main as train_main
from drsn_stream.train.userdata import (
    check_amounts,
    load_user_data,
    parse_parts,
    split_clips,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def _tone(freq: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _csv(path: Path, x: np.ndarray, header: str | None = "accel_g") -> None:
    lines = ([header] if header else []) + [f"{v:.6f}" if np.ndim(v) == 0 else ",".join(f"{u:.6f}" for u in v)
                                             for v in x]
    path.write_text("\n".join(lines) + "\n")


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spec.argmax()])


# ---------------------------------------------------------------------------- reading


def test_a_folder_per_label_reads_every_format_at_the_models_rate(tmp_path):
    (tmp_path / "normal").mkdir()
    (tmp_path / "outer_race" / "march").mkdir(parents=True)
    wavfile.write(tmp_path / "normal" / "run1.wav", 16000, _tone(1000, 2.0, 16000))
    _csv(tmp_path / "outer_race" / "run1.csv", _tone(2000, 1.5, 16000))
    np.save(tmp_path / "outer_race" / "march" / "run2.npy", _tone(2000, 1.0, 16000))
    data = load_user_data(tmp_path, sample_rate=12000, default_rate=16000)
    assert data.layout == "folders" and data.labels == ["normal", "outer_race"] and not data.problems
    by = {c.name: c for c in data.clips}
    assert set(by) == {"normal/run1.wav", "outer_race/run1.csv", "outer_race/march/run2.npy"}
    assert by["outer_race/march/run2.npy"].recording == "outer_race/march/run2"
    wav = by["normal/run1.wav"]
    assert wav.sample_rate == 12000 and wav.source_rate == 16000 and wav.signal.size == 24000
    assert abs(_peak_hz(wav.signal, 12000) - 1000) < 2  # resampled, not relabelled: the tone stays at 1 kHz
    assert abs(_peak_hz(by["outer_race/run1.csv"].signal, 12000) - 2000) < 2
    # without --rate, a file that does not carry its rate is said in training's terms (it said the
    # monitor's "file:PATH?rate=12000", which `train` does not take)
    with pytest.raises(DataError, match=r"outer_race/march/run2.npy: the sample rate is not in the file; give --rate"):
        load_user_data(tmp_path, sample_rate=12000)



def test_flac_ogg_and_mp3_recordings_train_at_the_rate_their_header_states(tmp_path):
    """A data set of compressed sound files (a phone's recordings, a web corpus) was refused file
    by file; now they read as WAV files do: at their own rate, over --rate, resampled."""
    import soundfile

    for label, name, fmt, subtype, freq in [("normal", "a.flac", "FLAC", "PCM_16", 1000),
                                            ("normal", "b.ogg", "OGG", "VORBIS", 1000),
                                            ("hum", "c.mp3", "MP3", "MPEG_LAYER_III", 3000)]:
        (tmp_path / label).mkdir(exist_ok=True)
        soundfile.write(tmp_path / label / name, _tone(freq, 2.0, 16000), 16000, format=fmt, subtype=subtype)
    data = load_user_data(tmp_path, sample_rate=12000, default_rate=44100)
    assert not data.problems and data.labels == ["hum", "normal"]
    for c in data.clips:
        assert c.source_rate == 16000 and c.sample_rate == 12000 and abs(c.signal.size - 24000) <= 1, c.name
        assert abs(_peak_hz(c.signal, 12000) - (3000 if c.label == "hum" else 1000)) < 2, c.name


def test_a_data_loggers_csv_gives_its_rate_by_its_time_column_and_its_one_sensor_needs_no_channel(tmp_path):
    # "time,accel" exports: the rate had to be given (--rate, which a folder of other files may
    # need at another value) and the column too, or the file was refused for its two columns
    (tmp_path / "normal").mkdir()
    (tmp_path / "fault").mkdir()
    t = np.arange(2 * 8000) / 8000
    _csv(tmp_path / "normal" / "log.csv", np.stack([t, _tone(500, 2.0, 8000)], axis=1), header="Time (s),accel")
    _csv(tmp_path / "fault" / "log.csv", np.stack([t, _tone(1500, 2.0, 8000)], axis=1), header="time,accel")
    np.save(tmp_path / "fault" / "run.npy", _tone(1500, 1.0, 16000))
    data = load_user_data(tmp_path, sample_rate=12000, default_rate=16000)  # --rate is the .npy's
    assert not data.problems, data.problems
    by = {c.name: c for c in data.clips}
    assert by["normal/log.csv"].source_rate == 8000 and by["normal/log.csv"].signal.size == 24000
    assert abs(_peak_hz(by["normal/log.csv"].signal, 12000) - 500) < 2  # the sensor, not the time ramp
    assert abs(_peak_hz(by["fault/log.csv"].signal, 12000) - 1500) < 2
    assert by["fault/run.npy"].source_rate == 16000
    (tmp_path / "m.csv").write_text("path,label,rate,channel\nnormal/log.csv,normal,12000,1\n")
    with pytest.raises(DataError, match=r"rate 12000 Hz, but its time column 'Time \(s\)' says 8000 Hz"):
        load_user_data(tmp_path / "m.csv", sample_rate=12000)
    # a tachometer's speed column beside the one sensor is no sensor: no channel needed, and not taken
    rpm = np.full(t.size, 1797.0)
    _csv(tmp_path / "normal" / "log.csv", np.stack([t, rpm, _tone(500, 2.0, 8000)], axis=1), header="time,rpm,accel")
    clip = {c.name: c for c in load_user_data(tmp_path, sample_rate=12000, default_rate=16000).clips}["normal/log.csv"]
    assert abs(_peak_hz(clip.signal, 12000) - 500) < 2
    (tmp_path / "m.csv").write_text("path,label,channel\nnormal/log.csv,normal,1\n")
    with pytest.raises(DataError, match="column 1 is its shaft speed column 'rpm', not a sensor"):
        load_user_data(tmp_path / "m.csv", sample_rate=12000)

def test_a_test_rigs_matlab_files_train_at_the_rates_they_state(tmp_path):
    # any .mat file not laid out as CWRU's was refused ("channel must be one of DE, FE, BA")
    (tmp_path / "normal").mkdir()
    (tmp_path / "outer").mkdir()
    savemat(tmp_path / "normal" / "base.mat", {"bearing": {"gs": _tone(500, 2.0, 48828)[:, None], "sr": 48828.0,
                                                           "rate": 25.0}})
    savemat(tmp_path / "outer" / "or1.mat", {"acc": _tone(1500, 1.0, 20000), "acc_y": _tone(900, 1.0, 20000),
                                             "Fs": 20000})
    with pytest.raises(DataError, match=r"or1.mat: its signal has 2 channels \(acc, acc_y\); say which one"):
        load_user_data(tmp_path, sample_rate=12000)
    savemat(tmp_path / "outer" / "or2.mat", {"acc": _tone(1500, 1.0, 20000), "tach": _tone(30, 0.5, 20000), "Fs": 20000})
    with pytest.raises(DataError, match=r"or2.mat: .*several signals: acc \(1 x 20,000\), tach \(1 x 10,000\); choose one "
                                        r"with channel = NAME in a manifest, or --channel NAME"):
        load_user_data(tmp_path, sample_rate=12000)
    (tmp_path / "m.csv").write_text("path,label,channel\nnormal/base.mat,normal,\nouter/or1.mat,outer,acc\n"
                                    "outer/or1.mat,outer_y,acc_y\nouter/or1.mat,outer_col,1\n")
    clips = load_user_data(tmp_path / "m.csv", sample_rate=12000).clips
    assert [(c.source_rate, round(_peak_hz(c.signal, 12000))) for c in clips] == [
        (48828, 500), (20000, 1500), (20000, 900), (20000, 900)]
    # the same as MATLAB v7.3 (HDF5) files, which were refused
    from helpers import save_mat73

    save_mat73(tmp_path / "normal" / "base.mat", {"bearing": {"gs": _tone(500, 2.0, 48828)[:, None], "sr": 48828.0}})
    save_mat73(tmp_path / "outer" / "or1.mat", {"acc": _tone(1500, 1.0, 20000), "acc_y": _tone(900, 1.0, 20000),
                                                "Fs": 20000.0})
    clips = load_user_data(tmp_path / "m.csv", sample_rate=12000).clips
    assert [(c.source_rate, round(_peak_hz(c.signal, 12000))) for c in clips] == [
        (48828, 500), (20000, 1500), (20000, 900), (20000, 900)]


def test_tdms_logs_train_at_their_waveform_rate_and_by_channel_name(tmp_path):
    from nptdms import ChannelObject, GroupObject, TdmsWriter

    for label, freq in (("normal", 700), ("outer", 1700)):
        (tmp_path / label).mkdir()
        with TdmsWriter(tmp_path / label / "run.tdms") as w:
            wf = {"wf_increment": 1 / 25600}
            w.write_segment([GroupObject("Vib"), ChannelObject("Vib", "ai0", _tone(freq, 1.0, 25600), properties=wf),
                             ChannelObject("Vib", "ai1", _tone(300, 1.0, 25600), properties=wf)])
    with pytest.raises(DataError, match=r"its signal has 2 channels \(ai0, ai1\); say which one"):
        load_user_data(tmp_path, sample_rate=12000)
    clips = load_user_data(tmp_path, sample_rate=12000, channel="ai0").clips
    assert [(c.source_rate, round(_peak_hz(c.signal, 12000))) for c in clips] == [(25600, 700), (25600, 1700)]


def test_files_of_columns_named_by_their_time_train_as_csv_files_do(tmp_path):
    # the IMS bearing set's files (2003.10.22.12.06.24: tab-separated columns, no suffix) were
    # "unknown recording type '.24'"
    for label, freq in (("normal", 700), ("outer", 1700)):
        (tmp_path / label).mkdir()
        for k in range(2):
            x = _tone(freq, 1.0, 20000, seed=k)
            (tmp_path / label / f"2003.10.22.12.{k:02d}.24").write_text("".join(f"{v:.4f}\t0.0\r\n" for v in x))
    with pytest.raises(DataError, match=r"2 columns/channels; say which one"):
        load_user_data(tmp_path, sample_rate=12000, default_rate=20000)
    data = load_user_data(tmp_path, sample_rate=12000, default_rate=20000, channel="0")
    assert sorted(c.recording for c in data.clips) == ["normal/2003.10.22.12.00.24", "normal/2003.10.22.12.01.24",
                                                        "outer/2003.10.22.12.00.24", "outer/2003.10.22.12.01.24"]
    assert [round(_peak_hz(c.signal, 12000)) for c in data.clips] == [700, 700, 1700, 1700]


def test_a_csv_manifest_takes_rate_channel_start_end_and_recording(tmp_path):
    two = np.stack([_tone(500, 3.0, 8000), _tone(1500, 3.0, 8000, seed=1)], axis=1)
    _csv(tmp_path / "logger.csv", two, header="time_ignored,accel")
    wavfile.write(tmp_path / "ok.wav", 12000, _tone(3000, 2.0, 12000))
    (tmp_path / "m.csv").write_text(
        "path,label,rate,channel,start,end,recording\n"
        "logger.csv,healthy,8000,1,0,1.5,run-a\n"
        "logger.csv,healthy,8000,1,1.5,3,run-a\n"
        "ok.wav,fault,,,,,\n"
    )
    data = load_user_data(tmp_path / "m.csv", sample_rate=12000)
    assert data.layout == "manifest" and data.labels == ["fault", "healthy"]
    first, second, wav = data.clips
    assert first.name == "logger.csv[0:1.5]" and second.name == "logger.csv[1.5:3]"
    assert first.recording == second.recording == "run-a"
    assert first.signal.size == 18000 and abs(_peak_hz(first.signal, 12000) - 1500) < 2  # column 1, 8 -> 12 kHz
    assert wav.recording == "ok.wav" and wav.source_rate == 12000


def test_a_spreadsheets_semicolon_manifest_with_decimal_commas_reads_as_the_comma_one(tmp_path):
    # a spreadsheet where the decimal sign is a comma exports "path;label;start;end" and "1,5": it
    # was one column named "path;label;rate;..." and refused as unknown
    two = np.stack([_tone(500, 3.0, 8000), _tone(1500, 3.0, 8000, seed=1)], axis=1)
    _csv(tmp_path / "logger.csv", two, header="time_ignored,accel")
    wavfile.write(tmp_path / "ok.wav", 12000, _tone(3000, 2.0, 12000))
    rows = ["path,label,rate,channel,start,end,recording", "logger.csv,healthy,8000,1,0,1.5,run-a",
            "logger.csv,healthy,8000,1,1.5,3,run-a", "ok.wav,fault,,,0.25,,"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "semi.csv").write_text("\n".join(r.replace(",", ";").replace(".", ",").replace(",wav", ".wav")
                                                  .replace(",csv", ".csv") for r in rows) + "\n")
    assert "logger.csv;healthy;8000;1;1,5;3;run-a" in (tmp_path / "semi.csv").read_text()
    want = load_user_data(tmp_path / "m.csv", sample_rate=12000)
    got = load_user_data(tmp_path / "semi.csv", sample_rate=12000)
    assert [(c.name, c.label, c.recording) for c in got.clips] == [(c.name, c.label, c.recording) for c in want.clips]
    assert got.clips[0].name == "logger.csv[0:1.5]"
    assert all(np.array_equal(a.signal, b.signal) for a, b in zip(got.clips, want.clips))


@pytest.mark.parametrize("row, says", [
    ("ok.wav,fault,,,nan,1,", "start must be a finite number >= 0"),  # a ValueError from int() before
    ("ok.wav,fault,0,,,,", "rate must be a finite number > 0"),  # a division by zero before
    ("ok.wav,fault,,,0,inf,", "end must be a finite number >= 0"),
    ("ok.wav,fault,,,-1,1,", "start must be a finite number >= 0"),
])
def test_a_manifest_number_out_of_range_is_one_line_naming_the_row(tmp_path, row, says):
    wavfile.write(tmp_path / "ok.wav", 12000, _tone(3000, 2.0, 12000))
    (tmp_path / "m.csv").write_text("path,label,rate,channel,start,end,recording\n" + row + "\n")
    with pytest.raises(DataError, match=says) as info:
        load_user_data(tmp_path / "m.csv", sample_rate=12000)
    assert "m.csv" in str(info.value)


def test_a_toml_manifest_with_defaults(tmp_path):
    np.save(tmp_path / "a.npy", _tone(700, 2.0, 16000))
    np.save(tmp_path / "b.npy", _tone(900, 2.0, 16000))
    (tmp_path / "m.toml").write_text(
        'rate = 16000\n[[recording]]\npath = "a.npy"\nlabel = "x"\n[[recording]]\npath = "b.npy"\nlabel = "y"\n'
    )
    data = load_user_data(tmp_path / "m.toml", sample_rate=8000)
    assert [c.label for c in data.clips] == ["x", "y"] and data.clips[0].signal.size == 16000


def _bad_folder(root: Path) -> None:
    (root / "ok").mkdir()
    (root / "broken").mkdir()
    wavfile.write(root / "ok" / "good.wav", 12000, _tone(1000, 1.0, 12000))
    (root / "broken" / "truncated.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    (root / "broken" / "words.csv").write_text("a,b\nhello,world\n")
    nan = _tone(1000, 1.0, 12000)
    nan[100] = np.nan
    np.save(root / "broken" / "nan.npy", nan)
    np.save(root / "broken" / "flat.npy", np.zeros(12000, np.float32))
    _csv(root / "broken" / "two_columns.csv", np.stack([nan, nan], axis=1)[200:300], header="x,y")
    (root / "broken" / "notes.txt").write_text("calibrated on monday")
    # a data set copied without what its links point to: listed as bad, not left out unsaid
    (root / "broken" / "moved.wav").symlink_to(root / "archive" / "moved.wav")


def test_bad_files_fail_the_run_with_one_line_each(tmp_path):
    _bad_folder(tmp_path)
    with pytest.raises(DataError) as err:
        load_user_data(tmp_path, sample_rate=12000, default_rate=12000)
    msg = str(err.value)
    assert "7 bad file(s)" in msg and "--on-bad skip" in msg
    lines = msg.splitlines()[1:]
    assert len(lines) == 7
    expect = {"truncated.wav": "WAV", "words.csv": "numeric CSV", "nan.npy": "NaN", "flat.npy": "flat",
              "two_columns.csv": "columns", "notes.txt": "not a recording this reads",
              "moved.wav": "a link to " + str(tmp_path / "archive" / "moved.wav") + ", which does not exist"}
    for name, what in expect.items():
        assert any(name in line and what in line for line in lines), (name, lines)


def test_bad_files_are_skipped_when_asked_and_a_csv_without_rate_is_named(tmp_path):
    _bad_folder(tmp_path)
    _csv(tmp_path / "ok" / "norate.csv", _tone(1000, 1.0, 12000))
    data = load_user_data(tmp_path, sample_rate=12000, on_bad="skip")
    assert [c.name for c in data.clips] == ["ok/good.wav"]
    assert len(data.problems) == 8
    assert any("norate.csv" in p and "rate" in p for p in data.problems)


# ---------------------------------------------------------------------------- splits


def _ramp_folder(root: Path, recordings: dict[str, int], seconds: float = 2.0) -> None:
    """Recordings whose samples are all distinct numbers, so shared samples between parts would show."""
    start = 0
    for label, n in recordings.items():
        (root / label).mkdir()
        for i in range(n):
            size = int(seconds * 1000)
            np.save(root / label / f"r{i}.npy", np.arange(start, start + size, dtype=np.float32))
            start += size


def _values(segs) -> set[float]:
    return {float(v) for s in segs for v in s.signal}


def test_one_recording_per_label_is_split_in_time_without_shared_samples(tmp_path):
    _ramp_folder(tmp_path, {"a": 1, "b": 1})
    data = load_user_data(tmp_path, sample_rate=1000, default_rate=1000)
    split = split_clips(data.clips, data.labels, parts=parse_parts("train=0:0.3,test=0.5:1"))
    assert split.by == {"a": "time", "b": "time"} and set(split.segments) == {"train", "test"}
    train, test = _values(split.segments["train"]), _values(split.segments["test"])
    assert not train & test
    a_train = next(s for s in split.segments["train"] if s.label == "a")
    a_test = next(s for s in split.segments["test"] if s.label == "a")
    assert a_train.signal.size == 600 and a_test.signal.size == 1000 and a_test.signal[0] > a_train.signal[-1]
    rows = [r for r in split.table if r["label"] == "a"]
    assert {r["role"]: r["part"] for r in rows} == {"train": [0.0, 0.3], "test": [0.5, 1.0]}


def test_several_recordings_are_split_by_recording_and_one_id_stays_together(tmp_path):
    _ramp_folder(tmp_path, {"a": 5, "b": 4})
    data = load_user_data(tmp_path, sample_rate=1000, default_rate=1000)
    split = split_clips(data.clips, data.labels)
    assert split.by == {"a": "recording", "b": "recording"}
    roles = {}
    for r in split.table:
        assert r["part"] == [0.0, 1.0]
        assert roles.setdefault(r["file"], r["role"]) == r["role"]
    for lab in ("a", "b"):
        got = Counter(r["role"] for r in split.table if r["label"] == lab)
        assert got["test"] >= 1 and got["val"] >= 1 and got["train"] >= 1
    assert not _values(split.segments["train"]) & _values(split.segments["test"])
    # two excerpts of one run (same recording id in a manifest) land in one role
    rows = ["path,label,rate,start,end,recording"]
    for i in range(4):
        rows += [f"a/r{i}.npy,a,1000,0,1,run{i}", f"a/r{i}.npy,a,1000,1,2,run{i}"]
    rows += [f"b/r{i}.npy,b,1000,,,run-b{i}" for i in range(4)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = load_user_data(tmp_path / "m.csv", sample_rate=1000)
    split = split_clips(data.clips, data.labels, by="recording")
    per_run: dict[str, set[str]] = {}
    for r in split.table:
        per_run.setdefault(r["recording"], set()).add(r["role"])
    assert all(len(v) == 1 for v in per_run.values()), per_run


def test_a_label_with_too_little_data_is_named_before_training(tmp_path):
    _ramp_folder(tmp_path, {"plenty": 1}, seconds=30.0)
    _ramp_folder(tmp_path, {"scarce": 1}, seconds=2.0)
    data = load_user_data(tmp_path, sample_rate=1000, default_rate=1000)
    split = split_clips(data.clips, data.labels)
    lines = check_amounts(split, data.labels, window=256, min_train_windows=8)
    assert len(lines) == 1 and lines[0].startswith("label scarce:") and "needs 8" in lines[0]
    out = tmp_path / "run"
    code = train_main(["train", "--data", str(tmp_path), "--rate", "12000", "--from", "scratch", "--out", str(out),
                       "--quiet"])
    assert code == 2 and not (out / "last.pt").exists()


def test_parts_are_checked():
    from drsn_stream.errors import ConfigError

    assert parse_parts("train=0:0.3,test=0.5:1") == {"train": (0.0, 0.3), "test": (0.5, 1.0)}
    for bad in ("train=0:0.6,test=0.5:1", "test=0.5:1", "train=0:0.3,test=0.5:1.2", "train=0-0.3,test=0.5:1"):
        with pytest.raises(ConfigError):
            parse_parts(bad)


# ---------------------------------------------------------------------------- the whole path


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drsn_stream", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_fine_tuned_on_wav_and_csv_at_16khz_the_model_labels_a_held_out_recording(tmp_path, cli_in_process):
    """A plant engineer's folder: three conditions of another load (3 HP), converted to 16 kHz WAV and
    CSV; the fine-tuned model then labels the unseen end of one of the recordings through the monitor."""
    require_cwru()
    sources = {  # label -> (CWRU file, its rate)
        "normal": ("normal_0_97.mat", 48000),
        "inner_race": ("12k_Drive_End_IR021_3_212.mat", 12000),
        "outer_race": ("12k_Drive_End_OR007@6_3_133.mat", 12000),
    }
    data = tmp_path / "data"
    held = {}
    for i, (label, (name, rate)) in enumerate(sources.items()):
        x = cwru_signal(name)
        x16 = resample_poly(x, 16000, rate).astype(np.float32)
        cut = int(0.7 * x16.size)
        held[label] = x16[cut:]
        (data / label).mkdir(parents=True)
        if i % 2:
            _csv(data / label / "run1.csv", x16[:cut])
        else:
            wavfile.write(data / label / "run1.wav", 16000, x16[:cut])
    wavfile.write(tmp_path / "held_inner.wav", 16000, held["inner_race"])
    my = tmp_path / "my.pt"
    res = _cli("train", "--data", str(data), "--rate", "16000", "--from", "bearing-cwru", "--artifact", str(my),
               "--out", str(tmp_path / "run"), "--epochs", "8", "--windows-per-class", "128", "--threads", "1")
    assert res.returncode == 0, res.stderr
    assert "held-out test part" in res.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["labels"] == ["inner_race", "normal", "outer_race"] and report["split_by"]["normal"] == "time"
    assert report["accuracy"]["clean"] >= 0.9, report["accuracy"]
    from drsn_stream.models import load_artifact, load_validation

    _, meta = load_artifact(my)
    seg = meta.training["split"]["segments"]
    assert {(r["file"], r["role"]) for r in seg} >= {("inner_race/run1.csv", "train"), ("inner_race/run1.csv", "test")}
    assert meta.training["data"]["source_rates"]["inner_race/run1.csv"] == 16000
    assert load_validation(my) is not None

    mon = cli_in_process("--model", str(my), "--source", f"file:{tmp_path / 'held_inner.wav'}", "--fast",
                         "--headless", "--jsonl", "-", "--threads", "1")
    assert mon.returncode == 0, mon.stderr
    preds = [json.loads(line) for line in mon.stdout.splitlines() if '"prediction"' in line]
    counts = Counter(p["label"] for p in preds)
    assert len(preds) > 30 and counts["inner_race"] > 0.8 * len(preds), counts

    ev = cli_in_process("eval", "--model", str(my), "--rate", "16000", "--json")
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["split"] == "test" and doc["results"][0]["accuracy"] == pytest.approx(report["accuracy"]["clean"], abs=1e-4)


# ---------------------------------------------------------------------------- starting points, eval


def test_fine_tuning_starts_from_the_shipped_weights_with_a_new_head_and_frozen_stages():
    import torch

    from drsn_stream.errors import ConfigError
    from drsn_stream.models import load_artifact
    from drsn_stream.models.outputs import network_of
    from drsn_stream.train.finetune import UserRun, start_model

    module, meta = load_artifact("bearing-cwru")
    base = network_of(module).state_dict()
    model, layout, origin = start_model(UserRun(freeze=1), ["normal", "pump_cavitation"])
    assert (layout.sample_rate, layout.window) == (meta.sample_rate, meta.window)
    assert model.fc.out_features == 2 and origin["model_config"]["num_classes"] == 2
    assert torch.equal(model.fc.weight[0], base["fc.weight"][meta.labels.index("normal")])
    assert torch.equal(model.stem.weight, base["stem.weight"]) and not model.stem.weight.requires_grad
    assert not any(p.requires_grad for p in model.units[3].parameters())  # stage 1 = units 0-3
    assert all(p.requires_grad for p in model.units[4].parameters())
    assert origin["frozen"][:2] == ["stem", "units.0"]
    with pytest.raises(ConfigError, match="freeze"):
        start_model(UserRun(base="scratch", freeze=1), ["a", "b"])
    with pytest.raises(ConfigError, match="0..3"):
        start_model(UserRun(freeze=4), ["a", "b"])


def test_eval_measures_the_shipped_model_on_a_folder_of_its_labels(tmp_path, capsys):
    require_cwru()
    from drsn_stream.train.cli import main

    for label, name in (("normal", "normal_0_97.mat"), ("inner_007", "12k_Drive_End_IR007_0_105.mat")):
        x = cwru_signal(name)
        rate = 48000 if label == "normal" else 12000
        (tmp_path / label).mkdir()
        wavfile.write(tmp_path / label / "end.wav", rate, x[int(0.8 * x.size):].astype(np.float32))
    assert main(["eval", "--model", "bearing-cwru", "--data", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "all" and doc["part"] == ["inner_007/end.wav", "normal/end.wav"]
    assert doc["results"][0]["accuracy"] > 0.95
    (tmp_path / "cavitation").mkdir()
    wavfile.write(tmp_path / "cavitation" / "a.wav", 12000, _tone(1000, 1.0, 12000))
    assert main(["eval", "--model", "bearing-cwru", "--data", str(tmp_path)]) == 2
    assert "cavitation" in capsys.readouterr().err


def test_train_says_which_way_to_go(tmp_path, capsys):
    assert train_main(["train", "--quiet"]) == 2
    assert "--data DIR|MANIFEST" in capsys.readouterr().err
    cfg = ROOT / "configs" / "bearing-cwru.toml"
    assert train_main(["train", "--config", str(cfg), "--from", "scratch", "--data", str(tmp_path)]) == 2
    assert "--from trains on your own" in capsys.readouterr().err
    require_cwru()
    from helpers import CWRU

    assert train_main(["train", "--data", str(CWRU), "--quiet"]) == 2
    assert "--config configs/bearing-cwru.toml" in capsys.readouterr().err


def test_a_label_an_artifact_cannot_carry_is_said_before_training(tmp_path):
    """A label with a control character (a folder name with a tab, an escape sequence in a
    manifest) would be refused when the trained model is saved: it is said when the data is read."""
    wavfile.write(tmp_path / "ok.wav", 12000, _tone(3000, 2.0, 12000))
    (tmp_path / "m.csv").write_text("path,label\nok.wav,pump\tA\nok.wav,normal\n")
    with pytest.raises(DataError, match="labels must be 1-128 printable characters"):
        load_user_data(tmp_path / "m.csv", sample_rate=12000)


# ---------------------------------------------------------------------------- manifests as users write them


def _two_wavs(folder: Path) -> None:
    wavfile.write(folder / "a.wav", 12000, _tone(1000, 2.0, 12000))
    wavfile.write(folder / "b.wav", 12000, _tone(2000, 2.0, 12000, seed=1))


def test_a_spreadsheets_csv_manifest_with_a_byte_order_mark_reads(tmp_path):
    # the mark was read as part of the first column's name: "unknown column(s) \ufeffpath"
    _two_wavs(tmp_path)
    (tmp_path / "m.csv").write_bytes("path,label\r\na.wav,normal\r\nb.wav,fault\r\n".encode("utf-8-sig"))
    data = load_user_data(tmp_path / "m.csv", sample_rate=12000)
    assert [(c.name, c.label) for c in data.clips] == [("a.wav", "normal"), ("b.wav", "fault")]


@pytest.mark.parametrize("text, says", [
    ("path,label\na.wav,norm\xe4l\n".encode("latin-1"), "not UTF-8 text.*save the manifest as UTF-8"),  # a traceback
    (b"path,path,label\na.wav,b.wav,normal\n", "path named more than once"),  # the last column won
    (b"path,label\na.wav,normal,fault\n", "row 1: 3 cells under a header of 2 columns"),  # the cell was dropped
    (b"path,lable\na.wav,normal\n", r"row 1: unknown column\(s\) lable \(did you mean label\?\); known: path"),
])
def test_a_csv_manifest_that_would_be_misread_is_one_line(tmp_path, text, says):
    _two_wavs(tmp_path)
    (tmp_path / "m.csv").write_bytes(text)
    with pytest.raises(DataError, match=says):
        load_user_data(tmp_path / "m.csv", sample_rate=12000)


@pytest.mark.parametrize("table, says", [
    ('[[recording]]\npath = ["a.wav"]\nlabel = "normal"\n', r"\[\[recording\]\] 1: path must be a string"),
    ('[[recording]]\npath = "a.wav"\nlabel = ["normal"]\n', r"label must be a string, not \['normal'\]"),
    ('[[recording]]\npath = "a.wav"\nlabel = "normal"\nstart = true\n', "start must be a number, not True"),
    ('rate = true\n[[recording]]\npath = "a.wav"\nlabel = "normal"\n', "rate must be a number"),
    ('recording = [1, 2]\n', r"no \[\[recording\]\] tables"),  # 'int' object is not a mapping
    ('labels = ["normal"]\n[[recording]]\npath = "a.wav"\nlabel = "normal"\n', "unknown key.*labels"),
    # a table's key said as a key, not a CSV "row 1: unknown column(s)", with the nearest one
    ('[[recording]]\npath = "a.wav"\nlabl = "normal"\n',
     r"m.toml \[\[recording\]\] 1: unknown key\(s\) labl \(did you mean label\?\); known: path, label"),
])
def test_a_toml_manifest_value_of_the_wrong_type_is_one_line(tmp_path, table, says):
    _two_wavs(tmp_path)
    (tmp_path / "m.toml").write_text(table)
    with pytest.raises(DataError, match=says):
        load_user_data(tmp_path / "m.toml", sample_rate=12000)


def test_rows_naming_one_file_are_one_recording_whatever_their_ids(tmp_path):
    # the file under three ids (or three spellings) went to train, val and test: the held-out
    # accuracy measured signal the network had trained on
    _two_wavs(tmp_path)
    (tmp_path / "sub").mkdir()
    rows = ["a.wav,normal,0,0.6,r1", "a.wav,normal,0.6,1.2,r2", "a.wav,normal,1.2,2,r3",
            "./a.wav,normal,0,1,", "sub/../a.wav,normal,1,2,", "b.wav,fault,,,r4"]
    (tmp_path / "m.csv").write_text("path,label,start,end,recording\n" + "\n".join(rows) + "\n")
    data = load_user_data(tmp_path / "m.csv", sample_rate=12000)
    assert len({c.recording for c in data.clips if c.label == "normal"}) == 1
    assert {c.recording for c in data.clips if c.label == "fault"} == {"r4"}
    split = split_clips(data.clips, ["normal", "fault"], by="auto", parts=None, seed=0)
    assert split.by["normal"] == "time"  # one recording: cut in time, no stretch of it in two parts whole


def test_a_stretch_whose_start_is_not_before_its_end_says_so(tmp_path):
    _two_wavs(tmp_path)
    (tmp_path / "m.csv").write_text("path,label,start,end\na.wav,normal,1.5,0.5\nb.wav,fault,,\n")
    with pytest.raises(DataError, match=r"start 1.5 s is not before end 0.5 s"):
        load_user_data(tmp_path / "m.csv", sample_rate=12000)


def test_eval_says_which_recordings_are_shorter_than_a_window(tmp_path, capsys):
    # a label of only such recordings had no row and no word; all of them: "argmax of an empty sequence"
    (tmp_path / "normal").mkdir()
    (tmp_path / "outer_021").mkdir()
    wavfile.write(tmp_path / "normal" / "long.wav", 12000, _tone(1000, 1.0, 12000))
    wavfile.write(tmp_path / "outer_021" / "blip.wav", 12000, _tone(2000, 0.1, 12000))
    assert train_main(["eval", "--model", "bearing-cwru", "--data", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "outer_021/blip.wav: shorter than one window (2048 samples" in err
    (tmp_path / "normal" / "long.wav").unlink()
    wavfile.write(tmp_path / "normal" / "short.wav", 12000, _tone(1000, 0.1, 12000))
    assert train_main(["eval", "--model", "bearing-cwru", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "every recording of" in err and "normal/short.wav, outer_021/blip.wav" in err


def test_a_base_model_that_cannot_be_fine_tuned_is_refused_before_the_data_is_read(tmp_path, capsys):
    # the refusal came after every recording had been read and resampled
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "broken.wav").write_text("not audio")
    assert train_main(["train", "--data", str(tmp_path), "--from", "digits-fsdd", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fine-tuning needs a single network" in err and "an ensemble" in err and "broken.wav" not in err
