"""Training-time augmentation: additive noise at a random type and SNR, per window.

The noise itself comes from ``drsn_stream.dsp.noise`` (the one implementation shared with the
simulator and the evaluation); this module only decides, per window, which kind and which SNR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drsn_stream.config import out_of_range, typed_values
from drsn_stream.dsp.noise import NOISE_KINDS, make_noise
from drsn_stream.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class NoiseAugment:
    """Adds noise to a batch of raw windows ``(batch, samples)``.

    Each window independently stays clean with probability ``clean_fraction``; otherwise it gets
    a kind drawn from ``kinds`` and an SNR in dB, either drawn from ``snr_set`` or uniform in
    ``snr_range``, relative to that window's own clean power ``mean(x**2)``. For the stationary
    vibration of a bearing, a 2048-sample window's power is within a few percent of the
    recording's, so this matches noise added to the raw recording at the same SNR.
    """

    kinds: tuple[str, ...] = NOISE_KINDS
    snr_range: tuple[float, float] | None = (-6.0, 10.0)
    snr_set: tuple[float, ...] | None = None
    clean_fraction: float = 0.2

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in NOISE_KINDS]
        if bad or not self.kinds:
            raise ConfigError(
                f"unknown noise kind(s) {bad or '(none given)'}; valid kinds: {', '.join(NOISE_KINDS)}"
            )
        if (self.snr_range is None) == (self.snr_set is None):
            raise ConfigError("give exactly one of snr_range = [lo, hi] or snr_set = [...] (dB)")
        if self.snr_range is not None and not self.snr_range[0] <= self.snr_range[1]:
            raise ConfigError(f"snr_range must be [low, high] in dB, got {list(self.snr_range)}")
        if not 0.0 <= self.clean_fraction <= 1.0:
            raise ConfigError(f"clean_fraction must be in [0, 1], got {self.clean_fraction}")
        # a NaN SNR scaled the noise to NaN: every augmented window NaN, the weights after it too
        snrs = [*(self.snr_range or ()), *(self.snr_set or ())]
        bad_snr = [p for p in (out_of_range("an SNR", v, -100, 100) for v in snrs) if p]
        if bad_snr:
            raise ConfigError(f"{bad_snr[0]} (dB)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseAugment:
        known = {"kinds", "snr_range", "snr_set", "clean_fraction"}
        extra = set(d) - known
        if extra:
            raise ConfigError(
                f"unknown key(s) in [augment]: {', '.join(sorted(extra))}{did_you_mean(sorted(extra), known)}; "
                f"known: {', '.join(sorted(known))}"
            )
        d = typed_values(cls, d, "[augment]")  # "x" for a number, 5 for a list: one line, not a traceback
        snr_range = tuple(float(v) for v in d["snr_range"]) if "snr_range" in d else None
        snr_set = tuple(float(v) for v in d["snr_set"]) if "snr_set" in d else None
        if snr_range is None and snr_set is None:
            snr_range = (-6.0, 10.0)
        if snr_range is not None and len(snr_range) != 2:
            raise ConfigError(f"snr_range must be [low, high] in dB, got {d['snr_range']}")
        return cls(
            kinds=tuple(d.get("kinds", NOISE_KINDS)),
            snr_range=snr_range,
            snr_set=snr_set,
            clean_fraction=float(d.get("clean_fraction", 0.2)),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kinds": list(self.kinds),
            "clean_fraction": self.clean_fraction,
            "reference": "window power",
        }
        if self.snr_range is not None:
            d["snr_range"] = list(self.snr_range)
        else:
            d["snr_set"] = list(self.snr_set or ())
        return d

    def draw_snr(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` SNRs in dB."""
        if self.snr_set is not None:
            return rng.choice(np.asarray(self.snr_set, dtype=np.float64), size=n)
        lo, hi = self.snr_range  # type: ignore[misc]
        return rng.uniform(lo, hi, size=n)

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy copy of ``x`` ``(batch, samples)``; ``y`` is unused (the noise ignores the class)."""
        x64 = np.asarray(x, dtype=np.float64)
        b = x64.shape[0]
        noisy = rng.random(b) >= self.clean_fraction
        kind_idx = rng.integers(0, len(self.kinds), size=b)
        snr = self.draw_snr(b, rng)
        power = np.mean(x64 * x64, axis=1)
        scale = np.sqrt(power / 10.0 ** (snr / 10.0))
        out = x64.copy()
        for k, kind in enumerate(self.kinds):
            rows = np.flatnonzero(noisy & (kind_idx == k))
            if rows.size:
                out[rows] += make_noise((rows.size, x64.shape[1]), kind, rng) * scale[rows, None]
        return out.astype(np.float32)


def parse_snr_list(text: str | Sequence[float]) -> list[float]:
    """``"-5:5"`` (integer steps, both ends included), ``"-5,0,5"`` or a list -> SNRs in dB."""
    if not isinstance(text, str):
        return [float(v) for v in text]
    s = text.strip()
    try:
        if ":" in s:
            lo, hi = (float(p) for p in s.split(":"))
            if lo > hi or lo != int(lo) or hi != int(hi):
                raise ValueError
            return [float(v) for v in range(int(lo), int(hi) + 1)]
        return [float(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(
            f"bad SNR list {text!r}: give a range of whole dB like -5:5 or a list like -5,0,5"
        ) from None
