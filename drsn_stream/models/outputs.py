"""One meaning for the first output of every shipped model: probabilities.

A network returns ``(logits, noise_index)`` (an ``Ensemble`` the log of its mean probabilities);
``Probabilities`` wraps either so that ``forward`` returns ``(probabilities, noise_index)``, and
an artifact saved around it says ``"outputs": {"scores": "probs"}``. The weights sit under the
wrapper's ``net.`` prefix; ``network_of`` returns the network inside, for code that rebuilds it
from ``model_config`` (the CPU engine's channels-last form, re-exports). Older artifacts without
the wrapper keep working: ``to_probs`` turns any kind of scores into probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

WRAPPER = "Probabilities"  # the class name TorchScript keeps as ``original_name``


class Probabilities(nn.Module):
    """``net`` whose first output (logits or log-probabilities) is turned into probabilities.

    A softmax serves both: for log-probabilities it gives back the (renormalized) probabilities,
    so the result equals what drsn-stream's runner computed from the unwrapped network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, noise = self.net(x)
        return torch.softmax(scores, dim=1), noise

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Like forward, plus the network's pooled features where it has ``forward_features``
        (else a (batch, 0) tensor): the wrapper must not hide them from feature statistics."""
        if hasattr(self.net, "forward_features"):
            scores, noise, features = self.net.forward_features(x)
            return torch.softmax(scores, dim=1), noise, features
        scores, noise = self.net(x)
        return torch.softmax(scores, dim=1), noise, torch.zeros(x.shape[0], 0, dtype=x.dtype, device=x.device)


def is_wrapped(module: Any) -> bool:
    """Whether ``module`` (eager or TorchScript) is a ``Probabilities`` wrapper."""
    if isinstance(module, Probabilities):
        return True
    return getattr(module, "original_name", "") == WRAPPER  # a frozen one keeps its name, not ``net``


def network_of(module: Any) -> Any:
    """The network inside a ``Probabilities`` wrapper (not a frozen one: freezing inlines it);
    ``module`` itself otherwise."""
    return module.net if is_wrapped(module) and hasattr(module, "net") else module


def to_probs(scores: Tensor, kind: str) -> Tensor:
    """Probabilities from a first output of the given kind (``ArtifactMeta.scores``), as float32."""
    scores = scores.float()
    return scores if kind == "probs" else torch.softmax(scores, dim=1)


__all__ = ["WRAPPER", "Probabilities", "is_wrapped", "network_of", "to_probs"]
