"""Log-mel front end in plain torch ops (conv1d STFT), so it scripts, exports and runs on the GPU.

The STFT is a strided convolution with a Hann-windowed DFT basis; the mel filterbank is a fixed
matrix (HTK mel scale, triangular filters). Output: (batch, 1, n_mels, frames) log-mel in dB-like
units (natural log of power + eps).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    n_bins = n_fft // 2 + 1
    freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz = mel_to_hz(mels)
    fb = np.zeros((n_mels, n_bins), dtype=np.float64)
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb.astype(np.float32)


class LogMel(nn.Module):
    """(batch, samples) -> (batch, 1, n_mels, frames) log-mel power."""

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        fmin: float = 20.0,
        fmax: float | None = None,
    ) -> None:
        """
        Args:
            sample_rate: Hz of the input.
            n_fft: FFT size (also the Hann window length), samples.
            hop_length: samples between frames.
            n_mels: mel bands.
            fmin / fmax: band edges in Hz (fmax defaults to sample_rate / 2).
        """
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        fmax = float(sample_rate) / 2.0 if fmax is None else float(fmax)
        n_bins = n_fft // 2 + 1
        t = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2.0 * math.pi * t / n_fft)
        k = np.arange(n_bins)[:, None]
        angle = 2.0 * math.pi * k * t[None, :] / n_fft
        basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window], axis=0)
        self.register_buffer("basis", torch.from_numpy(basis.astype(np.float32)).unsqueeze(1))
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, 20.0 if fmin is None else fmin, fmax)))
        self.n_bins = n_bins

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.nn.functional.conv1d(x.unsqueeze(1), self.basis, stride=self.hop_length)
        re = spec[:, : self.n_bins]
        im = spec[:, self.n_bins :]
        power = re * re + im * im  # (batch, bins, frames)
        mel = torch.matmul(self.mel, power)  # (batch, n_mels, frames)
        return torch.log(mel + 1e-6).unsqueeze(1)
