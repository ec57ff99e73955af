#!/usr/bin/env bash
# The toy result tables of docs/baselines.md and docs/deblora.md: every run starts its
# LoRA ResNet-18 from the same trained toy model (the main job's epoch_6.pth, FOUNDATION)
# and trains 6 epochs on the generated long-tailed DOTA. Usage:
#   bash tools/analysis/toy_results.sh [RUN ...]   (default: all runs, one after another)
# RUN in: lora reweight ecm reslt deblora deblora_cs
# Then: python tools/analysis/collect_results.py LoRA=work_dirs/results/lora ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
FOUNDATION="${FOUNDATION:-work_dirs/oriented_rcnn_r18_toy/epoch_6.pth}"
OUT="${OUT:-work_dirs/results}"
[ -f "$FOUNDATION" ] || { echo "missing $FOUNDATION: run tools/run_toy.sh first" >&2; exit 1; }
[ -d data/toy_dota/trainval ] || $PY tools/data/make_toy_dota.py data/toy_dota
B=configs/baselines
declare -A CFG=(
  [lora]="$B/oriented_rcnn_r18_lora_toy.py"
  [reweight]="$B/oriented_rcnn_r18_lora_reweight_toy.py"
  [ecm]="$B/oriented_rcnn_r18_lora_ecm_toy.py"
  [reslt]="$B/oriented_rcnn_r18_lora_reslt_toy.py"
  [deblora]="configs/deblora/oriented_rcnn_r18_deblora_toy.py"
  [deblora_cs]="configs/deblora/oriented_rcnn_r18_deblora_toy.py"
)
declare -A EXTRA=([deblora_cs]="custom_hooks.0.weighting=class_share")
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(lora reweight ecm reslt deblora deblora_cs)
for run in "${RUNS[@]}"; do
  cfg="${CFG[$run]:?unknown run $run}"
  echo "[toy_results] $run: $cfg ${EXTRA[$run]:-}"
  $PY tools/train.py "$cfg" --work-dir "$OUT/$run" \
    --cfg-options model.backbone.pretrained="$FOUNDATION" ${EXTRA[$run]:-}
done
