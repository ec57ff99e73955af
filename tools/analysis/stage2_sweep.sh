#!/usr/bin/env bash
# The stage-2 sweep of docs/deblora.md ("A stage 2 that reaches its targets"): LoRA +
# debLoRA with each stage-2 setting below, each in its own work dir under $OUT, through
# classification_table.py (TABLE=classification, the default) or detection_table.py
# (TABLE=detection); resumable: a finished (setting, seed) is skipped. Each run's
# result.json holds the test scores and the last target-reach row (the calibrated gap
# relative to the switch, the others' drift).
#   bash tools/analysis/stage2_sweep.sh [SETTING ...]       (default: all, seeds $SEEDS)
# Settings: sgd_l<lambda> (the run's optimizer), adamw<lr>_l<lambda>, augment (mode
# 'augment', the default alphas), augment_a0 (its alpha-0 control), augment_mean /
# augment_a0_mean (the same with augment_reduction='mean'), both_l<lambda>; suffixes
# _h<hold_weight>, _r<replay images>. Each setting states its whole stage 2 (optimizer,
# lambda, replay: 0 unless _r), so it does not follow the configs' stage-2 default.
# LORA_FROM=<a table's work dir>: every setting's debLoRA row resumes the stage 1 of that
# table's LoRA row (linked as <setting>/lora, so the table pairs against it); every seed
# must be done there.
# TABLE_ARGS: more arguments for the table (e.g. "--data-root data/bias_scattered_1.0/target/").
# Then: .venv/bin/python tools/analysis/collect_reach.py $OUT/*
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
TABLE="${TABLE:-classification}"
OUT="${OUT:-work_dirs/stage2_sweep}"
read -r -a SEED_LIST <<< "${SEEDS:-0}"
read -r -a TABLE_ARG_LIST <<< "${TABLE_ARGS:-}"
H=DebLoRAHook
adamw() { echo "$H.stage2_optim_wrapper.optimizer.type=AdamW" \
  "$H.stage2_optim_wrapper.optimizer.lr=$1" "$H.stage2_optim_wrapper.optimizer.weight_decay=0.0"; }
case "$TABLE" in
  classification|detection) ;;
  *) echo "TABLE must be classification or detection, got $TABLE" >&2; exit 1 ;;
esac
ROWS=(lora_deblora)
if [ -n "${LORA_FROM:-}" ]; then
  for seed in "${SEED_LIST[@]}"; do
    [ -f "$LORA_FROM/lora/seed$seed/result.json" ] || {
      echo "LORA_FROM=$LORA_FROM has no finished LoRA run of seed $seed" >&2; exit 1; }
  done
  ROWS=(lora lora_deblora)
fi

SETTINGS=("$@")
[ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=(sgd_l0.05 sgd_l0 adamw1e-4_l0.05 adamw1e-4_l0.2 \
  adamw1e-3_l0.05 adamw1e-3_l0.2 adamw1e-3_l1 adamw1e-3_l0 augment augment_a0)
for s in "${SETTINGS[@]}"; do
  base="$s"; hold=()
  while [[ "$base" =~ ^(.+)_([hr])([0-9.]+)$ ]]; do  # suffixes: _h<hold_weight>, _r<replay>
    base="${BASH_REMATCH[1]}"
    case "${BASH_REMATCH[2]}" in
      h) hold+=("$H.hold_weight=${BASH_REMATCH[3]}") ;;
      r) hold+=("$H.replay=${BASH_REMATCH[3]}") ;;
    esac
  done
  run_opt=("$H.stage2_optim_wrapper=None")  # the run's own optimizer and schedule
  case "$base" in
    sgd_l*)          opts=("${run_opt[@]}" "$H.loss_weight=${base#sgd_l}") ;;
    adamw*_l*)       lr="${base#adamw}"; lr="${lr%%_l*}"
                     read -r -a opts <<< "$(adamw "$lr") $H.loss_weight=${base##*_l}" ;;
    augment)         opts=("${run_opt[@]}" "$H.mode=augment") ;;
    augment_a0)      opts=("${run_opt[@]}" "$H.mode=augment" "$H.alpha_max=0.0") ;;
    augment_mean)    opts=("${run_opt[@]}" "$H.mode=augment" "$H.augment_reduction=mean") ;;
    augment_a0_mean) opts=("${run_opt[@]}" "$H.mode=augment" "$H.alpha_max=0.0"
                           "$H.augment_reduction=mean") ;;
    both_l*)         opts=("${run_opt[@]}" "$H.mode=both" "$H.loss_weight=${base#both_l}") ;;
    *) echo "unknown setting $s (sgd_l<lambda>, adamw<lr>_l<lambda>, augment, augment_a0," \
            "augment_mean, augment_a0_mean, both_l<lambda>, each with optional" \
            "_h<hold_weight> and _r<replay images>)" >&2; exit 1 ;;
  esac
  opts+=("$H.replay=0" ${hold[@]+"${hold[@]}"})  # a later _r<R> wins
  echo "[stage2_sweep] $s: ${opts[*]}"
  mkdir -p "$OUT/$s"
  if [ -n "${LORA_FROM:-}" ]; then
    ln -sfn "$(cd "$LORA_FROM" && pwd)/lora" "$OUT/$s/lora"
  fi
  $PY "tools/analysis/${TABLE}_table.py" --rows "${ROWS[@]}" --seeds "${SEED_LIST[@]}" \
    --work-dir "$OUT/$s" ${TABLE_ARG_LIST[@]+"${TABLE_ARG_LIST[@]}"} --cfg-options "${opts[@]}"
done
