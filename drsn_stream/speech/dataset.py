"""Readers for the Free Spoken Digit Dataset and the Speech Commands background noise.

Every loader takes the data folder as an argument; ``default_data_dir()`` finds ``../shared/data``
next to a source checkout, or the folder named by the environment variable ``DRSN_DATA``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream import wav
from drsn_stream.dsp.resample import UnsupportedRate, rational_ratio
from drsn_stream.errors import DataError

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TEST_TAKES = range(0, 5)  # FSDD's own split: takes 0-4 test, 5-49 train
REAL_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")
SYNTHETIC_NOISES = ("pink_noise", "white_noise")
# Each noise file is cut in time: the first 80 % feeds training, the last 20 % evaluation, so SNR
# figures are measured with noise the model never heard.
NOISE_TRAIN_SHARE = 0.8
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
# A float WAV holds full scale at 1.0; samples a thousand times beyond it (+60 dB) are no recording
# but a broken file, and their squares overflow float32 inside the augmentation (NaN windows).
MAX_PEAK = 1000.0
_NAMES_SHOWN = 5  # bad file names listed in the one line that says they were left out


@dataclass(frozen=True)
class Utterance:
    """One recorded word.

    Attributes:
        label: "0".."9" for digits, the word itself for other words.
        speaker: FSDD speaker name, or the TTS voice id.
        take: FSDD take number (-1 for TTS).
        audio: float32 (n,) at 8 kHz, full scale 1.0.
    """

    label: str
    speaker: str
    take: int
    audio: np.ndarray


def default_data_dir() -> Path:
    """``$DRSN_DATA`` if set, else ``shared/data`` beside the checkout that holds this package."""
    env = os.environ.get("DRSN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def read_wav(path: Path, *, empty_ok: bool = False) -> tuple[np.ndarray, int]:
    """A mono WAV file -> (float32 (n,) with full scale 1.0, sample rate Hz).

    Raises DataError naming the file when it cannot be read, says a rate of 0, holds no samples
    (unless ``empty_ok``: then ``(0,)`` samples), NaN or infinite ones, or float samples beyond
    ``MAX_PEAK`` (NaN would train a NaN model).
    """
    try:
        x, rate = wav.read_wav(path)
    except wav.WavError as exc:
        raise DataError(f"{path}: cannot read this WAV file ({exc}); re-copy the data set") from None
    if not rate > 0:
        raise DataError(f"{path}: the WAV file says its sample rate is {rate:g} Hz; re-copy the data set")
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        if empty_ok:
            return x.astype(np.float32), int(rate)
        raise DataError(f"{path}: the WAV file holds no samples; re-copy or remove it")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: the WAV file holds NaN or infinite samples; re-copy or remove it")
    peak = float(np.max(np.abs(x)))
    if peak > MAX_PEAK:
        raise DataError(f"{path}: samples up to {peak:.3g}, where full scale is 1.0; "
                        "re-copy the file or scale it to full scale 1.0")
    return x, int(rate)


def to_rate(x: np.ndarray, rate: int, target: int, *, where: str | Path = "") -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate`` to ``target`` Hz; float32.

    Raises DataError (naming ``where``, the file) for a rate that is no small ratio of
    ``target`` (``dsp.resample.rational_ratio``: up, down <= 1000), as the user-data path does:
    a rate of 1 Hz or 7,919 Hz would otherwise build an enormous filter or stretch the word.
    """
    if rate == target:
        return x.astype(np.float32, copy=False)
    try:
        up, down = rational_ratio(rate, target)
    except UnsupportedRate as exc:
        raise DataError(f"{where or 'audio'}: {exc}") from None
    if up == down:  # within 0.1 % of the target rate: taken as it
        return x.astype(np.float32, copy=False)
    return resample_poly(x, up, down).astype(np.float32)


def load_fsdd(root: str | Path, *, sample_rate: int = 8000,
              log: Callable[[str], None] | None = print) -> list[Utterance]:
    """All FSDD recordings under ``root`` (the ``fsdd`` folder or its parent), sorted by name.

    Files whose names are not ``DIGIT_SPEAKER_INDEX.wav`` are left out, and ``log`` says so in
    one line. Raises DataError naming the folder when it holds no recordings, and naming the file
    for one that cannot be used (unreadable, empty, NaN, all zeros, an odd sample rate).
    """
    root = Path(root)
    rec = root / "recordings"
    if not rec.is_dir():
        rec = root / "fsdd" / "recordings"
    # any case of .wav: a 3_george_5.WAV is said to be left out, not passed over in silence
    files = sorted(f for f in rec.iterdir() if f.suffix.lower() == ".wav") if rec.is_dir() else []
    if not files:
        raise DataError(
            f"no FSDD recordings under {root}; point to the folder holding fsdd/recordings "
            "(argument, or the DRSN_DATA environment variable)"
        )
    out = []
    bad: list[str] = []
    for f in files:
        m = _NAME.match(f.name)
        if not m:
            bad.append(f.name)
            continue
        x, rate = read_wav(f)
        if not np.any(x):
            raise DataError(f"{f}: the recording holds only zeros (digital silence), not a spoken digit; "
                            "re-copy or remove it")
        out.append(Utterance(m.group(1), m.group(2), int(m.group(3)), to_rate(x, rate, sample_rate, where=f)))
    if bad:
        shown = ", ".join(bad[:_NAMES_SHOWN]) + (f", ... ({len(bad) - _NAMES_SHOWN} more)" if len(bad) > _NAMES_SHOWN else "")
        if log is not None:
            log(f"left out {len(bad)} file(s) in {rec} whose names are not DIGIT_SPEAKER_INDEX.wav: {shown}")
        if not out:
            raise DataError(f"no FSDD recordings under {rec}: none of its {len(bad)} file(s) is named "
                            f"DIGIT_SPEAKER_INDEX.wav (e.g. 3_george_5.wav): {shown}")
    return out


def split_fsdd(utts: list[Utterance], *, require: str | Path | None = None) -> tuple[list[Utterance], list[Utterance]]:
    """FSDD's own split: (train = takes 5-49, test = takes 0-4).

    With ``require`` (the folder read, for the message), an empty part is a DataError saying
    which part is empty: training on it would stop only after training, when the test is stacked.
    """
    test = [u for u in utts if u.take in TEST_TAKES]
    train = [u for u in utts if u.take not in TEST_TAKES]
    if require is not None:
        for part, takes, have in (("training", "5-49", train), ("test", "0-4", test)):
            if not have:
                raise DataError(f"no FSDD recording for the {part} part (takes {takes}) among the {len(utts)} "
                                f"recording(s) under {require}; FSDD's split needs both takes 0-4 and 5-49")
    return train, test


def loso_folds(utts: list[Utterance], speakers: Iterable[str] | None = None
               ) -> list[tuple[str, list[Utterance], list[Utterance]]]:
    """Leave-one-speaker-out: ``[(speaker, train = the others' recordings, test = theirs)]``.

    ``speakers``: the held-out speakers (default: every FSDD speaker present). Raises DataError
    before any training when a fold would have nothing to train on or to test.
    """
    present = sorted({u.speaker for u in utts})
    wanted = list(speakers) if speakers is not None else [s for s in FSDD_SPEAKERS if s in present] or present
    if not wanted:
        raise DataError("leave-one-speaker-out: no speaker to hold out; name one with --speakers")
    folds = []
    for spk in wanted:
        test = [u for u in utts if u.speaker == spk]
        train = [u for u in utts if u.speaker != spk]
        if not test:
            raise DataError(f"leave-one-speaker-out: no FSDD recording of speaker {spk!r} to test on; "
                            f"speakers in the data: {', '.join(present) or 'none'}")
        if not train:
            raise DataError(f"leave-one-speaker-out: holding out {spk!r} leaves no FSDD recording of another "
                            "speaker to train on; the data holds only that speaker")
        folds.append((spk, train, test))
    return folds


def load_noise(
    root: str | Path, *, sample_rate: int = 8000, part: str = "train", names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Background noise files resampled to ``sample_rate``: ``{name: float32 (n,)}``.

    Args:
        root: the ``noise`` folder or its parent.
        part: "train" (first 80 % of each file), "test" (last 20 %) or "all".
        names: which files (default: the four real recordings and the two synthetic ones).
    """
    root = Path(root)
    # the parent holds a noise/ folder; the noise folder itself holds the files (any of them may
    # be the missing one, so none of them decides which folder was meant)
    folder = root / "noise" if (root / "noise").is_dir() else root
    names = names or (REAL_NOISES + SYNTHETIC_NOISES)
    out = {}
    for name in names:
        path = folder / f"{name}.wav"
        if not path.is_file():
            raise DataError(f"background noise {path} is missing; point to the folder holding noise/*.wav")
        x, rate = read_wav(path)
        if not np.any(x):
            raise DataError(f"{path}: the background noise holds only zeros (digital silence); re-copy it")
        x = to_rate(x, rate, sample_rate, where=path)
        cut = int(len(x) * NOISE_TRAIN_SHARE)
        if part == "train":
            x = x[:cut]
        elif part == "test":
            x = x[cut:]
        elif part != "all":
            raise DataError(f"noise part must be 'train', 'test' or 'all', not {part!r}")
        if x.size == 0:
            raise DataError(f"{path}: too short to give a {part} part ({NOISE_TRAIN_SHARE:.0%} / "
                            f"{1 - NOISE_TRAIN_SHARE:.0%} of it); re-copy it")
        out[name] = np.ascontiguousarray(x, dtype=np.float32)
    return out
