"""The CPU engine's channels-last form of a 1-D network: the same function, laid out for the CPU.

The paper-size networks carry 4 to 16 channels over 128 to 1024 positions. In torch's
(batch, channels, length) layout oneDNN pads such channel counts to blocks of 16 and reorders
every convolution's input and output, so the convolutions cost much of a forward pass
(docs/performance.md). ``ChannelsLastDRSN`` runs the same weights with activations laid out
(batch, length, channels):

- every convolution is oneDNN's channels-last kernel on a (batch, channels, 1, length) view, with
  no reorders;
- per-channel constants (batch norm, thresholds) are repeated to rows of ``ROW`` values and the
  activations viewed as (batch, length / k, k * channels), so elementwise ops run over long
  contiguous rows instead of 4-wide ones;
- the batch norm between each unit's two convolutions is folded into the first, the thresholds'
  one into its linear layer;
- a convolution with fewer than ``BLOCK_CHANNELS`` input or output channels (the stem, the
  4-channel units) runs on blocks of consecutive positions: (batch, length, c) memory read as
  (batch, length / p, p * c) is the same bytes, and a stride-s convolution over positions is a
  stride-1 convolution over blocks of s * p input and p output positions whose weights hold the
  original taps at their offsets (``_blocked``). That does p times the multiply-adds, but oneDNN's
  channels-last kernels run several times as many per second at 8 channels as at 2 or 4
  (docs/performance.md), so the stem and the 4-channel units cost less than half;
- the shrinkage works on those rows too: the threshold net reads the row slots' sums of |r|
  through weights repeated over a row and gives thresholds already repeated to a row, so no
  per-channel reshuffles run between the passes over the activations (|r|, clamp, subtract,
  zero test, shortcut add), and those passes reuse dead buffers (conv1's output, the previous
  unit's) instead of allocating: fewer kernels per batch and a smaller working set
  (docs/performance-peers.md).

Results differ from the artifact's module by float rounding only; the runner uses this form only
after comparing the two on the artifact's validation windows. Only 1-D networks with odd kernels
are converted (``convert`` says why not otherwise); the module is TorchScript-scriptable.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsn_stream.models.layers import SHRINK_CS, SHRINK_CW, SHRINK_NONE
from drsn_stream.models.outputs import Probabilities, is_wrapped, network_of, to_probs
from drsn_stream.models.registry import build_from_config

# Elementwise ops see rows of this many values (k * channels); 64 floats fill four AVX-512 vectors.
ROW = 64
# A convolution with fewer input or output channels than this runs on blocks of positions.
BLOCK_CHANNELS = 8
# The runner's acceptance check: label agreement, and the largest probability / noise-index change.
MIN_AGREEMENT = 0.999
MAX_PROB_DIFF = 1e-3
MAX_NOISE_DIFF = 1e-3
CHECK_WINDOWS = 512  # at most this many validation windows are compared
# Batch sizes at which ``calibrate`` times the whole compiled pass (SmallBatches) against the
# tails: where the first goes faster depends on the network (paper-size ones: up to ~64 windows;
# 64-channel ones: none) and on the CPU, so it is measured, not assumed.
CALIBRATE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)

_SHRINKS = (SHRINK_NONE, SHRINK_CS, SHRINK_CW)


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as y = x * scale + shift, per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean.detach() * scale


def _repeat_factor(channels: int) -> int:
    return max(1, ROW // channels)


def _conv_weight(w: Tensor) -> Tensor:
    """(out, in, k) -> (out, in, 1, k) in channels-last memory."""
    return w.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _block_out(cin: int, cout: int) -> int:
    """Output positions per block for a convolution of cin -> cout channels (0: not blocked)."""
    if min(cin, cout) >= BLOCK_CHANNELS:
        return 0
    return max(1, -(-BLOCK_CHANNELS // cout))


def _blocked(w: Tensor, stride: int, pad: int, po: int) -> tuple[Tensor, int]:
    """A convolution (out, in, K) with this stride and zero padding as a stride-1 convolution over
    blocks: input blocks of ``stride * po`` positions (slot q * in + i is channel i of position
    q), output blocks of ``po``. Returns its weights (po * out, pi * in, 1, 2 * d + 1) in
    channels-last memory and its padding d (blocks), zero taps making the padding symmetric."""
    w = w.detach()
    cout, cin, kernel = w.shape
    pi = stride * po
    # output position po * j + q reads input pi * j + stride * q + t - pad: block j + off, slot qq
    taps = [(q, t, (stride * q + t - pad) // pi) for q in range(po) for t in range(kernel)]
    d = max(max(-off, off) for _, _, off in taps)
    out = torch.zeros(po * cout, pi * cin, 2 * d + 1, dtype=w.dtype)
    for q, t, off in taps:
        qq = stride * q + t - pad - off * pi
        out[q * cout : (q + 1) * cout, qq * cin : (qq + 1) * cin, off + d] += w[:, :, t]
    return _conv_weight(out), d


class _Unit(nn.Module):
    """One RSBU (or ResNet / ConvNet unit) on (batch, length, channels) activations."""

    __constants__ = ["stride", "cin", "cout", "pad", "shrink", "shortcut", "k_in", "k_out", "po1", "d1", "po2", "d2"]
    # shrink: 0 none, 1 channel-shared (CS), 2 channel-wise (CW)

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        conv1, conv2 = unit.conv1, unit.conv2
        self.cin, self.cout = conv1.in_channels, conv1.out_channels
        self.stride = conv1.stride[0]
        self.pad = conv1.padding[0]
        self.k_in, self.k_out = _repeat_factor(self.cin), _repeat_factor(self.cout)
        s1, t1 = _bn_affine(unit.bn1)
        self.register_buffer("s1", s1.repeat(self.k_in))
        self.register_buffer("t1", t1.repeat(self.k_in))
        s2, t2 = _bn_affine(unit.bn2)  # bn2 follows conv1 directly: fold it in
        w1, b1 = conv1.weight.detach() * s2.view(-1, 1, 1), conv1.bias.detach() * s2 + t2
        self.register_buffer("w1", _conv_weight(w1))
        self.register_buffer("b1", b1)
        self.register_buffer("w2", _conv_weight(conv2.weight))
        self.register_buffer("b2", conv2.bias.detach().clone())
        # the same convolutions over blocks of positions, where they have few channels
        self.po1, self.po2 = _block_out(self.cin, self.cout), _block_out(self.cout, self.cout)
        self.d1 = self.d2 = 0
        w1b, b1b, w2b, b2b = torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0)
        if self.po1:
            w1b, self.d1 = _blocked(w1, self.stride, self.pad, self.po1)
            b1b = b1.repeat(self.po1)
        if self.po2:
            w2b, self.d2 = _blocked(conv2.weight, 1, conv2.padding[0], self.po2)
            b2b = conv2.bias.detach().repeat(self.po2)
        self.register_buffer("w1b", w1b)
        self.register_buffer("b1b", b1b)
        self.register_buffer("w2b", w2b)
        self.register_buffer("b2b", b2b)
        self.shortcut = bool(unit.has_shortcut)
        self.shrink = 0
        if unit.has_shrink:
            th = unit.threshold
            self.shrink = 2 if th.channel_wise else 1
            s3, t3 = _bn_affine(th.bn)  # bn follows fc1 directly: fold it in
            f1w, f1b = th.fc1.weight.detach() * s3.view(-1, 1), th.fc1.bias.detach() * s3 + t3
            f2w, f2b = th.fc2.weight.detach(), th.fc2.bias.detach()
            for suffix, k in (("k", self.k_out), ("1", 1)):  # rows of k positions, or of one
                for name, value in _shrink_constants(f1w, f2w, f2b, k, th.channel_wise).items():
                    self.register_buffer(name + suffix, value)
            self.register_buffer("f1b", f1b.clone())
        else:
            for name in ("gselk", "f1k", "f2k", "f2bk", "gsel1", "f11", "f21", "f2b1", "f1b"):
                self.register_buffer(name, torch.zeros(0))

    def bn1(self, h: Tensor, out: Tensor) -> Tensor:
        """relu(bn1(h)) for h (batch, length, cin), written into ``out`` (resized; an empty tensor:
        allocated), as (batch, length, cin); over rows of k_in positions where they divide h."""
        b, n = h.shape[0], h.shape[1]
        if n % self.k_in == 0:
            hv, s1, t1 = h.view(b, n // self.k_in, self.k_in * self.cin), self.s1, self.t1
        else:
            hv, s1, t1 = h, self.s1[: self.cin], self.t1[: self.cin]
        return torch.relu_(torch.addcmul(t1, hv, s1, out=out)).view(b, n, self.cin)

    def convs(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """conv1 (bn2 folded in) with its ReLU, and conv2, on a = relu(bn1(h)) (batch, positions,
        cin) -> (conv2's output r, conv1's output, dead now), both (batch, positions', cout)."""
        b, n = a.shape[0], a.shape[1]
        # convolutions on channels-last (b, channels, 1, positions) views: of blocks of positions
        # (b, slots, 1, blocks) where blocked; the memory is (b, positions, channels) either way
        pi = self.stride * self.po1
        pa = 1  # output positions per block of conv1's output view
        if self.po1 > 0 and n % pi == 0:
            pa = self.po1
            a = a.reshape(b, 1, n // pi, pi * self.cin).permute(0, 3, 1, 2)
            a = torch.relu_(F.conv2d(a, self.w1b, self.b1b, padding=(0, self.d1)))
        else:
            a = a.reshape(b, 1, n, self.cin).permute(0, 3, 1, 2)
            a = torch.relu_(F.conv2d(a, self.w1, self.b1, stride=(1, self.stride), padding=(0, self.pad)))
        c = self.cout
        lo = a.shape[1] * a.shape[3] // c
        p2 = self.po2 if self.po2 > 0 and lo % self.po2 == 0 else 1
        if p2 != pa:  # conv2 reads other blocks than conv1 wrote: the same memory, viewed again
            a = a.permute(0, 2, 3, 1).reshape(b, 1, lo // p2, p2 * c).permute(0, 3, 1, 2)
        if p2 > 1:
            r = F.conv2d(a, self.w2b, self.b2b, padding=(0, self.d2))
        else:
            r = F.conv2d(a, self.w2, self.b2, padding=(0, self.pad))
        # (b, 1, blocks, slots): (b, lo, c) in memory
        return r.permute(0, 2, 3, 1).reshape(b, lo, c), a.permute(0, 2, 3, 1).reshape(b, lo, c)

    def forward(self, h: Tensor, spare: Tensor, kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (batch, length, cin) contiguous; spare: a dead buffer of the previous unit, h's size
        in this unit's rows (empty for the first unit: then allocated); kept (batch,): the sum of
        the previous units' shares of activations left nonzero -> (out (batch, length', cout),
        kept plus this unit's, a dead buffer of out's size in the next unit's rows)."""
        b = h.shape[0]
        r, dead = self.convs(self.bn1(h, spare))
        c = self.cout
        lo = r.shape[1]
        k = self.k_out if lo % self.k_out == 0 else 1
        rk = r.reshape(b, lo // k, k * c)
        buf = dead.reshape(rk.shape)  # conv1's output, dead now: r's size
        if self.shrink > 0:
            if k > 1:
                gsel, f1, f2, f2b = self.gselk, self.f1k, self.f2k, self.f2bk
            else:
                gsel, f1, f2, f2b = self.gsel1, self.f11, self.f21, self.f2b1
            # |r|, then the clamp's and the zero test's output
            torch.abs(rk, out=buf)
            # sum of |r| per row slot; fc1 and the per-channel (CW) or overall (CS) mean read the
            # slots through weights repeated over a row (1 / rows as the products' scale makes the
            # sums means), and fc2's outputs come repeated to a row
            s = buf.sum(1)
            inv = 1.0 / float(rk.shape[1])
            alpha = torch.sigmoid(torch.addmm(f2b, torch.relu(torch.addmm(self.f1b, s, f1, alpha=inv)), f2))
            # beta 0: addmm ignores its first argument and only scales the product
            tau = torch.addmm(alpha, s, gsel, beta=0.0, alpha=inv).mul_(alpha).unsqueeze(1)  # (b, 1, row)
            torch.clamp(rk, min=-tau, max=tau, out=buf)
            out = rk.sub_(buf)  # soft thresholding, in the conv's output
            nonzero = torch.ne(out, 0, out=buf).view(b, -1).sum(dim=1)  # activations kept
            kept = torch.add(kept, nonzero, alpha=1.0 / float(lo * c))
            out = out.view(b, lo, c)
        else:
            out = r.reshape(b, lo, c)
        if self.shortcut:
            sc = h[:, :: self.stride, :] if self.stride > 1 else h
            if c > self.cin:
                out[:, :, : self.cin] += sc  # new channels of the shortcut are zeros
            else:
                out += sc
        return out, kept, buf


def _shrink_constants(f1w: Tensor, f2w: Tensor, f2b: Tensor, k: int, channel_wise: bool) -> dict[str, Tensor]:
    """The threshold net's weights for rows of k positions (k * c slots, slot j is channel j % c)
    holding the sum of |r| of their slot (a mean after the 1 / rows scale): ``f1`` averages the k
    slots of a channel, ``gsel`` gives each slot its channel's mean (CW) or the mean over all
    channels (CS), ``f2`` / ``f2b`` repeat fc2's outputs to every slot."""
    c = f1w.shape[1]
    if channel_wise:
        gsel = torch.eye(c).repeat(k, k) / k
    else:
        gsel = torch.full((k * c, k * c), 1.0 / (k * c))
    reps = k if channel_wise else k * c
    # stored transposed, (in, out), for torch.addmm
    f1 = (f1w.repeat(1, k) / k).t().contiguous()
    return {"gsel": gsel, "f1": f1, "f2": f2w.repeat(reps, 1).t().contiguous(), "f2b": f2b.repeat(reps)}


class ChannelsLastDRSN(nn.Module):
    """A 1-D ``DRSN`` (networks.py) rewritten for the CPU; ``forward(x (batch, samples))`` returns
    ``(logits, noise_index)`` like the original, ``forward_features`` the pooled features too."""

    __constants__ = ["stem_block", "stem_d", "stem_stride", "stem_pad", "n_units", "has_shrink", "k_head",
                     "channels", "channels_stem"]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        stem = net.stem
        w = stem.weight.detach()  # (C, 1, K)
        self.stem_stride, self.stem_pad = stem.stride[0], stem.padding[0]
        # one input channel: the stem reads the samples in blocks of stride * po (_blocked)
        po = _block_out(1, w.shape[0])
        self.stem_block = self.stem_stride * po
        stem_wb, self.stem_d = _blocked(w, self.stem_stride, self.stem_pad, po)
        self.register_buffer("stem_wb", stem_wb)
        self.register_buffer("stem_bb", stem.bias.detach().repeat(po))
        self.register_buffer("stem_w", w.unsqueeze(2).clone())
        self.register_buffer("stem_b", stem.bias.detach().clone())
        self.channels_stem = w.shape[0]
        self.units = nn.ModuleList([_Unit(u) for u in net.units])
        self.n_units = len(net.units)
        self.has_shrink = bool(net.has_shrink)
        s, t = _bn_affine(net.head_norm)
        self.channels = s.shape[0]
        self.k_head = _repeat_factor(self.channels)
        self.register_buffer("hs", s.repeat(self.k_head))
        self.register_buffer("ht", t.repeat(self.k_head))
        self.register_buffer("fc_w", net.fc.weight.detach().clone())
        self.register_buffer("fc_b", net.fc.bias.detach().clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, noise_index, _ = self.forward_features(x)
        return logits, noise_index

    def stem(self, x: Tensor) -> Tensor:
        """The stem convolution: (batch, samples) -> (batch, length, channels)."""
        b, n = x.shape[0], x.shape[1]
        if n % self.stem_block == 0:
            pi = self.stem_block
            h = F.conv2d(x.view(b, n // pi, pi).permute(0, 2, 1).unsqueeze(2), self.stem_wb, self.stem_bb,
                         padding=(0, self.stem_d))
        else:
            h = F.conv2d(x.view(b, 1, 1, n), self.stem_w, self.stem_b, stride=(1, self.stem_stride),
                         padding=(0, self.stem_pad))
        return h.permute(0, 2, 3, 1).reshape(b, -1, self.channels_stem)

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Like forward, plus the pooled features (batch, channels) (networks.py)."""
        b = x.shape[0]
        h = self.stem(x)
        kept = torch.zeros(b, dtype=x.dtype, device=x.device)
        spare = torch.empty(0, dtype=x.dtype, device=x.device)  # no dead buffer yet
        for unit in self.units:
            h, kept, spare = unit(h, spare, kept)
        n, c = h.shape[1], self.channels
        if n % self.k_head == 0:
            h = torch.addcmul(self.ht, h.view(b, n // self.k_head, self.k_head * c), self.hs)
        else:
            h = torch.addcmul(self.ht[:c], h, self.hs[:c])
        h = torch.relu_(h).view(b, n, c).mean(dim=1)
        logits = F.linear(h, self.fc_w, self.fc_b)
        # the share of activations the units zeroed, averaged over the units
        noise_index = 1.0 - kept / float(self.n_units) if self.has_shrink else kept
        return logits, noise_index, h


def _conv_length(n: int, k: int, stride: int) -> int:
    """Positions out of a convolution of kernel k, padding k // 2 and ``stride`` over n."""
    return (n + 2 * (k // 2) - k) // stride + 1


class SmallBatches(nn.Module):
    """A ``ChannelsLastDRSN``'s whole forward pass in one compiled call per batch (``small_jit``),
    from the form's constants: for batches where torch's fixed cost per convolution would
    dominate. Plain Python (not TorchScript: it calls numba); forward and ``forward_features``
    return what the form's do, up to float rounding."""

    def __init__(self, form: ChannelsLastDRSN, forward: Any) -> None:
        from drsn_stream.engine import small_jit as sj

        super().__init__()
        self._forward, self._sj = forward, sj
        parts: list[np.ndarray] = []
        at = [0]

        def put(t: Tensor) -> int:  # t's values appended to the flat constants: their offset
            a = np.ascontiguousarray(t.detach().reshape(-1).numpy(), dtype=np.float32)
            parts.append(a)
            at[0] += a.size
            return at[0] - a.size

        def plain(w: Tensor) -> Tensor:  # (out, in, 1, k) in channels-last memory -> (out, in, k)
            return w.squeeze(2).contiguous()

        top = np.zeros(sj.TOP_FIELDS, np.int64)
        stem_w = plain(form.stem_w)
        top[sj.T_STEM_C], top[sj.T_STEM_K], top[sj.T_STEM_STRIDE] = stem_w.shape[0], stem_w.shape[2], form.stem_stride
        top[sj.T_STEM_W], top[sj.T_STEM_B] = put(stem_w), put(form.stem_b)
        rows = []
        for u in form.units:
            row = np.zeros(sj.UNIT_FIELDS, np.int64)
            w1, w2 = plain(u.w1), plain(u.w2)
            row[[sj.U_CIN, sj.U_COUT, sj.U_STRIDE, sj.U_K]] = [u.cin, u.cout, u.stride, w1.shape[2]]
            row[sj.U_S1], row[sj.U_T1] = put(u.s1[: u.cin]), put(u.t1[: u.cin])
            row[sj.U_W1], row[sj.U_B1], row[sj.U_W2], row[sj.U_B2] = put(w1), put(u.b1), put(w2), put(u.b2)
            row[sj.U_SHORTCUT], row[sj.U_SHRINK] = int(u.shortcut), u.shrink
            if u.shrink > 0:  # the 1-row constants, stored (in, out) for addmm: (out, in) here
                f2w, f2b = (u.f21.t(), u.f2b1) if u.shrink == 2 else (u.f21.t()[:1], u.f2b1[:1])
                row[sj.U_F1W], row[sj.U_F1B] = put(u.f11.t()), put(u.f1b)
                row[sj.U_F2W], row[sj.U_F2B], row[sj.U_M] = put(f2w), put(f2b), f2w.shape[0]
            rows.append(row)
        c = form.channels
        top[sj.T_HS], top[sj.T_HT] = put(form.hs[:c]), put(form.ht[:c])
        top[sj.T_FC_W], top[sj.T_FC_B] = put(form.fc_w), put(form.fc_b)
        top[sj.T_CLASSES], top[sj.T_CHANNELS], top[sj.T_SHRINK] = form.fc_w.shape[0], c, int(form.has_shrink)
        self._fw = np.concatenate(parts)
        self._units = np.stack(rows) if rows else np.zeros((0, sj.UNIT_FIELDS), np.int64)
        self._top = top
        self._lengths_for = -1  # the window length the lengths in the tables are for

    def _lengths(self, n: int) -> None:
        """Each layer's input and output length for windows of n samples (and the buffers' size)."""
        sj = self._sj
        top, units = self._top, self._units
        k, s = int(top[sj.T_STEM_K]), int(top[sj.T_STEM_STRIDE])
        length = _conv_length(n, k, s)
        top[sj.T_L0] = length
        cmax, lmax = int(top[sj.T_STEM_C]), length
        for row in units:
            k, s = int(row[sj.U_K]), int(row[sj.U_STRIDE])
            row[sj.U_LIN], row[sj.U_LOUT] = length, _conv_length(length, k, s)
            length = int(row[sj.U_LOUT])
            cmax = max(cmax, int(row[sj.U_COUT]))
        top[sj.T_CMAX], top[sj.T_LMAX] = cmax, lmax
        self._lengths_for = n

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, noise_index, _ = self.forward_features(x)
        return logits, noise_index

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n = x.shape[0], x.shape[1]
        if n != self._lengths_for:
            self._lengths(n)
        top = self._top
        sj = self._sj
        logits = np.empty((b, int(top[sj.T_CLASSES])), np.float32)
        noise = np.empty(b, np.float32)
        pooled = np.empty((b, int(top[sj.T_CHANNELS])), np.float32)
        xn = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        self._forward(xn, self._fw, self._units, top, logits, noise, pooled)
        return torch.from_numpy(logits), torch.from_numpy(noise), torch.from_numpy(pooled)


class CompiledTails(nn.Module):
    """A ``ChannelsLastDRSN`` run with its units' elementwise tails compiled (``shrink_jit``): the
    same convolutions through torch, then one compiled call per unit for everything between one
    unit's conv2 and the next unit's conv1. Batches of fewer than ``small_below`` windows go
    through ``small`` (``SmallBatches``) where it is set (0 until ``calibrate`` measured where
    it is faster). Plain Python (not TorchScript: it calls numba); forward and
    ``forward_features`` return what the form's do, up to float rounding."""

    def __init__(self, form: ChannelsLastDRSN, tail: Any, small: SmallBatches | None = None) -> None:
        super().__init__()
        self.form = form
        self._tail = tail
        self.small = small
        self.small_below = 0
        units = list(form.units)
        self._plan: list[tuple[Any, ...]] = []
        for i, u in enumerate(units):
            c = u.cout
            if u.shrink > 0:  # the 1-row constants, (in, out) for addmm: as (out, in) here
                f1w, f1b = u.f11.t(), u.f1b
                f2w, f2b = (u.f21.t(), u.f2b1) if u.shrink == 2 else (u.f21.t()[:1], u.f2b1[:1])
            else:
                f1w, f1b, f2w, f2b = torch.zeros(c, c), torch.zeros(c), torch.zeros(c, c), torch.zeros(c)
            nxt = units[i + 1] if i + 1 < len(units) else None
            ns, nt = (nxt.s1[: nxt.cin], nxt.t1[: nxt.cin]) if nxt is not None else (form.hs[:c], form.ht[:c])
            self._plan.append((u, c, u.stride, u.cin, int(u.shortcut), int(u.shrink),
                               *(np.ascontiguousarray(t.detach().numpy(), dtype=np.float32) for t in (f1w, f1b, f2w, f2b, ns, nt)),
                               int(nxt is None)))
        self._none = np.zeros((1, 1), np.float32)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, noise_index, _ = self.forward_features(x)
        return logits, noise_index

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.shape[0] < self.small_below and self.small is not None:
            return self.small.forward_features(x)
        return self.tails(x)

    def tails(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``forward_features`` through torch's convolutions and the compiled tails, whatever the batch."""
        form = self.form
        b = x.shape[0]
        h = form.stem(x).contiguous()  # (a stem not over blocks gives a strided view)
        a = form.units[0].bn1(h, torch.empty(0, dtype=x.dtype))  # the later units' bn1: in the tails
        kept = torch.zeros(b, dtype=x.dtype)
        pooled = torch.empty(b, form.channels, dtype=x.dtype)
        kept_np, pooled_np = kept.numpy(), pooled.numpy()
        for u, c, stride, cin, shortcut, shrink, f1w, f1b, f2w, f2b, ns, nt, head in self._plan:
            r, dead = u.convs(a)
            lo = r.shape[1]
            # the loops read rows of memory: views of oneDNN's channels-last outputs, as a rule
            r = r.contiguous()
            dead = dead if dead.is_contiguous() else torch.empty_like(r)
            # r becomes the unit's output in place; conv1's dead output the next unit's input
            self._tail(r.view(b, -1).numpy(), h.view(b, -1).numpy(), lo, c, stride, cin, shortcut, shrink,
                       f1w, f1b, f2w, f2b, ns, nt, head, self._none if head else dead.view(b, -1).numpy(),
                       pooled_np, kept_np)
            h, a = r, dead
        logits = F.linear(pooled, form.fc_w, form.fc_b)
        noise_index = 1.0 - kept / float(form.n_units) if form.has_shrink else kept
        return logits, noise_index, pooled


def compiled(fast: nn.Module) -> tuple[nn.Module | None, str]:
    """``fast`` (``convert``'s result) with its units' tails compiled, or (None, why not: numba
    missing or refusing)."""
    from drsn_stream.engine import shrink_jit

    form = network_of(fast)
    if not isinstance(form, ChannelsLastDRSN):
        return None, "not a channels-last form"
    if not shrink_jit.warm():
        return None, shrink_jit.why_not()
    tails: nn.Module = CompiledTails(form, shrink_jit.kernel(), _small(form)).eval()
    return (Probabilities(tails).eval() if is_wrapped(fast) else tails), ""


def _small(form: ChannelsLastDRSN) -> SmallBatches | None:
    from drsn_stream.engine import small_jit

    return SmallBatches(form, small_jit.kernel()).eval() if small_jit.warm() else None


def small_batches(module: nn.Module) -> nn.Module | None:
    """The ``SmallBatches`` inside ``compiled``'s result, returning what ``module`` returns (in
    the ``Probabilities`` wrapper where it is), or None: not there."""
    tails = network_of(module)
    small = tails.small if isinstance(tails, CompiledTails) else None
    if small is None:
        return None
    return Probabilities(small).eval() if is_wrapped(module) else small


def drop_small_batches(module: nn.Module) -> None:
    """``compiled``'s result without its ``SmallBatches``: every batch through the tails."""
    tails = network_of(module)
    if isinstance(tails, CompiledTails):
        tails.small, tails.small_below = None, 0


def calibrate(module: nn.Module, window: int, sizes: tuple[int, ...] = CALIBRATE_SIZES) -> int:
    """Times ``compiled``'s result on batches of ``sizes`` (random windows of ``window`` samples)
    through its ``SmallBatches`` and through its tails, smallest first, and sends batches below the
    first size where the tails are as fast through ``SmallBatches``. Returns that size (twice the
    largest where they never are); 0: ``SmallBatches`` dropped (not there, or slower at size 1)."""
    tails = network_of(module)
    if not isinstance(tails, CompiledTails) or tails.small is None:
        return 0
    small = tails.small
    below = 2 * max(sizes)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for b in sizes:
            x = torch.from_numpy(rng.standard_normal((b, window)).astype(np.float32))
            if _best_time(tails.tails, x) <= _best_time(small.forward_features, x):
                below = b
                break
    if below <= 1:
        drop_small_batches(module)
        return 0
    tails.small_below = below
    return below


def _best_time(fn: Any, x: Tensor, runs: int = 3) -> float:
    """The least wall time of ``runs`` timings of ``fn(x)``, each over enough calls for ~16 windows
    (after one untimed call): the least is the one a busy machine disturbed least."""
    calls = max(1, 16 // x.shape[0])
    fn(x)
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(calls):
            fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def convert(module: torch.jit.ScriptModule | nn.Module, model_config: dict[str, Any] | None) -> tuple[nn.Module | None, str]:
    """The channels-last form of an artifact's network, or (None, why not). Inside a
    ``Probabilities`` wrapper when the artifact's module is one, so both return the same kind.

    Args:
        module: the artifact's module (TorchScript or eager) holding the weights.
        model_config: the artifact's ``model_config`` (a ``NetConfig`` dict).
    """
    if not model_config:
        return None, "the artifact carries no model_config"
    if int(model_config.get("ensemble", 1) or 1) > 1:
        return None, "ensembles are not converted"
    if int(model_config.get("dims", 1)) != 1:
        return None, "only 1-D (raw-signal) networks are converted"
    if int(model_config.get("kernel_size", 3)) % 2 == 0 or int(model_config.get("stem_kernel", 3)) % 2 == 0:
        return None, "only odd kernel sizes are converted"
    if model_config.get("shrink", SHRINK_CW) not in _SHRINKS:
        return None, f"unknown shrink {model_config.get('shrink')!r}"
    net = build_from_config(model_config)
    try:
        net.load_state_dict(network_of(module).state_dict())
    except (RuntimeError, KeyError, AttributeError) as exc:
        return None, f"weights do not match the model_config ({str(exc).splitlines()[0]})"
    with torch.no_grad():
        fast: nn.Module = ChannelsLastDRSN(net.eval()).eval()
    return (Probabilities(fast).eval() if is_wrapped(module) else fast), ""


def compare(ref: Any, other: Any, x: np.ndarray, batch: int = 256, scores: str = "logits") -> tuple[float, float, float]:
    """(label agreement, largest |probability difference|, largest |noise-index difference|);
    ``scores``: what both modules' first output holds (``ArtifactMeta.scores``)."""
    same, dp, dn = 0, 0.0, 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xt = torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32))
            la, na = ref(xt)
            lb, nb = other(xt)
            pa, pb = to_probs(la, scores), to_probs(lb, scores)
            same += int((pa.argmax(1) == pb.argmax(1)).sum())
            dp = max(dp, float((pa - pb).abs().max()))
            dn = max(dn, float((na - nb).abs().max()))
    return same / max(1, len(x)), dp, dn
