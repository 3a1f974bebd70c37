"""The static site (python -m capslib.site) built from a small series made here: pages, links, maths,
live widgets, scrubbers, nothing from a CDN, and no half-written site. The real series is built and
opened in Chromium by tests/browser/test_static_site.py."""

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from capslib.publish.cli import main
from capslib.publish.site import MARKER, build_site, maths_to_mathml, series_pages

SCRUBBER_HTML = (
    '<div class="capslib-scrubber"><img alt="a frame" src="data:image/png;base64,AAAA">'
    "<script>var x = 1;</script></div>"
)


def write(path, cells, widgets=False):
    nb = new_notebook(cells=cells)
    if widgets:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "repo" / "notebooks"
    slider = new_code_cell("interactive_plot(...)", outputs=[
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                         "text/plain": "VBox(children=(IntSlider(value=3),))"}),
        new_output("display_data", data={"text/html": SCRUBBER_HTML, "text/plain": "Scrubber(...)"}),
    ])  # fmt: skip
    write(folder / "00_first.ipynb", [
        new_markdown_cell("# 00 · First\n\n## What you will learn\n\n- the coupling $c_{ij}$ sums to 1\n- more\n"),
        new_markdown_cell("Next: [the second](01_second.ipynb#Setup), [results](../docs/results.md), "
                          "[answers](solutions/00_solutions.ipynb), `$not maths$`, and [away](https://example.org)."),
        slider,
    ], widgets=True)  # fmt: skip
    write(folder / "01_second.ipynb", [new_markdown_cell("# 01 · Second\n\n$$\\sum_i c_{ij} = 1$$")])
    write(
        folder / "solutions" / "00_solutions.ipynb",
        [new_markdown_cell("# 00 · Solutions\n\n[back](../00_first.ipynb)")],
    )
    (folder / "README.md").write_text("# The series\n")
    docs = tmp_path / "repo" / "docs"
    (docs / "figures").mkdir(parents=True)
    (docs / "results.md").write_text(
        "# Results\n\n![curve](figures/curve.png)\n\n[the series](../notebooks/README.md)\n"
    )
    (docs / "figures" / "curve.png").write_bytes(b"\x89PNG fake")
    return folder


def test_pages_in_reading_order_with_their_titles(series):
    pages = series_pages(series)
    assert [p.target for p in pages] == ["00_first.html", "01_second.html", "solutions/00_solutions.html"]
    assert [p.title for p in pages] == ["00 · First", "01 · Second", "00 · Solutions"]


def test_the_site_links_its_pages_draws_maths_and_fetches_nothing(series, tmp_path):
    out = tmp_path / "site"
    written = build_site(out, notebooks=series, progress=False)
    assert [p.relative_to(out).as_posix() for p in written] == [
        "00_first.html",
        "01_second.html",
        "solutions/00_solutions.html",
    ]
    first = (out / "00_first.html").read_text()
    # Links between notebooks, to the solutions and to docs/ point at pages; the outside stays outside.
    assert 'href="01_second.html#Setup"' in first and 'href="solutions/00_solutions.html"' in first
    assert 'href="docs/results.html"' in first and 'href="https://example.org"' in first
    assert 'href="../00_first.html"' in (out / "solutions" / "00_solutions.html").read_text()
    # Previous / contents / next.
    second = (out / "01_second.html").read_text()
    assert (
        'href="00_first.html"' in second
        and 'href="index.html"' in second
        and 'href="solutions/00_solutions.html"' in second
    )
    # Maths as MathML, code spans untouched.
    assert "<math" in first and "$c_{ij}$" not in first and "$not maths$" in first
    assert 'display="block"' in second
    # The live widget is a note, the scrubber is kept with its script; no script or style from anywhere else.
    assert "needs a running Python kernel" in first and "VBox(children" not in first
    assert '<div class="capslib-scrubber"><img alt="a frame"' in first and "<script>var x = 1;</script>" in first
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"https?:", text), page
        assert "cdnjs" not in text and "unpkg" not in text, page
    # The index has the series' table with each notebook's goals; a docs page has its pictures.
    index = (out / "index.html").read_text()
    assert 'href="00_first.html"' in index and "sums to 1" in index and "<math" in index
    assert 'href="solutions/00_solutions.html"' in index
    results = (out / "docs" / "results.html").read_text()
    assert 'href="../index.html"' in results and (out / "docs" / "figures" / "curve.png").is_file()
    assert (out / MARKER).is_file()


def test_every_relative_link_of_the_site_resolves(series, tmp_path):
    out = tmp_path / "site"
    build_site(out, notebooks=series, progress=False)
    for page in out.rglob("*.html"):
        for url in re.findall(r'(?:href|src)="([^"#]+)', page.read_text()):
            if not re.match(r"^[a-z]+:", url):
                assert (page.parent / url).exists(), f"{page.name} links to missing {url}"


def test_an_earlier_site_is_replaced_and_anything_else_refused(series, tmp_path, capsys):
    out = tmp_path / "site"
    build_site(out, notebooks=series, progress=False)
    (out / "stale.html").write_text("old")
    main(["--out", str(out), "--notebooks", str(series), "--no-progress"])
    assert not (out / "stale.html").exists()
    assert "3 pages" in capsys.readouterr().out
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["--out", str(precious), "--notebooks", str(series)])
    assert "--out must be a new or empty folder" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]


def test_a_failed_build_leaves_nothing_behind(series, tmp_path):
    (series / "02_broken.ipynb").write_text(json.dumps({"not": "a notebook"}))
    out = tmp_path / "site"
    with pytest.raises(Exception):  # noqa: B017 - whatever nbformat raises, the point is what is left
        build_site(out, notebooks=series, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    with pytest.raises(ValueError, match="no notebooks"):
        build_site(out, notebooks=tmp_path / "repo" / "docs", progress=False)


def test_maths_outside_code_only():
    converted = maths_to_mathml("a $x_1$ b `$y$` c\n```\n$z$\n```\n")
    assert converted.count("<math") == 1 and "`$y$`" in converted and "\n$z$\n" in converted
    assert maths_to_mathml("costs \\$5") == "costs \\$5"


def test_the_pages_workflow_builds_the_site_the_tests_build_and_publishes_that_folder():
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / ".github" / "workflows" / "pages.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    runs = [step.get("run", "") for step in steps]
    build = [run for run in runs if "-m capslib.site" in run]
    assert len(build) == 1 and "--out _site" in build[0]
    assert any("pip install -e ." in run for run in runs)
    upload = next(step for step in steps if "upload-pages-artifact" in step.get("uses", ""))
    assert upload["with"]["path"] == "_site"
    assert "deploy-pages" in workflow["jobs"]["deploy"]["steps"][0]["uses"]
