#!/usr/bin/env bash
# The main job on the built-in default: the method on data where the bias is real.
#
#   bash tools/run_toy.sh            # the detection benchmark, seed 0 (README: time)
#   bash tools/run_toy.sh --quick    # the same steps on smaller data, a few minutes
#
# 1. install (skipped when .venv/ is current; tools/install.sh);
# 2. generate the bias benchmark and pretrain its foundation on the balanced source domain
#    (tools/data/make_bias_benchmark.py; cached under a fingerprint: a second run reuses
#    both);
# 3. train Oriented R-CNN with the foundation in LoRABackbone on the long-tailed target
#    scenes (configs/bias_detection/bias_det_lora.py, the LoRA-only baseline) and, from its
#    checkpoint at the switch epoch, LoRA + debLoRA (bias_det_lora_deblora.py: clustering,
#    calibration, the new adapter's stage 2); test both on the class-balanced test scenes
#    (tools/analysis/detection_table.py, seed 0; a run that finished is reused);
# 4. print the head / middle / tail mAP of both side by side and where the logs, the
#    switch's embedding plot and the checkpoints are.
# WORK_DIR=... changes the output folder (default work_dirs/main_job[_quick]).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run_toy.sh: unknown argument '$arg' (only --quick)" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  DATA=data/bias_benchmark_quick
  WORK_DIR="${WORK_DIR:-work_dirs/main_job_quick}"
  # a third of the objects, a smaller source domain and a shorter pretraining; 3 epochs of
  # LoRA, the switch after 2
  GEN=(--max-count 300 --imbalance-ratio 30 --val-per-class 10 --test-per-class 20
       --source-per-class 100 --foundation-epochs 10)
  OPTS=(--cfg-options train_cfg.max_epochs=3 DebLoRAHook.switch_epoch=2)
else
  DATA=data/bias_benchmark
  WORK_DIR="${WORK_DIR:-work_dirs/main_job}"
  GEN=()
  OPTS=()
fi

bash tools/install.sh
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg

echo "[run_toy] 1/2 the bias benchmark and its foundation -> $DATA"
$PY tools/data/make_bias_benchmark.py "$DATA" "${GEN[@]}"

echo "[run_toy] 2/2 LoRA and LoRA + debLoRA on its target scenes -> $WORK_DIR"
$PY tools/analysis/detection_table.py --rows lora lora_deblora --seeds 0 \
  --work-dir "$WORK_DIR" --data-root "$DATA/target/" --foundation "$DATA/foundation.pth" \
  "${OPTS[@]}"

RUN="$WORK_DIR/lora_deblora/seed0/train"
cat <<EOF
[run_toy] done. Test-set mAP (%) per group above, also in $WORK_DIR/table.md
  logs:            $WORK_DIR/lora/seed0/train/*/*.log, $RUN/*/*.log
  switch:          $RUN/deblora/ (embedding.png: the training RoI features before and
                   after calibration; clusters, centers, reach.csv)
  checkpoints:     $WORK_DIR/{lora,lora_deblora}/seed0/train/epoch_*.pth
  per-class AP:    $WORK_DIR/{lora,lora_deblora}/seed0/result.json
EOF
if [ "$QUICK" = 1 ]; then
  echo "[run_toy] --quick: 3 epochs on a third of the data show the pipeline, not the method;"
  echo "          the full run: bash tools/run_toy.sh"
fi
