"""The ``train``, ``eval`` and ``export`` subcommands.

    drsn-stream train --config configs/bearing-cwru.toml [--data ../shared/data/cwru] [--artifact OUT.pt]
    drsn-stream train --data DIR|MANIFEST [--labels a,b] [--from bearing-cwru|scratch|PATH.pt] --artifact my.pt
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

from drsn_stream.config import arg_number
from drsn_stream.engine.contract import BATCH_LIMIT, THREADS_LIMIT
from drsn_stream.errors import ArtifactError, ConfigError, DataError, DrsnStreamError

# ---------------------------------------------------------------------------- train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (configs/<name>.toml) of a CWRU run; without it, --data is your own")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="with --config: folder of CWRU .mat files (default: $DRSN_DATA or ../shared/data); without: "
        "your recordings, a folder per label or a manifest .csv/.toml (docs/user-data.md)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>)")
    parser.add_argument("--artifact", type=Path, default=None, help="also write the exported artifact here")
    parser.add_argument("--epochs", type=arg_number(int, 1, 100_000), default=None, help="override [train] epochs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_user_data_arguments(parser)
    own = parser.add_argument_group("your own recordings (without --config; docs/user-data.md)")
    own.add_argument("--from", dest="base", default=None, metavar="MODEL",
                     help="start from a built-in model (bearing-cwru, the default) or .pt with a new head, or 'scratch'")
    own.add_argument("--freeze", type=arg_number(int, 0, 1000), default=0, metavar="N",
                     help="keep the stem and the first N stages of the base as they are (default 0)")
    own.add_argument("--split", default="auto", choices=("auto", "recording", "time"),
                     help="auto (default): by recording for a label with >= 3 recordings, else by time")
    own.add_argument("--parts", default=None, metavar="SPEC",
                     help="time parts, default train=0:0.6,val=0.6:0.75,test=0.75:1 (val optional)")
    own.add_argument("--windows-per-class", type=arg_number(int, 1, 1_000_000), default=256, help="training windows per label and epoch")
    own.add_argument("--min-windows", type=arg_number(int, 1, 1_000_000), default=8,
                     help="windows of training signal a label needs, else the run stops before training")
    own.add_argument("--lr", type=arg_number(float, above=0, most=100), default=None, help="learning rate (default 0.01 fine-tuning, 0.1 scratch)")
    own.add_argument("--no-augment", action="store_true", help="train without added noise")
    own.add_argument("--name", default=None, help="model name (default: the artifact's file name)")
    own.add_argument("--seed", type=arg_number(int, 0, 2**32 - 1), default=0, help="training seed")
    own.add_argument("--threads", type=arg_number(int, 0, THREADS_LIMIT), default=0, help="torch threads (default: torch's)")


def _add_user_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("reading your recordings")
    g.add_argument("--labels", default=None, help="comma-separated labels to use, in this order (default: all, sorted)")
    g.add_argument("--rate", type=arg_number(float, above=0, most=1e6), default=None, help="sample rate (Hz) of CSV/NPY files without one")
    g.add_argument("--channel", default=None, help="a 0-based column of multi-column files; DE|FE|BA of CWRU "
                   ".mat files, a variable's name of other .mat files")
    g.add_argument("--on-bad", default="fail", choices=("skip", "fail"),
                   help="a bad file stops the run (fail, default) or is left out with one line (skip)")


def _labels(args: argparse.Namespace) -> list[str] | None:
    if not getattr(args, "labels", None):
        return None
    return [x.strip() for x in args.labels.split(",") if x.strip()]


def _error(command: str, what: object) -> None:
    """One line on stderr, as ``drsn_stream.cli.main`` prints an error: plain text (a user's
    file name or key in brackets is not markup), never wrapped."""
    print(f"drsn-stream {command}: error: {what}", file=sys.stderr, flush=True)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from drsn_stream.train.config import load_config
    from drsn_stream.train.run import train_run

    console = Console(stderr=True)
    if args.config is None:
        return _run_train_user(args, console)
    if getattr(args, "base", None) is not None:
        _error("train", "--config trains on CWRU as the config says; --from trains on your own "
               "recordings (give --data DIR|MANIFEST without --config)")
        return 2
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
        _error("train", exc)
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


def _run_train_user(args: argparse.Namespace, console: Any) -> int:
    from drsn_stream.train.finetune import UserRun, train_user
    from drsn_stream.train.userdata import is_cwru_folder, parse_parts

    try:
        if args.data is None:
            raise ConfigError("give --data DIR|MANIFEST (your recordings, docs/user-data.md) "
                              "or --config configs/<name>.toml (a CWRU run)")
        if is_cwru_folder(args.data) and not args.data.is_file():
            raise ConfigError(f"{args.data} is a folder of CWRU .mat files: train on it with --config "
                              "configs/bearing-cwru.toml, or list the files in a manifest (docs/user-data.md)")
        run = UserRun(
            base=args.base or "bearing-cwru", freeze=args.freeze, epochs=args.epochs, lr=args.lr,
            windows_per_class=args.windows_per_class, seed=args.seed, threads=args.threads,
            augment=not args.no_augment, split=args.split, parts=parse_parts(args.parts),
            min_train_windows=args.min_windows, name=args.name or "",
        )
        report = train_user(args.data, run, labels=_labels(args), default_rate=args.rate, channel=args.channel,
                            on_bad=args.on_bad, out_dir=args.out, artifact=args.artifact,
                            progress=not args.quiet, console=console)
    except DrsnStreamError as exc:
        _error("train", exc)
        return 2
    from rich.console import Console

    out = Console()
    out.print(_accuracy_table(report["results"], title=f"{report['name']} (from {report['from']}) - held-out test part"))
    out.print(_confusion_table(report["confusion"], report["labels"]))
    out.print(
        f"best epoch {report['best_epoch']}, training {report['train_seconds']:.0f} s; artifact {report['artifact']}"
        + (f", shipped {report['shipped']}" if report["shipped"] else "")
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
    parser.add_argument("--seed", type=arg_number(int, 0, 2**32 - 1), default=1234, help="noise seed")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    _add_user_data_arguments(parser)


def evaluate_artifact(
    model: str | Path,
    *,
    data: str | Path | None = None,
    kinds: list[str] | None = None,
    snrs: list[float] | None = None,
    split: str | None = None,
    seed: int = 1234,
    user_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy of an artifact on its own held-out split (read from its metadata), or on your recordings
    (``--data`` a folder per label or a manifest; ``user_options``: labels, rate, channel, on_bad)."""
    from drsn_stream.dsp.noise import NOISE_KINDS
    from drsn_stream.models import load_artifact
    from drsn_stream.train.cwru import load_set
    from drsn_stream.train.evaluate import evaluate

    module, meta = load_artifact(model)
    training = meta.training or {}
    if _is_user_data(data, training):
        from drsn_stream.train.finetune import evaluate_user

        return evaluate_user(model, data, kinds=kinds, snrs=snrs, split=split, seed=seed, **(user_options or {}))
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


def _is_user_data(data: str | Path | None, training: dict[str, Any]) -> bool:
    from drsn_stream.train.userdata import is_cwru_folder

    if data is None:
        return training.get("dataset") == "user"
    p = Path(data)
    return p.is_file() or not is_cwru_folder(p)


def run_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from drsn_stream.train.augment import parse_snr_list

    err = Console(stderr=True)
    try:
        kinds = [k.strip() for k in args.noise.split(",") if k.strip()]
        snrs = parse_snr_list(args.snr) if args.snr is not None else None
        doc = evaluate_artifact(
            args.model, data=args.data, kinds=kinds, snrs=snrs, split=args.split, seed=args.seed,
            user_options={"labels": _labels(args), "default_rate": getattr(args, "rate", None),
                          "channel": getattr(args, "channel", None), "on_bad": getattr(args, "on_bad", "fail")},
        )
    except DrsnStreamError as exc:
        _error("eval", exc)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    out = Console()
    # a CWRU document names its part by fractions, a user-data one by the recordings it measured
    user = bool(doc["part"]) and isinstance(doc["part"][0], str)
    if doc["split"] == "all":
        title = f"{doc['model']} on every window of {len(doc['part'])} recording(s)"
    else:
        part = f"{len(doc['part'])} recording part(s)" if user else str(doc["part"])
        title = f"{doc['model']} on its {doc['split']} part: {part}"
    for line in doc.get("skipped", []):
        err.print(f"[yellow]skipped:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    out.print(_accuracy_table(doc["results"], title=title))
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
    triton.add_argument("--max-batch-size", type=arg_number(int, 1, BATCH_LIMIT), default=256, help="Triton max_batch_size (default 256)")
    triton.add_argument("--max-queue-delay-us", type=arg_number(int, 0, 10_000_000), default=100,
                        help="dynamic batching: longest wait for a fuller batch, microseconds (default 100)")
    triton.add_argument("--gpu", action="store_true", help="instance_group KIND_GPU (default KIND_CPU)")
    triton.add_argument("--instances", type=arg_number(int, 1, 64), default=1, help="model instances (instance_group count, default 1)")


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """One TorchScript artifact with the metadata stored in a training checkpoint."""

    from drsn_stream.models import build_from_config, save_artifact

    p = Path(checkpoint)
    if p.is_dir():  # a run's folder: the checkpoints are in it
        raise DataError(f"checkpoint {p} is a folder; give the best.pt or last.pt in it that drsn-stream train wrote")
    if not p.is_file():
        raise DataError(f"checkpoint {p} not found; train first (drsn-stream train --config ...)")
    from drsn_stream.train.loop import load_checkpoint

    ck = load_checkpoint(p)
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
        _error("export", "give --checkpoint CK --out OUT.pt (a TorchScript artifact) "
               "or --triton DIR --model NAME (a Triton model repository)")
        return 2
    try:
        path = export_checkpoint(args.checkpoint, args.out)
    except DrsnStreamError as exc:
        _error("export", exc)
        return 2
    Console().print(f"wrote {path}")
    return 0


def _run_export_triton(args: argparse.Namespace) -> int:
    from rich.console import Console

    from drsn_stream.models.triton import export_triton, window_seconds

    if args.triton is None or args.model is None:
        _error("export", "a Triton export needs both --triton DIR and --model NAME "
               "(e.g. drsn-stream export --triton models/ --model bearing-cwru)")
        return 2
    if args.checkpoint is not None or args.out is not None:
        _error("export", "--checkpoint/--out export an artifact, --triton/--model a Triton repository; "
               "give one pair (export the checkpoint first, then pass its .pt to --model)")
        return 2
    try:
        done = export_triton(args.triton, args.model, name=args.triton_name, max_batch_size=args.max_batch_size,
                             queue_delay_us=args.max_queue_delay_us, gpu=args.gpu, instances=args.instances)
    except DrsnStreamError as exc:
        _error("export", exc)
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

    # Columns are numbered, not named, so ten classes fit an 80-column terminal without truncation;
    # the title is short because rich wraps a title to the table's width (three classes: 31 columns)
    t = Table(title="confusion, clean")
    t.add_column("true \\ pred.", no_wrap=True)
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
