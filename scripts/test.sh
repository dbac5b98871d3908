#!/usr/bin/env bash
# The test suite: installs what is missing, then runs ruff and pytest (end-to-end sweeps included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# tests/test_slurm.py submits to a real single-node SLURM cluster. Under CI=true (or with
# HARNESS_SLURM=1) it is installed and started here (Debian packages; needs root); elsewhere the
# cluster tests skip where sinfo is missing. Under CI=true they fail if it does not answer.
if [ "${CI:-}" = true ] || [ "${HARNESS_SLURM:-}" = 1 ]; then
    bash slurm/cluster.sh start
fi
python3 -m ruff check harness tests benchmarks
# The layer contracts of docs/architecture.md ([tool.importlinter] in pyproject.toml).
lint-imports
python3 -m pytest -ra "$@"
