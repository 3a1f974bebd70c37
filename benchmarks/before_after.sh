#!/usr/bin/env bash
# perf.py's headline (capslib vs plain, batch 100, R=3, interleaved, medians of 7) at two commits,
# alternating, in one run: did a change move capslib's speed relative to the plain implementation?
#   usage: bash benchmarks/before_after.sh BEFORE_COMMIT [AFTER_COMMIT=HEAD] [ROUNDS=2]
# Each commit is checked out into a temporary worktree and imported from there (PYTHONPATH), with
# this checkout's virtual environment. Compare the ratios: absolute images/s drift with the machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
before=$1; after=${2:-HEAD}; rounds=${3:-2}
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/before" 2>/dev/null; git -C "$repo" worktree remove --force "$work/after" 2>/dev/null; rm -rf "$work"' EXIT
git -C "$repo" worktree add --detach "$work/before" "$before" >/dev/null
git -C "$repo" worktree add --detach "$work/after" "$after" >/dev/null
for round in $(seq "$rounds"); do
  for tree in before after; do
    echo "# round $round, $tree: $(git -C "$work/$tree" log --oneline -1)"
    (cd "$work/$tree" && PYTHONPATH="$work/$tree:$work/$tree/benchmarks" "$python" -c '
import torch, perf, capslib
perf.headline(torch.device("cpu"), 100, 7, 0.0, perf.flops_per_image(capslib.CapsNet()))')
  done
done
