#!/usr/bin/env bash
# Set up a fresh machine and run the main demo: an iterative scikit-learn workflow on a
# LocalCluster, printing per iteration what was computed, loaded and pruned and the time saved.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[ml]"
.venv/bin/python examples/iterate.py "$@"
