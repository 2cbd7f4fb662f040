"""Envelope analysis: the bearing fault type from physics, beside the DRSN.

A local fault on a rolling-element bearing strikes once per pass of a rolling element; each strike
rings a structural resonance of a few kHz. The envelope of that ringing repeats at the fault's
characteristic frequency, which the bearing's geometry fixes as a multiple (an *order*) of the shaft
speed: BPFO (outer race), BPFI (inner race), BSF (ball spin), FTF (cage). This module finds those
lines in the squared-envelope spectrum of one block of vibration and scores them against the local
spectral floor::

    geometry = bearing_geometry("cwru-de")            # or BearingGeometry(bpfo=..., bpfi=..., ...)
    result = analyse_block(x, rate=12000.0, shaft_hz=1797 / 60, geometry=geometry)
    result.fault_type                                 # "outer_race" | "inner_race" | "ball" | "none"
    result.evidence                                   # {"bpfo": dB, "bpfi": dB, "bsf": dB}

Method (pure functions; any sample rate; blocks of any length, ~1 s is what the monitor uses):

1. One real FFT of the block. The resonance band is not fixed: a grid of half-overlapping bands
   (``band_hz`` wide, from ``min_hz`` up to 0.9 x Nyquist) is tried, and each fault family keeps the
   band where its own evidence is best (a fault-targeted band choice, in the spirit of the
   IESFOgram, rather than the band of largest spectral kurtosis, which need not hold the lines).
2. Per band, the analytic band-limited signal is formed directly in the frequency domain (one-sided
   bins with a Hann taper, shifted to base band), so its squared envelope ``|z|^2`` needs only a
   short inverse FFT; the envelope spectrum is the power spectrum of ``|z|^2`` (Hann window, mean
   removed), with the resolution of the whole block (1 / block seconds).
3. For each family the targets are its first ``harmonics`` lines, plus the modulation sidebands that
   the physics predicts: BPFI +- shaft speed (the inner race turns through the load zone), BSF lines
   at twice BSF (a ball strikes both races per spin) +- FTF (the cage carries the ball through the
   load zone). A target's score is ``10 log10(peak / floor)``: the largest bin within
   +-``tolerance`` (relative, for slip) over the median of the bins around it (``floor_width``
   times the search half-width on each side, the search window excluded). A family's evidence is
   the mean of its targets' scores, in dB. Optionally (``speed_tolerance``) a family's lines are
   also searched moved together by one factor, for a speed that is off by more than the slip.
4. Each family's score is reported over what white Gaussian noise (a signal with no lines at all)
   scores in the same procedure, so 0 dB means "as noise" for every family, speed and rate.
5. The fault type is the family with the most evidence when that evidence reaches ``threshold_db``;
   else ``none``. The threshold sits above the noise's 99.9th percentile: see
   ``docs/own-machine.md`` for the measured null distribution and the per-class results on CWRU.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError, DataError, did_you_mean

FAULT_TYPES = ("outer_race", "inner_race", "ball", "none")
FAMILIES = ("bpfo", "bpfi", "bsf")
_TYPE_OF = {"bpfo": "outer_race", "bpfi": "inner_race", "bsf": "ball"}
_FAMILY_OF_TYPE = {t: k for k, t in _TYPE_OF.items()}  # (read per window: family_of)
# The DRSN's label prefixes (inner_014, outer_007, ball_021, normal) as fault types.
_FLOOR_BINS = 64  # most bins a line's floor median is taken over
_NULL_BLOCKS = 32  # noise blocks per plan for the null level (median known to ~0.1 dB)
_FAMILY_OF_LABEL = {"inner": "inner_race", "outer": "outer_race", "ball": "ball", "normal": "none"}


@dataclass(frozen=True)
class BearingGeometry:
    """A bearing's fault frequencies as orders of shaft speed (multiples of the shaft frequency).

    Attributes:
        bpfo / bpfi: ball-pass frequency of the outer / inner race (orders).
        bsf: ball spin frequency (orders); ftf: fundamental train (cage) frequency (orders).
        name: what to call it in messages.
    """

    bpfo: float
    bpfi: float
    bsf: float
    ftf: float
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in ("bpfo", "bpfi", "bsf", "ftf"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"bearing geometry {self.name!r}: {f} must be an order > 0 "
                                  f"(a multiple of shaft speed), not {v!r}")

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """The four fault frequencies in Hz at ``shaft_hz``."""
        return {f: getattr(self, f) * shaft_hz for f in ("bpfo", "bpfi", "bsf", "ftf")}

    @classmethod
    def from_dimensions(cls, balls: float, ball_diameter: float, pitch_diameter: float, contact_angle: float = 0.0,
                        name: str = "custom") -> BearingGeometry:
        """The orders of a bearing with a stationary outer race and ``balls`` rolling elements of
        ``ball_diameter`` on a ``pitch_diameter`` circle (one unit for both), ``contact_angle``
        in degrees: the textbook kinematic frequencies (no slip)."""
        dims = {"balls": balls, "ball_diameter": ball_diameter, "pitch_diameter": pitch_diameter,
                "contact_angle": contact_angle}
        for k, v in dims.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"bearing {name!r}: {k} must be a number, not {v!r}")
        if balls != int(balls) or not 3 <= balls <= MAX_BALLS:
            raise ConfigError(f"bearing {name!r}: balls (rolling elements per row) must be a whole number "
                              f"3..{MAX_BALLS}, not {balls!r}")
        if not 0 < ball_diameter < pitch_diameter:
            raise ConfigError(f"bearing {name!r}: ball_diameter must be > 0 and below pitch_diameter (the "
                              f"circle through the balls' centres, in the same unit), not {ball_diameter!r} "
                              f"and {pitch_diameter!r}")
        if not 0 <= contact_angle < 90:
            raise ConfigError(f"bearing {name!r}: contact_angle is in degrees, 0 (a deep-groove ball bearing) "
                              f"up to below 90, not {contact_angle!r}")
        r = ball_diameter / pitch_diameter * math.cos(math.radians(contact_angle))
        return cls(bpfo=balls / 2 * (1 - r), bpfi=balls / 2 * (1 + r),
                   bsf=pitch_diameter / (2 * ball_diameter) * (1 - r * r), ftf=(1 - r) / 2, name=name)


MAX_BALLS = 200
DIMENSIONS = ("balls", "ball_diameter", "pitch_diameter", "contact_angle")
ORDERS = ("bpfo", "bpfi", "bsf", "ftf")

# The bearings of public test rigs, as their publishers give them (the orders where they are given,
# else the dimensions), so that recordings from those rigs, or machines with the same bearing, need
# no arithmetic. SKF 6205-2RS JEM, the drive-end bearing of the CWRU rig (CWRU Bearing Data Center,
# defect frequencies as multiples of running speed; its "rolling element" 4.7135 is twice the ball
# spin frequency, as the ball meets both races in a turn).
_CWRU_DE = BearingGeometry(bpfo=3.5848, bpfi=5.4152, bsf=2.3570, ftf=0.3983, name="6205-2RS JEM SKF")
# SKF 6203-2RS JEM, CWRU's fan end (the same page: 3.0530, 4.9469, 3.9874 / 2, 0.3817); Paderborn's
# 6203 bearings have the same dimensions (8 balls of 6.75 mm on a 28.55 mm pitch circle) to 0.1 %.
_CWRU_FE = BearingGeometry(bpfo=3.0530, bpfi=4.9469, bsf=3.9874 / 2, ftf=0.3817, name="6203-2RS JEM SKF")
# Rexnord ZA-2115 double-row roller bearing, the IMS / NASA run-to-failure rig (Qiu et al. 2006):
# 16 rollers of 0.331 in on a 2.815 in pitch circle, contact angle 15.17 degrees.
_ZA_2115 = BearingGeometry.from_dimensions(16, 0.331, 2.815, 15.17, name="Rexnord ZA-2115")
# LDK UER204, the XJTU-SY run-to-failure rig (Wang et al. 2020): 8 balls of 7.92 mm on 34.55 mm.
_UER204 = BearingGeometry.from_dimensions(8, 7.92, 34.55, 0.0, name="LDK UER204")
# The MFPT data set's NICE bearing: 8 rollers of 0.235 in on a 1.245 in pitch circle.
_MFPT = BearingGeometry.from_dimensions(8, 0.235, 1.245, 0.0, name="MFPT NICE bearing")
GEOMETRIES: dict[str, BearingGeometry] = {
    "6205": _CWRU_DE, "6205-2rs": _CWRU_DE, "cwru-de": _CWRU_DE,
    "6203": _CWRU_FE, "6203-2rs": _CWRU_FE, "cwru-fe": _CWRU_FE, "paderborn": _CWRU_FE,
    "za-2115": _ZA_2115, "ims": _ZA_2115,
    "uer204": _UER204, "xjtu-sy": _UER204,
    "mfpt": _MFPT,
}


_HOW = ("give a named bearing, the four orders bpfo, bpfi, bsf, ftf (multiples of shaft speed), or its "
        "dimensions: balls, ball_diameter, pitch_diameter (one unit) and contact_angle (degrees, default 0)")


def bearing_geometry(spec: str | Mapping[str, Any] | BearingGeometry) -> BearingGeometry:
    """A geometry from a name in ``GEOMETRIES`` (``"6205"``, ``"cwru-de"``), from the four orders
    (``{"bpfo": 3.5848, "bpfi": 5.4152, "bsf": 2.357, "ftf": 0.3983}``), or from the dimensions
    (``{"balls": 9, "ball_diameter": 7.94, "pitch_diameter": 39.04, "contact_angle": 0}``); a
    string of ``key=value`` pairs (``"balls=9,ball_diameter=7.94,pitch_diameter=39.04"``) is
    read as the table it spells, as ``--bearing`` gives it."""
    if isinstance(spec, BearingGeometry):
        return spec
    if isinstance(spec, str) and "=" in spec:
        return bearing_geometry(_pairs(spec))
    if isinstance(spec, str):
        g = GEOMETRIES.get(spec.strip().lower())
        if g is None:
            raise ConfigError(f"unknown bearing {spec!r}; named ones: {', '.join(sorted(GEOMETRIES))}; or "
                              + _HOW.removeprefix("give a named bearing, "))
        return g
    if isinstance(spec, Mapping):
        name = str(spec.get("name", "custom"))
        keys = set(spec) - {"name"}
        extra = sorted(keys - {*ORDERS, *DIMENSIONS})
        orders, dims = keys & set(ORDERS), keys & set(DIMENSIONS)
        if extra:
            raise ConfigError(f"bearing geometry: unknown key(s) {', '.join(extra)}"
                              f"{did_you_mean(extra, (*ORDERS, *DIMENSIONS))}; {_HOW}")
        if orders and dims:
            raise ConfigError(f"bearing geometry: give the orders ({', '.join(sorted(orders))}) or the dimensions "
                              f"({', '.join(sorted(dims))}), not both")
        if not (orders or dims):
            raise ConfigError(f"bearing geometry: {_HOW}")
        if dims:
            given = {k: _number(spec[k], k) for k in DIMENSIONS if k in spec}
            missing = [k for k in DIMENSIONS[:3] if k not in given]
            if missing:
                raise ConfigError(f"bearing geometry from dimensions needs balls, ball_diameter and pitch_diameter "
                                  f"(contact_angle: 0 if left out); missing {', '.join(missing)}")
            if "name" not in spec:
                name = (f"{given['balls']:g} balls of {given['ball_diameter']:g} on {given['pitch_diameter']:g}"
                        + (f", {given['contact_angle']:g} deg" if given.get("contact_angle") else ""))
            return BearingGeometry.from_dimensions(**given, name=name)
        missing = [k for k in ORDERS if k not in spec]
        if missing:
            raise ConfigError(f"bearing geometry needs bpfo, bpfi, bsf and ftf (orders of shaft speed); missing "
                              f"{', '.join(missing)}")
        return BearingGeometry(**{k: _number(spec[k], k) for k in ORDERS}, name=name)
    raise ConfigError(f"bearing geometry must be a name or a table of orders or dimensions, not {spec!r}")


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool):
        raise ConfigError(f"bearing geometry: {key} must be a number, not {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"bearing geometry: {key} must be a number, not {v!r}") from None


def _pairs(spec: str) -> dict[str, str]:
    """``"balls=9, ball_diameter=7.94"`` -> ``{"balls": "9", "ball_diameter": "7.94"}``."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or not key or not value.strip():
            raise ConfigError(f"bearing {spec!r}: expected key=value pairs separated by commas "
                              f"(balls=9,ball_diameter=7.94,pitch_diameter=39.04), got {part.strip()!r}")
        if key in out:
            raise ConfigError(f"bearing {spec!r}: {key} given twice")
        out[key] = value.strip()
    return out


MAX_HARMONICS = 20  # lines per family (the defaults: 3)
MAX_LINE_BINS = 100  # a line's peak search, bins on each side (the default: 1)


@dataclass(frozen=True)
class EnvelopeSettings:
    """How the envelope evidence is computed (the defaults and their measurements: docs/own-machine.md).

    Attributes:
        band_hz: width of each candidate resonance band, Hz (raised when the highest target needs
            more: the squared envelope of a band ``B`` Hz wide holds frequencies up to ``B``).
        min_hz: lowest band edge, Hz (below it, beating machine tones - shaft, mains, gear mesh -
            put lines into the envelope that can fall near a fault frequency).
        harmonics: lines per family (1st..nth).
        tolerance: how far (relative) each line may sit, on its own, from where the speed and
            orders put it (rolling-element slip).
        speed_tolerance: how far (relative) a family's lines may sit, all moved by one factor (a
            speed that is off, e.g. a nameplate rpm); 0 turns this search off. With both on, a
            family's evidence is the better of the two searches.
        line_bins: half-width of each line's peak search at one factor, in bins.
        floor_width: the floor's neighbourhood on each side, in searched half-widths.
        threshold_db: least family evidence that names a fault; below it the type is ``none``.
        margin_db: where the stream's baseline learned the machine's own evidence (its median per
            family while it learned), how far over it a family must rise to name a fault as well:
            lines the machine had while healthy (another component's, a sensor far from the
            bearing) are its normal, not a fault.
    """

    band_hz: float = 1000.0
    min_hz: float = 2000.0
    harmonics: int = 3
    tolerance: float = 0.02
    speed_tolerance: float = 0.0
    line_bins: int = 1
    floor_width: float = 10.0
    threshold_db: float = 3.0
    margin_db: float = 3.0

    def __post_init__(self) -> None:
        problems = [f"{n} must be > 0, not {getattr(self, n)!r}"
                    for n in ("band_hz", "floor_width") if not getattr(self, n) > 0]
        if not self.floor_width <= 1000:
            problems.append(f"floor_width must be at most 1000 half-widths, not {self.floor_width!r}")
        # relative deviations of a line from where it belongs: 1 would be anywhere from 0 Hz to twice it
        problems += [f"{n} must be >= 0 and < 1 (a share of the line's frequency), not {getattr(self, n)!r}"
                     for n in ("tolerance", "speed_tolerance") if not 0 <= getattr(self, n) < 1]
        if not self.min_hz >= 0:
            problems.append(f"min_hz must be >= 0, not {self.min_hz!r}")
        # each harmonic is a line searched in every band: 2^63 of them ran the stage out of memory
        if not (isinstance(self.harmonics, int) and 1 <= self.harmonics <= MAX_HARMONICS):
            problems.append(f"harmonics must be an integer from 1 to {MAX_HARMONICS}, not {self.harmonics!r}")
        if not (isinstance(self.line_bins, int) and 0 <= self.line_bins <= MAX_LINE_BINS):
            problems.append(f"line_bins must be an integer from 0 to {MAX_LINE_BINS}, not {self.line_bins!r}")
        if not math.isfinite(self.threshold_db):
            problems.append(f"threshold_db must be a number of dB, not {self.threshold_db!r}")
        if not (math.isfinite(self.margin_db) and self.margin_db >= 0):
            problems.append(f"margin_db must be a number of dB >= 0, not {self.margin_db!r}")
        if problems:
            raise ConfigError("envelope settings: " + "; ".join(problems))


@dataclass(frozen=True)
class EnvelopeResult:
    """One block's envelope evidence.

    Attributes:
        fault_type: "outer_race" | "inner_race" | "ball" | "none".
        evidence: {"bpfo", "bpfi", "bsf"}: mean peak-over-floor of each family's lines, dB.
        bands: {"bpfo", "bpfi", "bsf"}: (low, high) Hz of the band each family's evidence came from.
        shaft_hz: the shaft speed used, Hz (a block followed through a change of speed: its mean).
        normal: the machine's learned evidence per family, dB, where the type was decided against
            it (``decide``); None: against the threshold alone.
        held: for a fault type, whether its family reached what it needs in each of the stream's
            last three blocks in a row (what the envelope's alarm asks; the live stage judges it
            when read); None for ``none`` and for a block judged on its own.
        own: the type is ``none`` only because ``normal`` holds the lines that reach the threshold
            (the machine's own lines, learned: JSON ``"own": true``, the dashboard's ``learned``).
    """

    fault_type: str
    evidence: dict[str, float]
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)
    shaft_hz: float = 0.0
    normal: dict[str, float] | None = None
    held: bool | None = None
    own: bool = False

    @property
    def strength_db(self) -> float:
        """The named family's evidence (the largest one when the type is ``none``), dB."""
        return max(self.evidence.values()) if self.evidence else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.fault_type, "evidence": {k: round(float(v), 2) for k, v in self.evidence.items()},
                "rpm": round(60.0 * float(self.shaft_hz), 1),
                **({"normal": {k: round(float(v), 2) for k, v in self.normal.items()}} if self.normal else {}),
                **({"held": self.held} if self.held is not None else {}),
                **({"own": True} if self.own else {})}


def _targets(geometry: BearingGeometry, shaft_hz: float, harmonics: int) -> dict[str, list[float]]:
    """The lines (Hz) each family is scored on: harmonics and their physical sidebands."""
    f = geometry.frequencies(shaft_hz)
    out: dict[str, list[float]] = {"bpfo": [], "bpfi": [], "bsf": []}
    for h in range(1, harmonics + 1):
        out["bpfo"].append(h * f["bpfo"])
        out["bpfi"] += [h * f["bpfi"], h * f["bpfi"] - shaft_hz, h * f["bpfi"] + shaft_hz]
        out["bsf"] += [2 * h * f["bsf"], 2 * h * f["bsf"] - f["ftf"], 2 * h * f["bsf"] + f["ftf"]]
    return out


@lru_cache(maxsize=256)
def _plan(n: int, rate: float, shaft_hz: float, geometry: BearingGeometry, settings: EnvelopeSettings) -> dict[str, Any]:
    """Everything that depends only on the block length, rate, speed and geometry (cached)."""
    df = rate / n
    targets = _targets(geometry, shaft_hz, settings.harmonics)
    top = max(max(v) for v in targets.values())
    slack = max(settings.tolerance, settings.speed_tolerance) * top + (settings.line_bins + 2) * df
    reach = top + slack * (1 + settings.floor_width)
    band = max(settings.band_hz, reach)
    nyq = rate / 2
    hi_edge = 0.9 * nyq
    if settings.min_hz + band > hi_edge:
        raise ConfigError(f"envelope: at {rate:g} Hz there is no {band:.0f} Hz band above {settings.min_hz:g} Hz; "
                          "lower envelope.band_hz / envelope.min_hz, or use a higher sample rate")
    starts = np.arange(settings.min_hz, hi_edge - band + 1e-9, band / 2)
    width = int(round(band / df))
    from scipy import fft as sfft  # here: every monitor imports this module, few analyse envelopes

    m = sfft.next_fast_len(2 * width + 8)  # the squared envelope's bandwidth is the band's
    taper = np.hanning(width).astype(np.float32)
    plan: dict[str, Any] = {"starts": starts, "width": width, "m": m, "taper": taper, "df": df, "band": band}
    # Two ways to look for a family's lines; a family's evidence is the better of the two, each
    # measured over its own noise level. "Each on its own": every line's peak within +-tolerance of
    # where the speed and orders put it (slip that differs from line to line). "Together": a speed
    # error or a steady slip moves all lines of a family by one factor, so for each factor on a
    # grid (the highest line moves about one bin per step) each line's peak is taken within
    # +-line_bins of where that factor puts it: +-speed_tolerance with narrow windows.
    views = [_view(targets, np.ones(1), settings.tolerance, 0, df, m, settings)] if settings.tolerance > 0 else []
    if settings.speed_tolerance > 0 or not views:
        step = df / top
        steps = int(math.ceil(settings.speed_tolerance / step))
        scales = 1.0 + step * np.arange(-steps, steps + 1)
        views.append(_view(targets, scales, 0.0, settings.line_bins, df, m, settings))
    plan["views"] = views
    # What each family scores on lines that are not there: blocks of white Gaussian noise through
    # the same bands and windows. Evidence is reported over this level, so 0 dB means "as noise"
    # for every family, view, speed and block length alike (a family with fewer lines, or lines in
    # wider windows, would otherwise start higher). Fixed seed: the same plan gives the same numbers.
    rng = np.random.default_rng(12345)
    for view in views:
        view["null"] = np.zeros(len(FAMILIES))
    nulls = np.array([[_family_scores(envelope_spectra(rng.standard_normal(n), rate, starts, width, m, taper), view)
                       .max(axis=1) for view in views] for _ in range(_NULL_BLOCKS)])  # (blocks, views, families)
    for view, null in zip(views, np.median(nulls, axis=0)):
        view["null"] = null
    return plan


def _view(targets: dict[str, list[float]], scales: np.ndarray, tolerance: float, line_bins: int, df: float, m: int,
          settings: EnvelopeSettings) -> dict[str, Any]:
    """Bin numbers for one way of searching the lines: ``search`` (scales, lines, span) and
    ``floor`` (lines, bins), all families' lines in one array (``split`` separates them), so that
    scoring is one gather, one max and one partial sort."""
    reach = float(np.max(np.abs(scales - 1.0)))
    rows: list[np.ndarray] = []  # per line: (scales, bins searched), ragged in its last axis
    floor, counts = [], []
    for fam in FAMILIES:
        counts.append(len(targets[fam]))
        for c in targets[fam]:
            if tolerance > 0:  # each line on its own: the bins within +-tolerance of it
                w = max(tolerance * c, 1.5 * df)
                k = np.arange(int(math.floor((c - w) / df)), int(math.ceil((c + w) / df)) + 1)
                rows.append(k[np.abs(k * df - c) <= w][None, :])
            else:  # lines moved together: +-line_bins around where each factor puts the line
                w = reach * c + (line_bins + 0.5) * df
                rows.append(np.round(scales * c / df).astype(int)[:, None] + np.arange(-line_bins, line_bins + 1))
            # the searched range is kept out of the floor
            k = np.arange(int(math.floor((c - w * (1 + settings.floor_width)) / df)),
                          int(math.ceil((c + w * (1 + settings.floor_width)) / df)) + 1)
            out = k[(k >= 1) & (k < m // 2) & (np.abs(k * df - c) > w)]
            # at most _FLOOR_BINS bins, evenly spread: neighbouring bins of a Hann-windowed spectrum
            # are correlated, so more bins would not make the median better, only slower
            floor.append(out[np.round(np.linspace(0, len(out) - 1, _FLOOR_BINS)).astype(int)]
                         if len(out) > _FLOOR_BINS else out)
    widest = max(r.shape[1] for r in rows)
    # a narrower line repeats its own bins up to the widest one's count (the max is unchanged)
    search = [r[:, np.round(np.linspace(0, r.shape[1] - 1, widest)).astype(int)] for r in rows]
    return {"search": np.clip(np.stack(search, axis=1), 1, m // 2).astype(np.intp), "floor": _rect(floor),
            "split": np.cumsum(counts)[:-1], "null": np.zeros(len(FAMILIES))}


def _family_scores(S: np.ndarray, view: dict[str, Any]) -> np.ndarray:
    """Each family's mean peak-over-floor (dB) over its noise level, in every band, at its best
    speed factor: (families, bands)."""
    tiny = np.finfo(np.float32).tiny
    peak = S[:, view["search"]].max(axis=3)  # (bands, scales, lines)
    floor = S[:, view["floor"]]
    mid = floor.shape[2] // 2
    base = np.partition(floor, mid, axis=2)[:, :, mid]  # (bands, lines): the median (upper middle if even)
    db = 10.0 * np.log10((peak + tiny) / (base[:, None, :] + tiny))
    return np.stack([part.mean(axis=2).max(axis=1) for part in np.split(db, view["split"], axis=2)]) - view["null"][:, None]


def _rect(rows: list[np.ndarray]) -> np.ndarray:
    size = max(len(r) for r in rows)
    # spread the repeats evenly over the row, so the padded row's median stays its own
    return np.stack([r[np.round(np.linspace(0, len(r) - 1, size)).astype(int)] if len(r) else np.zeros(size, int)
                     for r in rows]).astype(np.intp)


def envelope_spectra(x: np.ndarray, rate: float, starts: np.ndarray, width: int, m: int,
                     taper: np.ndarray | None = None, angle: np.ndarray | None = None) -> np.ndarray:
    """Squared-envelope spectra of ``x`` in several bands at once.

    Args:
        x: one block of samples, shape (n,), any unit (g for accelerometers).
        rate: sample rate, Hz.
        starts: lower band edges, Hz, shape (bands,); each band is ``width`` FFT bins wide
            (bin = rate / n Hz).
        width: band width in bins; m: inverse-FFT length (>= 2 * width).
        taper: weights over the band's bins (default Hann), shape (width,).
        angle: for a shaft whose speed changed over the block (``shaft_angle``): where, in steps
            of ``n / (2 m)`` samples, each of ``2 m`` equal steps of shaft angle fell. The squared
            envelopes are resampled there (computed order tracking), so a fault line stays one
            line however the speed moved; bin k is then k / R orders for the R revolutions the
            steps cover: k * rate / n Hz at the speed that turns R in the block.

    Returns:
        power spectra of the squared envelopes, shape (bands, m // 2 + 1); bin k is k * rate / n Hz
        (the block's own resolution).
    """
    from scipy import fft as sfft  # imported at first use (~0.3 s of CPU), see _plan

    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    X = sfft.rfft(x - x.mean())  # single precision: the scores are in dB, a 1e-7 error is nothing
    k0 = np.clip(np.round(np.asarray(starts) * n / rate).astype(int), 1, max(1, X.shape[0] - width))
    rows = X[k0[:, None] + np.arange(width)[None, :]]
    if taper is not None:
        rows = rows * taper
    # The band's resonance is the structure's, at fixed Hz whatever the speed: the band is taken in
    # time, and only its squared envelope, whose lines are orders of the shaft, goes to angle.
    # Twice the samples there (the inverse FFT's zero padding interpolates exactly) keep the linear
    # interpolation onto the angle grid flat over the lines' frequencies.
    size = m if angle is None else 2 * m
    z = sfft.ifft(rows, n=size, axis=1)  # analytic band signal at base band (decimated)
    env = z.real**2 + z.imag**2
    if angle is not None:
        i = np.minimum(angle.astype(np.intp), size - 1)
        frac = (angle - i).astype(np.float32)
        env = env[:, i] * (1 - frac) + env[:, (i + 1) % size] * frac  # the inverse FFT's signal is periodic
    env -= env.mean(axis=1, keepdims=True)
    env *= _hann(size)
    E = sfft.rfft(env, axis=1)[:, : m // 2 + 1]
    return E.real**2 + E.imag**2


MAX_SPEED_RATIO = 2.0  # fastest over slowest within one block that order tracking follows
# A followed block is analysed on a plan for a speed of this grid (relative steps), the highest at
# or under its mean speed, over as many revolutions as that speed turns in the block (its last
# <= 0.5 % left out): its lines then fall exactly where the plan looks, and a machine that cycles
# between set points reuses a few plans (each costs ~20 ms to make) instead of one per block.
PLAN_STEP = 0.005


def mean_speed(starts: np.ndarray, hz: np.ndarray, seconds: float) -> float:
    """The mean of a speed given as runs (``shaft_angle``) over ``seconds`` from 0: revolutions
    over seconds, Hz."""
    starts = np.asarray(starts, dtype=np.float64)
    edges = np.clip(np.append(starts, np.inf), 0.0, seconds)
    return float(np.dot(np.asarray(hz, dtype=np.float64), np.diff(edges))) / seconds


def speed_curve(starts: np.ndarray, hz: np.ndarray, seconds: float, steps: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A speed given as runs (``shaft_angle``) as a smooth curve over a block: a least-squares
    quadratic in time through each run's reading at its middle (weighted by how long it lasted
    within the block; a line through two), as ``steps`` equal runs. A tachometer's readings jitter
    from frame to frame (a pulse more or less in a frame): integrated as they come, 2 % of jitter
    cost a third of the right fault types on steady recordings; a shaft's inertia makes its real
    speed smooth over a second."""
    starts = np.asarray(starts, dtype=np.float64)
    hz = np.asarray(hz, dtype=np.float64)
    begin = np.clip(starts, 0.0, seconds)
    end = np.clip(np.append(starts[1:], seconds), 0.0, seconds)
    inside = end > begin
    grid = np.arange(steps) * (seconds / steps)
    if np.count_nonzero(inside) < 2:
        return grid, np.full(steps, float(hz[inside][0] if inside.any() else hz[-1]))
    mid, dur = 0.5 * (begin + end)[inside], (end - begin)[inside]
    c = np.polyfit(mid / seconds, hz[inside], min(2, mid.size - 1), w=np.sqrt(dur))
    return grid, np.polyval(c, (np.arange(steps) + 0.5) / steps)


def plan_speed(hz: float, step: float = PLAN_STEP, *, nearest: bool = False) -> float:
    """The speed (Hz) of a grid of relative steps ``step`` at or just under ``hz`` (``nearest``:
    the nearest one): blocks whose speeds fall on one grid point share a plan."""
    k = math.log(hz) / math.log1p(step)
    return float(f"{math.exp((round(k) if nearest else math.floor(k + 1e-9)) * math.log1p(step)):.6g}")


def shaft_angle(starts: np.ndarray, hz: np.ndarray, seconds: float, steps: int,
                revolutions: float | None = None) -> np.ndarray:
    """Where equal steps of shaft angle fall in a block over which the shaft's speed changed.

    Args:
        starts: when each run of the speed began, s from the block's first sample (ascending; the
            first at or before 0): a tachometer's reading per frame, the speed the frames carried.
        hz: the shaft speed of each run, Hz (each > 0).
        seconds: the block's length, s; steps: the grid, ``steps`` equal steps of time and of angle.
        revolutions: the angle the steps cover from the block's start (at most what the shaft
            turned in it); None: all of it.

    Returns:
        the time-grid positions (fractional: 2.5 is halfway between steps 2 and 3) of ``steps``
        equal steps of shaft angle over the block. The runs are integrated as they are given
        (piecewise constant): a reading that is its frame's mean speed puts every frame boundary at
        its true angle.
    """
    starts = np.asarray(starts, dtype=np.float64)
    hz = np.asarray(hz, dtype=np.float64)
    dt = seconds / steps
    t = (np.arange(steps) + 0.5) * dt  # each step's middle
    run = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(hz) - 1)
    turns = np.concatenate(([0.0], np.cumsum(hz[run] * dt)))  # revolutions at each step's edge
    span = turns[-1] if revolutions is None else min(revolutions, turns[-1])
    return np.interp(np.arange(steps) * (span / steps), turns, np.arange(steps + 1.0))


@lru_cache(maxsize=16)
def _hann(m: int) -> np.ndarray:
    return np.hanning(m).astype(np.float32)


def analyse_block(
    x: np.ndarray,
    rate: float,
    shaft_hz: float | None,
    geometry: BearingGeometry,
    settings: EnvelopeSettings | None = None,
    *,
    speed: tuple[np.ndarray, np.ndarray] | None = None,
) -> EnvelopeResult:
    """The fault type and per-family evidence of one block.

    Args:
        x: samples, shape (n,) (or (n, 1)), at ``rate`` Hz; ~1 s gives 1 Hz resolution.
        rate: sample rate, Hz.
        shaft_hz: shaft speed, Hz (rpm / 60); ignored (may be None) with ``speed``.
        geometry: the bearing's fault orders.
        settings: band grid, harmonics, tolerance, threshold (defaults: ``EnvelopeSettings()``).
        speed: a speed that changed over the block, as runs (``shaft_angle``): (when each began, s
            from the block's first sample; its speed, Hz). The squared envelopes are resampled to
            equal steps of shaft angle (computed order tracking) and analysed at a speed of
            ``PLAN_STEP``'s grid just under the block's mean (the result reports the mean). At most
            ``MAX_SPEED_RATIO`` between its fastest and slowest run.

    Returns:
        an ``EnvelopeResult``; a flat or empty block gives type ``none`` and 0 dB everywhere.

    Raises:
        DataError: the block holds NaN or infinite samples (it has no spectrum; "no fault, 0 dB"
            would be a claim about a block that was never measured: skip it and count it).
    """
    settings = settings or EnvelopeSettings()
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if speed is not None:
        starts, runs = np.asarray(speed[0], dtype=np.float64), np.asarray(speed[1], dtype=np.float64)
        if not (runs.size and runs.shape == starts.shape and np.isfinite(runs).all() and runs.min() > 0
                and runs.max() <= MAX_SPEED_RATIO * runs.min()):
            raise ConfigError(f"envelope: order tracking needs runs of speeds > 0 Hz within a factor of "
                              f"{MAX_SPEED_RATIO:g}, not {runs.tolist()!r}")
        if runs.max() == runs.min():  # one speed throughout: nothing to follow
            speed, shaft_hz = None, float(runs[0])
        else:
            mean = mean_speed(starts, runs, x.size / float(rate)) if x.size else float(runs[0])
            shaft_hz = plan_speed(mean)
    if not (shaft_hz is not None and shaft_hz > 0 and math.isfinite(shaft_hz)):
        raise ConfigError(f"envelope: shaft speed must be > 0 Hz, not {shaft_hz!r}")
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(f"envelope: {bad} of the block's {x.size} samples are NaN or infinite; skip the block")
    plan = _plan(x.shape[0], float(rate), round(float(shaft_hz), 4), geometry, settings)
    said_hz = float(shaft_hz) if speed is None else float(f"{mean:.4g}")
    if x.size == 0 or np.ptp(x) == 0:
        return EnvelopeResult("none", dict.fromkeys(FAMILIES, 0.0), {}, said_hz)
    angle = None
    if speed is not None:
        seconds = x.size / float(rate)
        angle = shaft_angle(starts, runs, seconds, 2 * plan["m"], revolutions=shaft_hz * seconds)
    S = envelope_spectra(x, rate, plan["starts"], plan["width"], plan["m"], plan["taper"], angle)
    scores = np.max([_family_scores(S, view) for view in plan["views"]], axis=0)  # (families, bands)
    evidence: dict[str, float] = {}
    bands: dict[str, tuple[float, float]] = {}
    for fam, score in zip(FAMILIES, scores):
        b = int(np.argmax(score))
        evidence[fam] = float(score[b])
        lo = float(plan["starts"][b])
        bands[fam] = (lo, lo + plan["band"])
    return EnvelopeResult(decide(evidence, settings.threshold_db), evidence, bands, said_hz)


def need_db(family: str, threshold_db: float, normal: Mapping[str, float] | None = None, margin_db: float = 0.0) -> float:
    """The evidence (dB) ``family`` needs to name its fault type: ``threshold_db``, and with
    ``normal`` (the machine's learned evidence per family) ``margin_db`` over its normal too."""
    return max(threshold_db, (normal or {}).get(family, -math.inf) + margin_db)


def decide(evidence: Mapping[str, float], threshold_db: float, normal: Mapping[str, float] | None = None,
           margin_db: float = 0.0) -> str:
    """The fault type of the family with the most evidence among those that reach what they need
    (``need_db``); ``"none"`` where none does. A family's normal only takes it out of the running:
    a block whose strongest family reaches both names the same type as without a normal."""
    ok = [k for k in FAMILIES if evidence.get(k, -math.inf) >= need_db(k, threshold_db, normal, margin_db)]
    return _TYPE_OF[max(ok, key=lambda k: evidence[k])] if ok else "none"


def median_evidence(evidence: np.ndarray) -> dict[str, float]:
    """A machine's own evidence per family: the median over blocks of ``evidence`` (blocks,
    FAMILIES), as a baseline learns it."""
    return {k: float(v) for k, v in zip(FAMILIES, np.median(evidence, axis=0))}


def learned_fault(normal: Mapping[str, float], settings: EnvelopeSettings) -> tuple[str, str, float] | None:
    """(fault type, family, dB) of the strongest family of a learned normal that reaches what a
    fault needs over a machine of no lines of its own (``threshold_db + margin_db``): a bearing
    learned with its fault. A healthy machine's own lines sit lower (CWRU's fan end: 3.5 dB)."""
    high = {k: v for k, v in normal.items() if k in _TYPE_OF and v >= settings.threshold_db + settings.margin_db}
    if not high:
        return None
    k = max(high, key=high.__getitem__)
    return _TYPE_OF[k], k, high[k]


def family_of(fault_type: str) -> str | None:
    """The family whose lines name ``fault_type`` ("inner_race" -> "bpfi"); None for "none"."""
    return _FAMILY_OF_TYPE.get(fault_type)


def label_family(label: str) -> str | None:
    """A model label as a fault type: ``inner_014`` -> ``inner_race``, ``normal`` -> ``none``;
    None for labels that are not bearing conditions (``?``, ``unknown``, speech)."""
    head = label.split("_", 1)[0].lower()
    return _FAMILY_OF_LABEL.get(head)


def agreement(label: str, envelope_type: str | None, anomaly: float | None = None) -> bool | None:
    """Whether the DRSN label, the envelope fault type and (when given) the anomaly score tell the
    same story: the same fault family, and an anomaly score over 1.0 exactly when there is a fault.
    None when there is nothing to compare (no envelope type, or a label that is not a condition)."""
    fam = label_family(label)
    if fam is None or envelope_type is None:
        return None
    same = fam == envelope_type
    if anomaly is not None and math.isfinite(anomaly):
        same = same and ((anomaly > 1.0) == (envelope_type != "none"))
    return same


# ---------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MachineConfig:
    """One stream's machine: its bearing and speed (a ``[machine]`` table or a per-stream override).

    Attributes:
        bearing: a named geometry (``"6205"``, ``"cwru-de"``; ``GEOMETRIES``), or None / "" for none.
        bpfo / bpfi / bsf / ftf: the orders, when no name is given (all four).
        balls / ball_diameter / pitch_diameter / contact_angle: or the dimensions (the first three;
            the angle in degrees, 0 if left out), when neither a name nor the orders are given.
        rpm / shaft_hz: the shaft speed (one of them).
    """

    bearing: str | None = None
    bpfo: float | None = None
    bpfi: float | None = None
    bsf: float | None = None
    ftf: float | None = None
    balls: float | None = None
    ball_diameter: float | None = None
    pitch_diameter: float | None = None
    contact_angle: float | None = None
    rpm: float | None = None
    shaft_hz: float | None = None

    def geometry(self) -> BearingGeometry | None:
        given = {k: getattr(self, k) for k in (*ORDERS, *DIMENSIONS) if getattr(self, k) is not None}
        if self.bearing:  # "" (TOML has no null) clears a name set for all streams
            if given:
                raise ConfigError(f"machine config: give bearing = {self.bearing!r}, the four orders or the "
                                  f"dimensions, not two of them ({', '.join(given)} given too)")
            return bearing_geometry(self.bearing)
        if not given:
            return None
        return bearing_geometry(given)

    def speed_hz(self) -> float | None:
        if self.rpm is not None and self.shaft_hz is not None:
            raise ConfigError("machine config: give rpm or shaft_hz, not both")
        v = self.shaft_hz if self.shaft_hz is not None else (self.rpm / 60.0 if self.rpm is not None else None)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"machine config: shaft speed must be > 0, not {v!r} Hz")
        return v


_GEOMETRY_KEYS = ("bearing", *ORDERS, *DIMENSIONS)


def machine_for(stream_id: str, machine: Mapping[str, Any]) -> MachineConfig:
    """The machine config of one stream: the ``[machine]`` table's own keys, overridden by every
    entry of its ``streams`` list whose ``match`` (an fnmatch pattern of stream ids) fits, in order.

    ``machine`` is the TOML table, e.g. ``{"bearing": "6205", "streams": [{"match": "pump*",
    "rpm": 1480}]}``.
    """
    names = {f.name for f in fields(MachineConfig)}
    base = {k: v for k, v in machine.items() if k != "streams"}
    for entry in machine.get("streams", ()) or ():
        if not isinstance(entry, Mapping) or "match" not in entry:
            raise ConfigError("[[machine.streams]] entries need match = \"PATTERN\" (stream ids, fnmatch)")
        if fnmatch.fnmatchcase(stream_id, str(entry["match"])):
            own = {k: v for k, v in entry.items() if k != "match"}
            # an entry's bearing (a name, orders or dimensions) replaces the one it inherits, given any way
            if own.keys() & _GEOMETRY_KEYS:
                base = {k: v for k, v in base.items() if k not in _GEOMETRY_KEYS}
            base.update(own)
    unknown = sorted(set(base) - names)
    if unknown:
        raise ConfigError(f"[machine]: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown, names)}; "
                          f"valid: {', '.join(_GEOMETRY_KEYS)}, rpm, shaft_hz (and [[machine.streams]] with match)")
    return MachineConfig(**base)


__all__ = [
    "DIMENSIONS",
    "FAULT_TYPES",
    "GEOMETRIES",
    "ORDERS",
    "BearingGeometry",
    "EnvelopeResult",
    "EnvelopeSettings",
    "MachineConfig",
    "agreement",
    "analyse_block",
    "bearing_geometry",
    "decide",
    "envelope_spectra",
    "family_of",
    "label_family",
    "learned_fault",
    "median_evidence",
    "need_db",
    "machine_for",
    "mean_speed",
    "plan_speed",
    "shaft_angle",
    "speed_curve",
]
