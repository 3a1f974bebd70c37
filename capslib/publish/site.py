"""The series as a static site: every committed notebook as a page, nothing executed, nothing fetched.

:func:`build_site` turns ``notebooks/*.ipynb`` and ``notebooks/solutions/*.ipynb`` into HTML pages
with nbconvert (their committed outputs and figures as they are), plus an index with the series'
table. What the pages need from outside, they get from the site itself or not at all:

- maths is converted to MathML at build time (browsers draw it natively; no MathJax from a CDN);
- nbconvert's require.js, MathJax, Mermaid and widget-manager scripts (all from CDNs) are left out;
- a live ipywidgets slider, which needs a kernel, is replaced by a line saying so; the notebook's
  precomputed scrubbers (:func:`capslib.plots.scrubber`) carry their frames and move here;
- links between notebooks point to their pages; a linked Markdown file of the repository
  (``docs/results.md``) becomes a page of its own.

The result is a folder of plain files: open ``index.html`` from disk, or copy it to any static host.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Page", "build_site", "series_pages", "MARKER"]

MARKER = ".capslib-site"
"""A file every built site holds: :func:`build_site` replaces only a folder that has it (or is empty)."""

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
LIVE_WIDGET_NOTE = (
    '<p class="capslib-live-widget"><em>A live slider stood here: it needs a running Python kernel. '
    "Open the notebook in JupyterLab to use it; where the notebook has a precomputed slider beside it, "
    "that one moves on this page.</em></p>"
)

# nbconvert's "lab" page with everything it would fetch from a CDN left out, and a bar of links.
TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style>{{ resources.site_css }}</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}{{ resources.site_nav }}{%- endblock body_header -%}
{%- block body_footer -%}{{ resources.site_nav }}{{ super() }}{%- endblock body_footer -%}
"""

CSS = """
.capslib-nav { display: flex; justify-content: space-between; gap: 1em; padding: 0.6em 1em;
  font-family: system-ui, sans-serif; font-size: 14px; background: #f3f5f8; border-bottom: 1px solid #dde; }
.capslib-nav a { color: #1a4fa0; text-decoration: none; }
.capslib-page { max-width: 60em; margin: 1.5em auto; padding: 0 1em; font-family: system-ui, sans-serif;
  line-height: 1.5; }
.capslib-page table { border-collapse: collapse; }
.capslib-page td, .capslib-page th { border: 1px solid #ccd; padding: 0.4em 0.6em; vertical-align: top; }
.capslib-page td ul { margin: 0; padding-left: 1.2em; }
"""


@dataclass(frozen=True)
class Page:
    """One notebook of the series and where its page goes."""

    source: Path  # the notebook
    target: str  # its page, relative to the site's root ("03_dynamic_routing.html")
    title: str  # its first heading


def series_pages(notebooks: Path) -> list[Page]:
    """The series in reading order (``NN_*.ipynb``), then the solutions (``solutions/NN_*.ipynb``)."""
    import nbformat

    pages = []
    for folder, prefix in ((notebooks, ""), (notebooks / "solutions", "solutions/")):
        for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            pages.append(Page(path, f"{prefix}{path.stem}.html", _title(nb, path.stem)))
    if not pages:
        raise ValueError(f"no notebooks (NN_name.ipynb) found in {notebooks}")
    return pages


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


# ---------------------------------------------------------------------------------------- maths

_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_MATH = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<![\\$])\$([^$\n]+?)(?<!\\)\$", re.S)


def maths_to_mathml(markdown: str) -> str:
    """``$...$`` and ``$$...$$`` in Markdown replaced by MathML (code spans and blocks left alone)."""
    from latex2mathml.converter import convert

    def replace(match: re.Match) -> str:
        block = match.group(1) is not None
        tex = match.group(1) if block else match.group(2)
        try:
            return convert(tex.strip(), display="block" if block else "inline")
        except Exception:  # noqa: BLE001 - a formula the converter cannot read stays readable as TeX
            return f"<code>{html.escape(tex)}</code>"

    parts = _CODE.split(markdown)  # odd parts are code
    return "".join(part if k % 2 else _MATH.sub(replace, part) for k, part in enumerate(parts))


# ---------------------------------------------------------------------------------------- links

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def rewrite_links(markdown: str, source: Path, repo: Path, pages: dict[Path, str], here: str) -> str:
    """Markdown links to notebooks and to the repository's Markdown files pointed at their pages.

    ``pages`` maps a resolved file of the repository to its page (relative to the site root);
    ``here`` is the page being written, so links come out relative to it."""

    def replace(match: re.Match) -> str:
        url = match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", url):
            return match.group(0)
        path, _, anchor = url.partition("#")
        target = pages.get((source.parent / path).resolve())
        if target is None:
            return match.group(0)
        relative = os.path.relpath(target, start=os.path.dirname(here) or ".").replace(os.sep, "/")
        return f"{match.group(1)}{relative}{'#' + anchor if anchor else ''}{match.group(3)}"

    return _LINK.sub(replace, markdown)


# ---------------------------------------------------------------------------------------- pages


def _nav(pages: list[Page], index: int | None, here: str) -> str:
    def link(target: str, text: str) -> str:
        relative = os.path.relpath(target, start=os.path.dirname(here) or ".").replace(os.sep, "/")
        return f'<a href="{relative}">{html.escape(text)}</a>'

    previous = link(pages[index - 1].target, "< " + pages[index - 1].title) if index else ""
    following = (
        link(pages[index + 1].target, pages[index + 1].title + " >")
        if index is not None and index + 1 < len(pages)
        else ""
    )
    return (
        f'<nav class="capslib-nav"><span>{previous}</span><span>{link("index.html", "The series: contents")}</span>'
        f"<span>{following}</span></nav>"
    )


def _prepared(nb, page: Page, repo: Path, targets: dict[Path, str]):
    """A copy of the notebook ready for a page: maths as MathML, links to pages, live widgets as a note."""
    import copy

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # the widget state would pull the widget manager from a CDN
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(maths_to_mathml(cell.source), page.source, repo, targets, page.target)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                output["data"] = {"text/html": LIVE_WIDGET_NOTE}
    return nb


def _simple_page(title: str, body: str, nav: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f'<style>{CSS}</style></head><body>{nav}<main class="capslib-page">{body}</main></body></html>\n'
    )


def _markdown(text: str) -> str:
    from nbconvert.filters.markdown import markdown2html

    return markdown2html(text)


def _learning_goals(nb) -> str:
    """The bullets under the notebook's ``## What you will learn``, as Markdown (empty if none)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "## What you will learn" in cell.source:
            after = cell.source.split("## What you will learn", 1)[1]
            return "\n".join(line for line in after.splitlines() if line.lstrip().startswith(("- ", "* ")))
    return ""


def _index(pages: list[Page], notebooks: dict[str, object], repo: Path, targets: dict[Path, str]) -> str:
    rows = []
    series = [p for p in pages if not p.target.startswith("solutions/")]
    for page in series:
        nb = notebooks[page.target]
        goals = rewrite_links(maths_to_mathml(_learning_goals(nb)), page.source, repo, targets, "index.html")
        solution = next((p for p in pages if p.target == f"solutions/{page.target[:2]}_solutions.html"), None)
        answers = f'<a href="{solution.target}">solutions</a>' if solution else ""
        rows.append(
            f'<tr><td>{page.target[:2]}</td><td><a href="{page.target}">{html.escape(page.title)}</a></td>'
            f"<td>{_markdown(goals)}</td><td>{answers}</td></tr>"
        )
    body = (
        "<h1>CapsNet notebooks: Capsule Networks with dynamic routing, explained and measured</h1>"
        "<p>The committed notebooks of the series, with their outputs, as pages to read in a browser: nothing to "
        "install, nothing fetched from elsewhere. The sliders of a live notebook need a Python kernel; the "
        "precomputed sliders in these pages move without one. To run the notebooks yourself, see the project's "
        "README.</p><table><thead><tr><th>#</th><th>notebook</th><th>what you will learn</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _simple_page("CapsNet notebooks", body, _nav(pages, None, "index.html"))


def build_site(out: str | os.PathLike, notebooks: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Write the static site of the committed notebooks into ``out``; return the pages written.

    Nothing is executed (the notebooks' committed outputs are the content). The site is built in a
    temporary folder beside ``out`` and moved into place at the end, so a failed build leaves no
    half-written site.

    Args:
        out: the folder to write. It must not exist, be empty, or hold an earlier site (:data:`MARKER`).
        notebooks: the series' folder (default: ``notebooks/`` of this repository).
        progress: a progress bar over the pages.

    Raises:
        ValueError: ``out`` holds something other than a site, or ``notebooks`` holds no notebooks.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from tqdm.auto import tqdm

    repo = Path(__file__).resolve().parents[2]
    notebooks = Path(notebooks) if notebooks is not None else repo / "notebooks"
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ValueError(f"--out must be a new or empty folder or an earlier site (with {MARKER}), got {out}")
    pages = series_pages(notebooks)
    repo = notebooks.resolve().parent
    targets = {p.source.resolve(): p.target for p in pages}
    targets[(notebooks / "README.md").resolve()] = "index.html"
    documents = sorted((repo / "docs").glob("*.md")) if (repo / "docs").is_dir() else []
    targets.update({d.resolve(): f"docs/{d.stem}.html" for d in documents})

    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"capslib_site.html.j2": TEMPLATE})])
    exporter.template_file = "capslib_site.html.j2"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        loaded = {}
        for index, page in enumerate(tqdm(pages, desc="site pages", disable=not progress)):
            nb = nbformat.read(page.source, as_version=4)
            loaded[page.target] = nb
            resources = {"site_nav": _nav(pages, index, page.target), "site_css": CSS, "metadata": {"name": page.title}}
            body, _ = exporter.from_notebook_node(_prepared(nb, page, repo, targets), resources=resources)
            _write(staging / page.target, body)
        for document in documents:
            here = f"docs/{document.stem}.html"
            text = rewrite_links(document.read_text(), document, repo, targets, here)
            _write(staging / here, _simple_page(document.stem, _markdown(text), _nav(pages, None, here)))
            _copy_pictures(text, document.parent, (staging / here).parent)
        _write(staging / "index.html", _index(pages, loaded, repo, targets))
        _write(staging / MARKER, "Built by python -m capslib.site; python -m capslib.site replaces this folder.\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / page.target for page in pages]


_PICTURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)|<img[^>]*\ssrc=\"([^\"]+)\"")


def _copy_pictures(markdown: str, source_folder: Path, page_folder: Path) -> None:
    """Copy the pictures a Markdown page shows (relative paths, kept as they are) beside its page."""
    for match in _PICTURE.finditer(markdown):
        path = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:|^/", path) or not (source_folder / path).is_file():
            continue
        (page_folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_folder / path, page_folder / path)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
