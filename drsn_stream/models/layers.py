"""DRSN building blocks exactly as Zhao et al. 2020 define them (see shared/notes/drsn-paper.md).

Soft thresholding, the threshold sub-network, and the residual shrinkage building unit (RSBU) with
channel-shared (CS: one threshold per sample) or channel-wise (CW: one per sample and channel)
thresholds, in 1-D and 2-D. Pre-activation order, no ReLU after the addition, and a shortcut that
decimates (average pool, kernel 1, stride 2) and zero-pads new channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SHRINK_CW = "cw"
SHRINK_CS = "cs"
SHRINK_NONE = "none"


def soft_threshold(x: Tensor, tau: Tensor) -> Tensor:
    """y = sign(x) * max(|x| - tau, 0). dy/dx is 1 outside [-tau, tau] and 0 inside.

    Computed as ``x - clamp(x, -tau, tau)``, which is the same function with the same gradients
    (also with respect to tau) in fewer passes over memory, and exactly 0 wherever |x| <= tau.
    Without autograd the clamp is written as ``maximum(minimum(x, tau), -tau)`` (the same values)
    because torch's clamp with a tensor tau takes a slower path than the two binary ops (timings in
    commit 607bcfd). With autograd it stays a clamp, whose gradient is exactly 0 at |x| = tau
    (minimum's is split 0.5/0.5 there).

    Args:
        x: (batch, channels, *spatial).
        tau: broadcastable to x, positive.
    """
    if x.requires_grad or tau.requires_grad:
        return x - torch.clamp(x, min=-tau, max=tau)
    return x - torch.maximum(torch.minimum(x, tau), -tau)


class ThresholdNet(nn.Module):
    """g -> FC(C) -> BN -> ReLU -> FC(M) -> sigmoid -> alpha; M = 1 (CS) or C (CW).

    The thresholds are ``alpha * mean|r|``: over all positions and channels for CS (one per
    sample), per channel for CW (one per sample and channel), so 0 < tau < mean|r|.
    """

    def __init__(
        self,
        channels: int,
        *,
        channel_wise: bool,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        """
        Args:
            channels: C, the number of channels of the residual r.
            channel_wise: True for RSBU-CW (M = C), False for RSBU-CS (M = 1).
            act_layer: activation between the two fully connected layers.
        """
        super().__init__()
        self.channel_wise = channel_wise
        out = channels if channel_wise else 1
        self.fc1 = nn.Linear(channels, channels)
        self.bn = nn.BatchNorm1d(channels)
        self.act = act_layer()
        self.fc2 = nn.Linear(channels, out)

    def forward(self, r: Tensor) -> Tensor:
        """Returns tau with shape (batch, C or 1, 1[, 1]) for r of shape (batch, C, *spatial)."""
        return self.from_abs(torch.abs(r))

    def from_abs(self, abs_r: Tensor) -> Tensor:
        """Same as forward, given |r| already computed."""
        g = abs_r.flatten(2).mean(dim=2)  # (batch, C): global average of |r| per channel
        alpha = torch.sigmoid(self.fc2(self.act(self.bn(self.fc1(g)))))  # (batch, M)
        if self.channel_wise:
            scale = g  # mean|r| of each channel
        else:
            scale = g.mean(dim=1, keepdim=True)  # mean|r| over all positions and channels
        tau = alpha * scale
        for _ in range(abs_r.dim() - 2):
            tau = tau.unsqueeze(-1)
        return tau


class Shortcut(nn.Module):
    """Identity; decimation by average pooling (kernel 1, stride s); zero-padding of new channels."""

    __constants__ = ["stride", "pad_channels", "dims"]

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dims: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("a shortcut can only keep or grow the channel count")
        self.stride = stride
        self.pad_channels = out_channels - in_channels
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # average pooling with kernel 1 and stride s is plain decimation; slicing is the
            # same numbers without a pooling kernel's pass over memory
            if self.dims == 1:
                x = x[:, :, :: self.stride]
            else:
                x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_channels > 0:
            shape = list(x.shape)
            shape[1] = self.pad_channels
            x = torch.cat([x, torch.zeros(shape, dtype=x.dtype, device=x.device)], dim=1)
        return x


class RSBU(nn.Module):
    """Residual shrinkage building unit (pre-activation), 1-D or 2-D.

    x -> BN -> ReLU -> Conv(k, stride) -> BN -> ReLU -> Conv(k) -> r -> soft threshold -> r'
    out = r' + shortcut(x). With ``shrink="none"`` it is the ResNet unit of the paper's baseline,
    and with ``shortcut=False`` also the plain ConvNet unit.
    """

    __constants__ = ["has_shrink", "has_shortcut"]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        dims: int = 1,
        shrink: str = SHRINK_CW,
        shortcut: bool = True,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        """
        Args:
            in_channels / out_channels: channel counts before and after the unit.
            stride: 1, or 2 to halve the length (and each spatial side in 2-D).
            kernel_size: width of both convolutions (3 in the paper).
            dims: 1 for raw signals (batch, C, L), 2 for spectrograms (batch, C, H, W).
            shrink: "cw" (RSBU-CW), "cs" (RSBU-CS) or "none" (no soft thresholding).
            shortcut: add the identity shortcut (False: the ConvNet baseline).
            act_layer: activation type.
        """
        super().__init__()
        if shrink not in (SHRINK_CW, SHRINK_CS, SHRINK_NONE):
            raise ValueError(f"shrink must be 'cw', 'cs' or 'none', not {shrink!r}")
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        pad = kernel_size // 2
        self.bn1 = norm(in_channels)
        self.act1 = act_layer()
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=stride, padding=pad)
        self.bn2 = norm(out_channels)
        self.act2 = act_layer()
        self.conv2 = conv(out_channels, out_channels, kernel_size, stride=1, padding=pad)
        self.has_shrink = shrink != SHRINK_NONE
        self.has_shortcut = shortcut
        # The baselines carry no threshold sub-network at all (their parameter counts stay the
        # paper's); has_shrink is Final, so TorchScript compiles only the branch that exists.
        self.threshold: nn.Module = (
            ThresholdNet(out_channels, channel_wise=(shrink == SHRINK_CW), act_layer=act_layer)
            if self.has_shrink
            else nn.Identity()
        )
        self.shortcut = Shortcut(in_channels, out_channels, stride=stride, dims=dims)

    def residual(self, x: Tensor) -> Tensor:
        """r before soft thresholding."""
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))

    def forward_with_stats(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (out, tau, zeroed_share (batch,)). tau is empty without shrinkage."""
        shortcut = self.shortcut(x)
        r = self.residual(x)
        batch = r.shape[0]
        if self.has_shrink:
            abs_r = torch.abs(r)
            tau = self.threshold.from_abs(abs_r)
            r = soft_threshold(r, tau)
            # share of r zeroed: soft_threshold gives exactly 0 where |r| <= tau, so this equals
            # mean(|r| <= tau), counted with float ops, which are cheaper than a boolean mask's mean
            zeroed = 1.0 - torch.sign(r).abs().flatten(1).mean(dim=1)
        else:
            tau = torch.zeros(0, dtype=r.dtype, device=r.device)
            zeroed = torch.zeros(batch, dtype=r.dtype, device=r.device)
        if self.has_shortcut:
            r = r + shortcut
        return r, tau, zeroed

    def forward(self, x: Tensor) -> Tensor:
        out, _, _ = self.forward_with_stats(x)
        return out
