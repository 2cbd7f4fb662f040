"""A MATLAB file's structure checked before scipy reads it.

scipy's compiled MAT v5 reader trusts the file: a variable whose flags say complex but whose
imaginary part is missing, or a data element of a type that holds no numbers, takes the whole
process down (SIGSEGV) rather than raising; its v4 reader asks for as many bytes as a header
says (a damaged one: terabytes, a MemoryError). A recording cut short by a download or flipped
bits on a disk must be refused in words, so ``variables`` walks a v5 file first, with
every length checked against what is there, and names the variables that are whole numeric
arrays: ``load_mat`` then has scipy read those and only those (scipy skips the others by their
length, reading no more than their header, which is checked here too); ``check_v4`` checks a
v4 file's lengths.

The numeric arrays inside a struct or cell variable (a test rig's ``bearing.gs``, a logger's
``rec.Y(7).Data``) are read here, not by scipy: scipy reads a struct's parts one after another
without their lengths, so one damaged part would lead it astray through the rest, while here each
part is found by its own checked length; a struct that breaks anywhere gives no arrays and the
file's other variables are read as before.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

# the data types a numeric array's samples may be stored as, and their sizes in bytes
_NUMERIC = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_INT8, _INT32, _UINT32, _MATRIX, _COMPRESSED, _UTF8 = 1, 5, 6, 14, 15, 16
_OPAQUE = 17  # a MATLAB object (string, datetime, table, ...): its name follows its flags
_MAX_DIMS = 32  # scipy reads dimensions into a buffer of 32
_NUMERIC_CLASSES = range(6, 16)  # double, single, int8 ... uint64
_CELL, _STRUCT, _CHAR = 1, 2, 4
# how a text's characters may be stored, and their codec ("utf-16"/"utf-32" get the byte order)
_TEXT = {1: "utf-8", 2: "utf-8", 4: "utf-16", 16: "utf-8", 17: "utf-16", 18: "utf-32"}
_MAX_TEXT = 256  # characters of a text kept (a channel's name, its unit); longer: a description, left
_MAX_DEPTH = 4  # structs in structs in ...: how deep a signal is looked for
_MAX_PARTS = 100_000  # a struct or cell array's parts walked at most (more: a damaged size, or no recording)
_MAX_LEAVES = 1024  # numeric arrays kept from a file's structs and cells
_COMPLEX = 0x800
_HEADER = 128
_INFLATE_STEP = 1 << 20
_V4_SIZES = {0: 8, 1: 4, 2: 4, 3: 2, 4: 2, 5: 1}  # double, single, int32, int16, uint16, uint8


class MatError(ValueError):
    """The file is not a whole MATLAB file; the message says where it breaks."""


class _Bytes:
    """A variable's bytes, read forward: a slice of the file, or a compressed element inflated
    as far as it is read (never more at once than is asked for). ``limit``: the most bytes the
    variable may take, what its tag says (a compressed element's inflated bytes could say
    otherwise)."""

    def __init__(self, data: memoryview, compressed: bool) -> None:
        self._data = data
        self._pos = 0  # bytes of the variable read so far
        self._z = zlib.decompressobj() if compressed else None
        self._fed = False
        self._buf = b""
        self.limit = math.inf if compressed else len(data)  # compressed: set once its tag is read

    def tell(self) -> int:
        return self._pos

    def read(self, n: int, what: str) -> bytes:
        self._room(n, what)
        if self._z is None:
            out = bytes(self._data[self._pos : self._pos + n])
        else:
            out = self._inflate(n)
        self._pos += len(out)
        if len(out) < n:
            raise MatError(f"{what} is cut short")
        return out

    def skip(self, n: int, what: str) -> None:
        self._room(n, what)
        if self._z is None:
            if self._pos + n > len(self._data):
                raise MatError(f"{what} is cut short")
            self._pos += n
            return
        while n > 0:
            got = len(self._inflate(min(n, _INFLATE_STEP)))
            if got == 0:
                raise MatError(f"{what} is cut short")
            self._pos += got
            n -= got

    def _room(self, n: int, what: str) -> None:
        if self._pos + n > self.limit:
            raise MatError(f"{what} runs past the end of its variable")

    def _inflate(self, n: int) -> bytes:
        z = self._z
        assert z is not None
        while len(self._buf) < n and not z.eof:
            tail = z.unconsumed_tail if self._fed else self._data
            self._fed = True
            try:
                more = z.decompress(tail, n - len(self._buf))
            except zlib.error as exc:
                raise MatError(f"a compressed variable does not inflate ({exc})") from None
            if not more:
                break
            self._buf += more
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _tag(src: _Bytes, order: str, what: str) -> tuple[int, int, bytes | None]:
    """(data type, bytes, the data of a small element or None)."""
    raw = src.read(8, what)
    first, second = struct.unpack(order + "II", raw)
    if first >> 16:  # the small element format: type and size in one word, the data in the next
        size = first >> 16
        if size > 4:
            raise MatError(f"{what} says {size} bytes in a 4-byte element")
        return first & 0xFFFF, size, raw[4 : 4 + size]
    return first, second, None


def _element(src: _Bytes, order: str, what: str, types: tuple[int, ...]) -> tuple[int, int, bytes]:
    """One sub-element read whole: (type, bytes, data), its padding to 8 bytes skipped."""
    mtype, size, small = _tag(src, order, what)
    if mtype not in types:
        raise MatError(f"{what} has data type {mtype}")
    if small is not None:
        return mtype, size, small
    data = src.read(size, what)
    src.skip(-size % 8, what)
    return mtype, size, data


def _numeric_tag(src: _Bytes, order: str, what: str, count: int) -> tuple[int, int, bytes | None]:
    """The tag of a numeric sub-element of ``count`` values, its type and length checked."""
    mtype, size, small = _tag(src, order, what)
    if mtype not in _NUMERIC:
        raise MatError(f"{what} has data type {mtype}, which holds no numbers")
    if size != count * _NUMERIC[mtype]:
        raise MatError(f"{what} holds {size} bytes, not the {count} values its dimensions say")
    return mtype, size, small


def _numbers(src: _Bytes, order: str, what: str, count: int) -> None:
    """A numeric sub-element of ``count`` values, skipped once its length is checked."""
    _, size, small = _numeric_tag(src, order, what, count)
    if small is None:
        src.skip(size + (-size % 8), what)


def _values(src: _Bytes, order: str, what: str, count: int) -> np.ndarray:
    """A numeric sub-element of ``count`` values, read: a 1-D array of the type it is stored as."""
    mtype, size, small = _numeric_tag(src, order, what, count)
    raw = small if small is not None else src.read(size, what)
    if small is None:
        src.skip(-size % 8, what)
    return np.frombuffer(raw, dtype=np.dtype(_DTYPES[mtype]).newbyteorder(order))


def _contents(src: _Bytes, order: str, word: int, dims: tuple[int, ...], path: str, depth: int,
              out: dict[str, np.ndarray]) -> None:
    """What follows an array's name: a numeric array put in ``out[path]`` (in MATLAB's column
    order), and a one-line text inside a struct or cell as a 0-d str array; a struct's or cell's
    parts walked for theirs; anything else left unread."""
    cls, count = word & 0xFF, math.prod(dims)
    if cls in _NUMERIC_CLASSES:
        values = _values(src, order, f"{path}'s values", count)
        if word & _COMPLEX:
            values = values + 1j * _values(src, order, f"{path}'s imaginary part", count)
        if len(out) < _MAX_LEAVES and path not in out:  # a field name used twice: the first, as scipy keeps
            out[path] = values.reshape(dims[::-1]).T
        return
    if cls == _CHAR and dims[0] == 1 and count <= _MAX_TEXT and depth:
        # a one-line text in a struct (a channel's Name beside its Data) names what is beside it
        mtype, size, small = _tag(src, order, f"{path}'s characters")
        if mtype not in _TEXT or size > 4 * count:
            raise MatError(f"{path}'s characters are of data type {mtype}, {size} bytes")
        raw = small if small is not None else src.read(size, f"{path}'s characters")
        codec = _TEXT[mtype] + ("" if _TEXT[mtype] == "utf-8" else "-le" if order == "<" else "-be")
        if len(out) < _MAX_LEAVES and path not in out:
            out[path] = np.array(raw.decode(codec, errors="replace").rstrip("\0"))
        return
    if cls not in (_CELL, _STRUCT) or depth >= _MAX_DEPTH:
        return
    fields = [""]
    if cls == _STRUCT:
        _, n, raw = _element(src, order, f"{path}'s field name length", (_INT32, _UINT32))
        width = struct.unpack(order + "i", raw[:4])[0] if n == 4 else 0
        if not 0 < width <= 4096:
            raise MatError(f"{path}'s field names are {width} bytes each")
        _, n, names = _element(src, order, f"{path}'s field names", (_INT8, _UTF8))
        fields = ["." + names[i : i + width].split(b"\0")[0].decode("latin1") for i in range(0, n - width + 1, width)]
    if count * len(fields) > _MAX_PARTS:
        return
    for k in range(count):
        for field in fields:
            index = (f"({k + 1})" if count > 1 else "") if cls == _STRUCT else f"{{{k + 1}}}"
            _part(src, order, path + index + field, depth + 1, out)


def _part(src: _Bytes, order: str, path: str, depth: int, out: dict[str, np.ndarray]) -> None:
    """One part of a struct or cell (an array with a tag of its own), read within its length."""
    mtype, size, small = _tag(src, order, path)
    if small is not None or mtype != _MATRIX:
        raise MatError(f"{path} is not a MATLAB array")
    end, limit = src.tell() + size, src.limit
    if end > limit:
        raise MatError(f"{path} runs past the end of its variable")
    src.limit = end
    if size:  # an empty part (no bytes) is an empty array
        word, dims, _ = _header(src, order, path)
        _contents(src, order, word, dims, path, depth, out)
    src.skip(end - src.tell(), path)
    src.limit = limit


def _header(src: _Bytes, order: str, what: str) -> tuple[int, tuple[int, ...], str]:
    """An array's (flags word, dimensions, name): what scipy reads of every array but an object."""
    _, n, flags = _element(src, order, f"{what}'s flags", (_UINT32,))
    if n != 8:
        raise MatError(f"{what}'s flags are {n} bytes, not 8")
    word = struct.unpack(order + "I", flags[:4])[0]
    if word & 0xFF == _OPAQUE:
        _, _, name_raw = _element(src, order, f"{what}'s name", (_INT8, _UTF8))
        return word, (), name_raw.decode("latin1")
    # scipy takes the dimensions as either integer type and the name as bytes or UTF-8
    _, n, dims_raw = _element(src, order, f"{what}'s dimensions", (_INT32, _UINT32))
    if n < 8 or n % 4 or n > 4 * _MAX_DIMS:
        raise MatError(f"{what}'s dimensions are {n} bytes")
    dims = struct.unpack(f"{order}{n // 4}i", dims_raw)
    if min(dims) < 0:
        raise MatError(f"{what} has a negative dimension {dims}")
    _, _, name_raw = _element(src, order, f"{what}'s name", (_INT8, _UTF8))
    return word, dims, name_raw.decode("latin1")


def _matrix(src: _Bytes, order: str, size: int, index: int, leaves: dict[str, np.ndarray]) -> tuple[str, bool]:
    """A variable's (name, whether it is a whole numeric array); MatError where it breaks. The
    numeric arrays in a struct or cell variable go into ``leaves`` (none where it breaks)."""
    what = f"variable {index}"
    if size < 8 * 3:  # flags, dimensions, name: the header scipy reads of every variable
        raise MatError(f"{what} is too short for its header ({size} bytes)")
    word, dims, name = _header(src, order, what)
    if word & 0xFF == _OPAQUE:
        return name, False
    # a damaged name could hold anything, an escape sequence for the terminal among it
    what = f"variable {name if name.isascii() and name.isprintable() and name else ascii(name)}"
    if (word & 0xFF) in (_CELL, _STRUCT):
        found: dict[str, np.ndarray] = {}
        try:
            _contents(src, order, word, dims, name, 0, found)
        except MatError:
            found = {}  # the struct is not read; the variables after it are found by its length
        leaves.update(list(found.items())[: max(0, _MAX_LEAVES - len(leaves))])
        return name, False
    if (word & 0xFF) not in _NUMERIC_CLASSES:
        return name, False  # text, a sparse array, an object ...: not samples, not read
    count = math.prod(dims)
    _numbers(src, order, f"{what}'s values", count)
    if word & _COMPLEX:
        _numbers(src, order, f"{what}'s imaginary part", count)
    return name, True


def check_v4(path: str | Path) -> None:
    """MatError where a MATLAB v4 file's variables (a 20-byte header, a name, the values, the
    imaginary part) would run past its end, as scipy's reader reckons them."""
    with open(path, "rb") as fh:
        data = fh.read(20)
        size = fh.seek(0, 2)
        if len(data) < 4:
            raise MatError("the file is too short for a MATLAB v4 header")
        first = struct.unpack("<i", data[:4])[0]
        order = ">" if first < 0 or first > 5000 else "<"  # as scipy guesses it
        pos, index = 0, 0
        while pos < size:
            index += 1
            fh.seek(pos)
            head = fh.read(20)
            if len(head) < 20:
                raise MatError(f"the file ends inside variable {index}'s header")
            mopt, rows, cols, imag, namlen = struct.unpack(order + "5i", head)
            if not 0 <= mopt <= 5000 or min(rows, cols, namlen) < 0:
                raise MatError(f"variable {index}'s header is damaged")
            item = _V4_SIZES.get(mopt % 100 // 10)
            if item is None:
                raise MatError(f"variable {index} has data type {mopt % 100 // 10}")
            pos += 20 + namlen + rows * cols * item * (2 if imag == 1 else 1)
            if pos > size:
                raise MatError(f"variable {index} runs {pos - size} bytes past the end of the file")


def variables(path: str | Path) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """The names of the whole numeric arrays of MATLAB v5 file ``path`` and of its other
    variables (text, cells, structs, ...), in file order, and the numeric arrays (and one-line
    texts) inside its structs and cells by their MATLAB names (``s.gs``, ``s.Y(7).Data``,
    ``s.Y(7).Name``, ``c{2}``); MatError for a
    file whose structure breaks anywhere (a length past its end, a variable's parts not what its
    header says), before any of it reaches scipy."""
    return _walk(memoryview(Path(path).read_bytes()))


def _walk(data: memoryview) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    if len(data) < _HEADER:
        raise MatError(f"the file is {len(data)} bytes, shorter than a MATLAB header")
    order = "<" if bytes(data[126:128]) == b"IM" else ">"  # as scipy reads it
    names: list[str] = []
    others: list[str] = []
    leaves: dict[str, np.ndarray] = {}
    pos, index = _HEADER, 0
    while pos < len(data):
        index += 1
        if len(data) - pos < 8:
            raise MatError(f"the file ends inside variable {index}'s tag")
        mtype, size = struct.unpack(order + "II", data[pos : pos + 8])
        if size == 0 or pos + 8 + size > len(data):
            raise MatError(f"variable {index} says {size} bytes, {len(data) - pos - 8} are left")
        body = data[pos + 8 : pos + 8 + size]
        pos += 8 + size
        if mtype == _COMPRESSED:
            src = _Bytes(body, True)
            mtype, size, small = _tag(src, order, f"variable {index}")
            if small is not None:
                raise MatError(f"variable {index} is {size} bytes")
            src.limit = 8 + size
        else:
            src = _Bytes(body, False)
        if mtype != _MATRIX:
            raise MatError(f"variable {index} has data type {mtype}, not a MATLAB array")
        name, numeric = _matrix(src, order, size, index, leaves)
        (names if numeric else others).append(name)
    return names, others, leaves
