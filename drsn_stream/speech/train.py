"""Training and evaluation of the spoken-digit DRSN (``digits-fsdd``).

The loop regenerates every epoch's windows with fresh augmentation (in a worker thread, while
the previous epoch trains), normalizes them with ``drsn_stream.dsp.normalize`` exactly as the live
DSP will, and trains with AdamW and a one-cycle learning rate. Evaluation helpers put held-out
recordings into 1 s windows the way the live stream sees them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from drsn_stream.config import out_of_range
from drsn_stream.dsp.normalize import normalize
from drsn_stream.errors import ConfigError, DataError
from drsn_stream.models import create_model
from drsn_stream.models.outputs import to_probs
from drsn_stream.speech import DIGITS, LABELS, NORMALIZATION, RMS_FLOOR, WINDOW
from drsn_stream.speech.augment import AugmentConfig, EpochPlan, WindowMaker, make_epoch, noise_segment
from drsn_stream.speech.dataset import Utterance

MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LR = 10.0
MAX_THREADS = 1024
MAX_SEED = 2**31 - 1


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        model: registered model name; ``overrides`` go to ``create_model``.
        epochs / batch / lr / weight_decay / label_smoothing: the optimizer recipe (AdamW,
            one-cycle learning rate peaking at ``lr``).
        seed: seeds the augmentation and the weights.
        threads: torch CPU threads.

    Raises ConfigError naming the ``[train]`` key when a value is of the wrong type or out of
    range (at construction, and again when ``train_model`` starts: the fields may be set later).
    """

    model: str = "drsn_cw_mel"
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    plan: EpochPlan = field(default_factory=EpochPlan)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises ConfigError listing every recipe value that is out of range."""
        problems = [
            out_of_range("epochs", self.epochs, 1, MAX_EPOCHS, whole=True),
            # BatchNorm needs two windows per batch: batch 1 skipped every batch and divided by 0
            out_of_range("batch", self.batch, 2, MAX_BATCH, whole=True),
            out_of_range("lr", self.lr, 0.0, MAX_LR, above=True),
            out_of_range("weight_decay", self.weight_decay, 0.0, 1.0),
            below_one("label_smoothing", self.label_smoothing),
            out_of_range("seed", self.seed, 0, MAX_SEED, whole=True),
            out_of_range("threads", self.threads, 1, MAX_THREADS, whole=True),
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("[train] " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def below_one(name: str, value: Any) -> str | None:
    """A line saying that ``value`` is not a finite number in [0, 1), or None."""
    if out_of_range(name, value, 0.0, 1.0) is None and value < 1.0:
        return None
    return f"{name} must be a number from 0 up to (not including) 1, not {value!r}"


def build_model(cfg: TrainConfig) -> nn.Module:
    return create_model(cfg.model, len(LABELS), **cfg.overrides)


def train_model(
    cfg: TrainConfig,
    digits: list[Utterance],
    others: list[Utterance],
    noises: dict[str, np.ndarray],
    *,
    log: Callable[[str], None] = print,
) -> nn.Module:
    """Trains a fresh model and returns it in eval mode (on the CPU).

    Args:
        digits: training digit words (FSDD train takes and TTS voices).
        others: non-digit TTS words for `_unknown_`.
        noises: training part of the background recordings, 8 kHz.
    """
    cfg.check()
    if not digits:
        raise DataError("no digit recordings to train on (FSDD training takes and synthetic voices are both empty)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    maker = WindowMaker(noises, cfg.augment)
    model = build_model(cfg)
    n_per_epoch = len(digits) + cfg.plan.unknown + cfg.plan.silence + cfg.plan.noise
    steps = cfg.epochs * ((n_per_epoch + cfg.batch - 1) // cfg.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    seeds = rng.integers(0, 2**63 - 1, size=cfg.epochs)

    def epoch_data(k: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = make_epoch(maker, digits, others, np.random.default_rng(seeds[k]), cfg.plan)
        return normalize(x, NORMALIZATION), y

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(epoch_data, 0)
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            x_np, y_np = pending.result()
            if epoch + 1 < cfg.epochs:
                pending = pool.submit(epoch_data, epoch + 1)
            x = torch.from_numpy(x_np)
            y = torch.from_numpy(y_np)
            model.train()
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(x), cfg.batch):
                xb, yb = x[i : i + cfg.batch], y[i : i + cfg.batch]
                if len(xb) < 2:
                    continue  # BatchNorm needs two samples
                logits, _ = model(xb)
                loss = loss_fn(logits, yb)
                if not math.isfinite(loss.item()):  # before the step: the weights stay finite
                    raise ConfigError(
                        f"training diverged: the loss is {loss.item()} in epoch {epoch + 1}/{cfg.epochs} "
                        f"(batch {i // cfg.batch + 1}); lower [train] lr (now {cfg.lr:g}) and train again, "
                        "or look for NaN in the training audio"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched.last_epoch + 1 < steps:
                    sched.step()
                loss_sum += loss.item() * len(xb)
                correct += int((logits.argmax(1) == yb).sum())
                total += len(xb)
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / total:.4f}, train acc "
                f"{100.0 * correct / total:.2f} % (augmented), {time.perf_counter() - t0:.1f} s"
            )
    model.eval()
    return model


def center(audio: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """A word in the middle of a window of silence (zeros); longer words keep their middle.

    Returns float32 (window,).
    """
    out = np.zeros(window, np.float32)
    if len(audio) >= window:
        start = (len(audio) - window) // 2
        return audio[start : start + window].astype(np.float32)
    off = (window - len(audio)) // 2
    out[off : off + len(audio)] = audio
    return out


@torch.no_grad()
def predict(model: nn.Module, windows: np.ndarray, *, batch: int = 256, scores: str = "logits") -> np.ndarray:
    """Raw windows (N, WINDOW) -> probabilities (N, classes), normalized as the artifact says;
    ``scores``: what the model's first output holds (an artifact's ``ArtifactMeta.scores``)."""
    model.eval()
    xn = normalize(np.asarray(windows, np.float32), NORMALIZATION)
    out = []
    for i in range(0, len(xn), batch):
        logits, _ = model(torch.from_numpy(xn[i : i + batch]))
        out.append(to_probs(logits, scores).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def accuracy(model: nn.Module, utts: list[Utterance]) -> dict[str, Any]:
    """13-way accuracy on words centred in silence: the argmax over all labels must be the digit.

    Returns ``{"accuracy": %, "n": count, "per_digit": {digit: %}, "confusion": [[...]]}``.
    """
    probs = predict(model, np.stack([center(u.audio) for u in utts]))
    return score_digits(probs, np.array([LABELS.index(u.label) for u in utts]))


def score_digits(probs: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """``accuracy()``'s report from probabilities (n, labels) and true digit indices (n,)."""
    pred = probs.argmax(1)
    conf = np.zeros((len(DIGITS), len(LABELS)), np.int64)
    np.add.at(conf, (truth, pred), 1)
    per = {d: round(100.0 * conf[i, i] / max(1, conf[i].sum()), 2) for i, d in enumerate(DIGITS)}
    return {
        "accuracy": round(100.0 * float(np.mean(pred == truth)), 2),
        "n": int(truth.size),
        "per_digit": per,
        "confusion": conf.tolist(),
    }


def snr_curve(
    model: nn.Module,
    utts: list[Utterance],
    noises: dict[str, np.ndarray],
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 20.0),
    *,
    seed: int = 1,
) -> dict[str, dict[str, float]]:
    """Accuracy (%) of centred words with held-out background noise over the whole window.

    SNR is the word's power (over its own samples) against the noise power. Returns
    ``{noise name: {"-5": %, ...}}`` plus ``"mean_real"`` over the real recordings.
    """
    rng = np.random.default_rng(seed)
    clean = np.stack([center(u.audio) for u in utts]).astype(np.float64)
    truth = np.array([LABELS.index(u.label) for u in utts])
    p_word = np.array([np.mean(u.audio.astype(np.float64) ** 2) for u in utts])[:, None]
    out: dict[str, dict[str, float]] = {}
    for name, src in noises.items():
        row = {}
        for snr in snrs:
            noise = np.stack([noise_segment({name: src}, WINDOW, rng) for _ in utts]).astype(np.float64)
            noisy = clean + noise * np.sqrt(p_word / 10.0 ** (snr / 10.0))
            pred = predict(model, noisy.astype(np.float32)).argmax(1)
            row[f"{snr:g}"] = round(100.0 * float(np.mean(pred == truth)), 2)
        out[name] = row
    real = [k for k in out if k in ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")]
    if real:
        out["mean_real"] = {s: round(float(np.mean([out[k][s] for k in real])), 2) for s in out[real[0]]}
    return out


def background_check(model: nn.Module, noises: dict[str, np.ndarray], *, n: int = 200, seed: int = 2) -> dict[str, float]:
    """Share (%) of held-out background windows the model calls a digit (want: near 0).

    Levels: silence (below the floor) and noise from -40 to -10 dBFS RMS.
    """
    rng = np.random.default_rng(seed)
    res = {}
    for name, level in (("silence", 0.5 * RMS_FLOOR), ("noise_-40dBFS", 0.01), ("noise_-25dBFS", 0.056), ("noise_-10dBFS", 0.316)):
        x = np.stack([noise_segment(noises, WINDOW, rng) * level for _ in range(n)]).astype(np.float32)
        pred = predict(model, x).argmax(1)
        res[name] = round(100.0 * float(np.mean(pred < len(DIGITS))), 2)
    return res
