"""``python -m capslib.site --out DIR``: the series as a static site (:func:`capslib.publish.site.build_site`).

    python -m capslib.site --out site          # then open site/index.html in a browser

Nothing is executed: the pages are the committed notebooks with their outputs. Copy the folder to
any static host (GitHub Pages: ``.github/workflows/pages.yml``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .site import build_site

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m capslib.site",
        description="Build the notebook series as a static site (no kernel, no network): index.html and one "
        "page per notebook, precomputed sliders working.",
    )
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier site: it is replaced)")
    p.add_argument("--notebooks", default=None, help="the series' folder (default: this repository's notebooks/)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        pages = build_site(args.out, notebooks=args.notebooks, progress=args.progress)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(
        f"{len(pages)} pages, {size / 1e6:.1f} MB, in {time.perf_counter() - start:.1f} s: "
        f"open {Path(args.out) / 'index.html'} in a browser"
    )
    return pages
