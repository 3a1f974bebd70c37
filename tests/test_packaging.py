"""Packaging: pyproject.toml and environment.yml install the same set; the repo has its files."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda name where they differ


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pypi = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    expected = {CONDA_NAMES.get(name, name): spec for name, spec in pypi.items()}

    conda = {}
    text = (REPO / "environment.yml").read_text()
    for line in text.split("\ndependencies:\n", 1)[1].splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.\-]+)(\S*)\s*$", line)  # top-level conda dependencies only
        if match and match.group(1) not in ("python", "pip"):
            conda[match.group(1).lower()] = match.group(2)
    assert conda == expected


def test_repository_layout():
    for path in (
        "capslib",
        "notebooks",
        "data/mnist",
        "tests",
        "environment.yml",
        "pyproject.toml",
        "README.md",
        ".ci/run",
        "LICENSE",
        "CITATION.cff",
    ):
        assert (REPO / path).exists(), path


def test_citation_cites_the_paper():
    text = (REPO / "CITATION.cff").read_text()
    assert "Dynamic Routing Between Capsules" in text and "1710.09829" in text
