#!/usr/bin/env bash
# The test command: set up a fresh machine if needed (scripts/setup.sh), then run pytest.
#   scripts/test.sh                 # the default suite (< 10 minutes on 2 CPU cores)
#   scripts/test.sh -m slow         # the long runs
#   scripts/test.sh tests/test_data.py -k idx
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
