"""What the spoken-digit training path says about bad input: a broken WAV, an odd file name or
rate, a missing noise file, a TTS engine that writes nothing, a recipe value out of range, a loss
that diverges. Each is refused before training (or at the first non-finite loss) with one line
naming the file or the table and key; the tool turns it into ``NAME: error: ...`` and exit 2."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import wavfile

from drsn_stream.errors import ConfigError, DataError, run_tool

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "train_digits.py"
SHIPPED = ROOT / "configs" / "digits-fsdd.toml"
NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap", "pink_noise", "white_noise")


def _word(rate: int = 8000, seconds: float = 0.3) -> np.ndarray:
    """A stand-in for a spoken digit: a 300 Hz tone burst, int16."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t) * np.hanning(t.size)).astype(np.int16)


def _data(tmp_path: Path, names: tuple[str, ...] = ("3_george_0.wav", "3_george_5.wav", "4_theo_1.wav",
                                                     "4_theo_7.wav")) -> Path:
    """A tiny data folder: fsdd/recordings/<names> and the six noise files (1 s each)."""
    rec = tmp_path / "data" / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for name in names:
        wavfile.write(rec / name, 8000, _word())
    (tmp_path / "data" / "noise").mkdir()
    rng = np.random.default_rng(0)
    for name in NOISES:
        wavfile.write(tmp_path / "data" / "noise" / f"{name}.wav", 16000,
                      (rng.standard_normal(16000) * 3000).astype(np.int16))
    return tmp_path / "data"


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("train_digits_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The tool's main with its command manners (``run_tool``), in this process: (status, stderr)."""
    tool = _tool()
    try:
        rc = run_tool(lambda: tool.main(argv), "tools/train_digits.py")
    except SystemExit as exc:  # argparse refusing a flag
        rc = int(exc.code)
    err = capsys.readouterr().err
    return rc, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def _small_config(tmp_path: Path) -> Path:
    text = SHIPPED.read_text().replace("epochs = 20", "epochs = 1").replace("ensemble = 4", "ensemble = 1")
    path = tmp_path / "small.toml"
    path.write_text(text.replace("train_voices = 100", "train_voices = 1").replace("heldout_voices = 20", "heldout_voices = 1"))
    return path


# ------------------------------------------------------------------ 1. the tool: one line, exit 2
@pytest.mark.slow
def test_the_tool_says_a_missing_data_folder_in_one_line_and_exits_2(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(TOOL), "--data", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert line.startswith("tools/train_digits.py: error:") and "nowhere" in line


@pytest.mark.parametrize("case", ["missing config", "empty data", "unreadable wav", "no tts engines"])
def test_tool_errors_are_one_line_naming_what_is_wrong(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    config, data = _small_config(tmp_path), _data(tmp_path)
    want = ""
    if case == "missing config":
        config, want = tmp_path / "nope.toml", "nope.toml"
    elif case == "empty data":
        (tmp_path / "empty").mkdir()
        data, want = tmp_path / "empty", "no FSDD recordings"
    elif case == "unreadable wav":
        (data / "fsdd" / "recordings" / "5_george_9.wav").write_text("not a wav")
        want = "5_george_9.wav: cannot read"
    else:
        (tmp_path / "bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        want = "espeak-ng, flite not found"
    rc, err = _run(["--config", str(config), "--data", str(data), "--runs", str(tmp_path / "runs")], capsys)
    assert rc == 2
    line = _one_line(err)
    assert line.startswith("tools/train_digits.py: error:") and want in line


@pytest.mark.parametrize("content", [None, "", "{not json", '{"speaker": "george"}'])
def test_record_loso_refuses_a_missing_empty_or_foreign_file_in_one_line(content, tmp_path: Path, capsys) -> None:
    path = tmp_path / "loso-george.json"
    if content is not None:
        path.write_text(content)
    rc, err = _run(["--record-loso", str(path)], capsys)
    assert rc == 2
    assert "loso-george.json" in _one_line(err)


@pytest.mark.parametrize("flag", ["--epochs", "--ensemble", "--threads"])
def test_zero_flags_are_refused_not_taken_for_the_configs_value(flag: str, tmp_path: Path, capsys) -> None:
    rc, err = _run([flag, "0", "--data", str(tmp_path), "--runs", str(tmp_path / "runs")], capsys)
    assert rc == 2 and "Traceback" not in err
    assert f"argument {flag}: must be >= 1, not 0" in err


# ----------------------------------------------------------------- 2. samples that cannot be used
@pytest.mark.parametrize("case", ["nan", "inf", "empty", "huge float", "all zeros"])
def test_a_digit_recording_that_cannot_be_trained_on_is_refused_by_name(case: str, tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd

    data = _data(tmp_path)
    x = _word().astype(np.float32) / 32768
    bad = {"nan": np.full(3000, np.nan, np.float32), "inf": np.where(np.arange(x.size) == 100, np.inf, x).astype(np.float32),
           "empty": np.zeros(0, np.int16), "huge float": x * 1e30, "all zeros": np.zeros(3000, np.int16)}[case]
    wavfile.write(data / "fsdd" / "recordings" / "7_george_9.wav", 8000, bad)
    with pytest.raises(DataError, match=r"7_george_9\.wav: ") as err:
        load_fsdd(data / "fsdd", log=None)
    assert {"nan": "NaN", "inf": "infinite", "empty": "no samples", "huge float": "full scale",
            "all zeros": "only zeros"}[case] in str(err.value)


def test_real_float_and_other_rate_wavs_still_load(tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd

    data = _data(tmp_path)
    wavfile.write(data / "fsdd" / "recordings" / "7_george_9.wav", 8000, _word().astype(np.float32) / 32768)
    wavfile.write(data / "fsdd" / "recordings" / "8_george_9.wav", 44100, _word(44100))
    utts = {(u.label, u.take): u for u in load_fsdd(data / "fsdd", log=None)}
    assert np.isfinite(utts[("7", 9)].audio).all() and 0.25 < np.abs(utts[("7", 9)].audio).max() < 0.35
    assert abs(len(utts[("8", 9)].audio) - 2400) <= 1  # 0.3 s at 8 kHz


@pytest.mark.parametrize("case", ["nan", "all zeros"])
def test_a_noise_file_of_nan_or_digital_silence_is_refused_by_name(case: str, tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_noise

    data = _data(tmp_path)
    bad = np.full(16000, np.nan, np.float32) if case == "nan" else np.zeros(16000, np.int16)
    wavfile.write(data / "noise" / "running_tap.wav", 16000, bad)
    with pytest.raises(DataError, match=r"noise/running_tap\.wav: .*(NaN|only zeros)"):
        load_noise(data / "noise", part="train")


def test_training_stops_at_the_first_non_finite_loss_naming_the_epoch() -> None:
    from drsn_stream.speech.augment import EpochPlan
    from drsn_stream.speech.dataset import Utterance
    from drsn_stream.speech.train import TrainConfig, train_model

    words = [Utterance(str(d), "x", 5, np.full(2000, np.nan, np.float32)) for d in range(4)]
    cfg = TrainConfig(epochs=1, batch=8, threads=1, plan=EpochPlan(unknown=4, silence=2, noise=2))
    noise = {"white_noise": np.random.default_rng(0).standard_normal(20000).astype(np.float32)}
    with pytest.raises(ConfigError, match=r"loss is nan in epoch 1/1.*lower \[train\] lr"):
        train_model(cfg, words, [], noise, log=lambda _: None)


# ----------------------------------------------------------------- 3. the recipe, read and checked
def _doc() -> dict[str, Any]:
    from drsn_stream.config import toml_file

    return toml_file(SHIPPED)


def test_the_shipped_recipe_validates_as_it_trained() -> None:
    from drsn_stream.speech.config import load_config

    cfg = load_config(SHIPPED)
    assert (cfg.train.epochs, cfg.train.batch, cfg.ensemble, cfg.tts.train_voices, cfg.loso.epochs) == (20, 64, 4, 100, 12)
    assert cfg.train.overrides["logmel"]["hop_length"] == 128 and cfg.train_config(seed=3).seed == 3


BAD_VALUES = [
    ("train", "epochs", 0), ("train", "epochs", -1), ("train", "epochs", float("nan")), ("train", "epochs", 1.5),
    ("train", "epochs", "1"), ("train", "epochs", 10**12), ("train", "batch", 0), ("train", "batch", 1),
    ("train", "lr", 0.0), ("train", "lr", float("nan")), ("train", "lr", float("inf")), ("train", "lr", 1e6),
    ("train", "weight_decay", float("nan")), ("train", "label_smoothing", 1.0), ("train", "label_smoothing", -0.1),
    ("train", "seed", -1), ("train", "threads", -1), ("train", "ensemble", 0), ("train", "ensemble", 1000),
    ("model", "dropout", 1.0), ("model", "name", "nope"),
    ("model.logmel", "n_mels", 0), ("model.logmel", "n_mels", -3), ("model.logmel", "n_mels", 500),
    ("model.logmel", "n_fft", 0), ("model.logmel", "n_fft", 16000), ("model.logmel", "hop_length", 0),
    ("model.logmel", "freq_masks", -1), ("model.logmel", "time_mask_width", -1),
    ("model.logmel", "sample_rate", 16000),
    ("tts", "train_voices", 0), ("tts", "train_voices", -1), ("tts", "train_voices", "x"),
    ("augment", "speed", [1.2, 0.8]), ("augment", "speed", [0.0, 0.0]), ("augment", "speed", [0.9, 1.0, 1.1]),
    ("augment", "snr_db", [float("nan"), 10.0]), ("augment", "level", [0.0, 0.3]), ("augment", "rt60_s", [-1.0, 0.5]),
    ("augment", "reverb_p", 5.0), ("augment", "crop", [2.0, 3.0]), ("augment", "crop", [0.4, 0.2]),
    ("loso", "epochs", 0),
]


@pytest.mark.parametrize(("table", "key", "value"), BAD_VALUES, ids=lambda v: str(v))
def test_each_recipe_value_out_of_range_is_one_line_naming_table_and_key(table: str, key: str, value: Any) -> None:
    from drsn_stream.speech.config import parse_config

    doc = _doc()
    section = doc["model"]["logmel"] if table == "model.logmel" else doc.setdefault(table, {})
    section[key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(doc, where="r.toml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("r.toml: [")
    assert f"[{table.split('.')[0]}]" in msg and key in msg


@pytest.mark.parametrize(("change", "want"), [
    (lambda d: d["train"].update(batch_size=32), "unknown key(s) batch_size; valid keys: batch, ensemble"),
    (lambda d: d.update(tarin={"epochs": 1}), "unknown section(s) [tarin] (did you mean [train]?); valid: [model], [train]"),
    (lambda d: d.pop("tts"), "missing table(s) [tts]"),
    (lambda d: d.update(augment={"speeed": [0.9, 1.1]}), "unknown key(s) speeed"),
    (lambda d: d["model"]["logmel"].update(nmels=40), "unknown key(s) nmels"),
])
def test_unknown_keys_and_tables_are_refused_with_the_known_ones(change, want: str) -> None:
    from drsn_stream.speech.config import parse_config

    doc = _doc()
    change(doc)
    with pytest.raises(ConfigError, match=re.escape(want)):
        parse_config(doc)


def test_a_bad_recipe_is_said_before_any_data_is_read(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SHIPPED.read_text().replace("lr = 0.003", "lr = nan"))
    rc, err = _run(["--config", str(bad), "--data", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs")], capsys)
    assert rc == 2 and "[train] lr must be" in _one_line(err) and "nowhere" not in err


# ------------------------------------------------------------ 4. file names and empty split parts
def test_badly_named_files_are_counted_and_said_in_one_line(tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd

    data = _data(tmp_path, ("3_george_0.wav", "3_george_5.wav", "x_y.wav", "12_a_1.wav", "3_George_5.wav"))
    said: list[str] = []
    utts = load_fsdd(data / "fsdd", log=said.append)
    assert len(utts) == 2 and len(said) == 1
    assert said[0].startswith("left out 3 file(s)") and "DIGIT_SPEAKER_INDEX.wav" in said[0] and "x_y.wav" in said[0]


def test_a_folder_of_only_bad_names_is_refused(tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd

    data = _data(tmp_path, ("x_y.wav", "a_b_c.wav"))
    with pytest.raises(DataError, match=r"none of its 2 file\(s\) is named DIGIT_SPEAKER_INDEX\.wav"):
        load_fsdd(data / "fsdd", log=None)


@pytest.mark.parametrize(("names", "part"), [(("3_george_0.wav", "4_george_1.wav"), "training part"),
                                             (("3_george_5.wav", "4_george_9.wav"), "test part")])
def test_an_empty_split_part_is_said_before_training(names, part: str, tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd, split_fsdd

    data = _data(tmp_path, names)
    with pytest.raises(DataError, match=f"no FSDD recording for the {part}"):
        split_fsdd(load_fsdd(data / "fsdd", log=None), require=data / "fsdd")


@pytest.mark.parametrize(("speakers", "want"), [(["nobody"], "no FSDD recording of speaker 'nobody'"),
                                                (["george"], "leaves no FSDD recording of another speaker")])
def test_a_loso_fold_without_training_or_test_recordings_is_refused(speakers, want: str, tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd, loso_folds

    utts = load_fsdd(_data(tmp_path, ("3_george_0.wav", "3_george_5.wav")), log=None)
    with pytest.raises(DataError, match=want):
        loso_folds(utts, speakers)


# ---------------------------------------------------------------------- 5. a rate of no small ratio
def test_a_wav_rate_of_no_small_ratio_to_8khz_is_refused_by_name(tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_fsdd

    data = _data(tmp_path)
    wavfile.write(data / "fsdd" / "recordings" / "7_george_9.wav", 1, _word())
    with pytest.raises(DataError, match=r"7_george_9\.wav: cannot resample 1 Hz to 8000 Hz"):
        load_fsdd(data / "fsdd", log=None)


# ------------------------------------------------------------------------- 6. a missing noise file
@pytest.mark.parametrize("missing", ["white_noise", "doing_the_dishes"])
def test_a_missing_noise_file_is_named_with_its_real_path(missing: str, tmp_path: Path) -> None:
    from drsn_stream.speech.dataset import load_noise

    data = _data(tmp_path)
    (data / "noise" / f"{missing}.wav").unlink()
    for root in (data, data / "noise"):  # the parent or the noise folder itself
        with pytest.raises(DataError) as err:
            load_noise(root, part="train")
        assert f"{data / 'noise' / missing}.wav is missing" in str(err.value)
        assert "noise/noise" not in str(err.value)


# ---------------------------------------------------------------- 7. a TTS engine that writes nothing
def _fake_engines(tmp_path: Path, monkeypatch, body: str) -> None:
    """``espeak-ng`` and ``flite`` on PATH as one script: ``body`` runs with ``out`` (the WAV to
    write), ``text`` (the word) and ``TONE`` (0.3 s of a tone, 16-bit PCM at 8 kHz) defined."""
    head = f"""#!{sys.executable}
import sys, wave, math
a = sys.argv[1:]
out = a[a.index("-w") + 1] if "-w" in a else a[a.index("-o") + 1]
text = a[-1] if "-w" in a else a[a.index("-t") + 1]
TONE = b"".join(int(8000 * math.sin(i / 4)).to_bytes(2, "little", signed=True) for i in range(2400))
"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for engine in ("espeak-ng", "flite"):
        (bin_dir / engine).write_text(head + body)
        os.chmod(bin_dir / engine, 0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_a_tts_engine_that_exits_0_without_output_is_not_read_as_the_last_word(tmp_path: Path, monkeypatch) -> None:
    from drsn_stream.speech import tts

    # fake engines: speak "one" (a tone), exit 0 without writing for any other word
    _fake_engines(tmp_path, monkeypatch, """
if text == "one":
    with wave.open(out, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
        w.writeframes(TONE)
""")
    with pytest.raises(DataError, match=r"exited 0 for .* 'two' but wrote no .*tmp-.*\.wav") as err:
        tts.generate(tmp_path / "cache", ("one", "two"), ("1", "2"), tts.voices(1))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("tmp-*.wav")) and not list((tmp_path / "cache").glob("tts-*.npz"))


def test_a_word_a_tts_voice_says_as_an_empty_wav_is_left_out_not_the_run(tmp_path: Path, monkeypatch) -> None:
    # an engine's empty WAV (a header, no samples) was a word too quiet to keep; refused as
    # unreadable it would have stopped the whole training
    from drsn_stream.speech import tts

    _fake_engines(tmp_path, monkeypatch, """
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
    if text == "one":
        w.writeframes(TONE)
""")
    out = tts.generate(tmp_path / "cache", ("one", "two"), ("1", "2"), tts.voices(1))
    assert [u.label for u in out] == ["1"]
