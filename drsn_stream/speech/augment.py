"""Training windows for the spoken-digit model: a word placed in 1 s of (noisy) background.

How a window is labelled (the decision the live stream depends on):
- a digit counts only when the whole word lies inside the window (random placement, so the
  model does not learn a position);
- a crop of 15-45 % of a digit (its start or its end) is ``_unknown_``, as are non-digit words;
  windows that hold 45-100 % of a digit are never trained on, so the model is free to rise
  towards the digit as the word enters the window, and the detector picks the peak;
- ``_silence_``: background below the normalization floor; ``_noise_``: background above it.

Every augmentation draws from a ``numpy.random.Generator``, so an epoch is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, resample_poly

from drsn_stream.config import out_of_range
from drsn_stream.dsp.noise import make_noise
from drsn_stream.errors import ConfigError
from drsn_stream.speech import LABELS, RMS_FLOOR, SAMPLE_RATE, WINDOW
from drsn_stream.speech.dataset import REAL_NOISES, Utterance

SILENCE = LABELS.index("_silence_")
NOISE = LABELS.index("_noise_")
UNKNOWN = LABELS.index("_unknown_")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random perturbations (all drawn uniformly unless said otherwise).

    Attributes:
        speed: resampling factor range: speed and pitch change together (Kaldi-style).
        reverb_p / rt60_s: probability and reverberation time range of a synthetic room.
        noise_p: probability of real or synthetic background noise at ``snr_db``.
        snr_db: SNR range in dB (word power over the word's own samples vs noise power).
        level: overall window RMS range (log-uniform), full scale 1.0.
        crop: share of a digit kept by an `_unknown_` crop.
    """

    speed: tuple[float, float] = (0.85, 1.15)
    reverb_p: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.7)
    noise_p: float = 0.7
    snr_db: tuple[float, float] = (0.0, 30.0)
    level: tuple[float, float] = (0.003, 0.3)
    crop: tuple[float, float] = (0.15, 0.45)

    def __post_init__(self) -> None:
        # reversed, NaN or non-positive ranges trained on NaN windows or stopped inside scipy;
        # each bound is what the perturbation can take (speed: resample_poly(x, 20, 20 * speed))
        problems = [
            *_span("speed", self.speed, 0.5, 2.0),
            out_of_range("reverb_p", self.reverb_p, 0.0, 1.0),
            *_span("rt60_s", self.rt60_s, 0.01, 5.0),
            out_of_range("noise_p", self.noise_p, 0.0, 1.0),
            *_span("snr_db", self.snr_db, -30.0, 100.0),
            *_span("level", self.level, 1e-5, 1.0),
            *_span("crop", self.crop, 0.0, 1.0),
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("[augment] " + "; ".join(problems))


def _span(name: str, pair: Sequence[float], least: float, most: float) -> list[str | None]:
    """Problems of a ``[low, high]`` range whose ends lie from ``least`` to ``most``."""
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        return [f"{name} must be a list of 2 numbers [low, high], not {pair!r}"]
    problems = [out_of_range(f"{name}[{i}]", v, least, most) for i, v in enumerate(pair)]
    if not any(problems) and pair[0] > pair[1]:
        problems.append(f"{name} must be [low, high] with low <= high, not {list(pair)}")
    return problems


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Plays ``x`` ``factor`` times faster (shorter and higher), by polyphase resampling."""
    down = int(round(20 * factor))
    if down == 20:
        return x
    return resample_poly(x, 20, down).astype(np.float32)


def reverb(x: np.ndarray, rt60_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Convolves with a synthetic room: a direct path plus exponentially decaying noise.

    The decay reaches -60 dB after ``rt60_s`` seconds; the output keeps the tail (longer than x)
    and the input's RMS.
    """
    n = max(2, int(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    ir[0] = 1.0
    y = fftconvolve(x, ir)
    return (y * np.sqrt(np.mean(x * x) / max(np.mean(y * y), 1e-20))).astype(np.float32)


def noise_segment(noises: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of background at unit RMS: a random stretch of a recording (mostly real ones),
    or generated white/pink/laplacian noise."""
    real = [k for k in noises if k in REAL_NOISES] or list(noises)
    u = rng.random()
    if u < 0.15 or not noises:
        return make_noise(n, ("gaussian", "pink", "laplacian")[int(rng.integers(3))], rng).astype(np.float32)
    names = real if u < 0.85 else list(noises)
    src = noises[names[int(rng.integers(len(names)))]]
    start = int(rng.integers(0, max(1, len(src) - n)))
    seg = src[start : start + n].astype(np.float64)
    if len(seg) < n:
        seg = np.resize(seg, n)
    rms = np.sqrt(np.mean(seg * seg))
    return (seg / max(rms, 1e-8)).astype(np.float32)


class WindowMaker:
    """Builds labelled 1 s training windows (float32 (WINDOW,), not yet normalized)."""

    def __init__(self, noises: dict[str, np.ndarray], cfg: AugmentConfig | None = None, *, window: int = WINDOW) -> None:
        """Args:
        noises: background recordings at 8 kHz (``dataset.load_noise``), ``{name: (n,)}``.
        cfg: augmentation ranges.
        window: samples per window.
        """
        self.noises = noises
        self.cfg = cfg or AugmentConfig()
        self.window = window

    def _prepare(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        x = speed_perturb(audio, float(rng.uniform(*c.speed)))
        if rng.random() < c.reverb_p:
            x = reverb(x, float(rng.uniform(*c.rt60_s)), rng)
        if len(x) > self.window:
            # Long recordings (> 1 s) are mostly trailing breath; keep the middle.
            start = (len(x) - self.window) // 2
            x = x[start : start + self.window]
        return x

    def _place(self, word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        out = np.zeros(self.window, np.float64)
        off = int(rng.integers(0, self.window - len(word) + 1))
        out[off : off + len(word)] = word
        p_word = float(np.mean(word.astype(np.float64) ** 2))
        if rng.random() < c.noise_p:
            snr = float(rng.uniform(*c.snr_db))
        else:
            snr = float(rng.uniform(40.0, 60.0))  # a quiet room: never digital zeros
        out += noise_segment(self.noises, self.window, rng) * np.sqrt(p_word / 10.0 ** (snr / 10.0))
        return self._level(out, _log_uniform(rng, *c.level))

    @staticmethod
    def _level(x: np.ndarray, rms: float) -> np.ndarray:
        cur = np.sqrt(np.mean(x * x))
        return (x * (rms / max(cur, 1e-12))).astype(np.float32)

    def word(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A whole word (digit or other) at a random place in the window, perturbed and mixed."""
        return self._place(self._prepare(audio, rng), rng)

    def crop(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The start or the end of a word (15-45 % of it): an `_unknown_` window."""
        x = self._prepare(audio, rng)
        keep = max(8, int(len(x) * rng.uniform(*self.cfg.crop)))
        x = x[:keep] if rng.random() < 0.5 else x[-keep:]
        return self._place(x, rng)

    def silence(self, rng: np.random.Generator) -> np.ndarray:
        """Background whose RMS stays below the normalization floor (a quiet room or a muted mic)."""
        return self._level(noise_segment(self.noises, self.window, rng).astype(np.float64), _log_uniform(rng, 1e-5, 0.7 * RMS_FLOOR))

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        """Background above the floor, sometimes in a reverberant room."""
        x = noise_segment(self.noises, self.window, rng)
        if rng.random() < 0.2:
            x = reverb(x, float(rng.uniform(*self.cfg.rt60_s)), rng)[: self.window]
        return self._level(x.astype(np.float64), _log_uniform(rng, 1.5 * RMS_FLOOR, 0.3))


@dataclass(frozen=True)
class EpochPlan:
    """How many windows of each kind one epoch holds (digits: every clip once)."""

    unknown: int = 700
    crop_share: float = 0.4
    silence: int = 350
    noise: int = 450


def make_epoch(
    maker: WindowMaker,
    digits: list[Utterance],
    others: list[Utterance],
    rng: np.random.Generator,
    plan: EpochPlan | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of freshly augmented windows, shuffled.

    Args:
        digits: digit utterances (label "0".."9"), each used once.
        others: non-digit words (label ignored; all become `_unknown_`).
    Returns: (windows float32 (N, WINDOW) not yet normalized, labels int64 (N,) indexing LABELS).
    """
    plan = plan or EpochPlan()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for u in digits:
        xs.append(maker.word(u.audio, rng))
        ys.append(LABELS.index(u.label))
    n_crop = int(round(plan.unknown * plan.crop_share))
    for _ in range(n_crop):
        xs.append(maker.crop(digits[int(rng.integers(len(digits)))].audio, rng))
        ys.append(UNKNOWN)
    pool = others or digits
    for _ in range(plan.unknown - n_crop):
        u = pool[int(rng.integers(len(pool)))]
        xs.append(maker.word(u.audio, rng) if others else maker.crop(u.audio, rng))
        ys.append(UNKNOWN)
    for _ in range(plan.silence):
        xs.append(maker.silence(rng))
        ys.append(SILENCE)
    for _ in range(plan.noise):
        xs.append(maker.noise(rng))
        ys.append(NOISE)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.asarray(ys, np.int64)[order]
