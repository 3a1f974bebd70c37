"""The README's 'Use capslib in your own notebook' example runs as printed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    section = text.split("## Use capslib in your own notebook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 12
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "README.md", "exec"), {})
    printed = stdout.getvalue()
    assert "torch.Size([8, 10]) torch.Size([8, 10, 16]) torch.Size([8, 1152, 10])" in printed
    assert "3 routing iterations traced" in printed
    predicted, true = (eval(lst) for lst in re.findall(r"\[[\d, ]+\]", printed.splitlines()[0]))  # noqa: S307
    assert len(predicted) == len(true) == 8
    assert sum(p == t for p, t in zip(predicted, true, strict=True)) >= 7


def test_ci_runs_the_readmes_two_commands_then_the_slow_tests():
    """`.ci/run` is the README's set-up and test commands, verbatim and in order, then `pytest -m slow`."""
    text = README.read_text()
    block = re.search(r"## Set up and test \(two commands\)\n+```bash\n(.*?)```", text, re.DOTALL).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 2 and commands[1] == ".venv/bin/python -m pytest"
    ci = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    positions = [ci.index(command) for command in commands + [".venv/bin/python -m pytest -m slow"]]
    assert positions == sorted(positions) and positions[-1] == len(ci) - 1, ci
