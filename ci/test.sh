#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: creates .venv, installs helix_dask with its
# test extras, lints, then runs pytest. Usage: bash ci/test.sh [pytest args...]
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/venv.sh"
# A real headless browser for the dashboard test (Debian's chromium; the test skips without it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 ||
        echo "chromium could not be installed; the browser test will be skipped"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Tests start fresh Python processes; where PYTHONDONTWRITEBYTECODE is set each would compile
# helix_dask from source again.
.venv/bin/python -m compileall -q helix_dask benchmarks
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
