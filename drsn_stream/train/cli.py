"""The ``train``, ``eval`` and ``export`` subcommands.

    drsn-stream train --config configs/bearing-cwru.toml [--data ../shared/data/cwru] [--artifact OUT.pt]
    drsn-stream eval --model bearing-cwru --data ../shared/data/cwru [--noise gaussian,pink] [--snr -5:5] [--json]
    drsn-stream export --checkpoint runs/bearing-cwru/best.pt --out bearing-cwru.pt
    drsn-stream export --triton models/ --model bearing-cwru [--max-batch-size 256] [--gpu]

Until ``drsn_stream/cli.py`` registers them: ``python -m drsn_stream.train.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from drsn_stream.errors import ArtifactError, ConfigError, DataError, DrsnStreamError

# ---------------------------------------------------------------------------- train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="training config (configs/<name>.toml)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of CWRU .mat files (default: $DRSN_DATA or ../shared/data)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>)")
    parser.add_argument("--artifact", type=Path, default=None, help="also write the exported artifact here")
    parser.add_argument("--epochs", type=int, default=None, help="override [train] epochs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from drsn_stream.train.config import load_config
    from drsn_stream.train.run import train_run

    console = Console(stderr=True)
    try:
        cfg = load_config(args.config)
        if args.epochs is not None:
            cfg = replace(cfg, recipe=replace(cfg.recipe, epochs=args.epochs))
        report = train_run(
            cfg,
            data=args.data,
            out_dir=args.out,
            artifact=args.artifact,
            progress=not args.quiet,
            console=console,
        )
    except DrsnStreamError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    out = Console()
    out.print(
        _accuracy_table(report["results"], title=f"{report['name']} ({report['model']}) - held-out test part")
    )
    out.print(_confusion_table(report["confusion"], report["labels"]))
    out.print(
        f"best epoch {report['best_epoch']}, training {report['train_seconds']:.0f} s; "
        f"artifact {report['artifact']}" + (f", shipped {report['shipped']}" if report["shipped"] else "")
    )
    return 0


# ---------------------------------------------------------------------------- eval


# argparse takes "-5:5" and "-5,0,5" for option flags; widening its negative-number pattern (a
# private attribute, stable since Python 3.2) lets `--snr -5:5` work as users type it.
_SNR_LIKE = re.compile(r"^-\d+([.:,]-?\d*)*$|^-\d*\.\d+$")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = _SNR_LIKE  # type: ignore[attr-defined]
    parser.add_argument(
        "--model", required=True, help="built-in artifact name (bearing-cwru) or path of a .pt"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of CWRU .mat files (default: $DRSN_DATA or ../shared/data)",
    )
    parser.add_argument("--noise", default="", help="comma-separated noise kinds: gaussian,laplacian,pink")
    parser.add_argument(
        "--snr", default=None, help="SNRs in dB: a range a:b of whole dB (-5:5) or a list (-5,0,5); default 0"
    )
    parser.add_argument(
        "--split", default=None, help="time part to evaluate: test (default, the held-out part) or val"
    )
    parser.add_argument("--seed", type=int, default=1234, help="noise seed")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def evaluate_artifact(
    model: str | Path,
    *,
    data: str | Path | None = None,
    kinds: list[str] | None = None,
    snrs: list[float] | None = None,
    split: str | None = None,
    seed: int = 1234,
) -> dict[str, Any]:
    """Accuracy of an artifact on its own held-out split (read from its metadata)."""
    from drsn_stream.dsp.noise import NOISE_KINDS
    from drsn_stream.models import load_artifact
    from drsn_stream.train.cwru import load_set
    from drsn_stream.train.evaluate import evaluate

    module, meta = load_artifact(model)
    training = meta.training or {}
    if training.get("dataset") != "cwru" or "split" not in training:
        raise ArtifactError(
            f"{meta.source}: its metadata names no CWRU training split (dataset {training.get('dataset')!r}); "
            "eval here evaluates CWRU bearing models trained with `drsn-stream train`"
        )
    kinds = kinds or []
    bad = [k for k in kinds if k not in NOISE_KINDS]
    if bad:
        raise ConfigError(f"unknown noise kind(s) {', '.join(bad)}; valid kinds: {', '.join(NOISE_KINDS)}")
    split = split or training["split"].get("held_out", "test")
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got {split!r}")
    bounds = tuple(training["split"][split])
    dd = training["data"]
    files = dd["test_files"] if split == "test" else dd["files"]
    recs = load_set(
        data,
        meta.labels,
        channel=dd["channel"],
        sample_rate=meta.sample_rate,
        files=files,
        label_by=dd["label_by"],
    )
    ev = evaluate(
        module,
        recs,
        meta.labels,
        bounds,  # type: ignore[arg-type]
        window=meta.window,
        hop=meta.hop,
        normalization=meta.normalization,
        kinds=kinds,
        snrs=snrs if snrs is not None else ([0.0] if kinds else []),
        seed=seed,
        scores=meta.scores,
    )
    return {
        "model": meta.name,
        "artifact": meta.source,
        "network": meta.model,
        "split": split,
        "part": list(bounds),
        "labels": meta.labels,
        "seed": seed,
        "results": ev["results"],
        "confusion": ev["confusion"],
    }


def run_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from drsn_stream.train.augment import parse_snr_list

    err = Console(stderr=True)
    try:
        kinds = [k.strip() for k in args.noise.split(",") if k.strip()]
        snrs = parse_snr_list(args.snr) if args.snr is not None else None
        doc = evaluate_artifact(
            args.model, data=args.data, kinds=kinds, snrs=snrs, split=args.split, seed=args.seed
        )
    except DrsnStreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    out = Console()
    out.print(
        _accuracy_table(doc["results"], title=f"{doc['model']} on its {doc['split']} part {doc['part']}")
    )
    out.print(_confusion_table(doc["confusion"], doc["labels"]))
    return 0


# ---------------------------------------------------------------------------- export


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="runs/<name>/best.pt (or last.pt)")
    parser.add_argument("--out", type=Path, default=None, help="artifact file to write (.pt)")
    triton = parser.add_argument_group(
        "Triton", "--triton DIR --model NAME: write a Triton model repository (PyTorch backend) instead; "
        "docs/artifact-format.md, section Triton")
    triton.add_argument("--triton", type=Path, default=None, metavar="DIR",
                        help="model repository folder; writes DIR/NAME/{config.pbtxt,labels.txt,1/model.pt}")
    triton.add_argument("--model", default=None, help="built-in model name (bearing-cwru, digits-fsdd) or artifact path")
    triton.add_argument("--triton-name", default=None, metavar="NAME",
                        help="model name in the repository (default: the artifact's name)")
    triton.add_argument("--max-batch-size", type=int, default=256, help="Triton max_batch_size (default 256)")
    triton.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="dynamic batching: longest wait for a fuller batch, microseconds (default 100)")
    triton.add_argument("--gpu", action="store_true", help="instance_group KIND_GPU (default KIND_CPU)")
    triton.add_argument("--instances", type=int, default=1, help="model instances (instance_group count, default 1)")


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """One TorchScript artifact with the metadata stored in a training checkpoint."""
    import torch

    from drsn_stream.models import build_from_config, save_artifact

    p = Path(checkpoint)
    if not p.is_file():
        raise DataError(f"checkpoint {p} not found; train first (drsn-stream train --config ...)")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ArtifactError(f"{p}: not a readable training checkpoint ({exc})") from None
    if not isinstance(ck, dict) or not {"model_state", "model_config", "meta"} <= set(ck):
        raise ArtifactError(f"{p}: not a drsn-stream training checkpoint (no model_state/model_config/meta)")
    model = build_from_config(ck["model_config"])
    model.load_state_dict(ck["model_state"])
    meta = dict(ck["meta"])
    meta.setdefault("training", {})["exported_from"] = {"checkpoint": p.name, "epoch": ck.get("epoch")}
    return save_artifact(model, out, meta, probs=True)


def run_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    if getattr(args, "triton", None) is not None or getattr(args, "model", None) is not None:
        return _run_export_triton(args)
    if args.checkpoint is None or args.out is None:
        Console(stderr=True).print("[red]error:[/red] give --checkpoint CK --out OUT.pt (a TorchScript artifact) "
                                   "or --triton DIR --model NAME (a Triton model repository)")
        return 2
    try:
        path = export_checkpoint(args.checkpoint, args.out)
    except DrsnStreamError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 2
    Console().print(f"wrote {path}")
    return 0


def _run_export_triton(args: argparse.Namespace) -> int:
    from rich.console import Console

    from drsn_stream.models.triton import export_triton, window_seconds

    err = Console(stderr=True)
    if args.triton is None or args.model is None:
        err.print("[red]error:[/red] a Triton export needs both --triton DIR and --model NAME "
                  "(e.g. drsn-stream export --triton models/ --model bearing-cwru)")
        return 2
    if args.checkpoint is not None or args.out is not None:
        err.print("[red]error:[/red] --checkpoint/--out export an artifact, --triton/--model a Triton repository; "
                  "give one pair (export the checkpoint first, then pass its .pt to --model)")
        return 2
    try:
        done = export_triton(args.triton, args.model, name=args.triton_name, max_batch_size=args.max_batch_size,
                             queue_delay_us=args.max_queue_delay_us, gpu=args.gpu, instances=args.instances)
    except DrsnStreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    out = Console()
    out.print(f"wrote {done.config}, {done.labels}, {done.model}")
    out.print(f"INPUT__0: raw samples, {window_seconds(done.meta)} (resample first); "
              f"OUTPUT__0: probabilities of {len(done.meta.labels)} labels; OUTPUT__1: noise index")
    return 0


# ---------------------------------------------------------------------------- tables


def _accuracy_table(results: list[dict[str, Any]], *, title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    t.add_column("noise")
    t.add_column("SNR dB", justify="right")
    t.add_column("accuracy", justify="right")
    t.add_column("windows", justify="right")
    t.add_column("noise index", justify="right")
    for r in results:
        snr = "-" if r["noise"] == "none" else f"{r['snr_db']:g}"
        t.add_row(r["noise"], snr, f"{100 * r['accuracy']:.2f} %", str(r["n"]), f"{r['noise_index']:.3f}")
    return t


def _confusion_table(matrix: list[list[int]], labels: list[str]) -> Any:
    from rich.table import Table

    # Columns are numbered, not named, so ten classes fit an 80-column terminal without truncation.
    t = Table(title="confusion, clean (rows: true class, columns: predicted class #)")
    t.add_column("true class", no_wrap=True)
    for i in range(len(labels)):
        t.add_column(str(i), justify="right")
    for i, (lab, row) in enumerate(zip(labels, matrix)):
        cells = [
            f"[bold]{v}[/bold]" if j == i else ("." if v == 0 else f"[red]{v}[/red]")
            for j, v in enumerate(row)
        ]
        t.add_row(f"{i} {lab}", *cells)
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drsn_stream.train.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train a model from a TOML config"))
    add_eval_arguments(sub.add_parser("eval", help="accuracy of an artifact on its held-out split"))
    add_export_arguments(sub.add_parser("export", help="checkpoint -> TorchScript artifact"))
    args = parser.parse_args(argv)
    return {"train": run_train, "eval": run_eval, "export": run_export}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
