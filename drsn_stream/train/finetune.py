"""Training on your own recordings: fine-tune a shipped network (new head) or train one from scratch.

    drsn-stream train --data DIR|MANIFEST [--labels a,b,c] --from bearing-cwru|scratch|PATH.pt --artifact my.pt

The data is read and split by ``userdata`` (a folder per label or a manifest; by recording or by time),
a label with too little data stops the run before training, and the run writes the same checkpoints,
``report.json`` and artifact as a CWRU run (``run.train_run``), with the split in the metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from drsn_stream.dsp.normalize import normalize
from drsn_stream.errors import ArtifactError, ConfigError, DataError
from drsn_stream.models import build_from_config, create_model, load_artifact, model_config, read_meta
from drsn_stream.models.outputs import network_of
from drsn_stream.train.augment import NoiseAugment
from drsn_stream.train.cwru import RandomWindows
from drsn_stream.train.evaluate import evaluate, part_windows, summary
from drsn_stream.train.loop import Recipe, fit
from drsn_stream.train.report import export_run, record_fit, write_report
from drsn_stream.train.userdata import (
    Clip,
    Split,
    UserData,
    check_amounts,
    describe,
    load_user_data,
    split_clips,
)

SCRATCH = "scratch"
WHOLE = (0.0, 1.0)  # every segment is already cut to its part: windows come from all of it
VALIDATION_PER_CONDITION = 256  # as many as the shipped artifacts store (tools/attach_validation.py)
EVAL_KINDS = ("gaussian", "laplacian", "pink")
VAL_PER_CLASS = 128  # validation windows per label and noise condition


@dataclass(frozen=True)
class Layout:
    """What the data must look like for the network: rate (Hz), window and hop (samples), normalization."""

    sample_rate: int = 12000
    window: int = 2048
    hop: int = 512
    normalization: str = "zscore"


@dataclass(frozen=True)
class UserRun:
    """Options of one run on user data (the CLI's flags). ``None`` epochs/lr take the defaults of the start."""

    base: str = "bearing-cwru"  # a built-in artifact, a .pt path, or "scratch"
    model: str = "drsn_cw_paper"  # the architecture of a scratch run
    freeze: int = 0  # stages (with the stem) whose weights stay as the base trained them
    epochs: int | None = None
    lr: float | None = None
    windows_per_class: int = 256
    batch_size: int = 128
    seed: int = 0
    threads: int = 0
    augment: bool = True
    split: str = "auto"
    parts: dict[str, tuple[float, float]] = field(default_factory=lambda: {})
    min_train_windows: int = 8
    name: str = ""
    layout: Layout = Layout()  # of a scratch run; a fine-tuned one takes its base's

    def recipe(self) -> Recipe:
        fine = self.base != SCRATCH
        return Recipe(
            epochs=self.epochs or (10 if fine else 30),
            batch_size=self.batch_size,
            lr=self.lr or (0.01 if fine else 0.1),
            seed=self.seed,
            threads=self.threads,
        )


# ---------------------------------------------------------------------------- the network


def layout_of(run: UserRun) -> Layout:
    """The rate, window, hop and normalization the run's network takes (read from its base)."""
    if run.base == SCRATCH:
        return run.layout
    meta = read_meta(run.base)
    _fine_tunable(meta)  # before the data is read, not after
    return Layout(meta.sample_rate, meta.window, meta.hop, meta.normalization.get("kind", "zscore"))


def _fine_tunable(meta: Any) -> None:
    """An ArtifactError unless ``meta`` is a single raw-input network with its model config."""
    mc = dict(meta.model_config)
    if not mc or int(mc.get("ensemble", 1) or 1) > 1:
        raise ArtifactError(
            f"{meta.source}: fine-tuning needs a single network with its model_config; this artifact is "
            f"{'an ensemble' if mc else 'without one'}; start from bearing-cwru or --from scratch"
        )
    if meta.input.get("kind", "raw") != "raw":
        raise ArtifactError(f"{meta.source}: input kind {meta.input.get('kind')!r}; fine-tuning takes raw-input models")


def start_model(run: UserRun, labels: list[str]) -> tuple[nn.Module, Layout, dict[str, Any]]:
    """The network to train, the data layout it needs and what to record about where it came from.

    From an artifact: its weights, with a new classifier for ``labels`` (the old one's rows are kept
    for labels of the same name) and the first ``run.freeze`` stages frozen.
    """
    if run.base == SCRATCH:
        if run.freeze:
            raise ConfigError("--freeze keeps pretrained stages; a --from scratch run has none")
        torch.manual_seed(run.seed)
        model = create_model(run.model, len(labels))
        mc = model_config(run.model, len(labels)).to_dict()
        return model, run.layout, {"from": SCRATCH, "model": run.model, "model_config": mc}
    module, meta = load_artifact(run.base)
    _fine_tunable(meta)
    mc = dict(meta.model_config)
    model = build_from_config(mc)
    model.load_state_dict(network_of(module).state_dict())  # the network inside a Probabilities wrapper
    torch.manual_seed(run.seed)
    old = model.fc
    model.fc = nn.Linear(old.in_features, len(labels))
    with torch.no_grad():
        for i, lab in enumerate(labels):
            if lab in meta.labels:  # a class the base knows keeps its weights: a head start, nothing more
                j = meta.labels.index(lab)
                model.fc.weight[i] = old.weight[j]
                model.fc.bias[i] = old.bias[j]
    frozen = _freeze(model, mc, run.freeze)
    mc["num_classes"] = len(labels)
    layout = Layout(meta.sample_rate, meta.window, meta.hop, meta.normalization.get("kind", "zscore"))
    origin = {
        "from": meta.name,
        "source": Path(meta.source).name,
        "model": meta.model,
        "model_config": mc,
        "base_labels": list(meta.labels),
        "base_augment": (meta.training or {}).get("augment"),
        "frozen": frozen,
    }
    return model, layout, origin


def _freeze(model: nn.Module, mc: dict[str, Any], stages: int) -> list[str]:
    """Freezes the stem and the units of the first ``stages`` stages; returns their module names.

    Their batch-norm statistics are frozen too (momentum 0): a few minutes of one machine should
    not overwrite what the base learned from all of its data.
    """
    n_stages = len(mc.get("stages", ()))
    if not 0 <= stages <= n_stages:
        raise ConfigError(f"--freeze must be 0..{n_stages} (stages of this network), got {stages}")
    if stages == 0:
        return []
    n_units = sum(int(s[1]) for s in mc["stages"][:stages])
    names = ["stem"] + [f"units.{i}" for i in range(n_units)]
    for name in names:
        part = model.get_submodule(name)
        for p in part.parameters():
            p.requires_grad_(False)
        for m in part.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    return names


# ---------------------------------------------------------------------------- the artifact hook


def _features(model: nn.Module, x: np.ndarray, spec: dict[str, Any], batch: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model.forward_features(torch.from_numpy(normalize(x[i : i + batch], spec)))[2].numpy())
    return np.concatenate(out)


def _fit_unknown(model: nn.Module, train: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
                 labels: list[str], meta: dict[str, Any], *, held_from_training: bool) -> None:
    """Adds ``unknown`` and ``outputs.features`` to ``meta`` where the network has pooled features."""
    from drsn_stream.models.ood import UnknownDetector

    if not hasattr(model, "forward_features") or len(train[0]) == 0 or len(held[0]) == 0:
        return
    spec = meta["normalization"]
    det = UnknownDetector.fit(_features(model, train[0], spec), train[1], len(labels))
    # Held windows from the training part itself sit closer to the class means than new data
    # would: a wider margin keeps in-distribution refusals near the shipped model's rate.
    margin = 1.5 if held_from_training else 1.0
    det.calibrate(_features(model, held[0], spec), percentile=99.9, margin=margin)
    det.calibration.update({"data": "the user's training part, clean windows", "tool": "drsn-stream train"})
    meta["unknown"] = det.to_dict()
    meta["outputs"] = {**meta.get("outputs", {}), "features": det.features}


def finalize_artifact(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    held: tuple[np.ndarray, np.ndarray],
    labels: list[str],
    meta: dict[str, Any],
    *,
    held_from_training: bool = False,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """What a user-trained artifact carries beside its weights: ``(meta, validation windows)``.

    The one place where a user model gets what a shipped one has: a sample of normalized
    validation windows (clean, Gaussian and pink noise at 0 dB), as ``tools/attach_validation.py``
    stores for the shipped artifacts (the GPU runner's fp16 check), and the "unknown" statistics
    (``models/ood.py``: class Gaussians of the pooled features, fitted on ``train``, threshold
    calibrated on ``held``, as ``tools/fit_unknown.py`` does for the shipped model), so a user
    model refuses to guess as a shipped one does.

    Args:
        model: the trained network, eval mode.
        train: raw clean training windows ``(n, window)`` and their label indices ``(n,)``.
        held: the same of the validation part (of the training part when the run has none).
        labels: the model's labels; meta: the artifact metadata (updated and returned).
        held_from_training: ``held`` comes from the training part (the run has no validation part).
    """
    from drsn_stream.dsp.noise import add_noise

    _fit_unknown(model, train, held, labels, meta, held_from_training=held_from_training)
    windows = held[0]
    if len(windows) == 0:
        return meta, None
    rng = np.random.default_rng(7)
    spec = meta["normalization"]
    pick = rng.choice(len(windows), size=min(VALIDATION_PER_CONDITION, len(windows)), replace=False)
    clean = windows[pick]
    parts = [clean]
    for kind in ("gaussian", "pink"):
        parts.append(np.stack([add_noise(w, 0.0, kind, rng) for w in clean]).astype(np.float32))
    validation = normalize(np.concatenate(parts), spec).astype(np.float32)
    meta["training"]["validation_windows"] = {
        "part": meta["training"]["split"].get("selection") or "train",
        "conditions": ["clean", "gaussian 0 dB", "pink 0 dB"],
        "count": int(len(validation)),
    }
    return meta, validation


# ---------------------------------------------------------------------------- a run


def _augment(run: UserRun, origin: dict[str, Any]) -> NoiseAugment | None:
    if not run.augment:
        return None
    base = origin.get("base_augment")
    return NoiseAugment.from_dict({k: v for k, v in base.items() if k != "reference"}) if base else NoiseAugment()


def _windows(segs: list[Clip], labels: list[str], layout: Layout, kinds: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows, clean and per noise kind at 0 dB, at most ``VAL_PER_CLASS`` per label and kind
    (seeded): the validation runs every epoch, and minutes of recordings would cost more than training."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for kind in kinds:
        x, y = part_windows(segs, labels, WHOLE, window=layout.window, hop=layout.hop, kind=kind, snr_db=0.0, seed=seed)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            pick = np.sort(rng.choice(idx, size=min(VAL_PER_CLASS, idx.size), replace=False))
            xs.append(x[pick])
            ys.append(y[pick])
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class Trained:
    """What ``fit_split`` returns: the trained network and everything about how it was trained."""

    model: nn.Module
    layout: Layout
    origin: dict[str, Any]
    recipe: Recipe
    augment: NoiseAugment | None
    meta: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # loop.FitResult


def fit_split(
    run: UserRun,
    labels: list[str],
    split: Split,
    *,
    meta_for: Any = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
) -> Trained:
    """Trains the run's network on ``split.segments["train"]`` (model selection on ``"val"`` when there
    is one). ``meta_for(trained) -> dict`` gives the metadata the checkpoints carry."""
    model, layout, origin = start_model(run, labels)
    t = Trained(model, layout, origin, run.recipe(), _augment(run, origin))
    spec = {"kind": layout.normalization}
    train = RandomWindows(split.segments["train"], labels, WHOLE, window=layout.window, per_class=run.windows_per_class)
    kinds = ["none"] + (list(t.augment.kinds) if t.augment is not None else [])
    val = _windows(split.segments["val"], labels, layout, kinds, run.seed + 7) if split.segments.get("val") else None
    if meta_for is not None:
        t.meta = meta_for(t)

    def prepare(x: np.ndarray) -> np.ndarray:
        return normalize(x, spec)

    extra = {"model_name": origin["model"], "model_config": origin["model_config"], "meta": t.meta}
    t.result = fit(model, train, recipe=t.recipe, val=val, augment=t.augment, prepare=prepare,
                   checkpoint_dir=checkpoint_dir, checkpoint_extra=extra, progress=progress, console=console)
    return t


def prepare_data(
    data_path: str | Path,
    run: UserRun,
    layout: Layout,
    *,
    labels: list[str] | None = None,
    default_rate: float | None = None,
    channel: str | None = None,
    on_bad: str = "fail",
) -> tuple[UserData, Split]:
    """Reads and splits the dataset; DataError (every label with too little data) before any training."""
    data = load_user_data(
        data_path, sample_rate=layout.sample_rate, labels=labels, default_rate=default_rate,
        channel=channel, on_bad=on_bad,
    )
    if len(data.labels) < 2:
        raise DataError(f"{data.root}: found label(s) {', '.join(data.labels) or 'none'}; a classifier needs at least two")
    empty = [lab for lab in data.labels if not any(c.label == lab for c in data.clips)]
    if empty:
        raise DataError(f"no readable recording left for label(s) {', '.join(empty)}; fix or replace the bad files above")
    split = split_clips(data.clips, data.labels, by=run.split, parts=run.parts or None, seed=run.seed)
    short = check_amounts(split, data.labels, window=layout.window, min_train_windows=run.min_train_windows)
    if short:
        raise DataError("too little data, nothing trained:\n  " + "\n  ".join(short))
    return data, split


def train_user(
    data_path: str | Path,
    run: UserRun,
    *,
    labels: list[str] | None = None,
    default_rate: float | None = None,
    channel: str | None = None,
    on_bad: str = "fail",
    out_dir: str | Path | None = None,
    artifact: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Reads, splits, trains, evaluates on the held-out part and exports. Returns the report."""
    say = console.print if console is not None else (lambda *a, **k: None)
    data, split = prepare_data(
        data_path, run, layout_of(run), labels=labels, default_rate=default_rate, channel=channel, on_bad=on_bad
    )
    labels = data.labels
    for line in data.problems:
        say(f"[yellow]skipped:[/yellow] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
    for line in describe(data, split):  # labels and file names are the user's: "[x]" is text, not markup
        say(line, markup=False, highlight=False)

    name = run.name or (Path(artifact).stem if artifact is not None else "user-model")
    out = Path(out_dir) if out_dir is not None else Path("runs") / name
    out.mkdir(parents=True, exist_ok=True)

    def meta_for(t: Trained) -> dict[str, Any]:
        return _meta(name, data, split, run, t.layout, t.origin, t.recipe, t.augment)

    t = fit_split(run, labels, split, meta_for=meta_for, checkpoint_dir=out, progress=progress, console=console)
    model, layout, meta, res = t.model, t.layout, t.meta, t.result
    spec = {"kind": layout.normalization}
    t_eval = time.perf_counter()
    ev = evaluate(model, split.segments["test"], labels, WHOLE, window=layout.window, hop=layout.hop,
                  normalization=spec, kinds=list(EVAL_KINDS), snrs=[0.0], seed=1234)
    eval_seconds = time.perf_counter() - t_eval
    record_fit(meta, res)
    meta["accuracy"] = {"split": "test", "eval_seed": 1234, **summary(ev["results"]), "n": ev["results"][0]["n"]}
    train_xy = part_windows(split.segments["train"], labels, WHOLE, window=layout.window, hop=layout.hop)
    held_segments = split.segments.get("val") or split.segments["train"]
    held_xy = part_windows(held_segments, labels, WHOLE, window=layout.window, hop=layout.hop)
    meta, validation = finalize_artifact(model, train_xy, held_xy, labels, meta,
                                         held_from_training=not split.segments.get("val"))
    artifact_path, shipped = export_run(model, out, name, meta, artifact=artifact, validation=validation)
    head = {
        "name": name,
        "model": t.origin["model"],
        "from": t.origin["from"],
        "labels": labels,
        "split": "test",
        "split_by": split.by,
        "skipped": data.problems,
    }
    return write_report(out, head, meta=meta, ev=ev, res=res, eval_seconds=eval_seconds,
                        artifact_path=artifact_path, shipped=shipped)


def _meta(
    name: str,
    data: UserData,
    split: Split,
    run: UserRun,
    layout: Layout,
    origin: dict[str, Any],
    recipe: Recipe,
    augment: NoiseAugment | None,
) -> dict[str, Any]:
    files: dict[str, list[str]] = {}
    for c in data.clips:
        files.setdefault(c.label, []).append(c.name)
    base = origin["from"]
    desc = (f"fine-tuned from {base} on " if base != SCRATCH else "trained from scratch on ") + (
        f"{len(data.clips)} user recording(s) of {', '.join(data.labels)}"
    )
    return {
        "name": name,
        "model": origin["model"],
        "labels": list(data.labels),
        "sample_rate": layout.sample_rate,
        "window": layout.window,
        "hop": layout.hop,
        "input": {"kind": "raw"},
        "normalization": {"kind": layout.normalization},
        "model_config": origin["model_config"],
        "description": desc,
        "training": {
            "dataset": "user",
            "data": {
                "path": str(data.root.resolve()),
                "layout": data.layout,
                "files": files,
                "source_rates": {c.name: c.source_rate for c in data.clips},
                "skipped": list(data.problems),
                "resampling": f"scipy.signal.resample_poly to {layout.sample_rate} Hz "
                "(the ratio of drsn_stream.dsp.resample) where the file rate differs",
            },
            "split": {
                "by": dict(split.by),
                "parts": {r: list(b) for r, b in split.parts.items()},
                "rule": "a label with >= 3 recordings: whole recordings per role; else every recording cut in "
                "time before windowing; a recording is never in two roles unless cut in time",
                "segments": split.table,
                "held_out": "test",
                "selection": "val" if split.segments.get("val") else None,
            },
            "start": {k: v for k, v in origin.items() if k not in ("model_config", "base_augment")},
            "windows_per_class_per_epoch": run.windows_per_class,
            "window_offsets": "random every epoch",
            "recipe": recipe.to_dict(),
            "augment": augment.to_dict() if augment is not None else None,
        },
    }


# ---------------------------------------------------------------------------- eval


def evaluate_user(
    model: str | Path,
    data_path: str | Path | None,
    *,
    kinds: list[str] | None = None,
    snrs: list[float] | None = None,
    split: str | None = None,
    seed: int = 1234,
    labels: list[str] | None = None,
    default_rate: float | None = None,
    channel: str | None = None,
    on_bad: str = "fail",
) -> dict[str, Any]:
    """Accuracy of an artifact on user data (``eval``'s document, as ``cli.evaluate_artifact`` returns).

    A model trained on this dataset is measured on the part its metadata held out (``split``: test or
    val); any other model on every window of every file of its labels (it never saw them).
    """
    from drsn_stream.models import load_artifact as _load
    from drsn_stream.train.userdata import segments_from_table

    module, meta = _load(model)
    training = meta.training or {}
    mine = training.get("dataset") == "user"
    path = data_path if data_path is not None else (training.get("data", {}).get("path") if mine else None)
    if path is None:
        raise ConfigError("give --data: a folder per label or a manifest (docs/user-data.md)")
    recorded = training.get("data", {}).get("files") if mine else None
    only = {n.split("[")[0] for names in recorded.values() for n in names} if recorded else None
    data = load_user_data(path, sample_rate=meta.sample_rate, labels=labels, default_rate=default_rate,
                          channel=channel, on_bad=on_bad, only=only)
    foreign = sorted({c.label for c in data.clips} - set(meta.labels))
    if foreign:
        raise DataError(f"label(s) {', '.join(foreign)} of the data are not labels of {meta.name} "
                        f"({', '.join(meta.labels)}); leave them out with a manifest")
    if mine:
        role = split or training["split"].get("held_out", "test")
        if role not in ("test", "val"):
            raise ConfigError(f"--split must be test or val, got {role!r}")
        segs = segments_from_table(data.clips, training["split"]["segments"], role)
        part = role
    else:
        segs, part = data.clips, "all"
    if not segs:
        raise DataError(f"no recordings in the {part} part of {path}")
    # the network judges whole windows: a shorter recording has none, and a label of only such
    # recordings would have no row in the results without a word
    short = [c for c in segs if c.signal.size < meta.window]
    if short:
        what = (f"shorter than one window ({meta.window} samples = {meta.window / meta.sample_rate:g} s at "
                f"{meta.sample_rate:g} Hz)")
        segs = [c for c in segs if c.signal.size >= meta.window]
        if not segs:
            where = f"of {path}" if part == "all" else f"in the {part} part of {path}"
            raise DataError(f"every recording {where} is {what}: "
                            f"{', '.join(sorted(c.name for c in short)[:5])}{', ...' if len(short) > 5 else ''}")
        data.problems = [*data.problems, *(f"{c.name}: {what}, not measured" for c in short)]
    kinds = kinds or []
    ev = evaluate(module, segs, meta.labels, WHOLE, window=meta.window, hop=meta.hop,
                  normalization=meta.normalization, kinds=kinds,
                  snrs=snrs if snrs is not None else ([0.0] if kinds else []), seed=seed, scores=meta.scores)
    return {
        "model": meta.name,
        "artifact": meta.source,
        "network": meta.model,
        "split": part,
        "part": sorted({c.name for c in segs}),
        "labels": meta.labels,
        "seed": seed,
        "skipped": data.problems,
        "results": ev["results"],
        "confusion": ev["confusion"],
    }
