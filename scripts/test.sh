#!/usr/bin/env bash
# The test suite: installs what is missing, then runs ruff and pytest (end-to-end sweeps included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m ruff check harness tests benchmarks
python3 -m pytest -ra "$@"
