"""Every script in tools/ is named in docs/tools.md and starts from the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p for p in (ROOT / "tools").iterdir() if p.suffix in (".py", ".sh"))

# Runs each Python tool's --help in one interpreter, from outside the repository and without
# tools/ on sys.path, so a tool that imports a sibling script or a test module fails here.
_HELP_ALL = """
import runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
        failed.append(f"{path}: --help did not exit")
    except SystemExit as exc:
        if exc.code not in (0, None):
            failed.append(f"{path}: --help exited {exc.code}")
    except Exception as exc:
        failed.append(f"{path}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_tool_is_documented_with_its_workflow():
    doc = (ROOT / "docs" / "tools.md").read_text()
    missing = [p.name for p in TOOLS if f"`{p.name}`" not in doc]
    assert not missing, f"tools not named in docs/tools.md: {missing}"


@pytest.mark.slow
def test_every_python_tool_starts(tmp_path):
    scripts = [str(p) for p in TOOLS if p.suffix == ".py"]
    proc = subprocess.run(
        [sys.executable, "-c", _HELP_ALL, *scripts],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_no_tool_edits_sys_path_to_find_the_package():
    # a tool that puts the checkout on sys.path runs against the checkout even where another
    # drsn_stream is installed, and hides a package that does not install its modules
    edits = [p.name for p in TOOLS if p.suffix == ".py" and "sys.path" in p.read_text()]
    assert not edits, f"tools that edit sys.path (import the installed drsn_stream instead): {edits}"
