#!/usr/bin/env bash
# The stage-2 sweep of docs/deblora.md ("A stage 2 that reaches its targets") on the
# classification bias benchmark: LoRA + debLoRA with each stage-2 optimizer / lr / lambda
# below, each in its own work dir under $OUT, through classification_table.py (resumable:
# a finished (setting, seed) is skipped). Each run's result.json holds the test macro-F1 and
# the last target-reach row (the calibrated gap relative to the switch, the others' drift).
#   bash tools/analysis/stage2_sweep.sh [SETTING ...]       (default: all, seeds $SEEDS)
# Then: .venv/bin/python tools/analysis/collect_reach.py $OUT/*
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-work_dirs/stage2_sweep}"
read -r -a SEED_LIST <<< "${SEEDS:-0}"
H=DebLoRAHook
adamw() { echo "$H.stage2_optim_wrapper.optimizer.type=AdamW" \
  "$H.stage2_optim_wrapper.optimizer.lr=$1" "$H.stage2_optim_wrapper.optimizer.weight_decay=0.0"; }

SETTINGS=("$@")
[ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=(sgd_l0.05 sgd_l0 adamw1e-4_l0.05 adamw1e-4_l0.2 \
  adamw1e-3_l0.05 adamw1e-3_l0.2 adamw1e-3_l1 adamw1e-3_l0)
for s in "${SETTINGS[@]}"; do
  case "$s" in
    sgd_l*)          opts=("$H.loss_weight=${s#sgd_l}") ;;
    adamw*_l*)       lr="${s#adamw}"; lr="${lr%%_l*}"
                     read -r -a opts <<< "$(adamw "$lr") $H.loss_weight=${s##*_l}" ;;
    *) echo "unknown setting $s (sgd_l<lambda> or adamw<lr>_l<lambda>)" >&2; exit 1 ;;
  esac
  echo "[stage2_sweep] $s: ${opts[*]}"
  $PY tools/analysis/classification_table.py --rows lora_deblora --seeds "${SEED_LIST[@]}" \
    --work-dir "$OUT/$s" --cfg-options "${opts[@]}"
done
