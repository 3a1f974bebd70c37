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
