"""The default run is the library tests: the opt-in tests (markers ``notebooks``, ``browser``,
``slow``) are skipped with a reason that says how to run them; ``-m`` naming them, or ``--all``,
runs them. A small example suite is run with this repository's ``tests/conftest.py`` and markers
(pytester), so these tests take well under a second."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
OPT_IN = '-m "notebooks or browser or slow"'
EXAMPLE = """
import pytest

def test_library():
    pass

@pytest.mark.notebooks
def test_notebook():
    pass

@pytest.mark.browser
def test_browser():
    pass

@pytest.mark.slow
def test_slow():
    pass
"""


@pytest.fixture
def example(pytester):
    """A pytester folder holding the example suite, this repository's conftest.py and markers."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {marker}\n" for marker in markers))
    pytester.makepyfile(test_example=EXAMPLE)
    return pytester


def run(pytester, *args) -> tuple[set[str], dict[str, str]]:
    """Run the example suite with ``args``: the names of the tests that passed, and of those
    skipped with their reasons (a deselected test is in neither)."""
    passed, skipped, failed = pytester.inline_run("--strict-markers", "-p", "no:cacheprovider", *args).listoutcomes()
    assert not failed, failed
    name = lambda report: report.nodeid.split("::")[-1]  # noqa: E731
    return {name(r) for r in passed}, {name(r): r.longrepr[2] for r in skipped}


def test_default_run_is_the_library_tests_and_says_how_to_run_the_others(example):
    passed, skipped = run(example)
    assert passed == {"test_library"}
    assert skipped == {
        f"test_{kind}": f"Skipped: {marker}: opt-in, run with {OPT_IN} or --all (.ci/run does)"
        for kind, marker in (("notebook", "notebooks"), ("browser", "browser"), ("slow", "slow"))
    }


@pytest.mark.parametrize(
    "args, runs",
    [
        (["-m", "notebooks or browser or slow"], {"test_notebook", "test_browser", "test_slow"}),
        (["--all"], {"test_library", "test_notebook", "test_browser", "test_slow"}),
        (["-m", "browser"], {"test_browser"}),
        (["-m", "slow or not slow"], {"test_library", "test_slow"}),
    ],
    ids=["opt-in-expression", "all", "one-marker", "not-named-stays-skipped"],
)
def test_naming_an_opt_in_marker_or_all_runs_it(example, args, runs):
    passed, skipped = run(example, *args)
    assert passed == runs
    assert all("opt-in" in reason for reason in skipped.values())  # only the ones not asked for


def test_the_readmes_opt_in_command_runs_every_opt_in_test_and_only_those(example):
    text = (ROOT / "README.md").read_text()
    command = re.search(r'`\.venv/bin/python -m pytest (-m "[^"`]+")`', text).group(1)
    passed, skipped = run(example, *shlex.split(command))
    assert passed == {"test_notebook", "test_browser", "test_slow"} and not skipped


def test_every_browser_folder_module_carries_the_browser_marker():
    """Each module of tests/browser/ (test_tensorboard.py included) sets ``pytestmark`` to the
    browser marker, so the default run skips the whole folder (read from the source: collecting
    the folder would import the trainer and take seconds)."""
    modules = sorted((ROOT / "tests" / "browser").glob("test_*.py"))
    assert modules
    for path in modules:
        tree = ast.parse(path.read_text())
        marks = [
            ast.unparse(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
        ]
        assert any("pytest.mark.browser" in mark for mark in marks), f"{path.name}: pytestmark = {marks}"
