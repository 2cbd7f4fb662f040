"""MATLAB v7.3 files (HDF5 inside: what ``save -v7.3`` writes, and MATLAB's default for large
variables) read by h5py in a child process (``drsn_stream.childread``): the HDF5 library is C,
and a damaged file should cost one line, not the monitor.

The variables come back as ``load_mat`` gives a v5 file's: numeric arrays in MATLAB's shape under
their MATLAB names, also inside structs, struct arrays and cells (``bearing.gs``,
``rec.Y(7).Data``, ``c{2}``), one-line texts inside them as 0-d str arrays (``rec.Y(7).Name``),
and the names of the other top-level variables. h5py is optional (``pip install h5py``): without
it such a file is refused in one line that says so.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from drsn_stream.childread import run_child

MAX_VALUES = 1 << 27  # numbers read from one file, every variable counted
MAX_LEAVES = 4096  # arrays and texts taken from one file (as the v5 walk takes)
MAX_DEPTH = 8  # structs and cells inside each other

# The child: h5py and numpy only. MATLAB stores an array of r x c as HDF5 (c, r), so an array's
# transpose is its MATLAB shape and its flat order MATLAB's column order; a cell, or a field of
# a struct array, holds references to the parts, which live in the file's "#refs#" group.
_CHILD = r"""
import io
path, limit, max_leaves, max_depth = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
try:
    import h5py
    import numpy as np
except Exception as exc:
    fail("no-h5py " + type(exc).__name__ + ": " + str(exc))
NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "logical"}
out, others, total = {}, [], [0]

def kind(obj):
    c = obj.attrs.get("MATLAB_class", b"")
    return c.decode("latin1") if isinstance(c, bytes) else str(c)

def is_refs(ds):
    return isinstance(ds, h5py.Dataset) and h5py.check_dtype(ref=ds.dtype) is not None

def walk(f, obj, name, depth):
    if len(out) >= max_leaves or depth > max_depth:
        return
    if isinstance(obj, h5py.Group):
        for key in obj:
            if key.startswith("#"):
                continue
            part = obj[key]
            if is_refs(part) and kind(part) != "cell":  # a field of a struct array: one reference per element
                refs = list(part[()].flat)
                for i, ref in enumerate(refs):
                    walk(f, f[ref], name + ("(%d)" % (i + 1) if len(refs) > 1 else "") + "." + key, depth + 1)
            else:
                walk(f, part, name + "." + key, depth + 1)
        return
    if not isinstance(obj, h5py.Dataset) or obj.attrs.get("MATLAB_empty", 0):
        return
    c = kind(obj)
    if c == "cell" and is_refs(obj):
        for i, ref in enumerate(obj[()].flat):
            walk(f, f[ref], name + "{%d}" % (i + 1), depth + 1)
    elif c == "char" and depth and obj.ndim == 2 and min(obj.shape) == 1 and obj.size <= 4096:
        codes = np.asarray(obj[()]).ravel()
        out[name] = np.array("".join(chr(int(k)) for k in codes if 0 < k < 0x110000))
    elif c in NUMERIC and obj.ndim == 2:
        total[0] += obj.size
        if total[0] > limit:
            fail("cap %d" % limit)
        a = obj[()]
        if a.dtype.names:
            if not {"real", "imag"} <= set(a.dtype.names):
                return
            a = a["real"] + 1j * a["imag"]
        out[name] = np.asarray(a).T

try:
    with h5py.File(path, "r") as f:
        for key in f:
            if key.startswith("#"):
                continue
            obj = f[key]
            if not (isinstance(obj, h5py.Dataset) and kind(obj) in NUMERIC):
                others.append(key)
            walk(f, obj, key, 0)
except Exception as exc:
    fail(type(exc).__name__ + ": " + str(exc))
buf = io.BytesIO()
np.savez(buf, __others__=np.array(others, dtype=str), **{"v" + str(i): v for i, v in enumerate(out.values())},
         __names__=np.array(list(out), dtype=str))
sys.stdout.buffer.write(buf.getvalue())
"""


class Mat73Error(ValueError):
    """Why a v7.3 file gave no variables, in the file's terms."""


def read_mat73(path: str | Path, *, timeout: float | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """``(arrays, others)``: the numeric arrays and one-line texts of v7.3 file ``path`` by their
    MATLAB names, and the names of its other top-level variables. Raises ``Mat73Error``."""
    path = Path(path)
    size = path.stat().st_size
    timeout = 60.0 + 2.0 * size / 1e6 if timeout is None else timeout
    res = run_child(_CHILD, [str(path), str(MAX_VALUES), str(MAX_LEAVES), str(MAX_DEPTH)], timeout)
    if res.said is not None:
        said = res.said
        if said.startswith("no-h5py "):
            raise Mat73Error("a MATLAB v7.3 file (HDF5): reading it needs h5py, which did not load "
                             f"({said[len('no-h5py '):]}); pip install h5py, or save it again with "
                             "save(FILE, VARIABLES, '-v7')")
        if said.startswith("cap "):
            raise Mat73Error(f"it holds more than {int(said[4:]):,} numbers; save the signal you want alone")
        raise Mat73Error(f"a MATLAB v7.3 file (HDF5) h5py cannot read ({said})")
    if res.rc != 0:
        why = f"took longer than {timeout:g} s" if res.late else f"stopped with exit status {res.rc}"
        raise Mat73Error(f"reading it as a MATLAB v7.3 file (HDF5) {why}; the file may be damaged")
    try:
        with np.load(io.BytesIO(bytes(res.out)), allow_pickle=False) as z:
            names = [str(n) for n in z["__names__"]]
            arrays = {n: z[f"v{i}"] for i, n in enumerate(names)}
            others = [str(n) for n in z["__others__"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise Mat73Error(f"the reader's output was cut short ({exc})") from None
    return arrays, others
