"""Training and evaluation: CWRU data, noise augmentation, a generic training loop, held-out evaluation.

- ``cwru``: .mat loader (48 kHz baseline resampled), time split before windowing, windows.
- ``augment``: noise at a random type and SNR per window (noise from ``drsn_stream.dsp.noise``).
- ``loop``: ``fit(model, data, recipe=Recipe(...), augment=..., prepare=...)``, generic.
- ``evaluate``: accuracy on a held-out time part, clean and with seeded noise.
- ``report``: the end of every run: fit facts in the metadata, exported artifact(s), report.json.
- ``config`` / ``run`` / ``cli``: TOML configs, one training run, the train/eval/export commands.

The names below are imported on first use (PEP 562): ``drsn-stream --help`` and the commands that
only parse their options do not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drsn_stream.lazy import lazy_getattr

if TYPE_CHECKING:
    from drsn_stream.train.augment import NoiseAugment, parse_snr_list
    from drsn_stream.train.loop import FitResult, Recipe, accuracy, fit, predict, seed_everything

_WHERE = {"NoiseAugment": "augment", "parse_snr_list": "augment", "FitResult": "loop", "Recipe": "loop",
          "accuracy": "loop", "fit": "loop", "predict": "loop", "seed_everything": "loop"}


__getattr__ = lazy_getattr(__name__, _WHERE)


__all__ = ["FitResult", "NoiseAugment", "Recipe", "accuracy", "fit", "parse_snr_list", "predict", "seed_everything"]
