#!/usr/bin/env bash
# Build the API reference (Sphinx, autodoc/autosummary of the package) into docs/_build/html,
# warnings as errors. Set-up first (scripts/setup.sh installs Sphinx with the dev extra).
#   scripts/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
# autosummary's generated pages are build output, kept out of the source tree
rm -rf docs/_build docs/api/generated
.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
rm -rf docs/api/generated
echo "API reference: docs/_build/html/index.html"
