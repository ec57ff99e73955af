#!/usr/bin/env bash
# The toy result tables of docs/baselines.md and docs/deblora.md: every run starts its
# LoRA ResNet-18 from the same trained toy model (FOUNDATION, made with seed 0 by
# `bash tools/make_toy_foundation.sh`; the published tables started from an unseeded run of
# the main job, work_dirs/oriented_rcnn_r18_toy/epoch_6.pth) and trains 6 epochs on the
# generated long-tailed DOTA with the same seed (SEED, default 0), so LoRA and debLoRA
# share their first 4 epochs and differ only in stage 2. Usage:
#   bash tools/analysis/toy_results.sh [RUN ...]   (default: all runs, one after another)
# RUN in: lora reweight reweight_sqrt reweight_en ecm reslt deblora, and the debLoRA
# ablations deblora_cs (weighting=class_share), deblora_l1 / deblora_l02 / deblora_l005 / deblora_l002 /
# deblora_l0 (lambda 1.0 / 0.2 / 0.05 / 0.02 / 0: stage 2 without the feature loss), deblora_imb
# (alpha_mode=imbalance), deblora_mid (calibrate middle + tail), deblora_k8 / deblora_k64
# (K = 8 / 64 clusters), deblora_rerun (the default again).
# An ablation resumes from the final stage-1 model of the deblora run
# ($OUT/deblora/stage1_final.pth, saved by DebLoRAHook at the switch) and trains stage 2
# only: with the same seed the first 4 epochs of every debLoRA run are the same, and the
# resume is exact (RandomStateHook), so an ablation shares the full run's random stream
# and is a paired comparison; deblora_rerun reproduces the full run bit for bit.
# Then: python tools/analysis/collect_results.py LoRA=work_dirs/results/lora ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
FOUNDATION="${FOUNDATION:-work_dirs/toy_foundation/epoch_6.pth}"
OUT="${OUT:-work_dirs/results}"
SEED="${SEED:-0}"
[ -f "$FOUNDATION" ] || {
  echo "missing $FOUNDATION: run bash tools/make_toy_foundation.sh first" >&2; exit 1; }
[ -d data/toy_dota/trainval ] || $PY tools/data/make_toy_dota.py data/toy_dota
B=configs/baselines
DEBLORA=configs/deblora/oriented_rcnn_r18_deblora_toy.py
H=DebLoRAHook  # the config's DebLoRAHook, by name (tools/train.py maps it)
RW=model.roi_head.bbox_head.loss_cls.mode

RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(lora reweight ecm reslt deblora deblora_cs)
for run in "${RUNS[@]}"; do
  # each run: config, then extra --cfg-options; a deblora_* ablation resumes stage 1
  case "$run" in
    lora)          set -- "$B/oriented_rcnn_r18_lora_toy.py" ;;
    reweight)      set -- "$B/oriented_rcnn_r18_lora_reweight_toy.py" ;;
    reweight_sqrt) set -- "$B/oriented_rcnn_r18_lora_reweight_toy.py" "$RW=sqrt_inverse" ;;
    reweight_en)   set -- "$B/oriented_rcnn_r18_lora_reweight_toy.py" "$RW=effective_number" ;;
    ecm)           set -- "$B/oriented_rcnn_r18_lora_ecm_toy.py" ;;
    reslt)         set -- "$B/oriented_rcnn_r18_lora_reslt_toy.py" ;;
    deblora)       set -- "$DEBLORA" ;;
    deblora_cs)    set -- "$DEBLORA" "$H.weighting=class_share" ;;
    deblora_l1)    set -- "$DEBLORA" "$H.loss_weight=1.0" ;;
    deblora_l005)  set -- "$DEBLORA" "$H.loss_weight=0.05" ;;
    deblora_l002)  set -- "$DEBLORA" "$H.loss_weight=0.02" ;;
    deblora_l02)   set -- "$DEBLORA" "$H.loss_weight=0.2" ;;
    deblora_l0)    set -- "$DEBLORA" "$H.loss_weight=0.0" ;;
    deblora_imb)   set -- "$DEBLORA" "$H.alpha_mode=imbalance" ;;
    deblora_mid)   set -- "$DEBLORA" "$H.calibrate_groups=[middle,tail]" ;;
    deblora_k8)    set -- "$DEBLORA" "$H.num_clusters=8" ;;
    deblora_k64)   set -- "$DEBLORA" "$H.num_clusters=64" ;;
    deblora_rerun) set -- "$DEBLORA" ;;
    *) echo "unknown run $run" >&2; exit 1 ;;
  esac
  cfg="$1"; shift
  resume=()
  if [[ "$run" == deblora_* ]]; then
    stage1="$OUT/deblora/stage1_final.pth"
    [ -f "$stage1" ] || { echo "$run needs $stage1: run deblora first" >&2; exit 1; }
    resume=(--resume "$stage1")
  fi
  echo "[toy_results] $run: $cfg ${resume[*]} $*"
  $PY tools/train.py "$cfg" --work-dir "$OUT/$run" "${resume[@]}" \
    --cfg-options model.backbone.pretrained="$FOUNDATION" randomness.seed="$SEED" "$@"
done
