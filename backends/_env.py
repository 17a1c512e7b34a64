"""The training environment and code version recorded in ``model.trained``."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from policies._workspace import versions

__all__ = ["code_version", "environment"]

GIT_TIMEOUT_S = 5.0


def environment() -> dict[str, str]:
    return {"python": platform.python_version(),
            **versions("sklearn", "numpy", "pandas", "skops", "fairlearn", "scipy")}


def code_version(spec_path: Path | None, spec_sha256: str) -> str:
    """``git:<commit>`` when the spec sits in a git work tree, else ``spec:<spec sha256>``."""
    if spec_path is not None:
        try:
            done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=spec_path.resolve().parent,
                                  capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        commit = done.stdout.strip() if done is not None and done.returncode == 0 else ""
        if len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit):
            return f"git:{commit}"
    return f"spec:{spec_sha256}"
