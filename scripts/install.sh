#!/usr/bin/env bash
# Install harness and its dependencies into the current Python (3.11 or 3.12).
# torch is installed first, pinned to the CPU build this machine class carries locally;
# on a GPU cluster install your CUDA torch first and this step keeps it (the range allows it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"
