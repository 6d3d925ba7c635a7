#!/usr/bin/env bash
# Installs the test-only reference implementation (facebookresearch/sam2 as released on PyPI,
# sam2==1.1.0) that the parity tests compare segapp against. Idempotent.
#
# - No CUDA build and no dependency resolution (which would pull a CUDA torch).
# - The reference imports torchvision, which has no build for this torch; tests put the
#   stand-in from ../shared/tools/torchvision_shim on sys.path only where they import sam2.
# - The reference video predictor casts memory features to bfloat16, which fails on CPU
#   without CUDA autocast. For fp32 parity on CPU we keep them in float32 (one sed below),
#   as ../shared/tools/README.md prescribes. segapp itself is never patched.
set -euo pipefail
if ! python -c "import sam2.build_sam" >/dev/null 2>&1; then
    SAM2_BUILD_CUDA=0 python -m pip install --no-deps --no-build-isolation "sam2==1.1.0"
fi
python -m pip install -q "hydra-core>=1.3" "iopath>=0.1.10"
f=$(python -c 'import os, importlib.util as u; print(os.path.join(os.path.dirname(u.find_spec("sam2").origin), "sam2_video_predictor.py"))')
sed -i 's/maskmem_features = maskmem_features.to(torch.bfloat16)/maskmem_features = maskmem_features/' "$f"
echo "reference sam2 ready: $(dirname "$f")"
