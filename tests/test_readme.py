"""The README's example runs as printed, its set-up and test commands are what .ci/run runs, and
its links lead to files of the repository."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of a markdown link or image


def readme_commands() -> tuple[str, str, str]:
    """The README's set-up command, test command (its one bash block) and opt-in test command
    (the backticked ``pytest -m`` line after it)."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1)
    setup, test = (line.split("#", 1)[0].strip() for line in block.strip().splitlines())
    opt_in = re.search(r'`(\.venv/bin/python -m pytest -m "[^"`]+")`', text[text.index(block) :]).group(1)
    return setup, test, opt_in


def ci_commands() -> list[str]:
    """The commands of .ci/run: its lines without comments and blank lines."""
    lines = (line.strip() for line in CI.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_example_runs():
    text = README.read_text()
    section = text.split("## Use capslib in your own notebook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "README.md", "exec"), {})
    printed = stdout.getvalue()
    assert "torch.Size([8, 10]) torch.Size([8, 10, 16]) torch.Size([8, 1152, 10])" in printed
    assert "3 routing iterations traced" in printed
    predicted, true = (eval(lst) for lst in re.findall(r"\[[\d, ]+\]", printed.splitlines()[0]))  # noqa: S307
    assert len(predicted) == len(true) == 8
    assert sum(p == t for p, t in zip(predicted, true, strict=True)) >= 7


def test_ci_runs_the_readmes_commands_then_the_opt_in_tests():
    """.ci/run ends with the README's set-up, test and opt-in commands, verbatim and in that order;
    the set-up installs an extra pyproject.toml defines; the script parses as bash."""
    setup, test, opt_in = readme_commands()
    ci = ci_commands()
    assert [line for line in ci if line in (setup, test, opt_in)] == [setup, test, opt_in], ci
    assert ci[-1] == opt_in, ci
    assert shlex.split(test) == [".venv/bin/python", "-m", "pytest"]  # the default run, no options
    extra = re.fullmatch(r"\.\[(\w+)\]", shlex.split(setup.split("&&")[1])[-1]).group(1)
    assert extra in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    subprocess.run(["bash", "-n", str(CI)], check=True)


@pytest.mark.parametrize("page", ["README.md", "notebooks/README.md"])
def test_links_lead_to_files_of_the_repository(page):
    path = ROOT / page
    targets = [t.split("#", 1)[0] for t in LINK.findall(path.read_text()) if "://" not in t and not t.startswith("#")]
    assert targets, f"no relative links found in {page}"
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, f"{page} links to files that do not exist: {missing}"
