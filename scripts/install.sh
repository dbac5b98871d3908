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
# Headless Chromium for the browser test (tests/test_browser.py): Debian's package, installed
# only as root where apt-get exists and no chromium is present. A failure is a warning here;
# the browser test then skips locally and fails under CI=true.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        >/dev/null; } \
        || echo "install.sh: warning: could not install chromium (browser test needs it)" >&2
fi
