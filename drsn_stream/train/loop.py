"""A generic supervised training loop for any drsn-stream model.

Data in: arrays/tensors ``(x (n, samples), y (n,))``, any object with ``.x`` and ``.y``, a
map-style dataset of ``(window, label)`` pairs, or an object with ``epoch(index, rng) -> obj with
.x, .y`` that draws fresh data every epoch (random window offsets). An optional ``augment(x, y, rng) -> x`` runs on every training batch (e.g. noise
at an SNR), then ``prepare(x) -> x`` (e.g. per-window normalization) runs on every batch, training
and validation alike. Model out: the weights of the epoch with the best validation accuracy.

The recipe defaults are the paper's: SGD with momentum 0.9, L2 1e-4, batch 128, learning rate
0.1 / 0.01 / 0.001 for 40 / 40 / 20 % of the epochs.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from drsn_stream.config import out_of_range, write_atomic
from drsn_stream.engine.contract import THREADS_LIMIT
from drsn_stream.errors import ArtifactError, ConfigError, DataError
from drsn_stream.models.meta import damaged_member, torchscript_members
from drsn_stream.models.outputs import to_probs

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
Prepare = Callable[[np.ndarray], np.ndarray]


class _HasXY(Protocol):
    x: Any
    y: Any


class EpochSource(Protocol):
    def epoch(self, index: int, rng: np.random.Generator) -> _HasXY: ...


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule. ``lr_steps`` are the fractions of the epochs after which the learning
    rate is multiplied by ``lr_factor`` (paper: after 40 % and 80 %)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (0.4, 0.8)
    lr_factor: float = 0.1
    seed: int = 0
    threads: int = 0  # 0: leave torch's thread count alone

    def __post_init__(self) -> None:
        # NaN or Inf trained to NaN weights without a word; a negative momentum or thread count,
        # or a seed numpy refuses, stopped the run with a traceback once the data was read
        problems = [out_of_range("epochs", self.epochs, 1, 100_000, whole=True),
                    out_of_range("batch_size", self.batch_size, 1, 65_536, whole=True),
                    out_of_range("lr", self.lr, 0, 100, above=True),
                    out_of_range("momentum", self.momentum, 0, 1),
                    out_of_range("weight_decay", self.weight_decay, 0, 1),
                    out_of_range("lr_factor", self.lr_factor, 0, 100, above=True),
                    out_of_range("seed", self.seed, 0, 2**32 - 1, whole=True),
                    out_of_range("threads", self.threads, 0, THREADS_LIMIT, whole=True)]
        problems += [out_of_range(f"lr_steps[{i}]", f, 0, 1) for i, f in enumerate(self.lr_steps)]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("; ".join(problems))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a 0-based epoch."""
        drops = sum(1 for f in self.lr_steps if epoch >= round(f * self.epochs))
        return self.lr * self.lr_factor**drops

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        d["optimizer"] = "SGD"
        return d


@dataclass
class FitResult:
    """What ``fit`` returns: the model (best validation epoch's weights loaded) and its history."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    windows_seen: int = 0


def seed_everything(seed: int) -> None:
    """Seeds torch (CPU and CUDA); numpy randomness in this package goes through explicit Generators."""
    torch.manual_seed(seed)


def _as_xy(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and len(data) > 0:
        # A map-style dataset of (window, label) pairs (e.g. a torch Dataset): stacked once.
        pairs = [data[i] for i in range(len(data))]
        x = np.stack([np.asarray(p[0], dtype=np.float32) for p in pairs])
        y = np.asarray([int(p[1]) for p in pairs])
    else:
        raise DataError(
            f"training data must be (x, y), an object with .x/.y, or have epoch(); got {type(data).__name__}"
        )
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"expected x (n, samples) and y (n,), got shapes {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise DataError("no training windows: the data set is empty; check the data folder and the split")
    return x, y.astype(np.int64)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: np.ndarray,
    *,
    prepare: Prepare | None = None,
    batch_size: int = 512,
    scores: str = "logits",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(n, classes)`` and noise index ``(n,)`` of windows ``x (n, samples)``.

    ``model`` is an nn.Module or a TorchScript module in eval mode; ``scores`` what its first
    output holds (an artifact's ``ArtifactMeta.scores``).
    """
    probs, noise = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        if prepare is not None:
            xb = prepare(xb)
        logits, ni = model(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
        probs.append(to_probs(logits, scores).numpy())
        noise.append(ni.float().numpy())
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(noise)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, *, prepare: Prepare | None = None) -> float:
    """Share of windows whose arg-max class equals the label (model put in eval mode)."""
    was = model.training
    model.eval()
    p, _ = predict(model, x, prepare=prepare)
    model.train(was)
    return float(np.mean(p.argmax(1) == y)) if len(y) else float("nan")


def fit(
    model: nn.Module,
    train: Any,
    *,
    recipe: Recipe,
    val: Any = None,
    augment: Augment | None = None,
    prepare: Prepare | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
) -> FitResult:
    """Trains ``model`` in place and returns it with the best validation epoch's weights.

    Args:
        model: takes ``(batch, samples)`` and returns ``(logits, noise_index)``.
        train: see the module docstring.
        recipe: optimizer and schedule (seeded: the same inputs give the same model).
        val: ``(x, y)`` or an object with ``.x``/``.y``; without it the last epoch is kept.
        augment: per training batch, on the raw windows, before ``prepare``.
        prepare: per batch (training and validation), e.g. z-score normalization.
        checkpoint_dir: writes ``last.pt`` every epoch and ``best.pt`` at each new best
            (state dict, optimizer, epoch, recipe, plus ``checkpoint_extra``).
        progress: draw rich progress bars (on ``console``).
    """
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    seed_everything(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    val_xy = _as_xy(val) if val is not None else None
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)

    result = FitResult(model=model)
    best_state: dict[str, torch.Tensor] | None = None
    fixed = None if hasattr(train, "epoch") else _as_xy(train)
    n_per_epoch = len(fixed[1]) if fixed is not None else (len(train) if hasattr(train, "__len__") else 0)
    batches_per_epoch = max(1, -(-n_per_epoch // recipe.batch_size))
    t0 = time.perf_counter()

    bar = _Bar(progress, console, total=recipe.epochs * batches_per_epoch)
    with bar:
        for epoch in range(recipe.epochs):
            x, y = fixed if fixed is not None else _as_xy(train.epoch(epoch, rng))
            lr = recipe.lr_at(epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            order = rng.permutation(len(y))
            total_loss, correct, seen = 0.0, 0, 0
            for i in range(0, len(order), recipe.batch_size):
                idx = order[i : i + recipe.batch_size]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment(xb, yb, rng)
                if prepare is not None:
                    xb = prepare(xb)
                xt = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
                yt = torch.from_numpy(yb)
                logits, _ = model(xt)
                loss = loss_fn(logits, yt)
                value = float(loss.detach())
                if not math.isfinite(value):  # one step more and every weight is NaN, trained on without a word
                    raise DataError(
                        f"epoch {epoch + 1}, batch {i // recipe.batch_size + 1}: the loss is {value}; the training "
                        "windows hold NaN or infinite samples, or the learning rate (lr) is too high; nothing was saved"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += value * len(idx)
                correct += int((logits.argmax(1) == yt).sum())
                seen += len(idx)
                bar.advance(f"epoch {epoch + 1}/{recipe.epochs} lr {lr:g} loss {total_loss / seen:.3f}")
            result.windows_seen += seen
            row = {"epoch": epoch + 1, "lr": lr, "loss": total_loss / seen, "train_accuracy": correct / seen}
            if val_xy is not None:
                row["val_accuracy"] = accuracy(model, *val_xy, prepare=prepare)
            row["seconds"] = time.perf_counter() - t0
            result.history.append(row)
            bar.note(row)
            score = row.get("val_accuracy", row["train_accuracy"])
            # ">=" prefers later epochs on ties: they ran at a lower learning rate.
            if best_state is None or score >= result.best_val_accuracy:
                result.best_val_accuracy = score
                result.best_epoch = epoch + 1
                best_state = copy.deepcopy(model.state_dict())
                if ckpt is not None:
                    _save_ckpt(ckpt / "best.pt", model, opt, epoch, recipe, row, checkpoint_extra)
            if ckpt is not None:
                _save_ckpt(ckpt / "last.pt", model, opt, epoch, recipe, row, checkpoint_extra)
    if val_xy is None:
        result.best_val_accuracy = float("nan")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def _save_ckpt(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    recipe: Recipe,
    row: dict[str, float],
    extra: dict[str, Any] | None,
) -> None:
    state = {
        "model_state": model.state_dict(),
        "optimizer_state": opt.state_dict(),
        "epoch": epoch + 1,
        "recipe": plain(recipe.to_dict()),
        "metrics": plain(row),
        **plain(extra or {}),
    }
    save_torch(state, path)


def save_torch(obj: Any, path: Path) -> Path:
    """``torch.save`` of ``obj`` to ``path`` whole or not at all: a full disk is a WriteError
    naming the file (torch's own writer raises a RuntimeError about zip offsets and leaves half
    a file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_atomic(path, buf.getvalue())


def plain(obj: Any) -> Any:
    """``obj`` as the plain values ``torch.load(weights_only=True)`` reads back (dicts, lists,
    str, int, float, bool, None; tuples become lists, numpy scalars Python numbers), so no
    checkpoint of ours ever needs unpickling to be read."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)):
        return obj
    return str(obj)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint's dict, read with ``torch.load(weights_only=True)``: tensors and plain
    values only. A file that holds pickled Python objects (which could run code when loaded) is
    refused with ``ArtifactError``, never unpickled."""
    p = Path(path)
    if _torchscript_archive(p):  # torch.load would hand it to torch.jit.load with a page of advice
        raise ArtifactError(
            f"{p}: an exported model (a TorchScript artifact), not a training checkpoint; it runs as it is "
            f"(drsn-stream --model {p}); export takes the best.pt or last.pt that drsn-stream train wrote"
        )
    zipped = _zip_like(p)
    if not zipped and _first_byte(p) != b"\x80":  # torch's older format is a pickle: protocol byte first
        raise ArtifactError(f"{p}: not a training checkpoint (neither a zip archive nor torch's older format: "
                            "another kind of file, or not a whole one); give the best.pt or last.pt that "
                            "drsn-stream train wrote")
    bad = damaged_member(p) if zipped else None  # (an old, non-zip torch.save file: unchecked)
    if bad is not None:  # torch.load would read the changed weights without a word
        raise ArtifactError(f"{p}: damaged: {bad} does not match the checksum it was saved with (a bad copy or "
                            "disk?); use another checkpoint, or train again")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(
            f"{p}: refused: the checkpoint holds pickled Python objects, not only tensors and plain values "
            f"({first[:160]}); drsn-stream never unpickles a file; export from a checkpoint that "
            "drsn-stream train wrote"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ArtifactError(f"{p}: not a readable training checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                            "give the best.pt or last.pt that drsn-stream train wrote") from None
    if not isinstance(ck, dict):
        raise ArtifactError(f"{p}: not a drsn-stream training checkpoint (no model_state/model_config/meta)")
    return ck


def _first_byte(p: Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(1)
    except OSError:
        return b""  # torch.load says what is wrong with the path


def _zip_like(p: Path) -> bool:
    """Whether ``p`` looks like a zip archive, a damaged one included (``zipfile.is_zipfile``
    raises BadZipFile for some: their end record says more disks)."""
    try:
        return zipfile.is_zipfile(p)
    except zipfile.BadZipFile:
        return True


def _torchscript_archive(p: Path) -> bool:
    """Whether ``p`` is a zip archive as ``torch.jit.save`` writes them (its code and constants)."""
    try:
        if not zipfile.is_zipfile(p):
            return False
        with zipfile.ZipFile(p) as z:
            return torchscript_members(z.namelist())
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a damaged directory (a name that is not UTF-8, ...): not one
        return False


class _Bar:
    """A rich progress bar over all batches of the run, or nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool, console: Any, *, total: int) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task("training", total=total)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def advance(self, description: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=description)

    def note(self, row: dict[str, float]) -> None:
        if self.progress is not None:
            val = f"  val {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
            self.progress.console.print(
                f"epoch {row['epoch']:>3}  lr {row['lr']:<6g} loss {row['loss']:.4f}  "
                f"train {row['train_accuracy']:.4f}{val}  {row['seconds']:.0f} s"
            )
