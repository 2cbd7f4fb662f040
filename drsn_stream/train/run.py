"""One training run from a RunConfig: CWRU data -> fit -> held-out evaluation -> artifact + report.

Outputs in ``out_dir`` (``runs/<name>/`` by default): ``best.pt`` and ``last.pt`` checkpoints,
``<name>.pt`` (the TorchScript artifact), ``report.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drsn_stream.dsp.normalize import normalize
from drsn_stream.models import create_model, model_config
from drsn_stream.train.config import RunConfig
from drsn_stream.train.cwru import RandomWindows, Recording, load_set
from drsn_stream.train.evaluate import evaluate, part_windows, summary
from drsn_stream.train.loop import FitResult, fit
from drsn_stream.train.report import export_run, record_fit, write_report

VAL_SNR_DB = 0.0  # noisy validation copies are at 0 dB, the middle of the plant conditions we target


def _files(recs: list[Recording]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in recs:
        out.setdefault(r.label, []).append(r.info.name)
    return out


def load_data(cfg: RunConfig, data: str | Path | None) -> tuple[list[Recording], list[Recording]]:
    """(train/val recordings, test recordings); the same list when the test loads are the training loads."""
    d = cfg.data
    common = dict(label_by=d.label_by, channel=d.channel, sample_rate=d.sample_rate)
    train_recs = load_set(data, d.labels, loads=d.loads, **common)
    if d.test_loads is None or tuple(d.test_loads) == tuple(d.loads):
        return train_recs, train_recs
    return train_recs, load_set(data, d.labels, loads=d.test_loads, **common)


def validation_set(cfg: RunConfig, recs: list[Recording]) -> tuple[np.ndarray, np.ndarray]:
    """Clean validation windows plus, when training with noise, one seeded noisy copy per kind at 0 dB,
    so model selection rewards robustness, not only clean accuracy."""
    d = cfg.data
    kinds = ["none"] + (list(cfg.augment.kinds) if cfg.augment is not None else [])
    xs, ys = [], []
    for kind in kinds:
        x, y = part_windows(
            recs,
            d.labels,
            d.val_part,
            window=d.window,
            hop=d.hop,
            kind=kind,
            snr_db=VAL_SNR_DB,
            seed=cfg.recipe.seed + 7,
        )
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def base_meta(cfg: RunConfig, train_recs: list[Recording], test_recs: list[Recording]) -> dict[str, Any]:
    """Artifact metadata known before training (accuracy and timings are added after)."""
    d = cfg.data
    mc = model_config(cfg.model, len(d.labels), **cfg.model_overrides)
    return {
        "name": cfg.name,
        "model": cfg.model,
        "labels": list(d.labels),
        "sample_rate": d.sample_rate,
        "window": d.window,
        "hop": d.hop,
        "input": {"kind": "raw"},
        "normalization": {"kind": d.normalization},
        "model_config": mc.to_dict(),
        "description": cfg.description,
        "training": {
            "dataset": "cwru",
            "credit": "Case Western Reserve University Bearing Data Center",
            "data": {
                "channel": d.channel,
                "label_by": d.label_by,
                "loads": list(d.loads),
                "test_loads": list(d.test_loads) if d.test_loads is not None else list(d.loads),
                "files": _files(train_recs),
                "test_files": _files(test_recs),
                "source_rates": {
                    r.info.name: r.source_rate for r in {id(r): r for r in train_recs + test_recs}.values()
                },
                "resampling": f"scipy.signal.resample_poly to {d.sample_rate} Hz where the file rate differs",
            },
            "split": {
                **d.split,
                "by": "time inside each recording, before windowing (fractions of its length, ceil)",
                "held_out": "test",
                "selection": "val",
            },
            "windows_per_class_per_epoch": d.windows_per_class,
            "window_offsets": "random every epoch",
            "recipe": cfg.recipe.to_dict(),
            "augment": cfg.augment.to_dict() if cfg.augment is not None else None,
        },
    }


def train_run(
    cfg: RunConfig,
    *,
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    artifact: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Trains, evaluates on the held-out part and exports. Returns the report (also in report.json)."""
    d = cfg.data
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    train_recs, test_recs = load_data(cfg, data)
    meta = base_meta(cfg, train_recs, test_recs)

    train = RandomWindows(train_recs, d.labels, d.train_part, window=d.window, per_class=d.windows_per_class)
    val = validation_set(cfg, train_recs)
    spec = {"kind": d.normalization}

    def prepare(x: np.ndarray) -> np.ndarray:
        return normalize(x, spec)

    torch.manual_seed(cfg.recipe.seed)
    model = create_model(cfg.model, len(d.labels), **cfg.model_overrides)
    extra = {"model_name": cfg.model, "model_config": meta["model_config"], "meta": meta}
    res: FitResult = fit(
        model,
        train,
        recipe=cfg.recipe,
        val=val,
        augment=cfg.augment,
        prepare=prepare,
        checkpoint_dir=out,
        checkpoint_extra=extra,
        progress=progress,
        console=console,
    )
    t_eval = time.perf_counter()
    ev = evaluate(
        model,
        test_recs,
        d.labels,
        d.test_part,
        window=d.window,
        hop=d.hop,
        normalization=spec,
        kinds=cfg.eval.kinds,
        snrs=cfg.eval.snr_db,
        seed=cfg.eval.seed,
    )
    eval_seconds = time.perf_counter() - t_eval
    record_fit(meta, res)
    meta["accuracy"] = {
        "split": "test",
        "part": list(d.test_part),
        "test_loads": meta["training"]["data"]["test_loads"],
        "eval_seed": cfg.eval.seed,
        **summary(ev["results"]),
        "n": ev["results"][0]["n"],
    }
    artifact_path, shipped = export_run(model, out, cfg.name, meta, artifact=artifact)
    head = {"name": cfg.name, "model": cfg.model, "labels": list(d.labels), "split": "test"}
    return write_report(out, head, meta=meta, ev=ev, res=res, eval_seconds=eval_seconds,
                        artifact_path=artifact_path, shipped=shipped)
