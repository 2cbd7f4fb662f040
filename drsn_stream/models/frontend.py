"""Log-mel front end in plain torch ops (conv1d STFT), so it scripts, exports and runs on the GPU.

The STFT is a strided convolution with a Hann-windowed DFT basis; the mel filterbank is a fixed
matrix (HTK mel scale, triangular filters). Output: (batch, 1, n_mels, frames) log-mel in dB-like
units (natural log of power + eps).

Options (all off by default: a model without them computes the plain log-mel above):

- ``cmn``: per-utterance cepstral-style mean normalization of each mel band: every band's mean
  over the window's frames is subtracted and the mean over all bands and frames is added back,
  so microphone/speaker coloration (a fixed tilt per band) goes away but the overall level,
  which tells ``_silence_`` from ``_noise_``, stays. Applied in training and at run time.
- SpecAugment (training only, ``self.training``): ``freq_masks`` masks of up to
  ``freq_mask_width`` mel bands and ``time_masks`` masks of up to ``time_mask_width`` frames,
  filled with the utterance's mean log-mel value; ``warp`` > 0 stretches each utterance's
  linear-frequency power spectrum by a random factor in ``[1 - warp, 1 + warp]`` before the mel
  filters (VTLP-like). In eval mode none of this runs: the output is bit-identical.
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
        cmn: bool = False,
        freq_masks: int = 0,
        freq_mask_width: int = 0,
        time_masks: int = 0,
        time_mask_width: int = 0,
        warp: float = 0.0,
    ) -> None:
        """
        Args:
            sample_rate: Hz of the input.
            n_fft: FFT size (also the Hann window length), samples.
            hop_length: samples between frames.
            n_mels: mel bands.
            fmin / fmax: band edges in Hz (fmax defaults to sample_rate / 2).
            cmn: subtract each band's mean over frames, add back the overall mean (see above).
            freq_masks / freq_mask_width: SpecAugment band masks (training only).
            time_masks / time_mask_width: SpecAugment frame masks (training only).
            warp: maximum relative frequency stretch per utterance (training only, 0: off).
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
        self.n_mels = n_mels
        self.cmn = bool(cmn)
        self.freq_masks = int(freq_masks)
        self.freq_mask_width = int(freq_mask_width)
        self.time_masks = int(time_masks)
        self.time_mask_width = int(time_mask_width)
        self.warp = float(warp)
        if min(self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width) < 0:
            raise ValueError("SpecAugment mask counts and widths must be >= 0")
        if not 0.0 <= self.warp < 0.5:
            raise ValueError(f"warp must be in [0, 0.5), got {warp}")

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.nn.functional.conv1d(x.unsqueeze(1), self.basis, stride=self.hop_length)
        re = spec[:, : self.n_bins]
        im = spec[:, self.n_bins :]
        power = re * re + im * im  # (batch, bins, frames)
        if self.training and self.warp > 0.0:
            power = self._warp(power)
        mel = torch.matmul(self.mel, power)  # (batch, n_mels, frames)
        out = torch.log(mel + 1e-6)
        if self.cmn:
            out = out - out.mean(dim=2, keepdim=True) + out.mean(dim=(1, 2), keepdim=True)
        if self.training and (self.freq_masks > 0 or self.time_masks > 0):
            out = self._mask(out)
        return out.unsqueeze(1)

    def _warp(self, power: Tensor) -> Tensor:
        """Output bin k takes the power at bin k / alpha (linear interpolation, clamped to the
        band), alpha uniform in [1 - warp, 1 + warp] per utterance."""
        b = power.shape[0]
        alpha = 1.0 + (torch.rand(b, 1, device=power.device, dtype=power.dtype) * 2.0 - 1.0) * self.warp
        bins = torch.arange(self.n_bins, device=power.device, dtype=power.dtype)
        pos = (bins.unsqueeze(0) / alpha).clamp(0.0, float(self.n_bins - 1))
        lo = pos.floor()
        frac = (pos - lo).unsqueeze(2)
        lo_i = lo.long().unsqueeze(2).expand(-1, -1, power.shape[2])
        hi_i = (lo_i + 1).clamp(max=self.n_bins - 1)
        return torch.gather(power, 1, lo_i) * (1.0 - frac) + torch.gather(power, 1, hi_i) * frac

    def _mask(self, x: Tensor) -> Tensor:
        """SpecAugment on (batch, n_mels, frames): masked cells get the utterance's mean."""
        b, n_mels, n_frames = x.shape[0], x.shape[1], x.shape[2]
        keep = torch.ones_like(x, dtype=torch.bool)
        bands = torch.arange(n_mels, device=x.device).view(1, n_mels, 1)
        frames = torch.arange(n_frames, device=x.device).view(1, 1, n_frames)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_mask_width + 1, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (n_mels - width + 1).to(torch.float32)).long()
            keep = keep & ~((bands >= start) & (bands < start + width))
        for _ in range(self.time_masks):
            width = torch.randint(0, self.time_mask_width + 1, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (n_frames - width + 1).to(torch.float32)).long()
            keep = keep & ~((frames >= start) & (frames < start + width))
        fill = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
        return torch.where(keep, x, fill)
