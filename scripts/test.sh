#!/usr/bin/env bash
# The test suite: installs what is missing, then runs ruff and pytest (end-to-end sweeps included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m ruff check harness tests benchmarks
# tests/test_slurm.py submits to a running SLURM cluster (bash slurm/cluster.sh start, which
# .ci/run does first): its cluster tests skip where sinfo is missing, fail under CI=true
# if the cluster does not answer.
python3 -m pytest -ra "$@"
