#!/usr/bin/env bash
# How the shipped baseline CNN (data/pretrained/cnn_baseline_mnist.pt + .json) is trained and exported.
# The paper's own baseline (--model cnn-baseline, 35.4M parameters) would be 71 MB in fp16 and about
# ten times CapsNet's compute per image, so the shipped baseline is capslib.baselines' "cnn-small"
# (1.1M parameters) trained with CapsNet's recipe (Adam 1e-3, x0.96 per epoch, batch 128, shifts of
# up to 2 px). Selection rule, fixed before training: one run, seed 0; its epoch with the best
# validation accuracy (last 5,000 training images; ties: the earlier epoch) is exported; the test set
# is used once, for the card. Resumable: run it again with RESUME=--resume after a stop.
#   usage: bash scripts/train_baseline.sh [OUT] [EXPORT_DIR]
set -euo pipefail
out=${1:-runs/cnn_small_mnist}; export_dir=${2:-data/pretrained}
python3 -m capslib.train --model cnn-small --epochs 15 --batch-size 128 --lr 1e-3 --lr-decay 0.96 \
  --max-shift 2 --seed 0 --out "$out" --no-progress ${RESUME:-}
python3 -m capslib.evaluate "$out/best.pt" --export "$export_dir" --name cnn_baseline_mnist
