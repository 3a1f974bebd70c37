"""Regenerate the committed outputs of the notebooks: run them in FULL mode, in place, in order.

Usage (from the repository root, with the project's environment active)::

    python scripts/run_notebooks.py                          # every notebook, solutions included
    python scripts/run_notebooks.py notebooks/03_*.ipynb     # only some

Each notebook runs top to bottom in a fresh ``python3`` kernel with its folder as the working
directory and ``CAPSNET_FAST`` removed from the environment (the notebooks' full version). Its
old outputs are cleared first; the new ones are written back only if every cell succeeded (the
file is replaced atomically), so a failed run never leaves a half-executed notebook behind.
One progress line per notebook gives its wall time and size. Progress bars are dropped from the
saved outputs (they would read "0%"; see ``drop_progress_bars``). Exits non-zero if any notebook failed.

On a 2-core CPU the whole series takes a few tens of minutes (see notebooks/README.md); run it
with ``nice`` if the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from capslib.utils import atomic_write

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


def clear_outputs(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


# tqdm's notebook bar as its text fallback, e.g. "epoch 1/3:   0%|          | 0/32 [00:00<?, ?it/s]"
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def is_progress_bar(output) -> bool:
    """Whether ``output`` is a tqdm notebook bar (a widget whose text fallback is a bar)."""
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return WIDGET_VIEW in data and bool(PROGRESS_BAR.search(text))


def drop_progress_bars(nb) -> int:
    """Remove saved progress bars; returns how many. Live, capslib's bars (``leave=False``) vanish
    when done and their widgets close, so a saved one would only show its first state, "0%"; the
    one-line summaries printed beside them carry the numbers."""
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [out for out in cell.outputs if not is_progress_bar(out)]
            dropped += len(cell.outputs) - len(kept)
            cell.outputs = kept
    return dropped


def run_one(path: Path, timeout: int) -> None:
    """Execute ``path`` in full mode and write it back in place; raises on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    clear_outputs(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # keeps the committed JSON free of per-cell timestamps
    )
    client.execute()
    drop_progress_bars(nb)
    atomic_write(path, lambda tmp: nbformat.write(nb, tmp))  # a failed run never leaves half a notebook


def series() -> list[Path]:
    """Every notebook of the series and every solutions notebook (``notebooks/solutions/``)."""
    solutions = NOTEBOOK_DIR / "solutions"
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) + sorted(solutions.glob("[0-9][0-9]_*.ipynb"))


def series_order(path: Path) -> tuple[str, bool, str]:
    """Notebook NN, then its solutions (``solutions/NN_solutions.ipynb``), then NN+1."""
    return (path.name[:2], path.parent.name == "solutions", path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: all, solutions included)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    args = parser.parse_args(argv)

    paths = [p.resolve() for p in args.paths] if args.paths else series()
    paths.sort(key=series_order)
    missing = [p for p in paths if not p.exists()]
    if missing or not paths:
        parser.error(f"no such notebook(s): {[str(p) for p in missing]}" if missing else "no notebooks found")

    os.environ.pop("CAPSNET_FAST", None)  # full mode
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    failed = []
    total_start = time.perf_counter()
    for k, path in enumerate(paths, start=1):
        label = f"[{k}/{len(paths)}] {path.name}"
        print(f"{label}: running", flush=True)
        start = time.perf_counter()
        try:
            run_one(path, args.timeout)
        except CellExecutionError as error:
            print(f"{label}: FAILED after {time.perf_counter() - start:.0f} s (left unchanged)\n{error}", flush=True)
            failed.append(path.name)
            continue
        size = path.stat().st_size / 1e6
        print(f"{label}: done in {time.perf_counter() - start:.0f} s, {size:.1f} MB", flush=True)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran in {time.perf_counter() - total_start:.0f} s")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
