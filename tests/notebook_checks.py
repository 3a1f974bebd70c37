"""What one fast-mode run of a notebook must show, wherever it ran.

A notebook executes once per test session: under nbclient (``tests/test_notebooks.py``), or, when
the session drives its sliders in a browser, in JupyterLab (``tests/browser/test_widgets_in_jupyterlab.py``),
which then applies these checks to its own run. Both append :data:`CHECK_CELL` to the notebook and
fail on any error output of a cell, and on errors that ipywidgets keeps in Output widgets: nbclient
reads those from the widget state it saved, JupyterLab shows them in the widget output areas,
which the browser test searches.
"""

from __future__ import annotations

import re

WITH_SLIDERS = {0, 3, 4, 6, 7, 9, 10}  # notebooks the series promises sliders in

# The last cell of every test run: move every slider registered through
# capslib.plots.widgets.interactive_plot to another value and back; it raises if any widget callback
# raised (ipywidgets would otherwise swallow the error into the widget's output area).
CHECK_CELL = 'import capslib.plots.widgets as W\nn = W.exercise_widgets()\nprint("widget moves", n)'
MOVES = re.compile(r"widget moves (\d+)")


def errors_in(outputs) -> list[str]:
    """The ``error`` outputs of a list of outputs (dicts as in .ipynb), as ``ename: evalue`` strings."""
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]


def check_widget_moves(name: str, printed: str, code: str, in_series: bool = True) -> int:
    """Fail unless the check cell printed its count of moves, and moved something in a notebook
    with sliders (``name`` starts with its number; ``code``: the notebook's code; ``in_series``:
    a numbered notebook of the series, not a solutions notebook). Returns the count."""
    match = MOVES.search(printed)
    assert match, f"{name}: the check cell printed no count of widget moves: {printed!r}"
    moves = int(match.group(1))
    if (in_series and int(name[:2]) in WITH_SLIDERS) or "interactive_plot(" in code:
        assert moves > 0, f"{name} should have sliders, but no control was registered and moved"
    return moves
