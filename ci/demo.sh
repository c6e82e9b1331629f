#!/usr/bin/env bash
# Set up a fresh machine and run the main demo: an iterative scikit-learn workflow on a
# LocalCluster, printing per iteration what was computed, loaded and pruned and the time saved.
set -euo pipefail
EXTRAS=ml source "$(dirname "$0")/venv.sh"
.venv/bin/python examples/iterate.py "$@"
