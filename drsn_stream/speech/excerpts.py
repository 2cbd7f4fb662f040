"""The small set of real recordings ``sim:speech`` replays (``drsn_stream/data/speech_excerpts.npz``).

Builds it from FSDD's *test* split (takes 0-4; the shipped model never trained on them): for each
digit, three takes by three different speakers, each scaled to -20 dBFS RMS; plus 8 s from the
held-out end (last 20 %) of two real Speech Commands background recordings at unit RMS. All of it
is stored as int16 at 8 kHz (about 0.4 MB).

Credits: Free Spoken Digit Dataset (CC BY-SA 4.0); Speech Commands background noise (CC BY 4.0).

    python -m drsn_stream.speech.excerpts [--data ../shared/data] [--out drsn_stream/data/speech_excerpts.npz]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np

from drsn_stream.errors import DataError
from drsn_stream.speech import CREDITS, DIGITS, SAMPLE_RATE
from drsn_stream.speech.dataset import FSDD_SPEAKERS, default_data_dir, load_fsdd, load_noise, split_fsdd

WORD_RMS = 0.1  # -20 dBFS
NOISE_SECONDS = 8.0
NOISES = ("running_tap", "doing_the_dishes")
TAKES_PER_DIGIT = 3


def build(data: Path, out: Path) -> Path:
    """Writes the excerpts file from ``data`` (the folder holding fsdd/ and noise/)."""
    _, test = split_fsdd(load_fsdd(data / "fsdd"))
    words, labels, speakers = [], [], []
    for d_i, digit in enumerate(DIGITS):
        for k in range(TAKES_PER_DIGIT):
            # Rotate speakers so every speaker appears and each digit has three different ones.
            spk = FSDD_SPEAKERS[(d_i + 2 * k) % len(FSDD_SPEAKERS)]
            take = (d_i + k) % 5
            u = next(u for u in test if u.label == digit and u.speaker == spk and u.take == take)
            x = u.audio.astype(np.float64)
            x = x * (WORD_RMS / np.sqrt(np.mean(x * x)))
            words.append(np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16))
            labels.append(digit)
            speakers.append(f"{spk}_{take}")
    noise = load_noise(data / "noise", part="test", names=NOISES)
    arrays: dict[str, np.ndarray] = {}
    for name, x in noise.items():
        seg = x[: int(NOISE_SECONDS * SAMPLE_RATE)].astype(np.float64)
        seg = seg / np.sqrt(np.mean(seg * seg)) * 0.25  # 0.25 full scale RMS leaves headroom in int16
        arrays[f"noise_{name}"] = np.clip(np.round(seg * 32767.0), -32768, 32767).astype(np.int16)
    meta = {
        "rate": SAMPLE_RATE,
        "labels": labels,
        "speakers": speakers,
        "word_rms": WORD_RMS,
        "noises": list(NOISES),
        "noise_rms": 0.25,
        "source": "FSDD test split (takes 0-4); Speech Commands noise, last 20 % of each file",
        "credit": CREDITS,
    }
    lens = np.array([len(w) for w in words])
    np.savez_compressed(out, words=np.concatenate(words), lens=lens, meta=json.dumps(meta), **arrays)
    return out


@functools.lru_cache(maxsize=1)
def load_excerpts() -> tuple[list[tuple[str, np.ndarray]], dict[str, np.ndarray], dict]:
    """``([(digit, float32 (n,) at 8 kHz)], {noise name: float32 (n,) unit RMS}, meta)``."""
    try:
        blob = (resources.files("drsn_stream") / "data" / "speech_excerpts.npz").read_bytes()
    except FileNotFoundError:
        raise DataError("drsn_stream/data/speech_excerpts.npz is missing; rebuild it with "
                        "`python -m drsn_stream.speech.excerpts` or reinstall drsn-stream") from None
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        offs = np.concatenate([[0], np.cumsum(z["lens"])])
        pcm = z["words"].astype(np.float32) / 32767.0
        words = [(lab, pcm[offs[i] : offs[i + 1]]) for i, lab in enumerate(meta["labels"])]
        noises = {n: z[f"noise_{n}"].astype(np.float32) / 32767.0 / float(meta["noise_rms"]) for n in meta["noises"]}
    return words, noises, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "speech_excerpts.npz")
    args = ap.parse_args(argv)
    path = build(args.data or default_data_dir(), args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
