"""The CWRU bearing data set: .mat files -> labelled recordings -> time-split parts -> windows.

File names carry the condition: ``12k_Drive_End_<fault><size>_<load>_<fileno>.mat`` (fault ``B``
ball, ``IR`` inner race, ``OR<size>@6`` outer race at 6 o'clock; size in thousandths of an inch)
and ``normal_<load>_<fileno>.mat``. Each file holds ``X<fileno>_DE_time``/``_FE_time``/``_BA_time``
(g) and ``X<fileno>RPM``.

The healthy baseline ``normal_0_97.mat`` is sampled at 48 kHz, not 12 kHz (see
``shared/data/README.md``); every recording is brought to the requested rate with
``scipy.signal.resample_poly`` so the networks learn the fault, not the sampling rate.

Splits are made by time inside every recording BEFORE windowing: by default the first 60 % trains,
60-75 % validates (model selection) and the LAST 25 % is the held-out test part (the built-in
simulator replays excerpts from that part only). Windows are cut inside one part, so no window of
the test part shares a sample with the training part.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.errors import ConfigError, DataError
from drsn_stream.sources.file import load_mat

CHANNELS = ("DE", "FE", "BA")
FAULTS = {"B": "ball", "IR": "inner", "OR": "outer"}
# The 10-class 0 HP set of the shipped model, in the order of its labels.
LABELS_10 = (
    "normal",
    "ball_007",
    "ball_014",
    "ball_021",
    "inner_007",
    "inner_014",
    "inner_021",
    "outer_007",
    "outer_014",
    "outer_021",
)
LABELS_4 = ("normal", "ball", "inner", "outer")
DEFAULT_SPLIT = {"train": (0.0, 0.60), "val": (0.60, 0.75), "test": (0.75, 1.0)}

_FAULT_RE = re.compile(
    r"^(?P<rate>\d+)k_(?P<end>Drive|Fan)_End_(?P<fault>B|IR|OR)(?P<size>\d{3})(?:@(?P<pos>\d+))?_(?P<load>\d)_(?P<no>\d+)\.mat$"
)
_NORMAL_RE = re.compile(r"^normal_(?P<load>\d)_(?P<no>\d+)\.mat$")
# Only the healthy baselines of the CWRU site are 48 kHz; the README and MANIFEST say so.
_NORMAL_RATE = 48000


def default_data_dir() -> Path:
    """``$DRSN_DATA`` or ``<repo>/../shared/data`` (the folder that holds ``cwru/``)."""
    env = os.environ.get("DRSN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def cwru_dir(path: str | Path | None = None) -> Path:
    """The folder of CWRU .mat files: ``path`` itself, or its ``cwru/`` subfolder.

    Raises DataError with what to do when no .mat file is there.
    """
    p = Path(path) if path is not None else default_data_dir()
    for cand in (p, p / "cwru"):
        if cand.is_dir() and any(cand.glob("*.mat")):
            return cand
    raise DataError(
        f"no CWRU .mat files in {p} (nor in {p / 'cwru'}); pass --data pointing at the folder of "
        "CWRU .mat files (e.g. ../shared/data/cwru) or set DRSN_DATA"
    )


@dataclass(frozen=True)
class FileInfo:
    """What a CWRU file name says: ``kind`` is normal/ball/inner/outer, ``size`` in mils (0 for normal)."""

    name: str
    kind: str
    size: int
    load: int
    file_no: int
    sample_rate: int

    @property
    def label_with_size(self) -> str:
        """``normal`` or e.g. ``ball_007`` (the 10-class label)."""
        return "normal" if self.kind == "normal" else f"{self.kind}_{self.size:03d}"


def parse_name(name: str, *, manifest: dict[str, dict[str, str]] | None = None) -> FileInfo:
    """Parses a CWRU file name. The MANIFEST's ``fs_hz`` wins over the name when present.

    Raises DataError for a name that is not a CWRU drive-end/fan-end or normal file.
    """
    m = _FAULT_RE.match(name)
    if m:
        info = FileInfo(
            name=name,
            kind=FAULTS[m["fault"]],
            size=int(m["size"]),
            load=int(m["load"]),
            file_no=int(m["no"]),
            sample_rate=int(m["rate"]) * 1000,
        )
    else:
        m = _NORMAL_RE.match(name)
        if not m:
            raise DataError(
                f"{name}: not a CWRU file name (expected 12k_Drive_End_<B|IR|OR><size>_<load>_<no>.mat "
                "or normal_<load>_<no>.mat)"
            )
        info = FileInfo(name, "normal", 0, int(m["load"]), int(m["no"]), _NORMAL_RATE)
    if manifest and name in manifest and manifest[name].get("fs_hz"):
        info = FileInfo(
            info.name, info.kind, info.size, info.load, info.file_no, int(manifest[name]["fs_hz"])
        )
    return info


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    """``MANIFEST.tsv`` rows by file name ({} when the folder has none)."""
    path = folder / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def scan(path: str | Path | None = None) -> list[FileInfo]:
    """Every CWRU file in the folder, parsed, sorted by name (files with other names are skipped)."""
    folder = cwru_dir(path)
    manifest = read_manifest(folder)
    out = []
    for p in sorted(folder.glob("*.mat")):
        try:
            out.append(parse_name(p.name, manifest=manifest))
        except DataError:
            continue
    return out


@dataclass
class Recording:
    """One channel of one CWRU file at ``sample_rate``.

    ``signal`` is ``(n,)`` float32 in g; ``rpm`` the shaft speed stored in the file (None if absent).
    """

    info: FileInfo
    label: str
    channel: str
    sample_rate: int
    signal: np.ndarray
    rpm: float | None = None
    source_rate: int = 0

    def part(self, bounds: tuple[float, float]) -> np.ndarray:
        """The samples between two fractions of the recording's length, e.g. ``(0.75, 1.0)``."""
        return self.signal[part_slice(self.signal.size, bounds)]


def part_slice(n: int, bounds: tuple[float, float]) -> slice:
    """Sample range of a time part. Boundaries are ``ceil(fraction * n)``, the rule the simulator's
    excerpt builder uses, so the test part here is exactly the part it replays from."""
    lo, hi = bounds
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"a split part must satisfy 0 <= start < end <= 1, got {bounds}")
    return slice(int(math.ceil(lo * n)), int(math.ceil(hi * n)))


def load_recording(
    path: str | Path,
    *,
    channel: str = "DE",
    sample_rate: int = 12000,
    label: str | None = None,
    manifest: dict[str, dict[str, str]] | None = None,
) -> Recording:
    """Reads one channel of a CWRU .mat file and resamples it to ``sample_rate`` Hz.

    Args:
        path: the .mat file.
        channel: ``DE`` (drive end), ``FE`` (fan end) or ``BA`` (base).
        sample_rate: output rate in Hz; the 48 kHz healthy baseline becomes 12 kHz with
            ``resample_poly(x, 1, 4)`` (anti-aliased polyphase).
        label: the class name; defaults to ``FileInfo.label_with_size``.
    """
    path = Path(path)
    if channel not in CHANNELS:
        raise ConfigError(f"unknown CWRU channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    info = parse_name(path.name, manifest=manifest)
    mat = load_mat(path, DataError)
    keys = [k for k in mat if k.endswith(f"_{channel}_time")]
    if not keys:
        have = sorted(k.split("_")[-2] for k in mat if k.endswith("_time"))
        raise DataError(
            f"{path.name} has no {channel} channel (it has {', '.join(have) or 'none'}); choose another channel"
        )
    # A few CWRU files carry a second, foreign array; the one named after the file number is ours.
    own = [k for k in keys if k.startswith(f"X{info.file_no:03d}_")]
    x = np.asarray(mat[(own or keys)[0]], dtype=np.float64).reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:  # windows of them trained a NaN network without a word
        raise DataError(f"{path}: {bad} of its {x.size} samples are NaN or infinite; re-copy it from the CWRU data set")
    rpm_keys = [k for k in mat if k.endswith("RPM")]
    rpm = float(np.asarray(mat[rpm_keys[0]]).reshape(-1)[0]) if rpm_keys else None
    if info.sample_rate != sample_rate:
        ratio = Fraction(sample_rate, info.sample_rate)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return Recording(
        info=info,
        label=label or info.label_with_size,
        channel=channel,
        sample_rate=sample_rate,
        signal=x.astype(np.float32),
        rpm=rpm,
        source_rate=info.sample_rate,
    )


def label_of(info: FileInfo, label_by: str) -> str:
    """The class name of a file: ``size`` gives ``ball_007``, ``kind`` gives ``ball``."""
    if label_by == "size":
        return info.label_with_size
    if label_by == "kind":
        return info.kind
    raise ConfigError(f"label_by must be 'size' or 'kind', got {label_by!r}")


def select_files(
    infos: Iterable[FileInfo], labels: Sequence[str], *, loads: Sequence[int], label_by: str
) -> dict[str, list[FileInfo]]:
    """Files of each label at the given loads. A class recorded at none of these loads (the
    healthy baseline exists only at 0 HP) takes its files at any load; its parts stay split in time.

    Raises DataError naming the labels without any file.
    """
    infos = list(infos)
    out: dict[str, list[FileInfo]] = {}
    for lab in labels:
        of_label = [i for i in infos if label_of(i, label_by) == lab]
        at_loads = [i for i in of_label if i.load in loads]
        out[lab] = at_loads or of_label
    missing = [lab for lab, fs in out.items() if not fs]
    if missing:
        raise DataError(
            f"no CWRU file for label(s) {', '.join(missing)} (label_by={label_by!r}); check the data folder "
            "and the labels in the config"
        )
    return out


def load_set(
    path: str | Path | None,
    labels: Sequence[str],
    *,
    loads: Sequence[int] = (0,),
    label_by: str = "size",
    channel: str = "DE",
    sample_rate: int = 12000,
    files: dict[str, list[str]] | None = None,
) -> list[Recording]:
    """Loads the recordings of a labelled set.

    ``files`` (label -> file names, as stored in artifact metadata) pins the exact files;
    otherwise they are chosen by ``labels``, ``loads`` and ``label_by``.
    """
    folder = cwru_dir(path)
    manifest = read_manifest(folder)
    if files is None:
        chosen = select_files(scan(folder), labels, loads=loads, label_by=label_by)
        files = {lab: [i.name for i in fs] for lab, fs in chosen.items()}
    recs = []
    for lab in labels:
        for name in files.get(lab, []):
            p = folder / name
            if not p.is_file():
                raise DataError(
                    f"{p} is missing; the model was trained on it - point --data at the full CWRU folder"
                )
            recs.append(
                load_recording(p, channel=channel, sample_rate=sample_rate, label=lab, manifest=manifest)
            )
    return recs


def window_starts(n: int, window: int, hop: int) -> np.ndarray:
    """Start indices of the windows that fit entirely in ``n`` samples, every ``hop``."""
    if n < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n - window + 1, hop, dtype=np.int64)


def cut_windows(x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """``(len(starts), window)`` copies of ``x[s : s + window]`` (vectorized gather)."""
    idx = starts[:, None] + np.arange(window)[None, :]
    return x[idx]


@dataclass
class WindowSet:
    """Windows with integer labels: ``x`` ``(n, window)`` float32 (raw, not normalized), ``y`` ``(n,)``."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.size)


def windows_of(
    recs: Sequence[Recording], labels: Sequence[str], bounds: tuple[float, float], *, window: int, hop: int
) -> WindowSet:
    """Every window (regular hop) inside one time part of every recording."""
    xs, ys = [], []
    for r in recs:
        seg = r.part(bounds)
        starts = window_starts(seg.size, window, hop)
        xs.append(cut_windows(seg, starts, window))
        ys.append(np.full(starts.size, labels.index(r.label), dtype=np.int64))
    x = np.concatenate(xs) if xs else np.zeros((0, window), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    return WindowSet(x.astype(np.float32, copy=False), y, list(labels))


class RandomWindows:
    """Training data that draws fresh random window offsets every epoch (class-balanced).

    ``epoch(i, rng)`` returns a WindowSet with ``per_class`` windows of every label, spread evenly
    over that label's recordings, each starting anywhere inside the recording's ``bounds`` part.
    """

    def __init__(
        self,
        recs: Sequence[Recording],
        labels: Sequence[str],
        bounds: tuple[float, float],
        *,
        window: int,
        per_class: int,
    ) -> None:
        self.labels = list(labels)
        self.window = window
        self.per_class = per_class
        self.parts = [(r.part(bounds), self.labels.index(r.label)) for r in recs]
        short = [r.info.name for r, (seg, _) in zip(recs, self.parts) if seg.size < window]
        if short:
            raise DataError(f"recording part shorter than one window of {window}: {', '.join(short)}")
        self.count = {c: sum(1 for _, y in self.parts if y == c) for c in range(len(self.labels))}

    def __len__(self) -> int:
        return self.per_class * len(self.labels)

    def epoch(self, index: int, rng: np.random.Generator) -> WindowSet:
        xs, ys = [], []
        for seg, y in self.parts:
            k = int(math.ceil(self.per_class / self.count[y]))
            starts = rng.integers(0, seg.size - self.window + 1, size=k)
            xs.append(cut_windows(seg, starts, self.window))
            ys.append(np.full(k, y, dtype=np.int64))
        return WindowSet(np.concatenate(xs), np.concatenate(ys), self.labels)


def noisy_part(
    rec: Recording, bounds: tuple[float, float], *, kind: str, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """The part of a recording with noise added to the raw samples, ``snr_db`` below the part's own
    clean power (the evaluation protocol: noise first, windows after)."""
    from drsn_stream.dsp.noise import add_noise

    return add_noise(rec.part(bounds), snr_db, kind, rng)
