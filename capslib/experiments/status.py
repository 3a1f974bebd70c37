"""Where a multi-run study stands, without training anything: ``--status`` of ``python -m
capslib.ablation`` and ``python -m capslib.routing_study``.

A study on a CPU takes hours and many sessions: runs finish, one is stopped mid-epoch and resumes
later, others have not started. This reads what the runs left on disk (each finished run's result,
each run's ``history.json`` and ``last.pt``) and says, run by run, which is which, and about how long
the rest will take at the pace measured so far.

    python -m capslib.ablation --variants capsnet-r1-recon capsnet-r3-recon --seeds 0 1 2 --epochs 5 \\
        --out results/table1/epochs_5 --checkpoints runs/table1 --status
"""

from __future__ import annotations

import json
from pathlib import Path

from ..training.checkpoints import load_last

__all__ = ["study_status", "status_lines"]


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def study_status(names: list[str], seeds: list[int], out: Path, checkpoints: Path | None, epochs: int) -> list[dict]:
    """One row per run (seed by seed, as the study trains them), read from disk.

    Args:
        names: the variants (or routings) of the study.
        seeds: its seeds.
        out: its results folder (``<out>/runs/<name>_seed<k>.json`` marks a finished run).
        checkpoints: its checkpoints folder (default ``<out>/checkpoints``).
        epochs: the study's budget, epochs per run.

    Returns:
        Rows with ``name``, ``seed``, ``state`` (``"done"``, ``"under way"`` or ``"not started"``),
        ``epochs_done`` (whole epochs, a float with the part of the epoch in progress),
        ``seconds_per_epoch`` (the run's wall time per whole epoch so far, validation included, or
        None), and for a finished run ``test_accuracy``, for one under way ``epoch`` (1-based, the
        epoch it resumes in), ``batches_done`` (of that epoch) and ``batches_per_epoch`` (None only for
        a ``last.pt`` written before checkpoints recorded it, stopped in its first epoch).
    """
    folder = Path(checkpoints) if checkpoints else Path(out) / "checkpoints"
    rows = []
    for seed in seeds:
        for name in names:
            run_dir = folder / f"{name}_seed{seed}"
            history = _history(run_dir)
            pace = (
                history[-1]["elapsed_seconds"] / len(history) if history and "elapsed_seconds" in history[-1] else None
            )
            row = {"name": name, "seed": seed, "epochs_done": float(len(history)), "seconds_per_epoch": pace}
            result = Path(out) / "runs" / f"{name}_seed{seed}.json"
            if result.exists():
                row.update(
                    state="done",
                    epochs_done=float(epochs),
                    test_accuracy=json.loads(result.read_text())["test_accuracy"],
                )
            elif (run_dir / "last.pt").exists():
                checkpoint = load_last(run_dir, mmap=True)  # the position only: no 100 MB read
                batches = checkpoint["batch_index"]
                per_epoch = checkpoint.get("batches_per_epoch")  # None in a last.pt written before it was saved
                if per_epoch is None and history and history[0].get("train_examples"):
                    per_epoch = -(-history[0]["train_examples"] // checkpoint["config"]["batch_size"])  # ceil
                row.update(
                    state="under way", epoch=checkpoint["epoch"] + 1, batches_done=batches, batches_per_epoch=per_epoch
                )
                if per_epoch:
                    row["epochs_done"] = len(history) + batches / per_epoch
            else:
                row.update(state="not started", epochs_done=0.0)
            rows.append(row)
    return rows


def status_lines(rows: list[dict], epochs: int) -> list[str]:
    """What :func:`study_status` found, one line per run and a last line with the time left."""
    lines = []
    for row in rows:
        where = f"{row['name']} seed {row['seed']}: "
        if row["state"] == "done":
            lines.append(where + f"done, test accuracy {100 * row['test_accuracy']:.2f}%")
        elif row["state"] == "under way":
            of = f" of its {row['batches_per_epoch']}" if row.get("batches_per_epoch") else ""
            lines.append(where + f"under way, epoch {row['epoch']} of {epochs}, {row['batches_done']}{of} batches done")
        else:
            lines.append(where + "not started")
    paces = [row["seconds_per_epoch"] for row in rows if row["seconds_per_epoch"]]
    done = sum(row["state"] == "done" for row in rows)
    summary = f"{done} of {len(rows)} runs done"
    if paces:
        pace = sum(paces) / len(paces)
        left = sum(epochs - row["epochs_done"] for row in rows if row["state"] != "done")
        summary += (
            f"; about {left * pace / 3600:.1f} h of training left ({left:.1f} epochs at {pace / 60:.1f} min an epoch, "
            "the mean pace of the runs so far, on their machines; testing adds a few minutes a run)"
        )
    lines.append(summary)
    return lines
