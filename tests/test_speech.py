"""The shipped spoken-digit model, the speech simulator and the whole live path on real speech."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_stream.dsp import StreamDSP
from drsn_stream.dsp.normalize import normalize
from drsn_stream.errors import ConfigError
from drsn_stream.models import load_artifact
from drsn_stream.models.outputs import to_probs
from drsn_stream.sources import make_source
from drsn_stream.speech import LABELS
from drsn_stream.speech.detector import WordDetector
from drsn_stream.types import Frame

DATA = Path(os.environ.get("DRSN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
FSDD = DATA / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def digits() -> tuple[torch.jit.ScriptModule, object]:
    return load_artifact("digits-fsdd")


def _probs(model: torch.jit.ScriptModule, windows: np.ndarray, spec: dict) -> np.ndarray:
    with torch.no_grad():
        first, _ = model(torch.from_numpy(normalize(windows, spec)))
    return to_probs(first, load_artifact("digits-fsdd")[1].scores).numpy()


def test_artifact_says_what_it_is(digits) -> None:
    _, meta = digits
    assert meta.labels == [str(d) for d in range(10)] + ["_silence_", "_noise_", "_unknown_"]
    assert (meta.sample_rate, meta.window, meta.hop) == (8000, 8000, 800)
    assert meta.normalization["kind"] == "rms" and meta.normalization["floor"] > 0
    assert meta.input["kind"] in ("raw", "logmel")
    assert "Free Spoken Digit Dataset" in meta.description and "CC BY-SA 4.0" in meta.description
    assert meta.accuracy["test_split_pct"] >= 97.0
    assert "takes 0-4" in meta.accuracy["test_split"]


def test_labels_real_test_split_recordings_in_a_window_of_silence(digits) -> None:
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD} (set DRSN_DATA to the shared data folder)")
    from drsn_stream.speech.dataset import read_wav

    model, meta = digits
    speakers = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    windows, truth = [], []
    for d in range(10):
        for k in range(3):  # three speakers and takes per digit, all from the test split (takes 0-4)
            x, rate = read_wav(FSDD / f"{d}_{speakers[(d + k) % 6]}_{(d + 2 * k) % 5}.wav")
            assert rate == 8000
            w = np.zeros(meta.window, np.float32)
            off = (meta.window - len(x)) // 2
            w[off : off + len(x)] = x
            windows.append(w)
            truth.append(str(d))
    probs = _probs(model, np.stack(windows), meta.normalization)
    got = [meta.labels[i] for i in probs.argmax(1)]
    correct = sum(g == t for g, t in zip(got, truth, strict=True))
    assert correct >= 29, list(zip(truth, got, strict=True))


def test_background_is_not_called_a_digit(digits) -> None:
    model, meta = digits
    rng = np.random.default_rng(0)
    quiet = rng.standard_normal((8, meta.window)).astype(np.float32) * 1e-4
    silent = np.zeros((2, meta.window), np.float32)
    probs = _probs(model, np.concatenate([quiet, silent]), meta.normalization)
    assert all(meta.labels[i].startswith("_") for i in probs.argmax(1))


def _live_pass(spec: str) -> tuple[list[tuple[float, float, str]], list]:
    """Replays the simulator through StreamDSP + the model + the detector, like the monitor.

    The windows are scored in one batch after the replay (the model is stateless per window),
    then fed to the detector in stream order.
    """
    model, meta = load_artifact("digits-fsdd")
    with make_source(spec) as src:
        dsp = StreamDSP(meta)
        windows = [w for frame in src for w in dsp.push(frame)]
        words = src.words()
    probs = _probs(model, np.stack([w.data for w in windows]), {"kind": "none"})
    det = WordDetector(meta.labels)
    events = []
    for w, p in zip(windows, probs, strict=True):
        events += det.update(w.stream_id, w.t_last, p)
    return words, events


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["sim:speech?fast=1&words=10&seed=1", "sim:speech?fast=1&words=10&seed=2&noise=none&chunk=333&rate=16000"])
def test_live_pass_over_spoken_digits_gives_the_sequence_back(spec: str) -> None:
    words, events = _live_pass(spec)
    assert len(words) == 10
    # A detection belongs to a word if it comes while some window holds part of that word: after
    # the word starts and before its end has left the 1 s window. Pauses last >= 1.2 s, so
    # anything else fired during a pause.
    matched: list[str] = []
    for ev in events:
        owner = [lab for (s, e, lab) in words if s <= ev.time <= e + 1.0]
        assert owner, f"detection {ev.data} at {ev.time:.2f} s fell into a pause"
        matched.append(ev.data["label"])
    said = [lab for _, _, lab in words]
    hits = sum(1 for a, b in zip(said, matched, strict=False) if a == b)
    assert len(events) <= 10 and hits >= 9, (said, matched)


def test_speech_simulator_is_seeded_and_knows_what_was_said() -> None:
    def run(seed: int, chunk: int) -> tuple[np.ndarray, list, object]:
        with make_source(f"sim:speech?fast=1&words=4&seed={seed}&chunk={chunk}") as src:
            frames: list[Frame] = list(src)
            return np.concatenate([f.samples[:, 0] for f in frames]), src.words(), src

    a, words_a, src = run(5, 400)
    b, words_b, _ = run(5, 123)
    c, _, _ = run(6, 400)
    assert np.array_equal(a, b)  # chunking does not change the signal
    assert not np.array_equal(a[: min(len(a), len(c))], c[: min(len(a), len(c))])
    assert [w[2] for w in words_a] == [w[2] for w in words_b]
    assert src.streams == ["sim/speech"]
    s, e, lab = words_a[1]
    assert src.truth("sim/speech", (s + e) / 2) == lab
    assert src.truth("sim/speech", s - 0.3) == "_silence_"
    assert len(a) / 8000 == pytest.approx(words_a[-1][1] - src.t0, abs=2.0)  # ends one pause after the last word
    # Words are louder than the background between them (default: 20 dB).
    t0 = src.t0
    inside = np.concatenate([a[int((s - t0) * 8000) : int((e - t0) * 8000)] for s, e, _ in words_a])
    pause = a[: int((words_a[0][0] - t0) * 8000)]
    assert np.sqrt(np.mean(inside**2)) > 5 * np.sqrt(np.mean(pause**2)) > 0


def test_speech_simulator_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="valid"):
        make_source("sim:speech?colour=blue")
    with pytest.raises(ConfigError, match="noise"):
        make_source("sim:speech?noise=loud")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_synthetic_voice_is_trimmed_and_resampled_to_8khz(tmp_path: Path) -> None:
    from drsn_stream.speech import tts

    voice = tts.Voice("espeak-ng", "en-us+f3", 85, 150.0)
    utts = tts.generate(tmp_path, ("seven",), ("7",), [voice])
    assert [u.label for u in utts] == ["7"] and utts[0].speaker == voice.id
    # "seven" at 150 words/min lasts about half a second once the silence is trimmed.
    assert 0.25 < len(utts[0].audio) / 8000 < 0.9
    again = tts.generate(tmp_path, ("seven",), ("7",), [voice])  # from the cache, same samples
    assert np.allclose(again[0].audio, utts[0].audio, atol=1e-4)
    assert LABELS.index("7") == 7


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_a_voice_cache_cut_short_is_made_again(tmp_path: Path) -> None:
    # a run killed (or a disk full) while the cache was written left half a zip, and every later
    # training run stopped in a BadZipFile traceback until someone found the file and deleted it
    from drsn_stream.speech import tts

    voice = tts.Voice("espeak-ng", "en-us+f3", 85, 150.0)
    utts = tts.generate(tmp_path, ("seven",), ("7",), [voice])
    (store,) = tmp_path.glob("tts-*.npz")
    whole = store.read_bytes()
    store.write_bytes(whole[: len(whole) // 2])
    again = tts.generate(tmp_path, ("seven",), ("7",), [voice])
    assert np.allclose(again[0].audio, utts[0].audio, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.name]
    with np.load(store) as z:  # whole again
        assert z["lens"].tolist() == [len(utts[0].audio)]


def test_a_stereo_16_bit_wav_is_read_at_full_scale_as_the_mean_of_its_channels(tmp_path: Path) -> None:
    # The channels were averaged before the integer samples were scaled: the mean of int16 is
    # float64, which then passed unscaled (0.125 of full scale read as 4,096).
    from scipy.io import wavfile

    from drsn_stream.speech.dataset import read_wav

    stereo = np.zeros((800, 2), np.int16)
    stereo[:, 0], stereo[:, 1] = 16384, -8192  # half and minus a quarter of full scale
    wavfile.write(tmp_path / "stereo.wav", 8000, stereo)
    x, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 8000 and x.shape == (800,) and x.dtype == np.float32
    assert np.allclose(x, 0.125)


def test_a_damaged_wav_in_a_speech_data_set_is_one_clear_error(tmp_path: Path) -> None:
    """A recording whose header is cut short, says 0 channels or says 0 Hz is a DataError that
    names the file, not a ZeroDivisionError or struct.error from inside scipy."""
    from helpers import damaged_wavs

    from drsn_stream.errors import DataError
    from drsn_stream.speech.dataset import read_wav

    wavs = damaged_wavs(tmp_path, 8000, 800)
    assert read_wav(wavs.pop("good"))[1] == 8000
    for name, path in wavs.items():
        with pytest.raises(DataError, match=f"{name}.wav"):
            read_wav(path)


@pytest.mark.slow
def test_words_between_digital_silence_are_heard_and_a_muted_microphone_is_a_flat_line(tmp_path: Path,
                                                                                      cli_in_process) -> None:
    # an edited recording or a noise-gated microphone holds exact zeros between words: the 0.1-s
    # flat-line test called each pause a dead sensor, held the stream in CHECK_SENSOR for 2 s after
    # it, and not one word came. A microphone muted for seconds is still a flat line.
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD} (set DRSN_DATA to the shared data folder)")
    from scipy.io import wavfile

    from drsn_stream.speech.dataset import read_wav

    said = ["7", "3", "8", "0", "5", "2"]
    pause = np.zeros(4800, np.float32)  # 0.6 s
    parts = [pause]
    for i, d in enumerate(said):
        parts += [read_wav(FSDD / f"{d}_{['george', 'jackson', 'lucas'][i % 3]}_{i % 5}.wav")[0], pause]
        if i == 2:
            parts.append(np.zeros(8000 * 4, np.float32))  # muted for 4 s
    parts.append(np.zeros(8000, np.float32))
    wavfile.write(tmp_path / "gated.wav", 8000, (np.concatenate(parts) * 32767).astype(np.int16))
    res = cli_in_process("--source", f"file:{tmp_path / 'gated.wav'}", "--model", "digits-fsdd", "--fast",
                         "--jsonl", "-")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    heard = [o["label"] for o in objs if o["type"] == "detection"]
    flat = [o for o in objs if o["type"] == "health" and o["to"] == "CHECK_SENSOR"]
    assert [o["reasons"] for o in flat] == [["flat line"]], flat  # the muted stretch, not the pauses
    assert heard[:3] == said[:3] and len(heard) >= 4 and set(heard) <= set(said), heard


@pytest.mark.slow
def test_words_in_an_mp3_or_opus_file_are_heard_as_in_its_wav(tmp_path: Path, cli_in_process) -> None:
    # phones and web corpora hand out MP3, Ogg Opus and FLAC, which were "not a recording this
    # reads": the same words, through a lossy codec, give the same detections as the WAV
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD} (set DRSN_DATA to the shared data folder)")
    import soundfile

    from drsn_stream.speech.dataset import read_wav

    said = ["4", "9", "1", "6"]
    pause = np.zeros(6400, np.float32)  # 0.8 s
    parts = [pause]
    for i, d in enumerate(said):
        parts += [read_wav(FSDD / f"{d}_{['yweweler', 'nicolas', 'theo', 'lucas'][i]}_{i}.wav")[0], pause]
    x = np.concatenate(parts)
    heard = {}
    for name, fmt, subtype in [("take.wav", "WAV", "PCM_16"), ("take.mp3", "MP3", "MPEG_LAYER_III"),
                               ("take.opus", "OGG", "OPUS")]:
        soundfile.write(tmp_path / name, x, 8000, format=fmt, subtype=subtype)
        res = cli_in_process("--source", f"file:{tmp_path / name}", "--model", "digits-fsdd", "--fast", "--jsonl", "-")
        assert res.returncode == 0, res.stderr
        objs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        heard[name] = [o["label"] for o in objs if o["type"] == "detection"]
    assert heard["take.wav"] == said, heard
    assert heard["take.mp3"] == heard["take.opus"] == said, heard
