#!/usr/bin/env bash
# Everything one short GPU session checks, in order of importance, within about 9.5 minutes:
#   1. tests/test_gpu.py (mixed precision, the fused routing path on CUDA)
#   2. benchmarks/perf.py on CUDA (capslib fused vs plain; capslib fused vs reference)
#   3. benchmarks/throughput.py on CUDA, eager and --compile (the compiled model is one graph)
#   4. only with SWEEP=N set and the time left: that sweep of scripts/train_pretrained.sh
#      (exported; shipped only if its validation accuracy beats the shipped model's)
#   usage: OUT=dir COMMIT=sha [SWEEP=N] bash scripts/gpu_checks.sh [TOTAL_SECONDS]
set -u
out=${OUT:?output folder}; total=${1:-560}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -rA tests/test_gpu.py 2>&1 | tail -25 | tee "$out/test_gpu.txt"
timeout 200 python3 benchmarks/perf.py --device cuda --routing-implementation fused --no-profile --batch-sizes 32,100,256 \
  --iterations 1,10 2>&1 | tee "$out/perf_cuda_fused.txt"
for flag in "" --compile; do
  # shellcheck disable=SC2086
  timeout 120 python3 benchmarks/throughput.py --device cuda $flag 2>&1 | tail -3 | tee -a "$out/throughput_cuda.txt"
done
left=$(( total - SECONDS - 45 ))  # the export takes ~20 s
if [[ -n ${SWEEP:-} ]] && (( left > 120 )); then
  echo "sweep $SWEEP, deadline: $left s"
  SWEEP=$SWEEP bash scripts/train_pretrained.sh /tmp/runs "$out/export" "$left" 2>&1 | grep -v evaluating \
    | tee "$out/sweep.log"
  # Few files come back from the device: logs and histories travel as one archive.
  (cd /tmp/runs && tar czf "$out/sweep_runs.tgz" ./*.log ./*/history.json ./*/config.json)
fi
