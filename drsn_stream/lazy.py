"""Package names imported on first use (PEP 562), for packages whose modules need torch while
other modules of theirs do not: a process that needs only the torch-free ones (the monitor's own
process, ``drsn-stream --help``, the cluster's aggregator) does not pay seconds of CPU for it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``where`` maps each lazy name to the submodule
    that defines it; a name is imported on first use, then kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
