#!/usr/bin/env bash
# Everything one short GPU session checks, in order of importance, within about 9.5 minutes:
#   1. tests/test_gpu.py (mixed precision, the fused routing path on CUDA)
#   2. benchmarks/perf.py on CUDA (capslib fused vs plain; capslib fused vs reference)
#   3. with the time left, SWEEP=4 of scripts/train_pretrained.sh (exported; shipped only if its
#      validation accuracy beats the shipped model's)
#   usage: OUT=dir COMMIT=sha bash scripts/gpu_checks.sh [TOTAL_SECONDS]
set -u
out=${OUT:?output folder}; total=${1:-560}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -rA tests/test_gpu.py 2>&1 | tail -25 | tee "$out/test_gpu.txt"
timeout 200 python3 benchmarks/perf.py --device cuda --fused on --no-profile --batch-sizes 32,100,256 \
  --iterations 1,10 2>&1 | tee "$out/perf_cuda_fused.txt"
left=$(( total - SECONDS - 45 ))  # the export takes ~20 s
echo "sweep deadline: $left s"
if (( left > 120 )); then
  SWEEP=4 bash scripts/train_pretrained.sh /tmp/runs "$out/export" "$left" 2>&1 | tee "$out/sweep.log"
  mkdir -p "$out/sweep4"
  for d in /tmp/runs/*/; do
    n=$(basename "$d"); cp "/tmp/runs/$n.log" "$out/sweep4/" 2>/dev/null
    cp "$d/history.json" "$out/sweep4/${n}_history.json" 2>/dev/null
  done
fi
