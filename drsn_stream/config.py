"""Configuration files: TOML tables that fill the frozen dataclasses of each stage.

A run config has a ``[run]`` table (RunConfig fields: sources, model, device, max_batch, ...)
and optional ``[decision]``, ``[health]`` and ``[detector]`` tables. Command-line flags
override the file.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

from drsn_stream.errors import ConfigError

TOMLDecodeError = tomllib.TOMLDecodeError


def loads_toml(text: str) -> dict[str, Any]:
    """Parses TOML text (tomllib on 3.11+, tomli on 3.10); raises ``TOMLDecodeError``."""
    return tomllib.loads(text)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist (ready-made ones are in configs/)")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def check_keys(table: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Refuses keys that are not fields of the dataclass ``cls``, naming the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return dict(table)
