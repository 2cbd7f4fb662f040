"""Configuration files: TOML tables that fill the frozen dataclasses of each stage.

A run config has a ``[run]`` table (RunConfig fields: sources, model, device, max_batch, ...)
and optional ``[decision]``, ``[health]``, ``[detector]``, ``[capture]``, ``[machine]`` and
``[envelope]`` tables; any other table is refused. Command-line flags override the file.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

from drsn_stream.errors import ConfigError

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


TOMLDecodeError = tomllib.TOMLDecodeError
T = TypeVar("T")


def loads_toml(text: str) -> dict[str, Any]:
    """Parses TOML text (tomllib on 3.11+, tomli on 3.10); raises ``TOMLDecodeError``."""
    return tomllib.loads(text)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = find_config(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def check_sections(doc: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    """Refuses tables that nobody reads (a mistyped ``[decisions]`` would otherwise be ignored)."""
    unknown = sorted(set(doc) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)}; "
                          f"valid: {', '.join(f'[{v}]' for v in valid)}")


def from_table(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Builds the dataclass ``cls`` from one TOML table: unknown keys and bad values are one
    ConfigError that names the table and the valid keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of key = value, not {type(table).__name__}")
    check_keys(table, cls, where)
    try:
        return cls(**table)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_keys(table: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Refuses keys that are not fields of the dataclass ``cls``, naming the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    return dict(table)
