#!/usr/bin/env bash
# Prepare .gpu/ (ignored) for a lent GPU machine: wheels and pure-Python packages that machine
# lacks, and a compact copy of the bundled model's training data. Run here, then on the device:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu"], timeout_s=590)   (docs/training.md)
# Usage: bash benchmarks/gpu/prepare.sh [SHARED_DATA]   (default ../shared/data)
# Env: COCO_SIDE (416), DAVIS_SIDE (352): longer side of the re-encoded JPEGs (q90).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-${SEGAPP_SHARED:-../shared}/data}
grep -qxF ".gpu/" .gitignore || echo ".gpu/" >> .gitignore
rm -rf .gpu && mkdir -p .gpu/whl .gpu/site
export OMP_WAIT_POLICY=PASSIVE
# (a) wheels for the device's Python 3.12 (versions pinned to those tested here)
pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl pycocotools==2.0.11 PyYAML==6.0.3 hydra-core==1.3.8 omegaconf==2.3.1 packaging==26.2 portalocker==4.4.2
# antlr4-python3-runtime 4.9.3 and iopath 0.1.10 have no wheels on PyPI: copy them (pure Python)
SITE=$(python -c "import antlr4, os; print(os.path.dirname(os.path.dirname(antlr4.__file__)))")
for pkg in antlr4 iopath; do cp -r "$SITE/$pkg" .gpu/site/; done
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
# (b) the data pack
python benchmarks/gpu/pack_data.py --src "$SRC" --dst .gpu/data \
  --coco-side "${COCO_SIDE:-416}" --davis-side "${DAVIS_SIDE:-352}"
# sizes: what the run tool carries (checkout: tracked + untracked-not-ignored files)
du -sh .gpu/whl .gpu/site .gpu/data/*
CHECKOUT=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- | tail -1 | cut -f1)
GPU=$(du -sb .gpu | cut -f1)
python -c "c, g = $CHECKOUT, $GPU; print(f'carried: checkout {c / 2**20:.1f} MiB + .gpu {g / 2**20:.1f} MiB = {(c + g) / 2**20:.1f} MiB (limit 64 MiB)')"
