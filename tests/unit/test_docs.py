"""The generated reference pages are up to date, and regenerating them changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reference_pages_match_the_code() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"run 'python3 docs/generate.py' and commit the result:\n{out.stdout}{out.stderr}"


def test_every_registered_kind_has_a_reference_section() -> None:
    from ledger.events import kinds

    page = (ROOT / "docs" / "reference" / "kinds.md").read_text()
    missing = [k for k in kinds() if f"## `{k}`" not in page]
    assert not missing, missing
