"""MultiMNIST measured: does routing separate two overlapping digits, and do more iterations help?

    python -m capslib.multimnist_study --out results/multimnist_iterations.json
    python -m capslib.multimnist_study --out /tmp/quick.json --test-limit 200     # a quick look

routes the fixed 10,000 test pairs (:func:`capslib.multimnist.multimnist_test_set`) of the shipped
MultiMNIST CapsNet with each number of routing iterations and writes, per iteration count, the
paper's metric (both digits right: the two longest capsules are exactly the two labels), the
at-least-one-right rate (context only) and how strongly routing separates the two digits
(:func:`separation_of_pairs`), with the command, the hardware and the seconds, atomically.
:func:`load_iteration_study` reads the file back for notebook 10.

How the iteration counts are compared: the prediction vectors ``u_hat`` of each batch are computed
once and routed once with the largest count, keeping every iteration. The first ``r`` iterations of
an ``R``-iteration run are exactly an ``r``-iteration run (Procedure 1 only skips the last logit
update, which nothing reads), so iteration ``r`` of the trace is what ``model.routing_iterations =
r`` would give (tested against the model's own forward).

Tensor helpers for notebook 10's figures live here too (:func:`pair_coupling`,
:func:`predicted_pairs`, :func:`reconstruct_predicted`); :mod:`capslib.plots_multimnist` draws them.

Shapes use the package vocabulary; ``T`` primary-capsule types on a ``H' x W'`` grid (32 on 10x10
for 36x36 pairs: ``N_in = 3200``), ``A``/``B`` the first and second digit of a pair.
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
import torch.nn.functional as F

from ..data.multimnist import Pairs, at_least_one_right, both_right
from ..routing import check_iterations, dynamic_routing
from ..utils import atomic_write, eval_mode, hardware_name

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_OUT",
    "DEFAULT_ITERATIONS",
    "OWN_SHARE",
    "FIELD",
    "STRIDE",
    "REQUIRED_KEYS",
    "ROW_KEYS",
    "subset",
    "primary_and_votes",
    "field_weights",
    "field_ownership",
    "coupling_difference",
    "pair_coupling",
    "predicted_pairs",
    "reconstruct_predicted",
    "separation_of_pairs",
    "iteration_study",
    "load_iteration_study",
    "main",
]

DEFAULT_NAME = "capsnet_multimnist"
"""The shipped MultiMNIST CapsNet (``data/pretrained/capsnet_multimnist.pt``)."""
DEFAULT_OUT = Path("results") / "multimnist_iterations.json"
DEFAULT_ITERATIONS = (1, 2, 3, 4, 5)
OWN_SHARE = 0.75
"""A primary-grid position belongs to a digit when at least this share of the ink in its receptive
field is that digit's (the rest, where the two digits mix, is left out of the separation)."""
FIELD, STRIDE = 17, 2  # a primary capsule sees 17x17 pixels, its neighbours' fields start 2 px on

REQUIRED_KEYS = ("name", "test_pairs", "iterations", "reference", "results", "command", "hardware", "seconds")
ROW_KEYS = ("iterations", "both_right", "at_least_one_right", "errors", "gained", "lost", "separation")


def subset(pairs, index):
    """The pairs at ``index`` (a slice, or a list or tensor of positions) of a :class:`capslib.multimnist.Pairs`."""
    return Pairs(pairs.images[index], pairs.first[index], pairs.second[index], pairs.labels[index], pairs.shifts[index])


def primary_and_votes(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The primary capsules and the prediction vectors a CapsNet routes, without routing them.

    Args:
        model: a :class:`capslib.CapsNet` (run in eval mode, without gradients; restored after).
        images: ``(B, C, H, W)`` in [0, 1].

    Returns:
        ``u`` ``(B, N_in, D_in)`` (squashed primary capsules) and ``u_hat`` ``(B, N_in, N_out, D_out)``,
        on the model's device.
    """
    model.check_images(images)
    device = next(model.parameters()).device
    with eval_mode(model):
        x = images.to(device=device, dtype=model.conv1.weight.dtype)
        u = model.primary_caps(torch.relu(model.conv1(x)))  # (B, N_in, D_in)
        return u, model.digit_caps.prediction_vectors(u)  # (B, N_in, D_in), (B, N_in, N_out, D_out)


def field_weights(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(1, 1, 17, 17)`` how many paths lead from each pixel of a primary capsule's field to it,
    normalised to sum 1: Conv1 (9x9) then the primary convolution (9x9) reach a pixel ``p`` pixels
    into the field in ``9 - |p - 8|`` ways per axis, so the field is a pyramid peaked at its centre."""
    ramp = 9.0 - (torch.arange(FIELD, dtype=dtype) - FIELD // 2).abs()  # (17,): 1, 2, ..., 9, ..., 1
    pyramid = torch.outer(ramp, ramp)  # (17, 17)
    return (pyramid / pyramid.sum()).view(1, 1, FIELD, FIELD)


def field_ownership(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which digit each primary-grid position sees: the first digit's share of the ink in its field.

    A primary capsule at ``(row, col)`` sees the 17x17 pixels from ``(2 row, 2 col)`` (Conv1 9x9
    stride 1, then 9x9 stride 2), the middle ones through more paths than the edges
    (:func:`field_weights`); each digit's ink is weighted so, a stride-2 convolution.

    Args:
        first, second: ``(B, 1, H, W)`` the two shifted digits of each pair (``Pairs.first``/``.second``).
        grid: ``(H', W')`` the model's ``primary_grid``.

    Returns:
        ``(B, H', W')`` in [0, 1]: 1 where only the first digit has ink in the field, 0 where only
        the second has, 0.5 where neither has any.
    """
    if first.shape != second.shape or first.dim() != 4 or first.shape[1] != 1:
        raise ValueError(
            f"first and second must both be (B, 1, H, W), got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    weights = field_weights().to(first.device)  # (1, 1, 17, 17)
    ink_a = F.conv2d(first.float(), weights, stride=STRIDE)[:, 0]  # (B, H', W')
    ink_b = F.conv2d(second.float(), weights, stride=STRIDE)[:, 0]  # (B, H', W')
    if tuple(ink_a.shape[1:]) != tuple(grid):
        raise ValueError(
            f"the images give a {tuple(ink_a.shape[1:])} grid of fields, expected the model's {tuple(grid)}"
        )
    total = ink_a + ink_b  # (B, H', W')
    return torch.where(total > 1e-6, ink_a / total.clamp_min(1e-6), torch.full_like(total, 0.5))


def coupling_difference(
    c: torch.Tensor, primary_lengths: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Per grid position, how much more the capsules there send to digit A's class than to B's.

    For each position the ``T`` capsule types are averaged, each weighted by its primary capsule's
    length ``|u_i|`` (how present the part is; the same weight for both classes, unlike a vote's
    length, so the difference is of like with like): ``sum_t |u_i| (c_iA - c_iB) / sum_t |u_i|``.

    Args:
        c: ``(B, N_in, N_out)`` coupling coefficients of one iteration.
        primary_lengths: ``(B, N_in)`` ``|u_i|``.
        labels: ``(B, 2)`` the classes of digit A and digit B.
        grid: ``(H', W')``.

    Returns:
        ``(B, H', W')`` in [-1, 1]: above 0 the position routes to A, below 0 to B, 0 when it
        splits evenly (every position at iteration 1, where ``c = 1/N_out``).
    """
    batch, num_in, _ = c.shape
    if primary_lengths.shape != (batch, num_in) or labels.shape != (batch, 2):
        raise ValueError(
            f"expected primary_lengths (B, N_in) = {(batch, num_in)} and labels (B, 2), "
            f"got {tuple(primary_lengths.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(c.device)
    to_a = c.gather(2, labels[:, None, :1].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
    to_b = c.gather(2, labels[:, None, 1:].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
    height, width = grid
    weights = primary_lengths.reshape(batch, -1, height, width)  # (B, T, H', W'): n = t H'W' + row W' + col
    difference = (to_a - to_b).reshape(batch, -1, height, width)  # (B, T, H', W')
    return (weights * difference).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)  # (B, H', W')


def pair_coupling(model: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor, iterations: int = 3) -> dict:
    """Route one pair and keep, per iteration, where its primary capsules send their output.

    Args:
        model: a :class:`capslib.CapsNet` for 36x36 pairs.
        image: ``(1, H, W)`` or ``(1, 1, H, W)`` the pair.
        labels: ``(2,)`` the classes of digit A and digit B (the true labels, or any two classes).
        iterations: ``R``.

    Returns:
        A dict of CPU tensors: ``difference`` ``(R, H', W')`` (:func:`coupling_difference` of every
        iteration); ``lengths`` ``(R, N_out)`` ``|v_j|`` after each iteration; ``presence``
        ``(H', W')`` the mean primary-capsule length at each position.
    """
    iterations = check_iterations(iterations)
    image = image.reshape(1, *image.shape[-3:])  # (1, C, H, W)
    labels = torch.as_tensor(labels).reshape(1, 2)  # (1, 2)
    u, u_hat = primary_and_votes(model, image)  # (1, N_in, D_in), (1, N_in, N_out, D_out)
    with torch.no_grad():
        trace = dynamic_routing(u_hat, iterations, return_trace=True).trace
    primary = torch.linalg.vector_norm(u, dim=-1)  # (1, N_in)
    grid = tuple(model.primary_grid)
    difference = torch.cat([coupling_difference(step.c, primary, labels, grid) for step in trace])  # (R, H', W')
    lengths = torch.stack([torch.linalg.vector_norm(step.v[0], dim=-1) for step in trace])  # (R, N_out)
    presence = primary.reshape(-1, *grid).mean(dim=0)  # (H', W')
    return {"difference": difference.cpu(), "lengths": lengths.cpu(), "presence": presence.cpu()}


def predicted_pairs(lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The two longest capsules of each pair, ordered to line up with the labels where they can.

    A predicted class equal to label A goes first, one equal to label B second; a wrong one takes
    the place left over (so a pair read as ``(7, 3)`` with labels ``(2, 7)`` becomes ``(3, 7)``).

    Args:
        lengths: ``(B, N_out)`` capsule lengths; labels: ``(B, 2)``.

    Returns:
        ``(B, 2)`` long.
    """
    if lengths.dim() != 2 or labels.shape != (lengths.shape[0], 2):
        raise ValueError(
            f"expected lengths (B, N_out) and labels (B, 2), got {tuple(lengths.shape)} and {tuple(labels.shape)}"
        )
    top = lengths.topk(2, dim=1).indices.cpu()  # (B, 2): longest first
    labels = labels.cpu()
    swap = (top[:, 0] == labels[:, 1]) | (top[:, 1] == labels[:, 0])  # (B,) a match sits in the wrong slot
    return torch.where(swap[:, None], top.flip(dims=(1,)), top)  # (B, 2)


def reconstruct_predicted(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """What the paper's Figure 5 draws: each pair reconstructed from its two longest capsules.

    Args:
        model: a :class:`capslib.CapsNet` with a decoder; images: ``(B, 1, H, W)``; labels: ``(B, 2)``.

    Returns:
        A dict of CPU tensors: ``lengths`` ``(B, N_out)``; ``predicted`` ``(B, 2)`` (:func:`predicted_pairs`);
        ``reconstructions`` ``(B, 2, 1, H, W)``, the decoder masked by each predicted class in turn.
    """
    if model.decoder is None:
        raise ValueError("reconstruct_predicted needs a CapsNet with a decoder (reconstruction=True)")
    device = next(model.parameters()).device
    with eval_mode(model):
        out = model(images.to(device))  # lengths (B, N_out), poses (B, N_out, D_out)
        predicted = predicted_pairs(out.lengths, labels)  # (B, 2)
        drawn = [model.decoder(out.poses, predicted[:, k].to(device)) for k in range(2)]  # 2 x (B, C, H, W)
    reconstructions = torch.stack(drawn, dim=1)  # (B, 2, C, H, W)
    return {"lengths": out.lengths.cpu(), "predicted": predicted, "reconstructions": reconstructions.cpu()}


def separation_of_pairs(
    trace_c: Sequence[torch.Tensor],
    primary_lengths: torch.Tensor,
    labels: torch.Tensor,
    ownership: torch.Tensor,
    own_share: float = OWN_SHARE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How strongly routing sends each digit's capsules to that digit, per iteration, summed over pairs.

    Only primary capsules at positions that belong to one digit (:func:`field_ownership` at least
    ``own_share`` for A, at most ``1 - own_share`` for B) count. Per pair and iteration: ``own``
    is their mean coupling to their own digit's class, ``other`` to the other digit's class, each
    mean weighted by ``|u_i|``; the separation is ``own - other`` (0 at iteration 1, where every
    ``c = 1/N_out``; 1 if every capsule sent everything to its own digit).

    Args:
        trace_c: ``R`` tensors ``(B, N_in, N_out)``, the coupling of each iteration.
        primary_lengths: ``(B, N_in)``; labels: ``(B, 2)``; ownership: ``(B, H', W')``.

    Returns:
        ``sums`` ``(R, 2)`` float64 on the CPU: own and other summed over the measured pairs, and
        ``measured`` ``(B,)`` bool: the pairs with at least one owned position.
    """
    if not 0.5 < own_share <= 1.0:
        raise ValueError(f"own_share must lie in (0.5, 1], got {own_share}")
    batch, num_in = primary_lengths.shape
    grid_cells = ownership.shape[1] * ownership.shape[2]
    owner_a = (ownership >= own_share).reshape(batch, 1, grid_cells)  # (B, 1, H'W'): broadcast over the types
    owner_b = (ownership <= 1 - own_share).reshape(batch, 1, grid_cells)  # (B, 1, H'W')
    types = num_in // grid_cells
    weight_a = (primary_lengths.reshape(batch, types, grid_cells) * owner_a).reshape(batch, num_in)  # (B, N_in)
    weight_b = (primary_lengths.reshape(batch, types, grid_cells) * owner_b).reshape(batch, num_in)  # (B, N_in)
    total = weight_a.sum(dim=1) + weight_b.sum(dim=1)  # (B,)
    measured = total > 0  # (B,)
    labels = labels.to(primary_lengths.device)
    rows = []
    for c in trace_c:
        to_a = c.gather(2, labels[:, None, :1].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
        to_b = c.gather(2, labels[:, None, 1:].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
        own = ((weight_a * to_a).sum(dim=1) + (weight_b * to_b).sum(dim=1)) / total.clamp_min(1e-12)  # (B,)
        other = ((weight_a * to_b).sum(dim=1) + (weight_b * to_a).sum(dim=1)) / total.clamp_min(1e-12)  # (B,)
        rows.append(torch.stack([own[measured].sum(), other[measured].sum()]))
    return torch.stack(rows).double().cpu(), measured.cpu()


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
        pairs: a :class:`capslib.multimnist.Pairs` (e.g. the fixed test set, or its first pairs).
        iterations: the counts to compare (each >= 1).
        batch_size: pairs per forward pass (memory: about ``batch_size`` x 2 MB of ``u_hat``).
        own_share: see :func:`separation_of_pairs`.
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
    starts = range(0, total, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="routing pairs", unit="batch", leave=False)
    for start in starts:
        chunk = slice(start, start + batch_size)
        u, u_hat = primary_and_votes(model, pairs.images[chunk])  # (b, N_in, D_in), (b, N_in, N_out, D_out)
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
        "test_set": f"capslib.multimnist.multimnist_test_set (seed {TEST_SEED}), the first {study['test_pairs']} pairs",
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
    out = atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
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
