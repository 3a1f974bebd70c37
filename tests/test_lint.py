"""ruff lints and formats the library, the tests, the scripts and the notebooks (pyproject.toml's [tool.ruff])."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    result = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_everything_as_it_is():
    """The code, the tests and every notebook's code cells are in ruff's format (``ruff format``
    fixes them; it changes no notebook output). The README's snippet keeps its aligned comments."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    paths = ["capslib", "tests", "scripts", "notebooks"]
    result = subprocess.run([ruff, "format", "--check", *paths], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
