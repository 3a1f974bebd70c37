"""The notebooks' sliders in a real JupyterLab, driven by a real (headless) Chromium.

For every notebook with sliders (made by :func:`capslib.plots.widgets.interactive_plot`), as a reader
would: open it in JupyterLab, Run > Run All Cells (fast mode), wait until every code cell has an
execution count and the kernel is idle; this is the notebook's one run of the session, so it gets
the checks of tests/test_notebooks.py (no cell raised, the appended check cell of
``tests/notebook_checks.py`` moved every slider and back without a callback error, and no widget
output area holds an error). Then check that the widget panel rendered with a figure,
move one slider with the keyboard (ArrowRight, End) and with the mouse (drag the handle), and after
each move wait until the kernel has settled and check that the slider's value and the figure both
changed. At the end no cell and no widget output may hold an error. Screenshots of the panel (its
controls and figure) before and after the moves go to ``$CAPSNET_SCREENSHOTS`` or a temporary
folder, printed at the end of the run.

Run alone with ``pytest -m browser``; ``scripts/readme_screenshots.sh`` refreshes the README's
screenshots from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from notebook_checks import check_widget_moves

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
RUN_ALL_TIMEOUT = 300  # seconds for Run All Cells of one fast-mode notebook on a busy 2-core machine
SETTLE_TIMEOUT = 60  # seconds for one slider move to be redrawn
QUIET = 1.5  # seconds the kernel must stay idle and the figure unchanged to count as settled
SCREENSHOTS_ENV = "CAPSNET_SCREENSHOTS"  # as in conftest.py: a folder to keep the screenshots in
VIEWPORT = {"width": 1400, "height": 1000}

# The sliders each notebook's test moves (by their description) and where along its track the drag
# of the FIRST one ends (0: minimum, 1: maximum); the first gets keys and a drag, each further one
# a key step (its drag_to is unused). Notebooks not listed: the first slider of their last panel.
# Every slider a notebook adds for a new lesson belongs here.
SLIDERS_OF = {
    "00_why_capsules": [
        ("shift (px)", 0.8),  # the shifted digit and its features: 0 -> 1 -> 6 -> 4
        ("rotation (deg)", None),  # the rotated digit: 0 -> 5 (10 in fast mode)
        ("pose offset", None),  # inverse graphics: one pose number of the winning capsule, 0 -> 0.05
    ],
    "03_dynamic_routing": [
        ("iterations", 0.6),  # the routing-iterations slider: 3 -> 4 -> 10 -> 6
        ("iteration r", None),  # the routing lab's iteration: 6 (its maximum) -> 5
        ("cluster size", None),  # the lab's agreeing votes per output: 6 -> 7
        ("noise", None),  # the lab's spread of a cluster: 0.2 -> 0.25
        ("vote length", None),  # the lab's vote length (log scale): 1 -> 1.12
        ("iteration shown", None),  # explaining away: the iteration drawn, 6 (its maximum) -> 5
        ("parts for A", None),  # explaining away: parts that support only whole A, 4 -> 5
        ("parts for B", None),  # explaining away: parts that support only whole B, 1 -> 2
        ("ambiguity (deg)", None),  # explaining away: the ambiguous part's angle off both wholes, 10 -> 15
        ("agreement x", None),  # the agreement-scaling exploration (not the paper's): 30 -> 39.8
    ],
    "06_coupling_coefficients": [
        ("iterations", 0.6),  # the coupling explorer's iterations: 3 -> 4 -> 10 -> 6
        ("agreement x", None),  # the agreement-scaling exploration (not the paper's): 1 -> 3
    ],
    # the capsule-dimension slider of the dimension with the largest effect (the notebook prints
    # "dimensions by effect: [...]"; d0 if it does not): +0.25 -> -0.20
    "07_capsule_dimensions": [("d{dimensions by effect: [}", 0.1)],
    "09_does_routing_help": [
        ("rotation (deg)", 0.8),  # the transformed digit's rotation: 0 -> 5 -> about 54 degrees
        ("shear", None),  # its shear: 0 -> 0.05
        ("scale", None),  # its scale: 1 -> 1.05
        ("test digit", None),  # which test digit: 0 -> 1
    ],
    "10_multimnist": [
        ("iterations", 0.3),  # the coupling explorer's routing iterations: 3 -> 4 -> 5 (its maximum) -> 2
        ("A dx", None),  # the pair-maker's horizontal shift of digit A: 3 -> 4
        ("first digit", None),  # the pair-maker's first test digit: 0 -> 1
    ],
    "11_routing_algorithms": [
        ("iteration", 0.6),  # the iteration drawn: 3 -> 4 -> 6 (its maximum; 3 in fast mode) -> 5
        ("algorithm", None),  # which algorithm routes the votes: dynamic -> uniform
    ],
}
DEFAULT_DRAG_TO = 0.3


def notebooks_with_sliders() -> list[str]:
    """Stems of the notebooks whose code makes an ``interactive_plot`` with a slider."""
    found = []
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text()).get("cells", [])
        code = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")
        if "interactive_plot(" in code and "Slider(" in code:
            found.append(path.stem)
    return found


NOTEBOOKS = notebooks_with_sliders()

# Kernel status and execution progress, read from JupyterLab's own models (window.jupyterapp is
# exposed by --LabApp.expose_app_in_browser). Empty code cells are never executed, so not counted.
STATE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let total = 0, executed = 0;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code' || !cell.sharedModel.getSource().trim()) continue;
    total++;
    if (cell.executionCount) executed++;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  const running = [...document.querySelectorAll('.jp-InputPrompt')].filter(p => p.textContent.includes('*')).length;
  return {status: kernel ? kernel.status : 'no kernel', total, executed, running, errors};
}"""

# What the last code cell (the appended check cell) printed.
LAST_CELL_PRINTED_JS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  let text = '';
  for (let i = cells.length - 1; i >= 0; i--) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === 'stream') text += Array.isArray(out.text) ? out.text.join('') : out.text;
    }
    return text;
  }
  return text;
}"""

# Error text anywhere on the page: stderr/error outputs with a traceback or an exception name,
# anything with 'Error' inside a widget's output area, widgets that failed to render.
ERRORS_JS = """() => {
  const found = [];
  const stderr = '[data-mime-type="application/vnd.jupyter.stderr"]';
  for (const el of document.querySelectorAll(`.jp-OutputArea-output${stderr}, .jp-RenderedText${stderr}`)) {
    if (/Traceback|\\w*Error\\b/.test(el.textContent)) found.push('stderr: ' + el.textContent.slice(0, 1500));
  }
  for (const el of document.querySelectorAll('.widget-output')) {
    if (/Error|Traceback/.test(el.textContent)) found.push('widget output: ' + el.textContent.slice(0, 1500));
  }
  for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
    if (/Error displaying widget|model not found|Failed to load model/i.test(el.textContent))
      found.push('widget rendering: ' + el.textContent.slice(0, 300));
  }
  return [...new Set(found)];
}"""


def kernel_state(page) -> dict:
    state = page.evaluate(STATE_JS)
    return state or {"status": "no notebook", "total": 0, "executed": 0, "running": 0, "errors": []}


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def run_all_cells(page, name: str) -> dict:
    """Run > Run All Cells, then wait until every code cell ran and the kernel is idle."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    start = time.monotonic()

    def finished():
        state = kernel_state(page)
        if state["errors"]:
            pytest.fail(f"{name}: a cell raised during Run All: {state['errors']}")
        done = state["total"] > 0 and state["executed"] == state["total"] and state["running"] == 0
        return state if done and state["status"] == "idle" else None

    state = wait_for(finished, RUN_ALL_TIMEOUT, f"{name}: Run All Cells to finish")
    state["seconds"] = round(time.monotonic() - start, 1)
    return state


def figure_src(panel) -> str:
    """The ``src`` (a base64 PNG) of the figure in the panel's output area ('' while redrawing)."""
    images = panel.locator(".widget-output img")
    return (images.first.get_attribute("src") or "") if images.count() else ""


def settle(page, panel, slider, previous_src: str, name: str) -> str:
    """Wait until the kernel is idle and the figure is present and unchanged for ``QUIET`` seconds.

    Returns the settled figure's ``src``; fails if it never differs from ``previous_src``, or at
    once if an error appears on the page (a callback's traceback replaces the figure).
    """
    time.sleep(0.3)  # let the new value reach the kernel before its status is trusted
    stable_since, last_src = None, None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        src, idle = figure_src(panel), kernel_state(page)["status"] == "idle"
        errors = page.evaluate(ERRORS_JS)
        if errors:
            pytest.fail(f"{name}: error output appeared (slider at {readout(slider)}):\n" + "\n".join(errors))
        if idle and src and src == last_src:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= QUIET and src != previous_src:
                return src
        else:
            stable_since = None
        last_src = src
        time.sleep(0.25)
    pytest.fail(f"{name}: the figure did not change (or settle) within {SETTLE_TIMEOUT} s; slider at {readout(slider)}")


def readout(slider) -> str:
    return (slider.locator(".widget-readout").text_content() or "").strip()


def sliders_to_move(name: str) -> list[tuple[str | None, float | None]]:
    """``(description, drag_to)`` of every slider the test moves in ``name`` (None: the default)."""
    return SLIDERS_OF.get(name, [(None, DEFAULT_DRAG_TO)])


def slider_label(page, label: str | None) -> str | None:
    """The description of the slider to move; ``{text}`` in it: the first number printed after text."""
    template = re.fullmatch(r"(.*)\{(.+)\}(.*)", label or "")
    if template is None:
        return label
    prefix, printed, suffix = template.groups()
    outputs = " ".join(page.locator(".jp-OutputArea-output").all_text_contents())
    number = re.search(re.escape(printed) + r"\s*(\d+)", outputs)
    return f"{prefix}{number.group(1) if number else 0}{suffix}"


def find_panel(page, name: str, label: str | None):
    """The widget panel (an interactive_plot VBox) holding the slider described ``label`` (None:
    the first slider of the last panel), and that slider."""
    label = slider_label(page, label)
    panels = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator(".widget-slider"))
    wait_for(lambda: panels.count() > 0, 60, f"{name}: a widget panel with a slider to render")
    if label is None:
        panel = panels.last
        slider = panel.locator(".widget-slider").first
    else:
        exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
        has_label = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=exact))
        panel = panels.filter(has=has_label).last
        wait_for(lambda: panel.count() > 0, 60, f"{name}: a panel with the slider {label!r}")
        slider = panel.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=exact)).first
    wait_for(lambda: figure_src(panel).startswith("data:image/png"), 60, f"{name}: the panel's figure")
    return panel, slider


def cut_off_labels(panel) -> list[str]:
    """The texts of the panel's control labels that do not fit their box (shown with an ellipsis)."""
    return panel.locator(".widget-label").evaluate_all(
        "labels => labels.filter(l => l.offsetParent && l.scrollWidth > l.clientWidth + 1).map(l => l.textContent)"
    )


def screenshot(page, panel, path: Path, margin: int = 8) -> None:
    """Screenshot the panel cropped to its controls and figure (the panel is as wide as the page)."""
    panel.evaluate("element => element.scrollIntoView({block: 'center'})")  # clear of the toolbar
    boxes = [
        panel.locator(".widget-hbox > *").nth(i).bounding_box()
        for i in range(panel.locator(".widget-hbox > *").count())
    ]
    boxes += [panel.locator(".widget-output img").first.bounding_box()]
    boxes = [b for b in boxes if b]
    left, top = min(b["x"] for b in boxes) - margin, min(b["y"] for b in boxes) - margin // 2  # the code is above
    right = max(b["x"] + b["width"] for b in boxes) + margin
    bottom = max(b["y"] + b["height"] for b in boxes) + margin
    viewport = page.viewport_size
    if top < 0 or bottom > viewport["height"] or right > viewport["width"]:  # does not fit: the whole panel
        panel.screenshot(path=str(path), animations="disabled", caret="hide")
        return
    clip = {"x": max(left, 0), "y": top, "width": right - max(left, 0), "height": bottom - top}
    page.screenshot(path=str(path), clip=clip, animations="disabled", caret="hide")


def move_slider(
    page, name: str, label: str | None, drag_to: float | None, screenshots: Path, full: bool = True
) -> None:
    """Move one slider with the keyboard (ArrowRight, End; from its maximum ArrowLeft, Home) and the
    mouse (a drag to ``drag_to`` along its track); after each move the value and the figure must
    change and settle. Not ``full``: one keyboard step only (a notebook's further sliders: each
    must redraw, and the first slider has shown that keys and drags reach the kernel).
    Screenshots ``<screenshots>_before.png`` and ``_after.png``."""
    panel, slider = find_panel(page, name, label)
    assert panel.locator(".jupyter-widgets").count() > 0
    cut = cut_off_labels(panel)
    assert not cut, f"{name}: control labels cut off (wider than their box): {cut}"
    handle = slider.locator(".noUi-handle")
    src = figure_src(panel)
    screenshot(page, panel, screenshots.with_name(screenshots.name + "_before.png"))

    moves = []
    # keyboard: focus the handle as Tab would, one step right, then to the maximum (from the
    # maximum: one step left, then to the minimum)
    at_maximum = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    keys = ("ArrowLeft", "Home") if at_maximum else ("ArrowRight", "End")
    for key in keys if full else keys[:1]:
        before = readout(slider)
        handle.focus()
        page.keyboard.press(key)
        wait_for(lambda b=before: readout(slider) != b, 10, f"{name}: {key} to move the slider from {before}")
        src = settle(page, panel, slider, src, f"{name} after {key}")
        moves.append(f"{key}: {before} -> {readout(slider)}")

    if full:  # mouse: drag the handle along the track (redraws while dragging, or on release)
        src = drag(page, name, slider, handle, drag_to, src, panel, moves)
    description = slider.locator(".widget-label").first.text_content()
    print(f"{name}: slider {description!r}: {'; '.join(moves)}")
    screenshot(page, panel, screenshots.with_name(screenshots.name + "_after.png"))


def drag(page, name: str, slider, handle, drag_to: float, src: str, panel, moves: list) -> str:
    """Drag ``handle`` to ``drag_to`` along the slider's track; wait for the redraw; return its ``src``."""
    before = readout(slider)
    handle.scroll_into_view_if_needed()
    grip, track = handle.bounding_box(), slider.locator(".noUi-target").bounding_box()
    y = grip["y"] + grip["height"] / 2
    page.mouse.move(grip["x"] + grip["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + drag_to * track["width"], y, steps=6)
    page.mouse.up()
    wait_for(lambda: readout(slider) != before, 10, f"{name}: the drag to move the slider from {before}")
    src = settle(page, panel, slider, src, f"{name} after the drag")
    moves.append(f"drag: {before} -> {readout(slider)}")
    return src


def move_scrubbers(page, name: str, code: str) -> int:
    """Every precomputed slider (capslib.plots.scrubber) the run made is there and enabled (the outputs
    of cells run in this session are trusted, so their script ran), and moving the first one changes
    its picture. Returns how many there are."""
    scrubbers = page.locator(".jp-OutputArea-output .capslib-scrubber")
    expected = len(re.findall(r"^\s*(?:plots\.)?scrubber\(", code, flags=re.MULTILINE))
    assert scrubbers.count() == expected, f"{name}: {scrubbers.count()} scrubbers shown, {expected} made"
    if not expected:
        return 0
    first = scrubbers.first
    first.scroll_into_view_if_needed()
    slider = first.locator("input[type=range]").first
    wait_for(slider.is_enabled, 10, f"{name}: the scrubber's script to enable its slider")
    before = first.locator("img").first.get_attribute("src")
    slider.fill("0" if slider.input_value() == slider.get_attribute("max") else slider.get_attribute("max"))
    assert first.locator("img").first.get_attribute("src") != before, f"{name}: moving the scrubber changed nothing"
    return expected


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_sliders_redraw_in_jupyterlab(name, lab, browser, screenshot_dir):
    assert (lab.root_dir / f"{name}.ipynb").exists()
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.set_default_timeout(60_000)
    try:
        # a fresh workspace per notebook: nothing restored from the previous test's tabs
        page.goto(lab.url(f"/lab/workspaces/{name}/tree/{name}.ipynb?reset"), wait_until="domcontentloaded")
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.wait_for(timeout=120_000)
        wait_for(lambda: kernel_state(page)["status"] == "idle", 120, f"{name}: the kernel to start")
        if page.locator("#jp-left-stack").is_visible():
            page.keyboard.press("Control+b")  # hide the file browser: the notebook gets the width

        state = run_all_cells(page, name)
        print(f"{name}: {state['executed']} code cells ran in {state['seconds']} s")
        cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        moves = check_widget_moves(name, page.evaluate(LAST_CELL_PRINTED_JS), code)
        errors = page.evaluate(ERRORS_JS)  # errors shown in widget output areas (nbclient: the widget state)
        assert not errors, f"{name}: error output after Run All Cells:\n" + "\n".join(errors)
        print(f"{name}: the check cell moved {moves} controls and back")
        print(f"{name}: {move_scrubbers(page, name, code)} precomputed sliders, the first moved")

        for number, (label, drag_to) in enumerate(sliders_to_move(name)):
            shots = screenshot_dir / f"{name}{'_' + str(number) if number else ''}"
            move_slider(page, name, label, drag_to, shots, full=number == 0)
        errors = page.evaluate(ERRORS_JS) + kernel_state(page)["errors"]
        assert not errors, f"{name}: error output after the slider moves:\n" + "\n".join(errors)
        assert not page_errors, f"{name}: uncaught exceptions in the page: {page_errors}"
    except BaseException:
        page.screenshot(path=str(screenshot_dir / f"{name}_FAILED.png"))  # the whole page, to see why
        raise
    finally:
        context.close()
        lab.shutdown_kernels()  # frees the CPU and memory for the next notebook


def test_a_committed_notebook_nobody_ran_shows_its_precomputed_frames(lab, browser, screenshot_dir):
    """Opened as committed, untrusted, in JupyterLab: the sanitizer strips the scrubbers' scripts, so
    their sliders stay disabled, but each shows its first frame, and every frame opens under it
    (``<details>`` needs no script). A copy of notebook 04 with its committed outputs, never run."""
    name = "untrusted_04_margin_loss"
    shutil.copy(REPO / "notebooks" / "04_margin_loss.ipynb", lab.root_dir / f"{name}.ipynb")
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(lab.url(f"/lab/workspaces/{name}/tree/{name}.ipynb?reset"), wait_until="domcontentloaded")
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.wait_for(timeout=120_000)
        scrubber = page.locator(".jp-OutputArea-output .capslib-scrubber").first
        scrubber.wait_for()
        scrubber.scroll_into_view_if_needed()
        assert scrubber.locator("script").count() == 0, "an untrusted output keeps no script"
        assert not scrubber.locator("input[type=range]").first.is_enabled()
        assert scrubber.locator("img").first.evaluate("img => img.complete && img.naturalWidth > 0")
        frames = scrubber.locator("details figure")
        assert frames.count() >= 2 and not frames.first.is_visible()
        scrubber.locator("details summary").click()
        assert frames.first.is_visible() and frames.last.locator("img").evaluate("img => img.naturalWidth > 0")
        scrubber.screenshot(path=str(screenshot_dir / f"{name}.png"))
    except BaseException:
        page.screenshot(path=str(screenshot_dir / f"{name}_FAILED.png"))
        raise
    finally:
        context.close()
        (lab.root_dir / f"{name}.ipynb").unlink(missing_ok=True)


def test_screenshots_stay_in_pytests_own_temporary_folder(screenshot_dir, tmp_path_factory):
    """Unless $CAPSNET_SCREENSHOTS names a folder (scripts/readme_screenshots.sh does), the
    screenshots go under pytest's base temporary folder, which pytest prunes to its last 3 runs,
    never into a /tmp folder of their own that nothing removes."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    if chosen:
        assert screenshot_dir == Path(chosen).resolve()
    else:
        assert tmp_path_factory.getbasetemp() in screenshot_dir.parents, screenshot_dir
