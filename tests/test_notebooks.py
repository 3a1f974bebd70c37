"""Every notebook runs headlessly in fast mode, without errors, and with every widget driven.

Each notebook in ``notebooks/`` is executed with nbclient on a temporary copy of the folder, with
``CAPSNET_FAST=1`` and matplotlib's default (inline) backend, and the check cell of
``notebook_checks.py`` appended (it moves every slider and back, and raises if a widget callback
raised). A notebook whose sliders the same session drives in JupyterLab (the browser tests)
executes there instead, once: that test applies these checks to its run (tests/browser/conftest.py).

The structure tests check the layout the series promises (STYLE.md, convention 10 and 11): a
"What you will learn" list at the top, a Summary of the same ideas at the end, and exercises whose
solutions live out of sight in ``notebooks/solutions/NN_solutions.ipynb`` (run and checked here
like the notebooks themselves). The prose test ties every number a notebook's text states to what
its committed run printed.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
from notebook_checks import CHECK_CELL, check_widget_moves, errors_in

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SOLUTION_DIR = NOTEBOOK_DIR / "solutions"
SOLUTIONS = sorted(SOLUTION_DIR.glob("[0-9][0-9]_solutions.ipynb"))
FIRST_NUMBER = 0  # the series starts with 00_why_capsules
LAST_NUMBER = 11  # the series ends with 11_routing_algorithms
ids = [path.stem for path in NOTEBOOKS]
solution_ids = [f"solutions/{path.stem}" for path in SOLUTIONS]


def number(path: Path) -> int:
    return int(path.name[:2])


def read(path: Path):
    return nbformat.read(path, as_version=4)


def markdown(nb) -> str:
    return "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def widget_state_errors(nb) -> list[str]:
    """Errors stored in the state of Output widgets (where ipywidgets puts callback exceptions)."""
    found = []
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for model in state.values():
        found += errors_in(model.get("state", {}).get("outputs", []))
    return found


def test_series_exists():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    numbers = [number(p) for p in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=ids + solution_ids)
def test_every_cell_has_its_own_id(path):
    """nbformat 4.5 gives every cell an id (JupyterLab, the site and nbclient rely on it; a cell
    added by a script without one draws a MissingIDFieldWarning now and an error later). Read from
    the raw file: nbformat's reader fills missing ids in silently."""
    raw = json.loads(path.read_text())
    if (raw["nbformat"], raw["nbformat_minor"]) < (4, 5):
        return
    cell_ids = [cell.get("id") for cell in raw["cells"]]
    assert None not in cell_ids, f"cells without an id: {[k for k, i in enumerate(cell_ids) if i is None]}"
    assert len(set(cell_ids)) == len(cell_ids), "two cells share an id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_structure(path):
    nb = read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernel must be python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "the first cell must be the title"

    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    assert tagged[0].cell_type == "code" and "CAPSNET_FAST" in tagged[0].source

    text = markdown(nb)
    for heading in ("Setup", "Summary", "Exercises"):
        assert re.search(rf"^#+ .*{heading}", text, flags=re.MULTILINE), f"no '{heading}' heading"

    opening = "\n\n".join(c.source for c in nb.cells[:3] if c.cell_type == "markdown")
    learn = re.search(r"^#+ What you will learn\s*\n((?:\s*[-*] .*\n?)+)", opening, flags=re.MULTILINE)
    assert learn, "the notebook must open with a '## What you will learn' list (within its first three cells)"
    assert 3 <= len(bullets(learn.group(1))) <= 5, "'What you will learn' should list three to five ideas"
    summary = next(c.source for c in nb.cells if c.cell_type == "markdown" and re.match(r"#+ .*Summary", c.source))
    assert 3 <= len(bullets(summary)) <= 8, "the Summary should restate the ideas as three to eight bullets"

    hidden = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]
    assert not hidden, f"cells {hidden} are collapsed: solutions belong in solutions/{number(path):02d}_solutions.ipynb"
    exercises = exercises_cell(nb)
    target = f"solutions/{number(path):02d}_solutions.ipynb"
    assert f"]({target})" in exercises, f"the Exercises cell must link to its solutions, {target}"
    assert (NOTEBOOK_DIR / target).exists(), f"{target} does not exist"

    k = number(path)
    links = re.findall(r"\]\(([^)\s]+\.ipynb)\)", text)
    for neighbour in ([k - 1] if k > FIRST_NUMBER else []) + ([k + 1] if k < LAST_NUMBER else []):
        targets = [link for link in links if link.startswith(f"{neighbour:02d}_")]
        assert targets, f"no link to notebook {neighbour:02d}"
        if any(number(p) == neighbour for p in NOTEBOOKS):  # the neighbour exists: the link must name it
            for target in targets:
                assert (NOTEBOOK_DIR / target).exists(), f"link to {target}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_live_slider_has_a_precomputed_one_in_the_committed_run(path):
    """A cell with a live ipywidgets slider is followed by a scrubber (capslib.plots.scrubber), whose
    committed output holds its frames (at least two, under about 1 MB): what a reader without a kernel
    can move, on the site and in VS Code."""
    from capslib.plots import MAX_SCRUBBER_BYTES

    cells = [c for c in read(path).cells if c.cell_type == "code"]
    live = [i for i, c in enumerate(cells) if "interactive_plot(" in c.source]
    for i in live:
        following = cells[i + 1] if i + 1 < len(cells) else None
        assert following is not None and "scrubber(" in following.source, (
            f"the live slider in code cell {i} needs a scrubber in the next code cell: {cells[i].source[:80]!r}"
        )
        pages = [o.data["text/html"] for o in following.outputs if "text/html" in o.get("data", {})]
        assert pages and 'class="capslib-scrubber"' in pages[0], f"code cell {i + 1}: no committed scrubber output"
        frames = pages[0].split("<details", 1)[1].count("<img ")
        assert frames >= 2, f"code cell {i + 1}: a scrubber of {frames} frame"
        assert len(pages[0]) <= MAX_SCRUBBER_BYTES * 1.05, f"code cell {i + 1}: {len(pages[0]):,} bytes"


def bullets(text: str) -> list[str]:
    """The top-level list items (``- ``, ``* `` or ``1. ``) of a markdown text."""
    return re.findall(r"^(?:[-*]|\d+\.) +\S.*$", text, flags=re.MULTILINE)


def exercise_count(nb) -> int:
    """How many exercises a notebook sets: the numbered items of its Exercises cell."""
    return len(re.findall(r"^\d+\. +\S", exercises_cell(nb).split("Exercises", 1)[1], flags=re.MULTILINE))


def exercises_cell(nb) -> str:
    heading = re.compile(r"^#+ .*Exercises", flags=re.MULTILINE)
    return next(c.source for c in nb.cells if c.cell_type == "markdown" and heading.search(c.source))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_solutions_live_in_their_own_notebook(path):
    """Solutions out of sight: one ``solutions/NN_solutions.ipynb`` per notebook, with a title that
    links back, its own fast-mode parameters cell, and one ``## Exercise k`` section per exercise."""
    solutions = SOLUTION_DIR / f"{number(path):02d}_solutions.ipynb"
    assert solutions.exists(), f"{solutions.relative_to(ROOT)} is missing"
    sol = read(solutions)
    assert sol.metadata.get("kernelspec", {}).get("name") == "python3", "kernel must be python3"
    title = sol.cells[0]
    opening = f"# {number(path):02d} · Solutions"
    assert title.cell_type == "markdown" and title.source.startswith(opening), f"the title must start {opening!r}"
    assert f"](../{path.name})" in title.source, f"the title cell must link back to ../{path.name}"
    tagged = [c for c in sol.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code" and "CAPSNET_FAST" in tagged[0].source
    headings = re.findall(r"^## Exercise (\d+)\b", markdown(sol), flags=re.MULTILINE)
    count = exercise_count(read(path))
    assert count >= 1, f"{path.name} sets no numbered exercises"
    assert [int(h) for h in headings] == list(range(1, count + 1)), (
        f"expected one '## Exercise k' section for k = 1..{count}, found {headings}"
    )


# Numbers as prose states them: a decimal (0.061, 99.56%, +0.0012), or a whole percentage (5%).
# An arXiv identifier (1907.13327) is a name, not a number.
STATED_NUMBER = re.compile(r"(?<![\w.])[+\-\u2212]?(\d+\.\d+|\d+(?=%))(?![\w.]*\d)")
ARXIV = re.compile(r"\b\d{4}\.\d{4,5}(v\d+)?\b")
NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|`[^`\n]*`|\]\([^)\s]*\)|<[^>\n]*>", flags=re.DOTALL)
# Section numbers are names too: "### 3.1 How much ...", "section 3.1", "sections 2.2 and 2.3".
SECTION_NUMBER = re.compile(r"^#+ +\d+(\.\d+)+|\b[Ss]ections? +\d+(\.\d+)+( +and +\d+(\.\d+)+)?", flags=re.MULTILINE)


MOST_NUMBERS_IN_A_CELL = 6
# Whole numbers are too many to check (16 dimensions, 10 classes), except where they carry a
# measurement's unit: a throughput, a time, a count of errors, a speed-up.
UNITS = r"(?:training )?(?:images/s|images per second|minutes?|seconds?|hours?|errors?|x faster|x fewer)"
MEASURED_WHOLE = re.compile(rf"(?<![\w.,])(\d[\d,]*) ?{UNITS}\b")


def stated_numbers(text: str) -> list[str]:
    """The numbers a markdown text states in its prose (maths, inline code, link targets, HTML
    attributes, section numbers and arXiv identifiers left out), without sign."""
    return STATED_NUMBER.findall(ARXIV.sub(" ", SECTION_NUMBER.sub(" ", NOT_PROSE.sub(" ", text))))


def code_text(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=ids + solution_ids)
def test_prose_states_only_numbers_its_run_printed(path):
    """A notebook teaches only what its outputs show: every decimal or percentage in its markdown
    appears in what its committed run printed, or in its code (a constant such as ``m_plus = 0.9``).
    Only a cell tagged ``literature`` may quote numbers from elsewhere, and it must cite its source
    (an author and a year, or a link). A re-run that changes a number fails here until the prose is
    rewritten. Whole numbers count where they carry a measurement's unit (``59 images per second``,
    ``16 minutes``, ``44 errors``). Numbers live in printed tables and figure titles: a prose cell quotes at most
    MOST_NUMBERS_IN_A_CELL of them, the few its point needs."""
    nb = read(path)
    known = outputs_text(nb) + "\n" + code_text(nb)
    missing = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        if "literature" in cell.get("metadata", {}).get("tags", []):
            assert re.search(r"(19|20)\d\d|\]\(http", cell.source), f"literature cell {k} cites no source"
            continue
        stated = stated_numbers(cell.source)
        measured = MEASURED_WHOLE.findall(NOT_PROSE.sub(" ", cell.source))
        if len(stated) > MOST_NUMBERS_IN_A_CELL:
            missing.append(f"cell {k} states {len(stated)} numbers (at most {MOST_NUMBERS_IN_A_CELL})")
        for value in stated + measured:
            if not re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", known):
                missing.append(f"cell {k}: {value}")
    assert not missing, f"{path.name} states numbers its run printed nowhere: {missing}"


def _run_notebooks_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saved_outputs_keep_no_progress_bars():
    """A saved tqdm bar reads "0%" forever; scripts/run_notebooks.py drops them, sliders stay."""
    script = _run_notebooks_script()
    bar = nbformat.v4.new_output(
        "display_data",
        data={
            "text/plain": "epoch 1/3:   0%|          | 0/32 [00:00<?, ?it/s]",
            script.WIDGET_VIEW: {"model_id": "a", "version_major": 2, "version_minor": 0},
        },
    )
    panel = nbformat.v4.new_output(
        "display_data", data={"text/plain": "VBox(children=(FloatSlider(value=0.0),))", script.WIDGET_VIEW: {}}
    )
    printed = nbformat.v4.new_output("stream", name="stdout", text="epoch   1/3  loss 0.5 ... 0%|x| 1/2\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fit()", outputs=[bar, printed, panel])])
    assert script.drop_progress_bars(nb) == 1
    assert nb.cells[0].outputs == [printed, panel]
    for path in NOTEBOOKS:
        saved = [out for cell in read(path).cells if cell.cell_type == "code" for out in cell.outputs]
        assert not [out for out in saved if script.is_progress_bar(out)], f"{path.name} keeps a saved progress bar"


def outputs_text(nb) -> str:
    """Everything the committed run printed: streams and plain-text results of every code cell."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


STATED = re.compile(r"\d+\.\d+%|p = [\d.e+-]*\d|[+-]\d\.\d{2,4}\b|\d+ pairs gained, \d+ lost")


def test_multimnist_findings_state_only_numbers_its_outputs_print():
    """Notebook 10's verdict on routing (its 'What came out' cell and the markdown cells that follow
    it up to the next heading or code cell, and the summary's bullet on the shipped model) restates
    the committed run: every percentage, p-value, signed difference and gained/lost count in it is
    printed by a code cell. A re-export that changes the numbers fails here until the prose is
    rewritten."""
    nb = read(NOTEBOOK_DIR / "10_multimnist.ipynb")
    printed = outputs_text(nb).replace(" pairs gained, ", " gained, ")
    start = next(k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and "What came out" in c.source)
    cells = [nb.cells[start].source]
    for cell in nb.cells[start + 1 :]:  # the verdict may run over a few short cells
        if cell.cell_type != "markdown" or cell.source.startswith("#"):
            break
        cells.append(cell.source)
    verdict = "\n\n".join(cells)
    summary = next(c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Summary"))
    bullet = next(line for line in summary.splitlines() if "shipped model" in line)
    stated = STATED.findall(verdict + "\n" + bullet)
    assert len(stated) >= 10, stated
    missing = [s for s in stated if s.replace(" pairs gained, ", " gained, ") not in printed]
    assert not missing, f"stated in notebook 10's prose but printed by none of its cells: {missing}"


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=ids + solution_ids)
def test_runs_in_fast_mode(path, tmp_path, monkeypatch):
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))

    monkeypatch.setenv("CAPSNET_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # import this checkout's capslib
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as for a reader
    # Rarely (twice in a day of runs, in notebooks that pass otherwise) the kernel goes idle with
    # nbclient still waiting for a cell's reply: a hang of the kernel channel, not of the notebook.
    # No fast-mode cell needs 5 minutes, so such a cell times out and the notebook runs once more
    # in a fresh kernel; a notebook that really hangs times out twice and fails.
    for attempt in (1, 2):
        copy = workdir / path.relative_to(NOTEBOOK_DIR)
        nb = read(copy)
        nb.cells.append(nbformat.v4.new_code_cell(CHECK_CELL))
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(copy.parent)}}
        )
        try:
            client.execute()  # raises CellExecutionError on the first failing cell
            break
        except nbclient.exceptions.CellTimeoutError:
            if attempt == 2:
                raise
            # said in pytest's warnings summary, so that a run's log shows the 5 minutes it cost
            warnings.warn(
                f"{path.name}: a cell timed out after 300 s (the kernel-channel hang?); running it again", stacklevel=1
            )

    found = [e for cell in nb.cells if cell.cell_type == "code" for e in errors_in(cell.get("outputs", []))]
    found += widget_state_errors(nb)
    assert not found, f"{path.name} produced errors: {found}"

    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    code = "\n".join(cell.source for cell in nb.cells[:-1] if cell.cell_type == "code")
    check_widget_moves(path.stem, printed, code, in_series=path.parent == NOTEBOOK_DIR)


def test_table1_findings_follow_the_committed_runs():
    """Notebook 09's Table 1 at 5 full epochs restates the raw results committed in
    results/table1/epochs_5 today: every run is in its printed table (mean +- std of each row, each
    run's errors), every seed's paired p-value is printed, and every percentage, p-value or signed
    difference its prose states (the markdown from its heading to the next heading, and the
    summary's Table 1 bullet) is printed by a code cell. A run that lands without the notebook being
    rerun, or a rerun that changes the numbers, fails here until the notebook and its prose follow."""
    from capslib.experiments.ablation import PAIRS, load_results, mean_plus_minus, paired_tests, summarize

    nb = read(NOTEBOOK_DIR / "09_does_routing_help.ipynb")
    printed = outputs_text(nb)
    results = load_results(ROOT / "results" / "table1" / "epochs_5")
    assert {r["epochs"] for r in results} == {5}
    assert f"{len(results)} run{'s' * (len(results) != 1)}, seeds " in printed
    for row in summarize(results):
        assert mean_plus_minus(row["test_error_percent"], row["test_error_std"]) in printed, row["variant"]
    for result in results:
        assert f"seed {result['seed']}: {result['test_errors']} = " in printed, (result["variant"], result["seed"])
    for pair in paired_tests(results, PAIRS):
        assert f"{pair['test_p_value']:7.3f}" in printed and f"{pair['affine_p_value']:7.3f}" in printed
    start = next(k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and "5 full epochs" in c.source)
    prose = []
    for cell in nb.cells[start + 1 :]:
        if cell.cell_type == "markdown" and cell.source.startswith("#"):
            break
        if cell.cell_type == "markdown":
            prose.append(cell.source)
    summary = next(c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Summary"))
    bullet = next(line for line in summary.splitlines() if "5 full epochs" in line)
    stated = STATED.findall("\n\n".join(prose) + "\n" + bullet)
    assert stated, "the Table 1 section states no number: its verdict should quote the measurements"
    # "5.82%" or "p = 0.627" in prose, 5.82 or 0.627 in a printed table
    missing = [s for s in stated if s.removeprefix("p = ").rstrip("%") not in printed]
    assert not missing, f"stated in notebook 09's Table 1 section but printed by none of its cells: {missing}"
