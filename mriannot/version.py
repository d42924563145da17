"""The code version recorded with every result: MRIANNOT_CODE_VERSION, else the git commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from django.conf import settings


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    if settings.MRIANNOT_CODE_VERSION:
        return settings.MRIANNOT_CODE_VERSION
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
