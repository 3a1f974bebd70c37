"""MultiMNIST measured: does routing separate two overlapping digits, and do more iterations help?

    python -m capslib.multimnist_study --out results/multimnist_iterations.json
    python -m capslib.multimnist_study --out /tmp/quick.json --test-limit 200     # a quick look

routes the fixed 10,000 test pairs (:func:`capslib.data.multimnist.multimnist_test_set`) of the
shipped MultiMNIST CapsNet with each number of routing iterations and writes, per iteration count,
the paper's metric (both digits right: the two longest capsules are exactly the two labels), the
at-least-one-right rate (context only) and how strongly routing separates the two digits
(:func:`capslib.analysis.separation.separation_of_pairs`), with the command, the hardware and the
seconds, atomically.
:func:`load_iteration_study` reads the file back for notebook 10.

How the iteration counts are compared: the prediction vectors ``u_hat`` of each batch are computed
once and routed once with the largest count, keeping every iteration. The first ``r`` iterations of
an ``R``-iteration run are exactly an ``r``-iteration run (Procedure 1 only skips the last logit
update, which nothing reads), so iteration ``r`` of the trace is what ``model.routing_iterations =
r`` would give (tested against the model's own forward).

The separation measures themselves, and the tensor helpers for notebook 10's figures, are in
:mod:`capslib.analysis.separation`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..analysis.routing_stats import model_prediction_vectors
from ..analysis.separation import OWN_SHARE, field_ownership, separation_of_pairs
from ..data.multimnist import Pairs, at_least_one_right, both_right
from ..routing import check_iterations, dynamic_routing
from ..utils import hardware_name, write_json_atomic

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_OUT",
    "DEFAULT_ITERATIONS",
    "REQUIRED_KEYS",
    "ROW_KEYS",
    "subset",
    "iteration_study",
    "load_iteration_study",
    "main",
]

DEFAULT_NAME = "capsnet_multimnist"
"""The shipped MultiMNIST CapsNet (``data/pretrained/capsnet_multimnist.pt``)."""
DEFAULT_OUT = Path("results") / "multimnist_iterations.json"
DEFAULT_ITERATIONS = (1, 2, 3, 4, 5)

REQUIRED_KEYS = ("name", "test_pairs", "iterations", "reference", "results", "command", "hardware", "seconds")
ROW_KEYS = ("iterations", "both_right", "at_least_one_right", "errors", "gained", "lost", "separation")


def subset(pairs, index):
    """The pairs at ``index`` (a slice, or a list or tensor of positions) of :class:`capslib.data.multimnist.Pairs`."""
    return Pairs(pairs.images[index], pairs.first[index], pairs.second[index], pairs.labels[index], pairs.shifts[index])


def iteration_study(
    model: torch.nn.Module,
    pairs,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    batch_size: int = 100,
    own_share: float = OWN_SHARE,
    progress: bool = True,
    reference: int | None = None,
) -> dict:
    """Score ``pairs`` with every iteration count in ``iterations``, routing each batch once.

    Args:
        model: a :class:`capslib.CapsNet` for 36x36 pairs.
        pairs: a :class:`capslib.data.multimnist.Pairs` (e.g. the fixed test set, or its first pairs).
        iterations: the counts to compare (each >= 1).
        batch_size: pairs per forward pass (memory: about ``batch_size`` x 2 MB of ``u_hat``).
        own_share: see :func:`capslib.analysis.separation.separation_of_pairs`.
        reference: the count the others are compared with pair by pair (default: the model's own
            ``routing_iterations`` if it is among ``iterations``, else the smallest count).

    Returns:
        ``{"test_pairs": P, "separation_pairs": P', "own_share": ..., "reference": R_ref,
        "results": [row, ...]}`` with one row per count: ``iterations``, ``both_right``,
        ``at_least_one_right`` (fractions), ``errors`` (pairs not both right), ``gained`` and
        ``lost`` (pairs both right with this count but not with ``R_ref``, and the reverse: the
        same pairs are scored every time, so these say how many answers the count changes),
        ``own_coupling``, ``other_coupling`` and ``separation`` (means over the ``P'`` pairs with
        owned positions).
    """
    counts = sorted({check_iterations(r) for r in iterations})
    if not counts:
        raise ValueError("iterations must name at least one iteration count, got an empty sequence")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if reference is None:
        reference = model.routing_iterations if model.routing_iterations in counts else counts[0]
    if reference not in counts:
        raise ValueError(f"reference must be one of the iteration counts {counts}, got {reference!r}")
    total = len(pairs)
    if total == 0:
        raise ValueError("iteration_study got no pairs: an accuracy over nothing is undefined")
    grid = tuple(model.primary_grid)
    lengths = {r: [] for r in counts}
    sums, measured = torch.zeros(counts[-1], 2, dtype=torch.float64), 0
    # Not capslib.evaluation.predict: each batch's separation also needs that batch's two digits and
    # labels, which no model output carries; and one routing with the largest count serves every count.
    starts = range(0, total, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="routing pairs", unit="batch", leave=False)
    for start in starts:
        chunk = slice(start, start + batch_size)
        # the primary capsules u (b, N_in, D_in) and their votes u_hat (b, N_in, N_out, D_out)
        u, u_hat = model_prediction_vectors(model, pairs.images[chunk], return_primary=True)
        with torch.no_grad():
            trace = dynamic_routing(u_hat, counts[-1], return_trace=True).trace  # iteration r of R == an r-run
        for r in counts:
            lengths[r].append(torch.linalg.vector_norm(trace[r - 1].v, dim=-1).float().cpu())  # (b, N_out)
        ownership = field_ownership(pairs.first[chunk], pairs.second[chunk], grid)  # (b, H', W')
        part, kept = separation_of_pairs(
            [step.c for step in trace],
            torch.linalg.vector_norm(u, dim=-1),
            pairs.labels[chunk],
            ownership.to(u.device),
            own_share,
        )
        sums += part
        measured += int(kept.sum())
    labels = pairs.labels  # (P, 2)
    right = {r: both_right(torch.cat(lengths[r]), labels) for r in counts}  # (P,) each
    rows = []
    for r in counts:
        scores = torch.cat(lengths[r])  # (P, N_out)
        own, other = (float(x) / max(measured, 1) for x in sums[r - 1])
        rows.append(
            {
                "iterations": r,
                "both_right": float(right[r].double().mean()),
                "at_least_one_right": float(at_least_one_right(scores, labels).double().mean()),
                "errors": int((~right[r]).sum()),
                "gained": int((right[r] & ~right[reference]).sum()),
                "lost": int((~right[r] & right[reference]).sum()),
                "own_coupling": own,
                "other_coupling": other,
                "separation": own - other,
            }
        )
    return {
        "test_pairs": total,
        "separation_pairs": measured,
        "own_share": own_share,
        "reference": reference,
        "results": rows,
    }


def load_iteration_study(path: str | Path = DEFAULT_OUT) -> dict:
    """Read what ``python -m capslib.multimnist_study`` wrote.

    Raises:
        FileNotFoundError: if ``path`` does not exist, naming the command that makes it.
        ValueError: if it is not JSON, or lacks any of :data:`REQUIRED_KEYS` (or a row lacks any of
            :data:`ROW_KEYS`), naming the missing keys.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no iteration study at {path}; make it with: python -m capslib.multimnist_study --out {path}"
        )
    try:
        study = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a JSON file written by capslib.multimnist_study: {err}") from None
    if not isinstance(study, dict):
        raise ValueError(f"{path} must hold a JSON object with keys {list(REQUIRED_KEYS)}, got {type(study).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in study]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing} (expected {list(REQUIRED_KEYS)}); re-run the command")
    if not isinstance(study["results"], list) or not study["results"]:
        raise ValueError(f"{path}: 'results' must be a non-empty list of rows, got {study['results']!r}")
    for k, row in enumerate(study["results"]):
        absent = [key for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
        if absent:
            raise ValueError(f"{path}: row {k} of 'results' lacks the keys {absent} (expected {list(ROW_KEYS)})")
    return study


def main(argv: list[str] | None = None) -> dict:
    from ..data.datasets import load_dataset, to_tensors
    from ..data.multimnist import TEST_SEED, multimnist_test_set
    from ..pretrained import load_pretrained
    from ..utils import get_device

    p = argparse.ArgumentParser(
        prog="python -m capslib.multimnist_study",
        description="MultiMNIST test accuracy (both digits right) and routing's separation of the two digits, "
        "per number of routing iterations, on the fixed 10,000 test pairs.",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"the JSON file to write (default {DEFAULT_OUT})")
    p.add_argument("--name", default=DEFAULT_NAME, help="the shipped model to load (data/pretrained/<name>.pt)")
    p.add_argument("--iterations", type=int, nargs="+", default=list(DEFAULT_ITERATIONS), help="counts to compare")
    p.add_argument("--test-limit", type=int, default=None, metavar="N", help="only the first N test pairs")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.test_limit is not None and args.test_limit < 1:
        p.error(f"--test-limit must be >= 1, got {args.test_limit}")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    start = time.monotonic()
    model = load_pretrained(device, name=args.name)
    pairs = multimnist_test_set(*to_tensors(load_dataset("mnist", train=False)))
    if args.test_limit is not None:
        pairs = subset(pairs, slice(0, args.test_limit))  # the first N pairs
    study = iteration_study(model, pairs, args.iterations, args.batch_size, progress=not args.no_progress)
    record = {
        "name": args.name,
        "trained_iterations": int(model.config["routing_iterations"]),
        "test_set": f"capslib.data.multimnist.multimnist_test_set (seed {TEST_SEED}), "
        f"the first {study['test_pairs']} pairs",
        **study,
        "iterations": sorted(set(args.iterations)),
        "separation_definition": "per pair: mean coupling of the primary capsules whose 17x17 field holds at least "
        f"{OWN_SHARE:.0%} of one digit's ink to that digit's class (own) and to the other digit's class (other), "
        "weighted by |u_i|; separation = own - other, averaged over the pairs with such capsules",
        "command": shlex.join(["python", "-m", "capslib.multimnist_study", *(sys.argv[1:] if argv is None else argv)]),
        "hardware": hardware_name(device),
        "torch_version": str(torch.__version__),
        "seconds": round(time.monotonic() - start, 1),
    }
    out = write_json_atomic(record, args.out)
    for row in study["results"]:
        print(
            f"{row['iterations']:>2} iterations: both right {100 * row['both_right']:.2f}% "
            f"(error {100 * (1 - row['both_right']):.2f}%), at least one {100 * row['at_least_one_right']:.2f}%, "
            f"separation {row['separation']:+.4f}; vs {study['reference']} iterations: "
            f"{row['gained']} pairs gained, {row['lost']} lost"
        )
    print(f"{study['test_pairs']} pairs in {record['seconds']}s on {record['hardware']}; written to {out}")
    return record


if __name__ == "__main__":
    main()
