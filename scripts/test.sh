#!/usr/bin/env bash
# The test command: set up a fresh machine if needed (scripts/setup.sh), then run pytest.
#
# Tiers, by pytest marker (registered in pyproject.toml):
#   scripts/test.sh -m "not slow and not cli and not heavy"
#                                               # fast tier (37 s of pytest idle, 52 s when the fused kernel is first built): no subprocess, no CLI run, no model
#                                               # training, no long solve (library code, kernels, solver
#                                               # steps, metrics, input checks)
#   scripts/test.sh                             # default suite = "not slow" (252 s idle): the fast tier plus `cli`
#                                               # tests (the ae-ot CLI in subprocesses, Lightning and
#                                               # classifier training); < 5 minutes on 2 CPU cores
#   scripts/test.sh -m slow                     # the long runs (end-to-end compare, DDP, UMAP, doctests...)
#   scripts/test.sh -m gpu                      # the CUDA tests (skipped without a GPU)
#   scripts/test.sh tests/test_data.py -k idx   # one file or test
# A -m given here replaces the default "not slow" of pyproject.toml's addopts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
