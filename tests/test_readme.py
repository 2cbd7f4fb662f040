"""The README stays a front page: short, with the two set-up commands first."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_is_short_and_starts_with_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= 7000, f"README.md has {len(text):,} characters; keep it <= 7,000 (details go to docs/)"
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None, "README.md has no bash block"
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2 and all(c.startswith("tools/setup.sh") for c in commands), commands
