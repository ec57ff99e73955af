#!/usr/bin/env bash
# The pre-checks of one bias-dial setting, before any method runs on it (docs/deblora.md,
# "Settings where the premise can hold"): generate the target domain (the one foundation
# serves every setting), train LoRA and the balanced-data oracle on it (classification by
# default, TABLE=detection for the detection configs), then bias_diagnostics.py on the
# validation split: pre-checks 1-3 and the premise checks a-c.
#   bash tools/analysis/setting_precheck.sh BIAS CUE_STRENGTH [SEED ...]   (default seed 0)
# Outputs: data/bias_<bias>_<cue>/, work_dirs/precheck_<table>/<bias>_<cue>/ (the runs,
# table.md and diag_val_s<seed>.json per seed). Resumable: finished parts are skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
TABLE="${TABLE:-classification}"
[ $# -ge 2 ] || { echo "usage: $0 BIAS CUE_STRENGTH [SEED ...]" >&2; exit 1; }
BIAS="$1"; CUE="$2"; shift 2
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0)
case "$TABLE" in
  classification) LORA=configs/classification/bias_lora.py ;;
  detection)      LORA=configs/bias_detection/bias_det_lora.py ;;
  *) echo "TABLE must be classification or detection, got $TABLE" >&2; exit 1 ;;
esac
DATA="data/bias_${BIAS}_${CUE}"
OUT="work_dirs/precheck_${TABLE}/${BIAS}_${CUE}"
FOUNDATION=data/bias_benchmark/foundation.pth
[ -f "$FOUNDATION" ] || $PY tools/data/make_bias_benchmark.py data/bias_benchmark
[ -f "$DATA/target/target.json" ] || \
  $PY tools/data/make_bias_benchmark.py "$DATA" --bias "$BIAS" --cue-strength "$CUE" --no-foundation
$PY "tools/analysis/${TABLE}_table.py" --rows lora oracle --seeds "${SEEDS[@]}" \
  --work-dir "$OUT" --data-root "$DATA/target/" --foundation "$FOUNDATION"
D="$DATA/target/"
for S in "${SEEDS[@]}"; do
  [ -f "$OUT/diag_val_s$S.json" ] && continue
  ckpt() { cat "$OUT/$1/seed$S/train/last_checkpoint"; }
  $PY tools/analysis/bias_diagnostics.py "$LORA" "$(ckpt lora)" \
    --oracle-checkpoint "$(ckpt oracle)" --split val --out "$OUT/diag_val_s$S.json" \
    --cfg-options "train_dataloader.dataset.data_root=$D" "val_dataloader.dataset.data_root=$D" \
    "test_dataloader.dataset.data_root=$D"
done
