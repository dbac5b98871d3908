#!/usr/bin/env bash
# The GPU acceptance run on a lent GPU machine (see benchmarks/gpu_acceptance.py). Prepare here:
#   python benchmarks/gpu_wheels.py            # .whl/: the wheels that machine lacks (~43 MB)
#   .cache/harness: the embedded default, built here by any sweep (or by the script itself)
# then run this there with carry [".whl", ".cache/harness"]; everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/acceptance-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    HARNESS_CACHE=$PWD/.cache/harness
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/gpu_acceptance.py --out /tmp/acc "$@" 2>&1 | tee "$OUT/acceptance.log"
code=${PIPESTATUS[0]}
cp /tmp/acc/acceptance.json /tmp/acc/acceptance.md /tmp/acc/sweep.log /tmp/acc/throughput.log \
    "$OUT/" 2>/dev/null
tail -c 2000000 /tmp/acc/sweeps/gpu_acceptance/trials/*/trial.log > "$OUT/trials.log" 2>/dev/null
exit "$code"
