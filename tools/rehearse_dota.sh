#!/usr/bin/env bash
# CPU rehearsal of the real DOTA pipeline, with nothing downloaded: the shipped DOTA configs
# run unchanged but for paths, lengths and image size (--cfg-options only), on random-weight
# files of the exact SD v1.5 / ResNet-50 architectures (tools/make_random_weights.py) and
# the real DOTA sample patches (../shared/data/dota_samples: 2 patches, 8 planes; their
# images are thumbnails, so the checker warns that boxes lie outside them).
#
#   bash tools/rehearse_dota.sh [OUT]          (default OUT: work_dirs/rehearsal_dota)
#
# Steps (each timed with /usr/bin/time: wall time, CPU time (user + sys, what a shared
# machine does not inflate) and peak RSS go to OUT/summary.tsv):
#   R50 LoRA: train, tools/test.py, Task1 submission files   R50 full: train, test
#   R50 debLoRA: stage 1, the switch, stage 2 (no Stable Diffusion); test
#   SD LoRA: train 1 epoch with slim checkpoints + peft adapter folders (LoRACheckpointHook,
#            enabled through default_hooks), --resume from the slim checkpoint, test, Task1
#   SD full (only when STEPS names sd_full: about 14 GB for AdamW states alone)
#   debLoRA: stage 1, the switch (DebLoRAHook), stage 2; test; Task1 with the test-split
#            submission config (merged to full images). Last, on purpose.
# Environment: SIZE (resize scale, default 256; the configs' 1024 takes about an hour per
# SD iteration on 2 cores), EPOCHS (default 2; 1 iteration each: 2 images, batch 2),
# STEPS (default "r50_lora r50_full r50_deblora sd_lora deblora"; add sd_full), WEIGHTS (random-weight
# folder, default work_dirs/rehearsal_weights, written once), MIN_FREE_GB (default 6: a step
# waits no longer than 10 minutes for that much available memory, then stops),
# MMDEBLORA_SHARED_DATA (folder holding dota_samples/), FORCE=1 (replace an existing OUT),
# ARCH=tiny (CI's reduced run: a few-million-parameter SD of the same block layout instead of
# SD v1.5, and the SD-FPN's in_channels set to its 32/32/64/64/64 channels).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="${1:-work_dirs/rehearsal_dota}"
SIZE="${SIZE:-256}"
EPOCHS="${EPOCHS:-2}"
STEPS="${STEPS:-r50_lora r50_full r50_deblora sd_lora deblora}"
WEIGHTS="${WEIGHTS:-work_dirs/rehearsal_weights}"
MIN_FREE_GB="${MIN_FREE_GB:-6}"
SHARED="${MMDEBLORA_SHARED_DATA:-$ROOT/../shared/data}"
DATA="$SHARED/dota_samples"
ARCH="${ARCH:-sd-v1-5}"
SD="$WEIGHTS/sd-${ARCH#sd-}-random"
NECK_OPTS=()
[ "$ARCH" = tiny ] && NECK_OPTS=("model.neck.in_channels=[32,32,64,64,64]")
R50="$WEIGHTS/resnet50-random.pth"

if [ ! -d "$DATA/annfiles" ]; then
    echo "no DOTA samples at $DATA (set MMDEBLORA_SHARED_DATA)" >&2; exit 1
fi
if [ -e "$OUT" ]; then
    if [ "${FORCE:-0}" = 1 ] && [ -f "$OUT/.rehearsal" ]; then rm -rf "$OUT"
    else echo "$OUT exists; FORCE=1 replaces an earlier rehearsal's folder" >&2; exit 1; fi
fi
mkdir -p "$OUT/logs"
touch "$OUT/.rehearsal"
printf 'step\twall_s\tcpu_s\tpeak_rss_gib\tcommand\n' > "$OUT/summary.tsv"

wait_for_memory() {  # never start a big step on a machine that lacks the memory for it
    local waited=0 free_gb
    while :; do
        free_gb=$(awk '/MemAvailable/ {printf "%d", $2 / 1048576}' /proc/meminfo)
        [ "$free_gb" -ge "$MIN_FREE_GB" ] && return 0
        [ "$waited" -ge 600 ] && { echo "only ${free_gb} GB available after 10 min" >&2; exit 1; }
        echo "waiting: ${free_gb} GB available, ${MIN_FREE_GB} GB wanted"; sleep 30
        waited=$((waited + 30))
    done
}

step() {  # step NAME CMD...: run, log, time; stop the rehearsal when it fails
    local name="$1"; shift
    wait_for_memory
    echo "== $name: $*"
    local t0=$SECONDS rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$OUT/logs/$name.time" "$@" > "$OUT/logs/$name.log" 2>&1 \
        || rc=$?
    local wall user sys kb gb cpu
    read -r wall user sys kb < <(tail -n 1 "$OUT/logs/$name.time")
    gb=$(awk -v kb="$kb" 'BEGIN {printf "%.2f", kb / 1048576}')
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f", u + s}')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$cpu" "$gb" "$*" >> "$OUT/summary.tsv"
    if [ "$rc" != 0 ]; then
        echo "FAILED: $name (exit $rc), last lines of $OUT/logs/$name.log:" >&2
        tail -n 30 "$OUT/logs/$name.log" >&2
        exit "$rc"
    fi
    echo "   $name: $((SECONDS - t0)) s wall, $cpu s CPU, peak RSS $gb GiB"
}

[ -d "$SD" ] || step weights_sd "$PY" tools/make_random_weights.py "$WEIGHTS" --what sd \
    --arch "$ARCH"
if [[ " $STEPS " == *" r50_"* ]]; then  # only the ResNet-50 steps need the R50 file
  [ -f "$R50" ] || step weights_r50 "$PY" tools/make_random_weights.py "$WEIGHTS" --what resnet50
fi

# the sample patches as train, val and test split; 2 CPU cores: no loader workers
DATA_OPTS=()
for split in train val test; do
    DATA_OPTS+=("${split}_dataloader.dataset.data_root=$DATA/"
                "${split}_dataloader.dataset.ann_file=annfiles/"
                "${split}_dataloader.dataset.data_prefix.img_path=images/"
                "${split}_dataloader.num_workers=0" "${split}_dataloader.persistent_workers=False")
done
# image size: the Resize of mmrotate's DOTA pipelines (train: index 3, val / test: 1)
SIZE_OPTS=("train_dataloader.dataset.pipeline.3.scale=($SIZE,$SIZE)"
           "val_dataloader.dataset.pipeline.1.scale=($SIZE,$SIZE)"
           "test_dataloader.dataset.pipeline.1.scale=($SIZE,$SIZE)")
LEN_OPTS=("train_cfg.max_epochs=$EPOCHS" "train_cfg.val_interval=$EPOCHS"
          "default_hooks.logger.interval=1")
TASK1_OPTS=("test_evaluator.format_only=True" "test_evaluator.merge_patches=True")
SLIM_OPTS=("default_hooks.lora_checkpoint.type=LoRACheckpointHook"
           "default_hooks.lora_checkpoint.slim=True"
           "default_hooks.lora_checkpoint.save_adapters=True")

TRAIN=("$PY" tools/train.py)
TEST=("$PY" tools/test.py)

for s in $STEPS; do case "$s" in
r50_lora)
    cfg=configs/baselines/oriented_rcnn_r50_lora_dota.py
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.pretrained=$R50")
    step r50_lora_train "${TRAIN[@]}" "$cfg" --work-dir "$OUT/r50_lora" \
        --cfg-options "${o[@]}" \
        "${LEN_OPTS[@]}"
    step r50_lora_test "${TEST[@]}" "$cfg" "$OUT/r50_lora/epoch_$EPOCHS.pth" \
        --work-dir "$OUT/r50_lora_test" --cfg-options "${o[@]}"
    step r50_lora_task1 "${TEST[@]}" "$cfg" "$OUT/r50_lora/epoch_$EPOCHS.pth" \
        --work-dir "$OUT/r50_lora_task1" --cfg-options "${o[@]}" "${TASK1_OPTS[@]}" \
        "test_evaluator.outfile_prefix=$OUT/r50_lora_task1/Task1" ;;
r50_full)
    cfg=configs/baselines/oriented_rcnn_r50_full_dota.py
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.init_cfg.checkpoint=$R50")
    step r50_full_train "${TRAIN[@]}" "$cfg" --work-dir "$OUT/r50_full" \
        --cfg-options "${o[@]}" \
        "${LEN_OPTS[@]}"
    step r50_full_test "${TEST[@]}" "$cfg" "$OUT/r50_full/epoch_$EPOCHS.pth" \
        --work-dir "$OUT/r50_full_test" --cfg-options "${o[@]}" ;;
r50_deblora)
    cfg=configs/deblora/oriented_rcnn_r50_lora_deblora_dota.py
    # lengths and K as the SD debLoRA step below (8 planes: K = 4, plane calibrated)
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.pretrained=$R50")
    step r50_deblora_train "${TRAIN[@]}" "$cfg" --work-dir "$OUT/r50_deblora" \
        --cfg-options "${o[@]}" \
        "${LEN_OPTS[@]}" train_cfg.max_epochs=2 train_cfg.val_interval=2 \
        DebLoRAHook.switch_epoch=1 DebLoRAHook.num_clusters=4 \
        "DebLoRAHook.calibrate_groups=[head]"
    step r50_deblora_test "${TEST[@]}" "$cfg" "$OUT/r50_deblora/epoch_2.pth" \
        --work-dir "$OUT/r50_deblora_test" --cfg-options "${o[@]}" ;;
sd_lora)
    cfg=configs/baselines/oriented_rcnn_sd_lora_dota.py
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.backbone.pretrained=$SD"
       "${NECK_OPTS[@]}" "${SLIM_OPTS[@]}")
    step sd_lora_train "${TRAIN[@]}" "$cfg" --work-dir "$OUT/sd_lora" \
        --cfg-options "${o[@]}" \
        "${LEN_OPTS[@]}" train_cfg.max_epochs=1
    step sd_lora_resume "${TRAIN[@]}" "$cfg" --work-dir "$OUT/sd_lora" --resume --cfg-options \
        "${o[@]}" "${LEN_OPTS[@]}"
    step sd_lora_test "${TEST[@]}" "$cfg" "$OUT/sd_lora/epoch_$EPOCHS.pth" \
        --work-dir "$OUT/sd_lora_test" --cfg-options "${o[@]}"
    step sd_lora_task1 "${TEST[@]}" "$cfg" "$OUT/sd_lora/epoch_$EPOCHS.pth" \
        --work-dir "$OUT/sd_lora_task1" --cfg-options "${o[@]}" "${TASK1_OPTS[@]}" \
        "test_evaluator.outfile_prefix=$OUT/sd_lora_task1/Task1" ;;
sd_full)
    cfg=configs/baselines/oriented_rcnn_sd_full_dota.py
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.pretrained=$SD" "${NECK_OPTS[@]}")
    MIN_FREE_GB=$((MIN_FREE_GB + 14)) step sd_full_train "${TRAIN[@]}" "$cfg" --work-dir \
        "$OUT/sd_full" --cfg-options "${o[@]}" "${LEN_OPTS[@]}" ;;
deblora)
    cfg=configs/deblora/oriented_rcnn_sd_dota.py
    # lengths: stage 1 = epoch 0, stage 2 = epoch 1. The 2 patches hold 8 planes and
    # nothing else: fewer instances than the config's K = 32 clusters (K = 4 here) and no
    # tail class to calibrate (plane, a head class, is calibrated instead).
    o=("${DATA_OPTS[@]}" "${SIZE_OPTS[@]}" "model.backbone.backbone.pretrained=$SD"
       "${NECK_OPTS[@]}")
    step deblora_train "${TRAIN[@]}" "$cfg" --work-dir "$OUT/deblora" \
        --cfg-options "${o[@]}" \
        "${LEN_OPTS[@]}" train_cfg.max_epochs=2 train_cfg.val_interval=2 \
        DebLoRAHook.switch_epoch=1 DebLoRAHook.num_clusters=4 \
        "DebLoRAHook.calibrate_groups=[head]"
    step deblora_test "${TEST[@]}" "$cfg" "$OUT/deblora/epoch_2.pth" \
        --work-dir "$OUT/deblora_test" --cfg-options "${o[@]}"
    # the house's test-split submission config: no annotations read, patches merged
    sub=configs/deblora/oriented_rcnn_sd_dota_test_submission.py
    step deblora_task1 "${TEST[@]}" "$sub" "$OUT/deblora/epoch_2.pth" \
        --work-dir "$OUT/deblora_task1" --cfg-options "${o[@]}" \
        "test_dataloader.dataset.ann_file=" \
        "test_evaluator.outfile_prefix=$OUT/deblora_task1/Task1" ;;
*) echo "unknown step $s" >&2; exit 1 ;;
esac; done

echo "== checkpoints"
find "$OUT" -name '*.pth' -printf '%s\t%p\n' | sort -k2 | tee "$OUT/checkpoints.tsv"
echo "== summary ($OUT/summary.tsv)"
cut -f1-4 "$OUT/summary.tsv"
