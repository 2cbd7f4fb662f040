"""Several trained networks of one architecture answering as one: their probabilities averaged.

Networks trained alike from different seeds err on different inputs; averaging their
probabilities lowers the error on data unlike the training set (an unseen speaker, for the
spoken-digit model). ``Ensemble`` keeps the networks' contract: ``forward(x)`` returns
``(logits, noise_index)``, where the logits are the log of the mean probabilities (so a softmax
gives the mean back exactly) and the noise index is the members' mean. ``forward_features``
adds the members' pooled features side by side ``(batch, members * channels)``.
TorchScript-scriptable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Ensemble(nn.Module):
    """Mean of the members' softmax probabilities; members take and return the same shapes."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.n_members = len(members)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, noise, _ = self.forward_features(x)
        return logits, noise

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = torch.zeros(0)
        noise = torch.zeros(0)
        feats: list[Tensor] = []
        first = True
        for member in self.members:
            logits, n, f = member.forward_features(x)
            feats.append(f)
            p = torch.softmax(logits, dim=1)
            if first:
                probs, noise, first = p, n, False
            else:
                probs = probs + p
                noise = noise + n
        probs = probs / float(self.n_members)
        # log of the mean: softmax(log p) == p for rows that sum to 1; the floor keeps it finite
        return torch.log(probs.clamp_min(1e-30)), noise / float(self.n_members), torch.cat(feats, dim=1)
