"""Configuration files: TOML tables that fill the frozen dataclasses of each stage.

``from_table(cls, table, where)`` is the one reader: every section of a run config
(``drsn_stream.app.runconfig``) and every stage's own table goes through it, so an unknown key, a
value of the wrong type or one out of range is one line naming the table, the key and what it takes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import secrets
import stat
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

from drsn_stream.errors import ConfigError, WriteError, did_you_mean

SHIPPED = Path(__file__).resolve().parent / "configs"  # the ready-made configs, installed with the package


def find_config(path: str | Path) -> Path:
    """``path`` if it is a file, else the shipped config of that name (``configs/demo.toml``,
    ``demo.toml`` and ``demo`` work from any directory, with or without a checkout)."""
    p = Path(path)
    if p.is_file():
        return p
    for name in (p.name, f"{p.name}.toml"):
        if (SHIPPED / name).is_file():
            return SHIPPED / name
    shipped = ", ".join(sorted(q.stem for q in SHIPPED.glob("*.toml"))) or "none"
    raise ConfigError(f"config file {p} not found; ready-made ones (give the name): {shipped}")


T = TypeVar("T")


def loads_toml(text: str) -> dict[str, Any]:
    """Parses TOML text (tomllib on 3.11+, tomli on 3.10); raises ``ValueError``: tomllib's
    ``TOMLDecodeError``, or a bare ``ValueError`` for an integer of over 4,300 digits."""
    return tomllib.loads(text)


def read_toml(path: str | Path) -> dict[str, Any]:
    return toml_file(find_config(path))


def toml_file(path: str | Path, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The TOML document in the file ``path``; ``error`` in one line naming the file when it is not
    TOML, not UTF-8, or holds an integer of over 4,300 digits (tomllib raises a bare ValueError
    for that, not its TOMLDecodeError). OSError passes: each caller says how to find its file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None


def writable_file(path: str | Path, flag: str) -> Path:
    """``path`` if a file can be written there, checked before a long run rather than after it;
    a ConfigError naming ``flag`` (``--out``, ``--json``) for a folder, a missing or read-only
    folder, or a read-only file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give the path of a file to write")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{flag} {path}: it or its folder is missing or not writable; give another path")
    return p


def write_atomic(path: str | Path, data: bytes | Callable[[BinaryIO], object], *, make_folder: bool = True) -> Path:
    """Writes ``data`` to ``path`` through a temporary file beside it and a rename, so a reader
    sees the old file or the new one, never half of one. The temporary file's name is this
    write's own (``.NAME.<random>.tmp``), so writers of one file at once (two exports, hosts
    sharing a folder) each rename a whole file of their own: the last rename wins. A failed write
    (disk full, no permission, a folder in the way) leaves no temporary file behind and raises
    WriteError naming the file; a missing folder is made unless ``make_folder`` is False (a
    shared folder that went away is then an error, not a new local folder). Torch's own writers are
    not used on files: on a full disk ``torch.jit.save`` aborts the process (a C++ exception no one
    catches) and ``torch.save`` leaves a half file; serialize to bytes, then write them here.
    ``data`` may also be a function that writes into the open file (a large file written as it
    is made, not held in memory whole first); an exception from it leaves no file either.

    A rename replaces what it lands on, so: a symbolic link is followed (the file it names gets
    the data, the link stays), a file keeps its permissions, and a device or a pipe (``/dev/null``,
    a FIFO a reader waits on) is written into, never replaced by a file."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        before: os.stat_result | None = target.stat()
    except OSError:
        before = None
    tmp: Path | None = None
    try:
        if before is not None and not stat.S_ISREG(before.st_mode) and not stat.S_ISDIR(before.st_mode):
            with open(target, "wb") as f:
                data(f) if callable(data) else f.write(data)
            return path
        if make_folder:
            target.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _new_temp_file(target)
        with os.fdopen(fd, "wb") as f:
            data(f) if callable(data) else f.write(data)
        if before is not None:
            os.chmod(tmp, stat.S_IMODE(before.st_mode))
        os.replace(tmp, target)
    except BaseException as exc:  # Ctrl-C mid-write leaves no half file either
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            advice = "free space there or write it elsewhere" if full else "give a path of a file in a writable folder"
            raise WriteError(f"cannot write {path} ({exc.strerror or exc}); {advice}", exc) from None
        raise
    return path


def _new_temp_file(target: Path) -> tuple[Path, int]:
    """A file of a name no other writer has, beside ``target``, opened for writing; created with
    mode 0o666 less the umask, as ``open`` would make ``target`` itself."""
    for _ in range(100):
        # the name's first 200 characters: a name near the file system's limit (255) still fits
        tmp = target.with_name(f".{target.name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))


def rewritable_file(path: str | Path, advice: str) -> Path:
    """``path`` if it is a file that can be rewritten in place (an existing, writable file in a
    writable folder), checked before the work; a ConfigError otherwise, ending in ``advice`` where
    the path is no file (a folder, or a name such as ``bearing-cwru`` that would become a new file
    of that name in the current folder)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path} {'is a folder' if p.is_dir() else 'is not a file'}; {advice}")
    if not os.access(p, os.W_OK) or not os.access(p.parent, os.W_OK):
        raise ConfigError(f"cannot rewrite {path}: it or its folder is not writable")
    return p


def check_sections(doc: Mapping[str, Any], valid: Iterable[str], where: str) -> None:
    """Refuses tables that nobody reads (a mistyped ``[decisions]`` would otherwise be ignored)."""
    valid = tuple(valid)
    unknown = sorted(set(doc) - set(valid))
    if unknown:
        near = did_you_mean([f"[{u}]" for u in unknown], [f"[{v}]" for v in valid])
        raise ConfigError(f"{where}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)}{near}; "
                          f"valid: {', '.join(f'[{v}]' for v in valid)}")


def from_table(cls: type[T], table: Any, where: str) -> T:
    """Builds the frozen dataclass ``cls`` from one TOML table (or a dict from Python).

    Unknown keys, values of the wrong type and values the class refuses are one ConfigError that
    names the table (``where``), the key and what is allowed. TOML arrays become tuples, integers
    become floats where the field is a float, and a field whose type is itself a dataclass (or a
    tuple of them) reads its nested table the same way. A class with its own
    ``from_table(table, where)`` classmethod reads its table itself; an instance passes as it is.
    """
    if isinstance(table, cls):
        return table
    own = cls.__dict__.get("from_table")
    if isinstance(own, classmethod):
        return own.__get__(None, cls)(table, where)  # type: ignore[no-any-return]
    values = typed_values(cls, table, where)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def typed_values(cls: type, table: Any, where: str, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that ``table`` gives, each checked against its field's
    type; ``keys`` narrows the valid keys to some of the fields."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of key = value, not {_shown(table)}")
    check_keys(table, cls, where, keys)
    hints = _hints(cls)
    return {k: _coerce(v, hints.get(k, Any), k, where) for k, v in table.items()}


def check_keys(table: Mapping[str, Any], cls: type, where: str, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Refuses keys that are not fields of the dataclass ``cls`` (or not among ``keys``), naming the valid ones."""
    names = set(keys) if keys is not None else {f.name for f in fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown, names)}; "
                          f"valid keys: {', '.join(sorted(names))}")
    return dict(table)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation only a type checker can resolve: the class judges its values
        return {}


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """``value`` as the field type ``hint`` wants it, or a ConfigError saying what the key takes."""
    if value is None or hint is Any:
        return value  # None: "unset" from Python (TOML has no null); the class judges it
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, key, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key} must be {' or '.join(_kind(o) for o in options)}, not {_shown(value)}")
    if is_dataclass(hint) and isinstance(hint, type):
        return from_table(hint, value, f"{where} {key}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        items = (value,) if isinstance(value, (str, Mapping)) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be {_kind(hint)}, not {_shown(value)}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(items))
    if origin is tuple and args and Ellipsis not in args:  # a fixed number of items, e.g. (start, end)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: {key} must be {_kind(hint)}, not {_shown(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, float, str) and (not isinstance(value, hint) or (hint is not bool and isinstance(value, bool))):
        raise ConfigError(f"{where}: {key} must be {_kind(hint)}, not {_shown(value)}")
    return value


def _kind(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        each = _kind(args[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {each}s" if Ellipsis in args else f"a list of {len(args)} {each}s"
    if is_dataclass(hint):
        return "a table"
    return getattr(hint, "__name__", str(hint))


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def dump_toml(doc: Mapping[str, Mapping[str, Any]], notes: Mapping[str, str] | None = None) -> str:
    """TOML text of ``{section: {key: value}}`` that ``read_toml`` reads back to the same values.

    None (unset) has no TOML form: such keys are written as comments. A tuple of dicts becomes an
    array of tables (``[[section.key]]``). ``notes`` adds a comment line under a section's header.
    """
    out: list[str] = []
    for section, table in doc.items():
        out.append(f"[{section}]")
        if notes and section in notes:
            out.append(f"# {notes[section]}")
        arrays = {k: v for k, v in table.items() if _is_tables(v)}
        for key, value in table.items():
            if key in arrays:
                continue
            out.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
        for key, entries in arrays.items():
            for entry in entries:
                out.append(f"[[{section}.{key}]]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
        out.append("")
    return "\n".join(out)


def _is_tables(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"no TOML form for {_shown(value)}")


def bound_text(x: float) -> str:
    """A bound as people write it in a message: 1,000,000 rather than 1e+06."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,}"


def out_of_range(name: str, value: Any, least: float, most: float, *, whole: bool = False,
                 above: bool = False) -> str | None:
    """A line saying that ``value`` is not a finite number from ``least`` (over it, where
    ``above``) to ``most`` (a whole number, where ``whole``), or None when it is one. For the
    checks of config classes: NaN passes a plain ``<`` test, and a value far out of range stops
    a run later, from inside numpy or torch."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and (not whole or isinstance(value, int)) and math.isfinite(value) \
            and (value > least if above else value >= least) and value <= most:
        return None
    span = f"over {least:g} and at most {bound_text(most)}" if above else f"from {bound_text(least)} to {bound_text(most)}"
    return f"{name} must be {'a whole number' if whole else 'a number'} {span}, not {value!r}"


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)\s*[dhms]")  # one part of "1h 30m", "2m30s", "1.5h"
_DURATIONS = re.compile(r"(?:\s*" + _DURATION.pattern + r")+")  # a whole duration of such parts


def parse_duration(text: str | float) -> float:
    """``"10m"``, ``"30s"``, ``"1h"``, ``"1d"``, ``"1h30m"``, ``"90"`` (seconds) -> seconds; a clear
    error (ConfigError) otherwise: how every duration flag and setting is read."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        sign = -1.0 if s.startswith("-") else 1.0  # read, so that "-5m" is refused as below 0
        body = s[1:] if sign < 0 else s
        try:
            if _DURATIONS.fullmatch(body):
                seconds = sign * sum(float(part[:-1]) * _UNITS[part[-1]] for part in _DURATION.findall(body))
            else:
                seconds = float(s)
        except ValueError:
            raise ConfigError(f"cannot read the duration {text!r}; write e.g. 90, 30s, 10m, 1h30m or 2d") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise ConfigError(f"a duration must be a finite number > 0, not {text!r}")
    return seconds


def arg_duration(text: str) -> float:
    """``parse_duration`` as an argparse ``type``: argparse names the flag in its message."""
    import argparse

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_number(kind: type = float, least: float | None = None, most: float | None = None, *,
               above: float | None = None) -> Any:
    """An argparse ``type`` for a number flag: finite, ``>= least`` / ``> above`` / ``<= most``
    where given. argparse then says which flag and why, and exits 2: a NaN ``--duration`` ran
    for ever, 2^63 ``--batch-sizes`` or ``--threads`` raised from inside numpy or torch."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, not {text}")
        if least is not None and not value >= least:
            raise argparse.ArgumentTypeError(f"must be >= {least:g}, not {text}")
        if most is not None and not value <= most:
            raise argparse.ArgumentTypeError(f"must be at most {bound_text(most)}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
