"""Your own labelled recordings: a folder per label or a manifest -> clips at the model's rate -> splits.

Two layouts (docs/user-data.md):

- a folder per label: ``DIR/<label>/<file>`` (WAV or another sound file, NPY, CSV, .mat or TDMS; sub-folders are read
  too); the
  recording id of a file is its path inside the label folder without the suffix;
- a manifest, CSV (header row) or TOML (``[[recording]]`` tables): ``path`` and ``label``, optional
  ``rate`` (Hz), ``channel`` (a 0-based column; DE/FE/BA of a CWRU .mat file; a signal of another
  .mat or a TDMS file by name), ``start`` and ``end`` (seconds into the file) and ``recording`` (an
  id: rows with the same id are one stretch of signal, e.g. two excerpts of one run). Paths are
  relative to the manifest's folder.

Files are read with the file source's readers (``drsn_stream.sources.file.load_recording``) and
brought to the model's rate with the polyphase filter of ``drsn_stream.dsp.resample``.

Splits are honest: a recording is either wholly in one role (``by recording``, when a label has at
least three recordings) or cut in time before windowing (``by time``, one or two recordings), so no
stretch of signal gives windows to both training and test.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.audiofile import SUFFIXES as SOUND_SUFFIXES
from drsn_stream.audiofile import decoding
from drsn_stream.config import toml_file
from drsn_stream.dsp.resample import rational_ratio
from drsn_stream.errors import ConfigError, DataError, DrsnStreamError, did_you_mean
from drsn_stream.models.meta import MAX_LABEL_CHARS, label_ok
from drsn_stream.sources.file import (
    NOT_A_RECORDING,
    csv_time_rate,
    load_recording,
    recording_type,
    speed_column,
    stream_name,
)
from drsn_stream.train.cwru import CHANNELS, part_slice

MANIFEST_SUFFIXES = (".csv", ".toml")
MANIFEST_KEYS = ("path", "label", "rate", "channel", "start", "end", "recording")
ON_BAD = ("skip", "fail")
SPLIT_BY = ("auto", "recording", "time")
ROLES = ("train", "val", "test")
DEFAULT_PARTS: dict[str, tuple[float, float]] = {"train": (0.0, 0.60), "val": (0.60, 0.75), "test": (0.75, 1.0)}
MIN_RECORDINGS_FOR_SPLIT_BY_RECORDING = 3


@dataclass(frozen=True)
class Entry:
    """One row of a dataset: a file (or a stretch of it, ``start``/``end`` in s) and its label."""

    path: Path
    label: str
    rel: str  # the path as the dataset names it (relative to the folder or manifest)
    rate: float | None = None
    channel: str | None = None
    start: float | None = None
    end: float | None = None
    recording: str = ""


@dataclass
class Clip:
    """One entry read and resampled: ``signal`` ``(n,)`` float32 at ``sample_rate`` Hz.

    Quacks like ``cwru.Recording`` (``label``, ``part(bounds)``, ``info.name``), so the CWRU windowing,
    training and evaluation code runs on it unchanged.
    """

    name: str
    label: str
    recording: str
    signal: np.ndarray
    sample_rate: int
    source_rate: float
    bounds: tuple[float, float] = (0.0, 1.0)  # the part of the entry this clip is (after a split)

    @property
    def info(self) -> Clip:
        return self

    def part(self, bounds: tuple[float, float]) -> np.ndarray:
        return self.signal[part_slice(self.signal.size, bounds)]

    @property
    def seconds(self) -> float:
        return self.signal.size / float(self.sample_rate)


@dataclass
class UserData:
    """What ``load_user_data`` read: the clips, and one line per file it skipped."""

    root: Path
    layout: str  # "folders" or "manifest"
    clips: list[Clip]
    labels: list[str]
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- layout


def is_cwru_folder(path: str | Path) -> bool:
    """A folder of CWRU .mat files (or the folder holding ``cwru/``), the layout of ``--config`` runs."""
    from drsn_stream.train.cwru import parse_name

    p = Path(path)
    for cand in (p, p / "cwru"):
        if cand.is_dir():
            for f in cand.glob("*.mat"):
                try:
                    parse_name(f.name)
                    return True
                except DataError:
                    continue
    return False


def read_entries(path: str | Path) -> tuple[str, list[Entry]]:
    """``("folders" | "manifest", entries)`` of a dataset path. Raises DataError naming what is wrong."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "manifest", _one_file_one_recording(_manifest_rows(_csv_rows(p), p))
        if p.suffix.lower() == ".toml":
            return "manifest", _one_file_one_recording(_manifest_rows(_toml_rows(p), p))
        raise DataError(f"{p}: a dataset is a folder per label or a manifest (.csv or .toml), not a {p.suffix} file")
    if not p.is_dir():
        raise DataError(f"data {p} not found; give a folder per label (DIR/<label>/*.wav) or a manifest .csv/.toml")
    return "folders", _folder_entries(p)


def _folder_entries(root: Path) -> list[Entry]:
    out: list[Entry] = []
    for d in sorted(x for x in root.iterdir() if x.is_dir() and not x.name.startswith(".")):
        for f in sorted(d.rglob("*")):
            # a link to nothing is listed, so that it is a bad file said by name (it was left out unsaid)
            listed = f.is_file() or (f.is_symlink() and not f.exists())
            if listed and not any(part.startswith(".") for part in f.relative_to(root).parts):
                rel = f.relative_to(root).as_posix()
                inside = f.relative_to(d)  # without its suffix; a name of numbers and dots is kept whole
                inside = inside.with_name(stream_name(inside))
                out.append(Entry(f, d.name, rel, recording=f"{d.name}/{inside.as_posix()}"))
    if not out:
        raise DataError(
            f"{root}: no label folders with recordings; lay it out as {root}/<label>/<file>.wav|.flac|.csv|.npy|.mat|.tdms "
            "or give a manifest (docs/user-data.md)"
        )
    return out


def _csv_rows(p: Path) -> list[dict[str, Any]]:
    try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        with p.open(newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            fh.seek(0)
            # a header row of semicolons and no comma: a spreadsheet's export where the decimal
            # sign is a comma (start;end as 1,5;3)
            semi = ";" in first and "," not in first
            table = list(csv.reader(fh, delimiter=";" if semi else ","))
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{p}: not a readable CSV file ({exc})") from None
    if len(table) < 2:
        raise DataError(f"{p}: empty manifest; it needs a header row (path,label,...) and one row per file")
    header = [h.strip().lower() for h in table[0]]
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:  # the last column of a name would win without a word
        raise DataError(f"{p}: column(s) {', '.join(twice)} named more than once in the header row")
    rows = []
    for i, cells in enumerate(table[1:], start=1):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if len(cells) > len(header):
            raise DataError(f"{p.name} row {i}: {len(cells)} cells under a header of {len(header)} columns; "
                            f"quote a value that holds a {'semicolon' if semi else 'comma'}")
        row = {k: v.strip() for k, v in zip(header, cells) if k}
        if semi:
            row.update({k: row[k].replace(",", ".") for k in ("rate", "start", "end")
                        if re.fullmatch(r"[+-]?\d*,\d+", row.get(k, ""))})
        rows.append(row)
    return rows


def _toml_rows(p: Path) -> list[dict[str, Any]]:
    doc = toml_file(p, DataError)
    rows = doc.get("recording")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{p}: no [[recording]] tables; each needs path = ... and label = ...")
    unknown = sorted(set(doc) - set(MANIFEST_KEYS) - {"recording"})
    if unknown:
        raise DataError(f"{p}: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown, MANIFEST_KEYS)}; "
                        "known: [[recording]] tables and, as their "
                        f"defaults, {', '.join(k for k in MANIFEST_KEYS if k != 'recording')}")
    defaults = {k: v for k, v in doc.items() if k in MANIFEST_KEYS and k != "recording"}  # (the tables' name)
    out = []
    for i, r in enumerate(rows, start=1):
        row = {**defaults, **r}
        for key, value in row.items():
            number = key in ("rate", "start", "end")
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if number
                  else isinstance(value, str) or type(value) is int)  # label = 3, channel = 1
            if key in MANIFEST_KEYS and not ok:
                kind = "a number" if number else "a string"
                raise DataError(f"{p.name} [[recording]] {i}: {key} must be {kind}, not {value!r}")
        out.append(row)
    return out


def _manifest_rows(rows: list[dict[str, Any]], manifest: Path) -> list[Entry]:
    out: list[Entry] = []
    toml = manifest.suffix.lower() == ".toml"  # said in each format's own terms
    for i, r in enumerate(rows, start=1):
        where = f"{manifest.name} [[recording]] {i}" if toml else f"{manifest.name} row {i}"
        unknown = set(r) - set(MANIFEST_KEYS)
        if unknown:
            raise DataError(f"{where}: unknown {'key' if toml else 'column'}(s) {', '.join(sorted(unknown))}"
                            f"{did_you_mean(sorted(unknown), MANIFEST_KEYS)}; known: {', '.join(MANIFEST_KEYS)}")
        if not r.get("path") or not r.get("label"):
            raise DataError(f"{where}: path and label are required")
        rel = str(r["path"])
        path = Path(rel).expanduser()
        if not path.is_absolute():
            path = manifest.parent / path
        out.append(
            Entry(
                path=path,
                label=str(r["label"]),
                rel=rel,
                rate=_number(r.get("rate"), where, "rate"),
                channel=str(r["channel"]) if r.get("channel") not in (None, "") else None,
                start=_number(r.get("start"), where, "start"),
                end=_number(r.get("end"), where, "end"),
                recording=str(r.get("recording") or rel),
            )
        )
    return out


def _one_file_one_recording(entries: list[Entry]) -> list[Entry]:
    """Rows that name the same file (under any spelling: ``a.wav``, ``./a.wav``, a link to it)
    are one recording, whatever ids they were given, and so are the rows that share an id with
    them: two stretches of one run in different parts of a split would let the test part measure
    signal the network trained on."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    first: dict[Path, str] = {}
    for e in entries:
        try:
            key = e.path.resolve()
        except (OSError, RuntimeError):  # a link loop: said when the file is read
            key = e.path
        other = first.setdefault(key, e.recording)
        a, b = root(other), root(e.recording)
        if a != b:
            parent[max(a, b)] = min(a, b)
    if all(root(e.recording) == e.recording for e in entries):
        return entries
    return [replace(e, recording=root(e.recording)) for e in entries]


def _number(v: Any, where: str, key: str) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):  # TOML's true is no rate or time
        raise DataError(f"{where}: {key} must be a number, not {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} must be a number, not {v!r}") from None
    # a NaN start or end became a ValueError from int() when the file was cut; a rate <= 0 a
    # division by zero
    if not math.isfinite(x) or (key == "rate" and not x > 0) or x < 0:
        raise DataError(f"{where}: {key} must be a finite number {'> 0' if key == 'rate' else '>= 0'}, not {v!r}")
    return x


# ---------------------------------------------------------------------------- reading


def read_clip(e: Entry, *, sample_rate: int, default_rate: float | None = None, channel: str | None = None) -> Clip:
    """Reads one entry, picks its channel, cuts start/end and resamples to ``sample_rate`` Hz.

    Raises DrsnStreamError with what is wrong with the file (the caller adds the file's name).
    """
    # what the file holds (a .txt export, IMS's 2004.02.12.10.32.39 are columns of numbers); a
    # missing file is said as missing by the reader
    suffix = recording_type(e.path) if e.path.is_file() else e.path.suffix.lower()
    if suffix is None:
        raise DataError(NOT_A_RECORDING)
    ch = e.channel if e.channel is not None else channel
    # a .mat or TDMS file's channel: DE, FE or BA of a CWRU file, a signal's name, or a column of its signal
    column = ch is not None and re.fullmatch(r"\d+", ch) is not None
    mat_channel = None if ch is None or column else ch
    # sound files (.wav, .flac ...), .mat and TDMS files carry their rate (the last two may not: then
    # --rate); the manifest's rate wins over --rate, the file's over both
    rate = e.rate if e.rate is not None else (None if suffix in (".wav", ".mat", ".tdms", *SOUND_SUFFIXES)
                                              else default_rate)
    # a data logger's CSV: a first column of row times gives the rate (over --rate, as a WAV's
    # header does), and its one sensor column beside it needs no channel
    header, found = csv_time_rate(e.path) if suffix == ".csv" else (None, None)
    # a column of shaft speeds (rpm, a tachometer's) beside the sensors is none of them
    speed = speed_column(header) if header else None
    if speed is not None and ch is not None and re.fullmatch(r"\d+", ch) and int(ch) == speed:
        raise DataError(f"column {speed} is its shaft speed column {header[speed]!r}, not a sensor; "  # type: ignore[index]
                        "give a sensor's column")
    sensors = [i for i in range(len(header or ())) if i != speed and not (found is not None and i == 0)]
    if speed is not None and len(sensors) == 1 and (ch is None or ch.upper() in CHANNELS):
        ch = str(sensors[0])
    if found is not None:
        assert header is not None
        if e.rate is not None and abs(e.rate - found) > 0.01 * found:
            raise DataError(f"rate {e.rate:g} Hz, but its time column {header[0]!r} says {found:.6g} Hz; "
                            "leave the rate out or correct it (times in milliseconds: name the column time_ms)")
        rate = e.rate if e.rate is not None else found
        if (ch is None or ch.upper() in CHANNELS) and len(header) == 2:  # --channel DE is for .mat files
            ch = "1"
        elif ch == "0":
            raise DataError(f"column 0 is its time column {header[0]!r}; give a sensor's column (1 or more)")
    if rate is None and suffix in (".csv", ".npy") and e.path.is_file():  # in training's terms, not ?rate=
        raise DataError(f"{e.rel}: the sample rate is not in the file; give --rate HZ, a rate column in a manifest, "
                        "or a first column of row times named time (docs/user-data.md)")
    x, rate, names, cwru, _ = load_recording(e.path, rate=rate, channel=mat_channel, default_rate=default_rate,
                                             give_rate=": --rate HZ, or a rate column in a manifest (docs/user-data.md)",
                                             pick="channel = NAME in a manifest, or --channel NAME")
    if cwru and column:
        raise DataError(f"channel {ch}: a CWRU .mat file's channels are named: {', '.join(CHANNELS)}")
    if suffix in (".mat", ".tdms") and not column and x.shape[1] > 1:
        what = ", ".join(names) if names else f"{x.shape[1]} columns"
        raise DataError(f"its signal has {x.shape[1]} channels ({what}); say which one with channel = <a signal's "
                        "name, or a 0-based column> in a manifest or --channel")
    x = _column(x, ch if column or suffix not in (".mat", ".tdms") else None)
    x = np.asarray(x, dtype=np.float64)
    a = 0 if e.start is None else int(round(e.start * rate))
    b = x.size if e.end is None else int(round(e.end * rate))
    if e.start is not None and e.end is not None and e.start >= e.end:
        raise DataError(f"start {e.start:g} s is not before end {e.end:g} s")
    if not 0 <= a < b <= x.size:
        raise DataError(f"start/end {e.start}..{e.end} s lie outside the recording (0..{x.size / rate:.2f} s)")
    x = x[a:b]
    if not np.all(np.isfinite(x)):
        raise DataError(f"{int(np.sum(~np.isfinite(x)))} samples are NaN or infinite; clean or cut them (start/end)")
    if x.size > 1 and float(np.std(x)) == 0.0:
        raise DataError("the signal is flat (every sample equal): a disconnected sensor?")
    up, down = rational_ratio(rate, sample_rate)
    if up != down:
        x = resample_poly(x, up, down)
    name = e.rel if e.start is None and e.end is None else f"{e.rel}[{e.start or 0:g}:{'' if e.end is None else f'{e.end:g}'}]"
    return Clip(name, e.label, e.recording, x.astype(np.float32), int(sample_rate), float(rate))


def _column(x: np.ndarray, ch: str | None) -> np.ndarray:
    if ch is None or ch.upper() in CHANNELS:
        if x.shape[1] != 1:
            raise DataError(
                f"{x.shape[1]} columns/channels; say which one with channel = <0-based column> in a manifest "
                "or --channel"
            )
        return x[:, 0]
    if not re.fullmatch(r"\d+", ch):
        raise DataError(f"channel {ch!r} must be a 0-based column number for this file type")
    if int(ch) >= x.shape[1]:
        raise DataError(f"channel {ch} asked, but the file has {x.shape[1]} column(s)")
    return x[:, int(ch)]


def load_user_data(
    path: str | Path,
    *,
    sample_rate: int,
    labels: Sequence[str] | None = None,
    default_rate: float | None = None,
    channel: str | None = None,
    on_bad: str = "fail",
    only: set[str] | None = None,
) -> UserData:
    """Reads a dataset (see the module docstring) at ``sample_rate`` Hz.

    Args:
        labels: the labels to use, in this order (default: every label found, sorted); files of other
            labels are left out.
        default_rate: Hz, for CSV/NPY files whose manifest row gives none.
        on_bad: ``fail`` raises one DataError listing every bad file; ``skip`` leaves them out and
            lists them in ``problems`` (one line each).
        only: read only entries whose dataset name (``Entry.rel``) is in this set.
    """
    if on_bad not in ON_BAD:
        raise ConfigError(f"--on-bad must be skip or fail, not {on_bad!r}")
    root = Path(path).expanduser()
    layout, entries = read_entries(root)
    found = sorted({e.label for e in entries})
    # the artifact's metadata takes these: said now, not after the training
    odd = [lab for lab in found if not label_ok(lab)]
    if odd:
        raise DataError(f"label {odd[0]!r} in {root}: labels must be 1-{MAX_LABEL_CHARS} printable characters "
                        "(they name the model's outputs on the dashboard); rename the folder or the manifest's label")
    if labels:
        missing = [lab for lab in labels if lab not in found]
        if missing:
            raise DataError(
                f"no recordings for label(s) {', '.join(missing)} in {root}; labels found: {', '.join(found)}"
            )
        entries = [e for e in entries if e.label in labels]
    if only is not None:
        entries = [e for e in entries if e.rel in only]
    clips: list[Clip] = []
    problems: list[str] = []
    with decoding():  # a data set's compressed clips share one decoding child
        for e in entries:
            try:
                clips.append(read_clip(e, sample_rate=sample_rate, default_rate=default_rate, channel=channel))
            except DrsnStreamError as exc:
                msg = str(exc)
                problems.append(msg if e.path.name in msg.split(": ")[0] else f"{e.rel}: {msg}")
            except Exception as exc:  # noqa: BLE001 - a reader library's own error on a bad file is that file's line
                problems.append(f"{e.rel}: cannot read it ({type(exc).__name__}: {exc})")
    if problems and on_bad == "fail":
        raise DataError(
            f"{len(problems)} bad file(s) in {root} (pass --on-bad skip to train without them):\n  "
            + "\n  ".join(problems)
        )
    return UserData(root, layout, clips, list(labels) if labels else found, problems)


# ---------------------------------------------------------------------------- splits


@dataclass
class Split:
    """Which part of which clip plays which role: ``segments[role]`` are clips cut to their part.

    ``by[label]`` is ``"recording"`` or ``"time"``; ``table`` is what the artifact's metadata stores.
    """

    segments: dict[str, list[Clip]]
    by: dict[str, str]
    parts: dict[str, tuple[float, float]]
    table: list[dict[str, Any]]


def parse_parts(text: str | None) -> dict[str, tuple[float, float]]:
    """``"train=0:0.3,test=0.5:1"`` -> fractions per role (val optional); time order, no overlap."""
    if not text:
        return dict(DEFAULT_PARTS)
    out: dict[str, tuple[float, float]] = {}
    for item in text.split(","):
        m = re.fullmatch(r"\s*(train|val|test)\s*=\s*([0-9.]+)\s*:\s*([0-9.]+)\s*", item)
        if not m:
            raise ConfigError(f"--parts item {item!r}: expected role=start:end, e.g. train=0:0.6,val=0.6:0.75,test=0.75:1")
        out[m[1]] = (float(m[2]), float(m[3]))
    if "train" not in out or "test" not in out:
        raise ConfigError("--parts needs train= and test= (val= is optional)")
    bounds = [out[r] for r in ROLES if r in out]
    flat = [v for b in bounds for v in b]
    if not (0.0 <= flat[0] and flat == sorted(flat) and flat[-1] <= 1.0 and all(a < b for a, b in bounds)):
        raise ConfigError(f"--parts must be in time order train, val, test without overlap inside 0..1, got {text!r}")
    return out


def split_clips(
    clips: Sequence[Clip],
    labels: Sequence[str],
    *,
    by: str = "auto",
    parts: dict[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> Split:
    """Assigns every clip (or part of it) to train/val/test, per label.

    ``by="recording"``: whole recordings go to one role (shares of recordings from the part lengths,
    at least one for test and for val when a val part is given); ``"time"``: every recording is cut
    at the part fractions; ``"auto"``: by recording for a label with at least three recordings,
    else by time. Clips sharing a recording id always stay together.
    """
    if by not in SPLIT_BY:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_BY)}, not {by!r}")
    parts = dict(parts or DEFAULT_PARTS)
    roles = [r for r in ROLES if r in parts]
    segments: dict[str, list[Clip]] = {r: [] for r in roles}
    table: list[dict[str, Any]] = []
    how: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for lab in labels:
        of_label = [c for c in clips if c.label == lab]
        recs = sorted({c.recording for c in of_label})
        mode = by if by != "auto" else ("recording" if len(recs) >= MIN_RECORDINGS_FOR_SPLIT_BY_RECORDING else "time")
        if mode == "recording" and len(recs) < len(roles):
            raise DataError(
                f"label {lab}: {len(recs)} recording(s) cannot be split by recording into {', '.join(roles)}; "
                "record more or use --split time"
            )
        how[lab] = mode
        if mode == "time":
            for c in of_label:
                for r in roles:
                    seg = _cut(c, parts[r])
                    segments[r].append(seg)
                    table.append({"file": c.name, "label": lab, "recording": c.recording, "role": r, "part": list(parts[r])})
            continue
        role_of = _assign_recordings(recs, roles, parts, rng)
        for c in of_label:
            r = role_of[c.recording]
            segments[r].append(c)
            table.append({"file": c.name, "label": lab, "recording": c.recording, "role": r, "part": [0.0, 1.0]})
    return Split(segments, how, {r: parts[r] for r in roles}, table)


def _assign_recordings(
    recs: list[str], roles: list[str], parts: dict[str, tuple[float, float]], rng: np.random.Generator
) -> dict[str, str]:
    order = [recs[i] for i in rng.permutation(len(recs))]
    total = sum(parts[r][1] - parts[r][0] for r in roles)
    counts = {r: max(1, int(round(len(recs) * (parts[r][1] - parts[r][0]) / total))) for r in roles if r != "train"}
    counts["train"] = len(recs) - sum(counts.values())
    while counts["train"] < 1:  # few recordings: train keeps at least one, the largest other role gives
        give = max((r for r in counts if r != "train"), key=lambda r: counts[r])
        counts[give] -= 1
        counts["train"] += 1
    out: dict[str, str] = {}
    i = 0
    for r in ["test", "val", "train"]:
        for rec in order[i : i + counts.get(r, 0)]:
            out[rec] = r
        i += counts.get(r, 0)
    return out


def _cut(c: Clip, bounds: tuple[float, float]) -> Clip:
    lo, hi = c.bounds
    span = hi - lo
    return Clip(
        c.name, c.label, c.recording, c.part(bounds), c.sample_rate, c.source_rate,
        (lo + bounds[0] * span, lo + bounds[1] * span),
    )


def segments_from_table(clips: Sequence[Clip], table: Sequence[dict[str, Any]], role: str) -> list[Clip]:
    """The clips of one role as an artifact's metadata recorded them (for ``eval``).

    Raises DataError naming a recorded file that is not in the dataset any more.
    """
    by_name = {c.name: c for c in clips}
    out = []
    for row in table:
        if row["role"] != role:
            continue
        c = by_name.get(row["file"])
        if c is None:
            raise DataError(f"{row['file']} (label {row['label']}) was in the {role} part when the model was "
                            "trained but is not in this dataset; point --data at the training dataset")
        out.append(_cut(c, tuple(row["part"])))  # type: ignore[arg-type]
    return out


def check_amounts(split: Split, labels: Sequence[str], *, window: int, min_train_windows: int) -> list[str]:
    """Lines naming every label with too little data for training or a test (empty when all is fine).

    A label needs at least ``min_train_windows`` windows' worth of training signal and one whole
    window in its test (and val) part.
    """
    lines = []
    for lab in labels:
        have = {r: sum(c.signal.size for c in segs if c.label == lab) for r, segs in split.segments.items()}
        longest = {r: max((c.signal.size for c in segs if c.label == lab), default=0) for r, segs in split.segments.items()}
        train_windows = have.get("train", 0) / window
        problems = []
        if train_windows < min_train_windows:
            problems.append(f"{train_windows:.1f} windows of training signal, needs {min_train_windows}")
        for r in ("val", "test"):
            if r in have and longest[r] < window:
                problems.append(f"its {r} part is shorter than one window")
        if problems:
            sr = split.segments["train"][0].sample_rate if split.segments["train"] else 0
            secs = f" ({window / sr:.3f} s each)" if sr else ""
            lines.append(f"label {lab}: " + "; ".join(problems) + f" of {window} samples{secs}; record more of it")
    return lines


def describe(data: UserData, split: Split) -> list[str]:
    """One line per label: recordings, seconds and how it is split."""
    lines = []
    for lab in data.labels:
        cs = [c for c in data.clips if c.label == lab]
        rates = sorted({f"{c.source_rate:g}" for c in cs})
        lines.append(
            f"{lab}: {len({c.recording for c in cs})} recording(s), {sum(c.seconds for c in cs):.1f} s "
            f"(source rate {', '.join(rates)} Hz), split by {split.by.get(lab, '?')}"
        )
    return lines


def seconds_of(clips: Sequence[Clip]) -> float:
    return float(sum(c.seconds for c in clips))


def windows_capacity(clips: Sequence[Clip], window: int) -> int:
    """Non-overlapping windows that fit in the clips (a size figure for reports)."""
    return int(sum(math.floor(c.signal.size / window) for c in clips))
