#!/usr/bin/env bash
# Install mmdeblora and the OpenMMLab stack into .venv/ inside the checkout.
#
#   bash tools/install.sh                      # builds mmcv 2.1.0 with ops from source
#   MMCV_WHEEL_DIR=../shared/wheels bash tools/install.sh   # reuse a prebuilt mmcv wheel
#   FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" bash tools/install.sh  # CUDA kernels too
#
# Idempotent: re-running skips what is already installed. Fails loudly if mmcv's
# compiled ops (mmcv._ext) are missing at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"

log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

have() { "$PY" - "$@" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
name, want = sys.argv[1], sys.argv[2]
try:
    sys.exit(0 if version(name) == want else 1)
except PackageNotFoundError:
    sys.exit(1)
PYEOF
}

log "build tools"
"${PIP[@]}" "pip>=23" "setuptools>=77,<81" wheel ninja

if ! have torch "$TORCH_VERSION" || ! have torchvision "$TORCHVISION_VERSION"; then
  log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

log "mmengine"
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" "mmengine==0.10.7"

if ! have mmcv 2.1.0 || ! "$PY" -c "import mmcv._ext" 2>/dev/null; then
  bash "$ROOT/tools/build_mmcv.sh" "$PY"
fi

log "mmdet, mmrotate, mmpretrain"
"${PIP[@]}" "mmdet==3.3.0" "mmrotate-dev==1.0.1" "mmpretrain==1.2.0" \
  -r "$ROOT/requirements/tests.txt"

log "mmdeblora (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

log "checking the stack"
"$PY" - <<'PYEOF'
import sys
try:
    import mmcv._ext  # noqa: F401  compiled ops
except ImportError as e:
    sys.exit(f"[install] FAILED: mmcv is installed without its compiled ops ({e}). "
             "Rebuild with tools/build_mmcv.sh")
import torch, mmcv, mmengine, mmdet, mmrotate, mmpretrain, peft, diffusers, transformers
from mmcv.ops import nms_rotated  # noqa: F401
import mmdeblora
print('[install] ok: torch', torch.__version__, '| mmcv', mmcv.__version__,
      '| mmengine', mmengine.__version__, '| mmdet', mmdet.__version__,
      '| mmrotate', mmrotate.__version__, '| peft', peft.__version__,
      '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)
PYEOF
