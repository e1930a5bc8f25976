#!/usr/bin/env bash
# The GPU measurements of ae_ot.ot (issue 3's H100 item) in one command, for a lent GPU machine
# that has torch and Lightning preinstalled and no internet (the device tool's machines):
#
#   OUT=outputs/gpu bash scripts/gpu_check.sh      # ~8 minutes on an H100 (estimated, not yet run)
#
# It records the GPU's name, runs the CUDA tests, the kernel throughput against a bare torch.mm
# (d = 32 and 64, N = 60,000; float32 and TF32) and a solve of N = 60,000 targets in d = 64 with
# held-out errors at fixed solver times. Results: $OUT/{gpu.txt,pytest_cuda.txt,bench_sdot_gpu.jsonl}.
# Copy the figures into docs/benchmarks.md with the GPU's name.
#
# Environment (defaults in brackets): PYTHON [python3], DEVICE [cuda], N [60000], D [64],
# BUDGET solver seconds [240], EVAL_SAMPLES per evaluation [268435456: MC floor ~1.2% at N = 60,000],
# EVAL_TIMES [30,60,120,240]. A CPU dry run of the wiring:
#   DEVICE=cpu N=2000 D=8 BUDGET=4 EVAL_TIMES=2,4 EVAL_SAMPLES=262144 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
N=${N:-60000}
D=${D:-64}
BUDGET=${BUDGET:-240}
EVAL_SAMPLES=${EVAL_SAMPLES:-268435456}
EVAL_TIMES=${EVAL_TIMES:-30,60,120,240}
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RES="$OUT/bench_sdot_gpu.jsonl"

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda:',
            torch.cuda.is_available() and torch.cuda.get_device_name())"
} | tee "$OUT/gpu.txt"

if [ "$DEVICE" = cuda ] && ! $PY -c "import pykeops" 2>/dev/null; then
    # The "gpu" extra (pykeops: the "keops" score backend). Offline machines keep going without it:
    # the KeOps tests then skip and backend="auto" keeps the torch kernel for d <= 8.
    $PY -m pip install -q --disable-pip-version-check -e ".[gpu]" \
        || echo "[gpu_check] the gpu extra (pykeops) did not install: KeOps is not measured"
fi

if [ "$DEVICE" = cuda ]; then
    # The CUDA-only tests (they skip on CPU-only machines such as CI).
    $PY -m pytest -q -p no:cacheprovider -k "cuda or keops" \
        tests/test_ot_semidiscrete.py tests/test_ot_kernels.py 2>&1 | tee "$OUT/pytest_cuda.txt" || true
fi

precisions="highest"
[ "$DEVICE" = cuda ] && precisions="highest tf32"
for prec in $precisions; do
    for d in 32 "$D"; do
        $PY scripts/bench_sdot.py kernel --device "$DEVICE" --n "$N" --d "$d" --m 65536 --repeats 7 \
            --precision "$prec" --out "$RES"
    done
done
$PY scripts/bench_sdot.py solve --device "$DEVICE" --problem gmm --n "$N" --d "$D" --methods default \
    --budget "$BUDGET" --eval-times "$EVAL_TIMES" --eval-samples "$EVAL_SAMPLES" --out "$RES"
echo "[gpu_check] results in $RES"
