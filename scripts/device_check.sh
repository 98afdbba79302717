#!/usr/bin/env bash
# GPU checks, for a machine with a CUDA device (CI has none; the suite itself never needs one).
#
#   bash scripts/device_check.sh [OUT_DIR]
#
# Uses the python3 found on PATH (torch with CUDA, numpy, scipy, matplotlib, seaborn, typer,
# rich, scikit-learn, jinja2 and pytest already installed) and installs this project into it
# without dependencies or network. Two jobs run side by side, each under a time limit:
#   1. tests/test_cuda.py (the GPU against the CPU in float64), then the spectrum and
#      flatness stage tests with the CLI on CUDA (LANDSCAPE_TEST_DEVICE=cuda);
#   2. the README's main job with --device auto: reproduce all --scale quick (DEMO=0 skips it);
#   3. with EIGEN_N="47658 ...": benchmarks/gpu_eigensolve.py, the float64 eigensolve at those sizes.
# Logs and the quick report land in OUT_DIR (default: $OUT, else ./device-check).
set -u
OUT_DIR=${1:-${OUT:-device-check}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 LANDSCAPE_NO_DOWNLOAD=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}

nvidia-smi -L
$PY - <<'EOF'
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| device", torch.cuda.get_device_name(0))
EOF
# editable: the tests import the checkout's landscape/, whose cli/ the installed finder maps
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT_DIR/install.log" 2>&1 \
  || { echo "install failed:"; tail -20 "$OUT_DIR/install.log"; exit 1; }

(
  start=$(date +%s)
  timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs >"$OUT_DIR/cuda_tests.log" 2>&1
  echo "tests/test_cuda.py: rc $? in $(( $(date +%s) - start )) s" >>"$OUT_DIR/summary.txt"
  start=$(date +%s)
  LANDSCAPE_TEST_DEVICE=cuda timeout 200 $PY -m pytest -q -p no:cacheprovider \
    tests/test_spectrum_stage.py tests/test_flatness_stage.py >"$OUT_DIR/stage_tests.log" 2>&1
  echo "stage tests on cuda: rc $? in $(( $(date +%s) - start )) s" >>"$OUT_DIR/summary.txt"
) &
tests=$!
[ "${DEMO:-1}" = 0 ] || (
  start=$(date +%s)
  timeout 330 landscape reproduce all --scale quick --device auto --out /tmp/quick --runs /tmp/quick-runs \
    >"$OUT_DIR/demo.log" 2>&1
  echo "reproduce all --scale quick --device auto: rc $? in $(( $(date +%s) - start )) s" >>"$OUT_DIR/summary.txt"
  cp /tmp/quick/index.html "$OUT_DIR/quick-report.html" 2>/dev/null
) &
demo=$!
eigen=
if [ -n "${EIGEN_N:-}" ]; then  # e.g. EIGEN_N="47658": exact float64 eigensolve at small-lenet's size
  (
    start=$(date +%s)
    timeout 300 $PY -m benchmarks.gpu_eigensolve $EIGEN_N >"$OUT_DIR/gpu_eigensolve.log" 2>&1
    echo "benchmarks.gpu_eigensolve $EIGEN_N: rc $? in $(( $(date +%s) - start )) s" >>"$OUT_DIR/summary.txt"
  ) &
  eigen=$!
fi
wait $tests $demo $eigen

for f in cuda_tests stage_tests; do echo "== $f"; tail -25 "$OUT_DIR/$f.log"; done
[ "${DEMO:-1}" = 0 ] || echo "== demo"; [ "${DEMO:-1}" = 0 ] || grep -i -E "error|device|cuda|wrote|took|Traceback" "$OUT_DIR/demo.log" | tail -15
[ -z "${EIGEN_N:-}" ] || { echo "== gpu eigensolve"; tail -5 "$OUT_DIR/gpu_eigensolve.log"; }
echo "== summary"; cat "$OUT_DIR/summary.txt"
