"""Training and evaluation: CWRU data, noise augmentation, a generic training loop, held-out evaluation.

- ``cwru``: .mat loader (48 kHz baseline resampled), time split before windowing, windows.
- ``augment``: noise at a random type and SNR per window (noise from ``drsn_stream.dsp.noise``).
- ``loop``: ``fit(model, data, recipe=Recipe(...), augment=..., prepare=...)``, generic.
- ``evaluate``: accuracy on a held-out time part, clean and with seeded noise.
- ``report``: the end of every run: fit facts in the metadata, exported artifact(s), report.json.
- ``config`` / ``run`` / ``cli``: TOML configs, one training run, the train/eval/export commands.
"""

from drsn_stream.train.augment import NoiseAugment, parse_snr_list
from drsn_stream.train.loop import FitResult, Recipe, accuracy, fit, predict, seed_everything

__all__ = ["FitResult", "NoiseAugment", "Recipe", "accuracy", "fit", "parse_snr_list", "predict", "seed_everything"]
