"""Additive noise at a chosen signal-to-noise ratio (training augmentation, simulator, tests)."""

from __future__ import annotations

import numpy as np

from drsn_stream.errors import ConfigError

NOISE_KINDS = ("gaussian", "laplacian", "pink")


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def make_noise(
    shape: int | tuple[int, ...], kind: str, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Zero-mean noise of unit average power along the last axis, float64.

    Args:
        shape: ``n`` or ``(..., n)`` samples.
        kind: ``gaussian`` (white), ``laplacian`` (white, heavy-tailed: impulsive machine noise) or
            ``pink`` (power spectral density ~ 1/f, i.e. -10 dB per decade, shaped from white
            Gaussian noise in the frequency domain).
        rng: a ``numpy.random.Generator`` or a seed.
    """
    gen = _rng(rng)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = shape[-1]
    if kind == "gaussian":
        noise = gen.standard_normal(shape)
    elif kind == "laplacian":
        noise = gen.laplace(0.0, 1.0, shape)
    elif kind == "pink":
        spec = np.fft.rfft(gen.standard_normal(shape), axis=-1)
        f = np.arange(spec.shape[-1], dtype=np.float64)
        gain = np.zeros_like(f)
        gain[1:] = 1.0 / np.sqrt(f[1:])  # amplitude ~ f^-1/2 gives power ~ 1/f; no DC
        noise = np.fft.irfft(spec * gain, n=n, axis=-1)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    noise = noise - noise.mean(axis=-1, keepdims=True)
    power = np.mean(noise * noise, axis=-1, keepdims=True)
    return noise / np.sqrt(np.maximum(power, 1e-30))


def add_noise(
    x: np.ndarray,
    snr_db: float,
    kind: str = "gaussian",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Return ``x`` plus noise whose power is ``snr_db`` dB below the clean signal's power.

    Args:
        x: ``(n,)`` or ``(batch, n)`` clean signal; each row gets its own noise scaled to its own
            power ``mean(x**2)``, so the measured SNR of every row is exactly ``snr_db``
            (up to rounding) for any length.
        snr_db: signal-to-noise ratio in dB; ``inf`` returns a copy of ``x``.
        kind: ``gaussian``, ``laplacian`` or ``pink`` (see ``make_noise``).
        rng: a ``numpy.random.Generator`` or a seed (reproducible augmentation).

    Returns:
        noisy signal with the shape and floating dtype of ``x`` (float32 for integer input).
    """
    a = np.asarray(x)
    out_dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32
    if np.isposinf(snr_db):
        return a.astype(out_dtype, copy=True)
    if not np.isfinite(snr_db):
        raise ConfigError(f"snr_db must be a number of dB (or inf), got {snr_db}")
    a64 = a.astype(np.float64, copy=False)
    p_signal = np.mean(a64 * a64, axis=-1, keepdims=True)
    noise = make_noise(a.shape, kind, rng)
    scaled = noise * np.sqrt(p_signal / 10.0 ** (snr_db / 10.0))
    return (a64 + scaled).astype(out_dtype)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Measured SNR in dB of ``noisy`` against ``clean`` (whole arrays)."""
    c = np.asarray(clean, dtype=np.float64)
    d = np.asarray(noisy, dtype=np.float64) - c
    return float(10.0 * np.log10(np.mean(c * c) / np.mean(d * d)))
