"""DRSN, ResNet and ConvNet networks in 1-D (raw signals) and 2-D (log-mel spectrograms).

Hyperparameters are a dataclass, so a variant is data, not a subclass (see registry.py).
Every network takes normalized windows ``(batch, samples)`` and returns
``(logits (batch, classes), noise_index (batch,))``, where the noise index is the share of
activations the shrinkage units set to zero, averaged over units (0 without shrinkage).
``forward_features`` (exported to TorchScript) returns the same plus the pooled features
``(batch, channels)``, the input of the last linear layer: the monitor's "unknown" label and
baselines are statistics of them (models/ood.py, monitor/baseline.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from drsn_stream.models.frontend import LogMel
from drsn_stream.models.layers import RSBU, SHRINK_NONE


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one network.

    Attributes:
        num_classes: outputs.
        dims: 1 (raw samples) or 2 (log-mel spectrogram computed inside the model).
        stem_channels / stem_kernel / stem_stride: the first convolution.
        stages: (channels, units) per stage; the first unit of each stage halves the length.
        kernel_size: convolution width inside the units.
        shrink: "cw", "cs" or "none".
        shortcut: identity shortcuts (False: plain ConvNet).
        logmel: log-mel parameters (sample_rate, n_fft, hop_length, n_mels, fmin, fmax) for dims=2.
        dropout: before the classifier.
    """

    num_classes: int = 10
    dims: int = 1
    stem_channels: int = 4
    stem_kernel: int = 3
    stem_stride: int = 2
    stages: tuple[tuple[int, int], ...] = ((4, 4), (8, 4), (16, 4))
    kernel_size: int = 3
    shrink: str = "cw"
    shortcut: bool = True
    logmel: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        d = dict(d)
        d["stages"] = tuple(tuple(s) for s in d.get("stages", ()))
        return cls(**d)


class DRSN(nn.Module):
    """Conv stem -> stages of RSBUs -> BN -> ReLU -> global average pool -> FC (Table II)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg_dims = cfg.dims
        conv = nn.Conv1d if cfg.dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if cfg.dims == 1 else nn.BatchNorm2d
        self.use_logmel = cfg.dims == 2
        if self.use_logmel:
            lm = dict(cfg.logmel)
            self.frontend = LogMel(**lm)
            self.in_norm = nn.BatchNorm2d(1)
        else:
            self.frontend = nn.Identity()
            self.in_norm = nn.Identity()
        self.stem = conv(
            1, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride, padding=cfg.stem_kernel // 2
        )
        units = []
        channels = cfg.stem_channels
        for out_channels, n in cfg.stages:
            for i in range(n):
                units.append(
                    RSBU(
                        channels,
                        out_channels,
                        stride=2 if i == 0 else 1,
                        kernel_size=cfg.kernel_size,
                        dims=cfg.dims,
                        shrink=cfg.shrink,
                        shortcut=cfg.shortcut,
                    )
                )
                channels = out_channels
        self.units = nn.ModuleList(units)
        self.n_units = len(units)
        self.has_shrink = cfg.shrink != SHRINK_NONE
        self.head_norm = norm(channels)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(channels, cfg.num_classes)

    def features_in(self, x: Tensor) -> Tensor:
        """(batch, samples) -> the stem's input: (batch, 1, samples) or (batch, 1, mels, frames)."""
        if self.use_logmel:
            return self.in_norm(self.frontend(x))
        return x.unsqueeze(1)

    def forward_taus(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """Like forward, plus every unit's thresholds (for tests of the paper's invariants)."""
        h = self.stem(self.features_in(x))
        zeroed = torch.zeros(x.shape[0], dtype=h.dtype, device=h.device)
        taus: list[Tensor] = []
        for unit in self.units:
            h, tau, z = unit.forward_with_stats(h)
            zeroed = zeroed + z
            taus.append(tau)
        h = self.act(self.head_norm(h))
        h = h.flatten(2).mean(dim=2)
        logits = self.fc(self.dropout(h))
        noise_index = zeroed / float(self.n_units) if self.has_shrink else zeroed
        return logits, noise_index, h, taus

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (batch, samples) normalized windows -> (logits (batch, classes), noise_index (batch,))."""
        logits, noise_index, _, _ = self.forward_taus(x)
        return logits, noise_index

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Like forward, plus the pooled features (batch, channels) the classifier reads."""
        logits, noise_index, features, _ = self.forward_taus(x)
        return logits, noise_index, features
