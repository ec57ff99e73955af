#!/usr/bin/env bash
# Install mmcv 2.1.0 with compiled ops into the Python given as $1.
#
# If MMCV_WHEEL_DIR names a directory holding a matching mmcv-2.1.0 wheel for this Python,
# that wheel is installed. Otherwise the PyPI source is built with the two fixes that
# torch >= 2.14 needs (see docs/install.md): setuptools < 81 (mmcv's setup.py imports
# pkg_resources) and -std=c++20 instead of -std=c++17. The built wheel is kept in
# MMCV_WHEEL_CACHE (default .venv/wheels) so a re-install does not rebuild.
# FORCE_CUDA=1 (with TORCH_CUDA_ARCH_LIST) builds the CUDA kernels as well.
set -euo pipefail
PY="${1:-python}"
MMCV_VERSION=2.1.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MMCV_WHEEL_CACHE:-$(dirname "$(dirname "$PY")")/wheels}"
tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
log() { printf '[build_mmcv] %s\n' "$*"; }

for dir in "${MMCV_WHEEL_DIR:-}" "$CACHE"; do
  [ -n "$dir" ] && [ -d "$dir" ] || continue
  whl="$(ls "$dir"/mmcv-${MMCV_VERSION}-${tag}-${tag}-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -n "$whl" ]; then
    log "installing prebuilt $whl"
    "$PY" -m pip install -q --no-deps --force-reinstall "$whl"
    "$PY" -m pip install -q addict packaging Pillow pyyaml yapf opencv-python-headless
    if "$PY" -c "import mmcv._ext" 2>/dev/null; then exit 0; fi
    log "that wheel has no working ops for this torch; building from source"
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "downloading the mmcv $MMCV_VERSION source"
"$PY" -m pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work"
tar -xzf "$work"/mmcv-${MMCV_VERSION}.tar.gz -C "$work"
src="$work/mmcv-${MMCV_VERSION}"
n="$(grep -c -- '-std=c++17' "$src/setup.py" || true)"
log "patching -std=c++17 -> -std=c++20 ($n places)"
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
"$PY" -m pip install -q "setuptools>=77,<81" wheel ninja
log "building (MMCV_WITH_OPS=1, FORCE_CUDA=${FORCE_CUDA:-0}); about 13 minutes on 2 CPU cores"
mkdir -p "$CACHE"
MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" FORCE_CUDA="${FORCE_CUDA:-0}" \
  "$PY" -m pip wheel -q --no-deps --no-build-isolation "$src" -w "$CACHE"
"$PY" -m pip install -q --no-deps --force-reinstall "$CACHE"/mmcv-${MMCV_VERSION}-*.whl
"$PY" -m pip install -q addict packaging Pillow pyyaml yapf opencv-python-headless
"$PY" -c "import mmcv._ext" || { log "FAILED: mmcv._ext missing after the build"; exit 1; }
log "done"
