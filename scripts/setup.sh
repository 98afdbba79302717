#!/usr/bin/env bash
# Set up a virtual environment for landscape: the CPU build of PyTorch where no GPU is
# present (a bare `torch` requirement would pull a multi-GB CUDA build), then the package
# itself with its test extra. Idempotent: a second run installs nothing new.
#
#   bash scripts/setup.sh [VENV_DIR]        (default .venv)
#
# Environment knobs:
#   LANDSCAPE_TORCH        the torch requirement to install (default: torch==2.13.0+cpu
#                          without a GPU, "torch>=2.1,<3" with one)
#   LANDSCAPE_TORCH_INDEX  an extra package index that serves CPU builds of torch, tried
#                          only if the default indexes (and local wheel folders) have none
set -euo pipefail

VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
PIPV=("$VENV/bin/python" -m pip --disable-pip-version-check)

have_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

if "$VENV/bin/python" -c "import torch, sys; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(0 if (2, 1) <= v < (3, 0) else 1)" 2>/dev/null; then
    echo "[setup] torch already installed: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
elif have_gpu; then
    echo "[setup] GPU found: installing a CUDA build of torch"
    "${PIP[@]}" install "${LANDSCAPE_TORCH:-torch>=2.1,<3}"
else
    spec="${LANDSCAPE_TORCH:-torch==2.13.0+cpu}"
    echo "[setup] no GPU: installing the CPU build ($spec)"
    if ! "${PIP[@]}" install "$spec" 2>/dev/null; then
        index="${LANDSCAPE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
        echo "[setup] $spec not on the default indexes; trying $index"
        "${PIP[@]}" install --extra-index-url "$index" "$spec"
    fi
fi

extras="test"
if [ -z "${LANDSCAPE_NO_MKL:-}" ] && [ "$(uname -m)" = "x86_64" ]; then
    extras="test,fast"  # Intel MKL for exact eigensolves (set LANDSCAPE_NO_MKL=1 to skip)
fi
echo "[setup] installing landscape (editable) with extras: $extras"
# the pin keeps pip from replacing the torch chosen above while resolving extras
echo "[setup] (numpy, scipy, matplotlib, scikit-learn, ... from the package index: 1-3 minutes on a fresh machine)"
# the pin is read from the installed metadata: importing torch before numpy exists prints a warning
torch_pin=$("$VENV/bin/python" -c 'from importlib.metadata import version; print("torch==" + version("torch"))')
"${PIPV[@]}" install --progress-bar off -c <(echo "$torch_pin") -e ".[$extras]" 2>&1 \
    | grep --line-buffered -E "^(Collecting|Installing collected|Successfully installed|ERROR)" \
    | sed -u -e 's/^/[setup]   /' -e 's/^\(.\{110\}\).*/\1 .../' || true
"$VENV/bin/python" -c "import landscape, torch; print(f'[setup] landscape {landscape.__version__}, torch {torch.__version__}')"
