"""The front end's pure modules (fill, undo history, run-length coding, key names), under node --test."""

from __future__ import annotations

import shutil
import subprocess

from tests.frontend.conftest import FRONTEND, missing_tool


def test_javascript_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not installed")
    result = subprocess.run(
        [node, "--test", "tests/"], check=False, cwd=FRONTEND, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
