#!/usr/bin/env bash
# The command for a lent GPU machine (after benchmarks/gpu/prepare.sh here):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu"], timeout_s=590)
# installs segapp there as ../shared/docs/GPU.md says, then runs benchmarks/gpu/pipeline.py:
# issue 12's training speed, then MAE pretraining, click-first `segapp train` and `segapp
# train-video` of the bundled model's config, and an evaluation beside the bundled weights, all
# ending BUDGET_S seconds after this script starts (default 540). $OUT gets results.json,
# run.log, logs.tar.gz and the weights, after every stage.
# Usage: bash benchmarks/gpu/run.sh [--smoke] [BUDGET_S] [pipeline.py options, e.g. --train-batch 4]
#   --smoke: the same pipeline on this CPU, tiny (no install; OUT defaults to /tmp/gpu_out).
#   BUDGET_S: keep it under the run tool's timeout_s (and the device time left) minus ~40 s.
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/../.."
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then SMOKE="--smoke"; shift; fi
BUDGET_S=${BUDGET_S:-$([ -n "$SMOKE" ] && echo 300 || echo 540)}
case "${1:-}" in [0-9]*) BUDGET_S=$1; shift;; esac
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
DATA=${GPU_DATA:-.gpu/data}   # GPU_DATA: another pack (the smoke test packs its own)
[ -d "$DATA" ] || { echo "no $DATA: run bash benchmarks/gpu/prepare.sh first (and carry .gpu)"; exit 2; }
{
  if [ -z "$SMOKE" ]; then
    python3 -m pip install -q --no-index --no-deps --target .gpu/pysite .gpu/whl/*.whl &&
      python3 -m pip install -q --no-index --no-deps --no-build-isolation . || { echo "install failed"; exit 3; }
    export PYTHONPATH=$PWD/.gpu/pysite:$PWD/.gpu/site
    echo "installed in $(( $(date +%s) - START )) s"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  python3 -c "import torch, segapp; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'segapp', segapp.__file__)"
  python3 benchmarks/gpu/pipeline.py --deadline $(( START + BUDGET_S )) --out "$OUT" --data "$DATA" $SMOKE "$@"
} 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
