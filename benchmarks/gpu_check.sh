#!/usr/bin/env bash
# The GPU acceptance run: every GPU path of kiln, in at most 7 minutes, on a fresh machine with one NVIDIA GPU,
# torch/torchvision preinstalled and no internet. Results (PASS/FAIL/SKIP with seconds per check, and the speed
# tables) go to OUT_DIR/results.md and results.json as each check ends, also when one fails or the run is cut.
#
#   bash benchmarks/gpu_prepare.sh              # here, once: wheels + Fashion-MNIST into benchmarks/.gpu/
#   bash benchmarks/gpu_check.sh OUT_DIR        # on the GPU machine, with benchmarks/.gpu carried along
#   bash benchmarks/gpu_check.sh OUT_DIR --cpu-dry-run   # the plumbing on a CPU (fast_dev_run, CUDA checks skipped)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--cpu-dry-run]}
shift
mkdir -p "$out"
budget=${KILN_GPU_CHECK_SECONDS:-420}

if [[ " $* " == *" --cpu-dry-run "* ]]; then
  PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
else
  PY=${PYTHON:-python3}
  # Bring the dependencies this machine lacks, from the wheels gpu_prepare.sh made.
  if ! "$PY" -c "import pydantic, optuna, cmaes" 2>/dev/null; then
    if [ -d benchmarks/.gpu/wheels ]; then
      "$PY" -m pip install --quiet --no-index --no-deps benchmarks/.gpu/wheels/*.whl 2>&1 | tail -3
    else
      echo "kiln's dependencies are missing and benchmarks/.gpu/wheels is absent: run benchmarks/gpu_prepare.sh" >&2
    fi
  fi
  [ -d benchmarks/.gpu/data ] && export KILN_DATA="$PWD/benchmarks/.gpu/data"
fi
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
start=$(date +%s)
timeout --signal=TERM --kill-after=15 "$budget" "$PY" benchmarks/gpu_check.py "$out" "$@" 2>&1 | tee "$out/check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc after $(( $(date +%s) - start )) s (budget ${budget} s); results in $out/results.md" \
  | tee -a "$out/check.log"
exit "$rc"
