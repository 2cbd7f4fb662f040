"""Readers for the Free Spoken Digit Dataset and the Speech Commands background noise.

Every loader takes the data folder as an argument; ``default_data_dir()`` finds ``../shared/data``
next to a source checkout, or the folder named by the environment variable ``DRSN_DATA``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream import wav
from drsn_stream.errors import DataError

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TEST_TAKES = range(0, 5)  # FSDD's own split: takes 0-4 test, 5-49 train
REAL_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")
SYNTHETIC_NOISES = ("pink_noise", "white_noise")
# Each noise file is cut in time: the first 80 % feeds training, the last 20 % evaluation, so SNR
# figures are measured with noise the model never heard.
NOISE_TRAIN_SHARE = 0.8
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


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


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A mono WAV file -> (float32 (n,) with full scale 1.0, sample rate Hz)."""
    try:
        x, rate = wav.read_wav(path)
    except wav.WavError as exc:
        raise DataError(f"{path}: cannot read this WAV file ({exc}); re-copy the data set") from None
    if not rate > 0:
        raise DataError(f"{path}: the WAV file says its sample rate is {rate:g} Hz; re-copy the data set")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x, int(rate)


def to_rate(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate`` to ``target`` Hz; float32."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    g = np.gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def load_fsdd(root: str | Path, *, sample_rate: int = 8000) -> list[Utterance]:
    """All FSDD recordings under ``root`` (the ``fsdd`` folder or its parent), sorted by name.

    Raises DataError naming the folder when it holds no recordings.
    """
    root = Path(root)
    rec = root / "recordings"
    if not rec.is_dir():
        rec = root / "fsdd" / "recordings"
    files = sorted(rec.glob("*.wav")) if rec.is_dir() else []
    if not files:
        raise DataError(
            f"no FSDD recordings under {root}; point to the folder holding fsdd/recordings "
            "(argument, or the DRSN_DATA environment variable)"
        )
    out = []
    for f in files:
        m = _NAME.match(f.name)
        if not m:
            continue
        x, rate = read_wav(f)
        out.append(Utterance(m.group(1), m.group(2), int(m.group(3)), to_rate(x, rate, sample_rate)))
    return out


def split_fsdd(utts: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """FSDD's own split: (train = takes 5-49, test = takes 0-4)."""
    test = [u for u in utts if u.take in TEST_TAKES]
    train = [u for u in utts if u.take not in TEST_TAKES]
    return train, test


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
    folder = root if (root / "white_noise.wav").is_file() else root / "noise"
    names = names or (REAL_NOISES + SYNTHETIC_NOISES)
    out = {}
    for name in names:
        path = folder / f"{name}.wav"
        if not path.is_file():
            raise DataError(f"background noise {path} is missing; point to the folder holding noise/*.wav")
        x, rate = read_wav(path)
        x = to_rate(x, rate, sample_rate)
        cut = int(len(x) * NOISE_TRAIN_SHARE)
        if part == "train":
            x = x[:cut]
        elif part == "test":
            x = x[cut:]
        elif part != "all":
            raise DataError(f"noise part must be 'train', 'test' or 'all', not {part!r}")
        out[name] = np.ascontiguousarray(x, dtype=np.float32)
    return out
