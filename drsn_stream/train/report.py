"""The end of a training run, the same for a CWRU run (``run``) and a user-data run (``finetune``):
the fit's facts in the metadata, the exported artifact(s) and ``report.json``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from drsn_stream.config import write_atomic
from drsn_stream.models import save_artifact
from drsn_stream.train.loop import FitResult, load_checkpoint, plain, save_torch


def record_fit(meta: dict[str, Any], res: FitResult) -> None:
    """Adds what the fit did (epochs, best epoch, time, machine) to ``meta["training"]``."""
    meta["training"].update(
        epochs_run=len(res.history),
        best_epoch=res.best_epoch,
        # NaN (a fit without validation data) is not valid JSON: recorded as null.
        best_val_accuracy=None if np.isnan(res.best_val_accuracy) else round(res.best_val_accuracy, 5),
        seconds=round(res.seconds, 1),
        windows_seen=res.windows_seen,
        threads=torch.get_num_threads(),
        machine=f"{platform.machine()} {os.cpu_count()} cpu(s), torch {torch.__version__}",
    )


def export_run(
    model: nn.Module,
    out: Path,
    name: str,
    meta: dict[str, Any],
    *,
    artifact: str | Path | None = None,
    validation: np.ndarray | None = None,
) -> tuple[Path, str | None]:
    """Writes ``out/<name>.pt`` and, when asked, ``artifact``; returns both paths (the second None
    when not asked). ``best.pt`` gets the final metadata too, so `export` from it reproduces the
    artifact exactly."""
    artifact_path = save_artifact(model, out / f"{name}.pt", meta, validation=validation, probs=True)
    ck = load_checkpoint(out / "best.pt")
    ck["meta"] = plain(meta)
    save_torch(ck, out / "best.pt")
    shipped = None
    if artifact is not None:
        shipped = str(save_artifact(model, artifact, meta, validation=validation, probs=True))
    return artifact_path, shipped


def write_report(
    out: Path,
    head: dict[str, Any],
    *,
    meta: dict[str, Any],
    ev: dict[str, Any],
    res: FitResult,
    eval_seconds: float,
    artifact_path: Path,
    shipped: str | None,
) -> dict[str, Any]:
    """``head`` (what the run was) followed by its results, written to ``out/report.json`` and returned."""
    report = {
        **head,
        "accuracy": meta["accuracy"],
        "results": ev["results"],
        "confusion": ev["confusion"],
        "history": res.history,
        "best_epoch": res.best_epoch,
        "train_seconds": round(res.seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "artifact": str(artifact_path),
        "shipped": shipped,
    }
    write_atomic(out / "report.json", json.dumps(report, indent=1).encode("utf-8"))
    return report
