#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: creates .venv, installs helix_dask with its
# test extras, lints, then runs pytest. Usage: bash ci/test.sh [pytest args...]
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/venv.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
