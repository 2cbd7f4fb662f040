"""Train, compare and evaluate the spoken-digit DRSN; export the built-in ``digits-fsdd`` artifact.

    nice python tools/train_digits.py                      # shipped model -> runs/digits/digits-fsdd.pt
    nice python tools/train_digits.py --install            # ... and copy it into drsn_stream/artifacts/
    nice python tools/train_digits.py --compare --epochs 6 # 1-D raw vs 2-D log-mel, same budget
    nice python tools/train_digits.py --loso               # leave-one-speaker-out (shorter training);
                                                           # tools/loso_ensembles.py scores any seed subset
    nice python tools/train_digits.py --members-from A.pt B.pt  # seeds trained before (same recipe) are reused

Needs ../shared/data (or --data / DRSN_DATA) and `apt-get install -y espeak-ng flite` for the
synthetic voices (cached in runs/tts). Results go to runs/digits/*.json and the log to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from drsn_stream.config import arg_number
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.models import model_config, save_artifact
from drsn_stream.models.ensemble import Ensemble
from drsn_stream.models.outputs import network_of
from drsn_stream.speech import CREDITS, HOP, LABELS, NORMALIZATION, SAMPLE_RATE, WINDOW, dataset, tts
from drsn_stream.speech.config import MAX_ENSEMBLE, DigitsConfig, load_config
from drsn_stream.speech.train import (
    MAX_EPOCHS,
    MAX_THREADS,
    TrainConfig,
    accuracy,
    background_check,
    center,
    predict,
    snr_curve,
    train_model,
)

ROOT = Path(__file__).resolve().parents[1]

ONE_D = ("drsn_cw_wide", {"stem_kernel": 9, "stem_stride": 4, "dropout": 0.1})


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def synthetic(cache: Path, cfg: DigitsConfig) -> tuple[list, list, list]:
    """(train digit words, train non-digit words, held-out-voice digit words) from TTS."""
    n_train = cfg.tts.train_voices
    n_held = cfg.tts.heldout_voices
    pool = tts.voices(n_train + n_held, seed=0)
    order = np.random.default_rng(0).permutation(len(pool))
    train_v = [pool[i] for i in order[:n_train]]
    held_v = [pool[i] for i in order[n_train:]]
    digits = tts.generate(cache, tts.DIGIT_WORDS, tuple(str(d) for d in range(10)), train_v)
    others = tts.generate(cache, tts.UNKNOWN_WORDS, tts.UNKNOWN_WORDS, train_v)
    held = tts.generate(cache, tts.DIGIT_WORDS, tuple(str(d) for d in range(10)), held_v)
    return digits, others, held


def evaluate(model, test, noise_test, held) -> dict:
    res = {"test_split": accuracy(model, test)}
    log(f"test split (FSDD takes 0-4): {res['test_split']['accuracy']} % of {res['test_split']['n']}")
    if held:
        res["tts_heldout_voices"] = accuracy(model, held)
        log(f"held-out synthetic voices: {res['tts_heldout_voices']['accuracy']} %")
    res["snr"] = snr_curve(model, test, noise_test)
    log(f"SNR curve (mean of real noises): {res['snr'].get('mean_real')}")
    res["background_called_digit_pct"] = background_check(model, noise_test)
    log(f"background windows called a digit (%): {res['background_called_digit_pct']}")
    return res


# Front-end options that act in training only (SpecAugment, frequency stretch): part of the
# recipe, not of what the model computes at run time, so they stay out of the "input" metadata.
TRAINING_ONLY = ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width", "warp")


def meta_for(tc: TrainConfig, model, res: dict, n_train: dict, cfg: DigitsConfig, config_path: Path | None = None,
             seeds: list[int] | None = None) -> dict:
    net = model_config(tc.model, len(LABELS), **tc.overrides).to_dict()
    seeds = list(seeds or [tc.seed])
    input_spec = {"kind": "raw"}
    if net["dims"] == 2:
        # The log-mel front end is part of the TorchScript model: the DSP feeds raw windows.
        run_time = {k: v for k, v in net["logmel"].items() if k not in TRAINING_ONLY}
        input_spec = {"kind": "logmel", "inside_model": True, **run_time}
    try:
        config_name = str(config_path.resolve().relative_to(ROOT)) if config_path else "configs/digits-fsdd.toml"
    except ValueError:
        config_name = str(config_path)
    return {
        "name": "digits-fsdd",
        "model": tc.model,
        "labels": list(LABELS),
        "sample_rate": SAMPLE_RATE,
        "window": WINDOW,
        "hop": HOP,
        "input": input_spec,
        "normalization": dict(NORMALIZATION),
        "model_config": {**net, "ensemble": len(seeds)} if len(seeds) > 1 else net,
        "training": {
            "data": "FSDD takes 5-49 (6 speakers) + synthetic espeak-ng/flite voices + Speech Commands "
            "background noise (first 80 % of each file)",
            "held_out": "FSDD takes 0-4; last 20 % of each noise file; 20 synthetic voices",
            "counts": n_train,
            "recipe": tc.to_dict(),
            "seeds": seeds,
            "windows": "whole digit at a random place in the 1 s window = the digit; 15-45 % crops of a "
            "digit and non-digit words = _unknown_; background below the rms floor = _silence_, above = _noise_",
            "tool": f"tools/train_digits.py with {config_name}",
        },
        "accuracy": {
            "test_split_pct": res["test_split"]["accuracy"],
            "test_split": "FSDD takes 0-4 (300 files), each centred in 1 s of silence, 13-way argmax",
            "tts_heldout_voices_pct": res.get("tts_heldout_voices", {}).get("accuracy"),
            "snr_mean_real_noise_pct": res["snr"].get("mean_real"),
            "background_called_digit_pct": res["background_called_digit_pct"],
            **({"member_test_split_pct": res["member_test_split"]} if "member_test_split" in res else {}),
        },
        "description": f"Spoken digits 0-9 plus _silence_/_noise_/_unknown_ in 1 s windows at 8 kHz ({tc.model}"
        + (f", {len(seeds)} networks from seeds {seeds} with their probabilities averaged" if len(seeds) > 1 else "")
        + "). "
        f"Trained on {CREDITS}.",
    }


def reusable_members(paths: list[Path], tc: TrainConfig) -> dict[int, tuple[object, Path]]:
    """{seed: (trained network, its artifact)} from artifacts of this very recipe (any seeds).

    Training is deterministic for a seed, so a network already trained with the same recipe is
    the one training would make again: an ensemble of K seeds can take members from earlier runs
    (e.g. two runs of one network each, in parallel) instead of training them all in one process.
    An artifact of another recipe (model, front end, epochs, augmentation, ...) is refused.
    """
    from drsn_stream.models import build_from_config, load_artifact

    want_net = model_config(tc.model, len(LABELS), **tc.overrides).to_dict()
    want_recipe = {k: v for k, v in tc.to_dict().items() if k not in ("seed", "threads")}
    out: dict[int, tuple[object, Path]] = {}
    for path in paths:
        module, meta = load_artifact(path)
        net = {k: v for k, v in meta.model_config.items() if k != "ensemble"}
        recipe = {k: v for k, v in (meta.training or {}).get("recipe", {}).items() if k not in ("seed", "threads")}
        if net != want_net or json.loads(json.dumps(recipe)) != json.loads(json.dumps(want_recipe)):
            raise ConfigError(f"{path}: trained with another recipe than {tc.model} as configured here; "
                              "--members-from takes artifacts of this very config (seed aside)")
        model = build_from_config(meta.model_config)
        model.load_state_dict(network_of(module).state_dict())
        nets = list(model.members) if isinstance(model, Ensemble) else [model]
        for seed, net_module in zip(meta.training["seeds"], nets):
            out[int(seed)] = (net_module.eval(), path)
    return out


def record_loso(paths: list[Path]) -> int:
    """Adds leave-one-speaker-out results to the installed artifact's metadata (same weights)."""
    from drsn_stream.models import build_from_config, load_artifact

    per = {}
    epochs = set()
    for p in paths:  # all of them checked before the artifact is touched
        speaker, acc, ep = _loso_result(p)
        per[speaker] = acc
        epochs.add(ep)
    dest = ROOT / "drsn_stream" / "artifacts" / "digits-fsdd.pt"
    module, meta = load_artifact(dest)
    model = build_from_config(meta.model_config)
    model.load_state_dict(network_of(module).state_dict())
    d = meta.to_dict()
    d["accuracy"]["loso_pct"] = {**per, "mean": round(float(np.mean(list(per.values()))), 2)}
    d["accuracy"]["loso"] = (
        f"leave-one-speaker-out over FSDD's six speakers (all 500 files of the held-out one), "
        f"same recipe with {'/'.join(str(e) for e in sorted(epochs))} epochs instead of {meta.training['recipe']['epochs']}"
    )
    d.pop("created", None)
    save_artifact(model, dest, d, probs=meta.scores == "probs")
    log(f"recorded LOSO {d['accuracy']['loso_pct']} in {dest}")
    return 0


def _loso_result(path: Path) -> tuple[str, float, int]:
    """(speaker, accuracy %, epochs) of one loso-SPEAKER.json; DataError naming the file otherwise."""
    what = "give the loso-SPEAKER.json files that tools/train_digits.py --loso wrote"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}); {what}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path}: not a JSON file ({str(exc)[:80]}); {what}") from None
    ok = (isinstance(d, dict) and isinstance(d.get("speaker"), str)
          and isinstance(d.get("accuracy"), (int, float)) and not isinstance(d.get("accuracy"), bool)
          and 0 <= d["accuracy"] <= 100
          and isinstance(d.get("epochs"), int) and not isinstance(d.get("epochs"), bool) and d["epochs"] >= 1)
    if not ok:
        raise DataError(f"{path}: not a leave-one-speaker-out result (speaker, accuracy 0-100, epochs >= 1); {what}")
    return d["speaker"], float(d["accuracy"]), int(d["epochs"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder holding fsdd/ and noise/ (default ../shared/data)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "digits-fsdd.toml")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    ap.add_argument("--epochs", type=arg_number(int, 1, MAX_EPOCHS), default=None, help="override the config's epochs")
    ap.add_argument("--compare", action="store_true", help="train the 1-D raw model and the 2-D log-mel model")
    ap.add_argument("--loso", action="store_true", help="leave-one-speaker-out evaluation")
    ap.add_argument("--speakers", nargs="*", default=None, help="LOSO: only these speakers")
    ap.add_argument("--ensemble", type=arg_number(int, 1, MAX_ENSEMBLE), default=None,
                    help="networks per model, seeds seed..seed+K-1, probabilities averaged (default: the config's "
                         "[train] ensemble, else 1); LOSO also reports each member alone")
    ap.add_argument("--threads", type=arg_number(int, 1, MAX_THREADS), default=None,
                    help="override the config's torch threads")
    ap.add_argument("--tag", default="", help="write into runs/digits-TAG instead of runs/digits")
    ap.add_argument("--install", action="store_true", help="copy the exported artifact into drsn_stream/artifacts/")
    ap.add_argument("--members-from", nargs="+", type=Path, default=None, metavar="PT",
                    help="take the networks of these artifacts (same recipe, their seeds) instead of training "
                         "those seeds again; the others are trained")
    ap.add_argument("--record-loso", nargs="+", type=Path, default=None, metavar="JSON",
                    help="write these loso-SPEAKER.json results into the installed artifact's accuracy and exit")
    args = ap.parse_args(argv)
    if args.record_loso:
        return record_loso(args.record_loso)

    # the whole recipe is checked before any data or synthetic voice is loaded
    cfg = load_config(args.config)
    if args.threads is not None:
        cfg = dataclasses.replace(cfg, train=cfg.train_config(threads=args.threads))
    data = args.data or dataset.default_data_dir()
    if not data.is_dir():
        raise DataError(f"data folder {data} not found; give the folder holding fsdd/ and noise/ with --data "
                        "(or the DRSN_DATA environment variable)")
    out_dir = args.runs / ("digits-" + args.tag if args.tag else "digits")
    log(f"loading FSDD and noise from {data}")
    fsdd = dataset.load_fsdd(data / "fsdd", log=log)
    # an empty part is said now, not after training (when the test windows are stacked)
    folds = dataset.loso_folds(fsdd, args.speakers) if args.loso else []
    train, test = dataset.split_fsdd(fsdd, require=None if args.loso else data / "fsdd")
    noise_train = dataset.load_noise(data / "noise", part="train")
    noise_test = dataset.load_noise(data / "noise", part="test")
    log("synthetic voices (cached in runs/tts)")
    tts_digits, tts_others, tts_held = synthetic(args.runs / "tts", cfg)
    log(f"FSDD train {len(train)}, test {len(test)}; TTS digits {len(tts_digits)}, other words {len(tts_others)}, "
        f"held-out voice digits {len(tts_held)}")
    out_dir.mkdir(parents=True, exist_ok=True)

    n_members = args.ensemble if args.ensemble is not None else cfg.ensemble
    base_seed = cfg.train.seed
    member_seeds = [base_seed + i for i in range(n_members)]
    if args.loso:
        epochs = args.epochs if args.epochs is not None else cfg.loso.epochs
        results = {}
        for spk, tr, te in folds:
            log(f"LOSO {spk}: train {len(tr)} FSDD + TTS, test {len(te)} ({epochs} epochs, {n_members} network(s))")
            members, member_acc, member_probs = [], [], []
            te_windows = np.stack([center(u.audio) for u in te])
            for seed in member_seeds:
                members.append(train_model(cfg.train_config(epochs=epochs, seed=seed), tr + tts_digits, tts_others,
                                           noise_train, log=log))
                member_acc.append(accuracy(members[-1], te)["accuracy"])
                member_probs.append(predict(members[-1], te_windows))
                log(f"LOSO {spk}, seed {seed}: {member_acc[-1]} %")
            # every member's probabilities, so any subset can be scored as an ensemble afterwards
            # (tools/loso_ensembles.py) without training again
            np.savez_compressed(out_dir / f"loso-{spk}-probs.npz", seeds=np.array(member_seeds),
                                probs=np.stack(member_probs).astype(np.float32),
                                truth=np.array([LABELS.index(u.label) for u in te]))
            acc = accuracy(members[0] if n_members == 1 else Ensemble(members), te)
            results[spk] = acc["accuracy"]
            log(f"LOSO {spk}: {acc['accuracy']} %")
            rec = {"speaker": spk, "epochs": epochs, "seeds": member_seeds, "member_accuracy": member_acc, **acc}
            (out_dir / f"loso-{spk}.json").write_text(json.dumps(rec, indent=1))
        results["mean"] = round(float(np.mean(list(results.values()))), 2)
        log(f"LOSO: {results}")
        (out_dir / "loso.json").write_text(json.dumps({"epochs": epochs, "seeds": member_seeds, "accuracy": results},
                                                      indent=1))
        return 0

    if args.compare:
        epochs = args.epochs if args.epochs is not None else 6
        table = {}
        for name, overrides in (ONE_D, (cfg.train.model, cfg.train.overrides)):
            tc = cfg.train_config(epochs=epochs, model=name, overrides=dict(overrides))
            t0 = time.perf_counter()
            model = train_model(tc, train + tts_digits, tts_others, noise_train, log=log)
            acc = accuracy(model, test)
            snr = snr_curve(model, test, noise_test, snrs=(0.0, 10.0))
            params = sum(p.numel() for p in model.parameters())
            table[name] = {"test_split": acc["accuracy"], "snr_mean_real": snr["mean_real"], "params": params,
                           "epochs": epochs, "train_s": round(time.perf_counter() - t0, 1), "overrides": overrides}
            log(f"{name}: {table[name]}")
        (out_dir / "compare.json").write_text(json.dumps(table, indent=1))
        return 0

    tc = cfg.train_config(**({"epochs": args.epochs} if args.epochs is not None else {}))
    reuse = reusable_members(args.members_from or [], tc)
    members = []
    for seed in member_seeds:
        tc.seed = seed
        if seed in reuse:
            log(f"seed {seed}: the network trained with this recipe in {reuse[seed][1]}")
            members.append(reuse[seed][0])
            continue
        log(f"training {tc.model} for {tc.epochs} epochs (seed {seed})")
        members.append(train_model(tc, train + tts_digits, tts_others, noise_train, log=log))
    tc.seed = base_seed
    model = members[0] if n_members == 1 else Ensemble(members)
    res = evaluate(model, test, noise_test, tts_held)
    if n_members > 1:
        res["member_test_split"] = [accuracy(m, test)["accuracy"] for m in members]
        log(f"test split: members {res['member_test_split']} %, ensemble {res['test_split']['accuracy']} %")
    counts = {"fsdd_train": len(train), "tts_digits": len(tts_digits), "tts_other_words": len(tts_others),
              "tts_train_voices": cfg.tts.train_voices}
    meta = meta_for(tc, model, res, counts, cfg, args.config, seeds=member_seeds)
    path = save_artifact(model, out_dir / "digits-fsdd.pt", meta, probs=True)
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    log(f"wrote {path}")
    if args.install:
        dest = ROOT / "drsn_stream" / "artifacts" / "digits-fsdd.pt"
        shutil.copyfile(path, dest)
        log(f"installed {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/train_digits.py"))
