#!/usr/bin/env bash
# The starting point of the toy result tables (docs/baselines.md, docs/deblora.md): Oriented
# R-CNN with a randomly initialised ResNet-18 (configs/baselines/oriented_rcnn_r18_toy.py)
# trained 6 epochs on the generated long-tailed toy DOTA with seed 0. The toy LoRA configs
# (oriented_rcnn_r18_lora*_toy.py, oriented_rcnn_r18_deblora_toy.py) load its `backbone.`
# weights by default (model.backbone.pretrained), as does tools/analysis/toy_results.sh.
#   bash tools/make_toy_foundation.sh        -> work_dirs/toy_foundation/epoch_6.pth
# An existing epoch_6.pth is kept (delete the folder to make it again). SEED=..., WORK_DIR=...
# and PY=... override the seed, the output folder and the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
SEED="${SEED:-0}"
WORK_DIR="${WORK_DIR:-work_dirs/toy_foundation}"
if [ -f "$WORK_DIR/epoch_6.pth" ]; then
  echo "[make_toy_foundation] $WORK_DIR/epoch_6.pth exists; delete $WORK_DIR to make it again"
  exit 0
fi
[ -d data/toy_dota/trainval ] || $PY tools/data/make_toy_dota.py data/toy_dota
$PY tools/train.py configs/baselines/oriented_rcnn_r18_toy.py --work-dir "$WORK_DIR" \
  --cfg-options randomness.seed="$SEED"
[ -f "$WORK_DIR/epoch_6.pth" ] || { echo "no $WORK_DIR/epoch_6.pth after training" >&2; exit 1; }
echo "[make_toy_foundation] wrote $WORK_DIR/epoch_6.pth"
